"""Integration fixtures: clusters built on real namespaces, shared per module, always torn down.

The state directory is private to the test session, so tests never see or touch a user's clusters.
"""
from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

from tests.conftest import TOPOLOGIES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def private_state_dir():
    with tempfile.TemporaryDirectory(prefix="emu-test-state-") as d:
        old = os.environ.get("EMU_STATE_DIR")
        os.environ["EMU_STATE_DIR"] = d
        try:
            yield d
        finally:
            if old is None:
                os.environ.pop("EMU_STATE_DIR", None)
            else:
                os.environ["EMU_STATE_DIR"] = old


@pytest.fixture(scope="module")
def vxlan(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "flannel-vxlan.yaml")) as c:
        yield c


@pytest.fixture(scope="module")
def hostgw(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "flannel-host-gw.yaml")) as c:
        yield c


TWO_PODS = pathlib.Path(__file__).resolve().parent / "data" / "plugin-two-pods.yaml"  # client, web: TCP 80 only
DENY_WEB = TWO_PODS.parent / "plugin-deny-web.yaml"  # all ingress to default/web denied


@pytest.fixture(scope="module")
def two(emu_cluster):
    """Two pods, client on node-1 and web on node-2, one cluster per module (the denial helpers' tests)."""
    with emu_cluster(str(TWO_PODS)) as c:
        yield c


@pytest.fixture
def denied(two):
    """`two` with all ingress to default/web denied, for one test."""
    two.apply(str(DENY_WEB))
    try:
        yield two
    finally:
        two.delete(str(DENY_WEB))
