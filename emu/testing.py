"""A pytest plugin for CNI developers' CI (loaded automatically once cni-emu is installed).

    @pytest.mark.emu_topology("topologies/flannel-vxlan.yaml")
    def test_cross_node(cluster):
        r = cluster.probe("default/web-0", "default/web-1", port=80)
        assert r["ok"] and r["client_ip_seen"] == cluster.pod_ip("default/web-0")

`cluster` brings the topology up under a unique name and always tears it down; `emu_cluster` is a factory for
fixtures of wider scope (`with emu_cluster(path) as c: ...`).  Needs root.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from . import cluster as clusters
from . import probing, targets


class ClusterHandle:
    """A running cluster for a test: the model, and the verbs a test needs."""

    def __init__(self, name: str):
        self.name = name

    @property
    def _cl(self) -> clusters.Cluster:
        return clusters.open_cluster(self.name)  # re-read: apply/delete change it

    @property
    def model(self):  # type: ignore[no-untyped-def]
        return self._cl.topology

    @property
    def plan(self):  # type: ignore[no-untyped-def]
        return self._cl.plan

    def netns(self, target: str) -> str:
        ns = targets.resolve(self._cl, target).netns
        assert ns is not None
        return ns

    def pod_ip(self, key: str) -> str:
        return targets.resolve(self._cl, key).ip

    def cluster_ip(self, key: str) -> str:
        """A Service's ClusterIP ("ns/name")."""
        return str(self._cl.allocations.services[key].cluster_ip)

    def mark(self, pod: str, condition: str) -> clusters.Change:
        """ready | not-ready | terminating | terminating-not-serving."""
        return clusters.mark(self.name, pod, condition)

    def probe(self, src: str, dst: str, proto: str = "tcp", port: int | None = None, size: int | None = None,
              df: bool = False, count: int = 1, timeout: float = 1.0) -> dict[str, Any]:
        return probing.probe_many(self._cl, src, dst, proto, port, size, df, count, timeout)

    def pmtu(self, src: str, dst: str, timeout: float = 1.0) -> dict[str, Any]:
        return probing.pmtu(self._cl, src, dst, timeout)

    def matrix(self, proto: str = "tcp", port: int = 80, timeout: float = 1.0) -> dict[str, Any]:
        return probing.matrix(self._cl, proto, port, timeout)

    def exec(self, target: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        from . import podexec

        cl = self._cl
        return subprocess.run(podexec.argv(cl, targets.resolve(cl, target), cmd), capture_output=True, text=True,
                              check=check)

    def apply(self, path: str) -> clusters.Change:
        return clusters.apply_file(self.name, path)

    def delete(self, path: str) -> clusters.Change:
        return clusters.delete_file(self.name, path)


@contextmanager
def running(path: str, name: str | None = None) -> Iterator[ClusterHandle]:
    """Bring a topology up under a unique name; always `down`, also when the test fails."""
    if os.geteuid() != 0:
        pytest.skip("emu clusters need root (network namespaces)")
    name = name or f"t{secrets.token_hex(3)}"
    try:
        clusters.up(path, name)
        yield ClusterHandle(name)
    finally:
        clusters.down(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emu_topology(path, name=None): the topology the `cluster` fixture brings up")


@pytest.fixture(scope="session")
def emu_cluster():  # type: ignore[no-untyped-def]
    """Factory: `with emu_cluster(path) as c:` in a fixture of any scope."""
    return running


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    mark = request.node.get_closest_marker("emu_topology")
    path = getattr(request, "param", None) or (mark.args[0] if mark else None)
    if path is None:
        raise pytest.UsageError("the `cluster` fixture needs @pytest.mark.emu_topology(PATH) or indirect params")
    name = mark.kwargs.get("name") if mark else None
    with running(str(path), name) as handle:
        yield handle
