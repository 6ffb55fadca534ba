"""Per-node settings on real namespaces: sysctls inside the node namespaces, per-node MTU and pod MTU."""
from __future__ import annotations

import pytest

from emu.report import views
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "node-tuning.yaml")


@pytest.fixture(scope="module")
def nt(emu_cluster):
    with emu_cluster(TOPO) as c:
        yield c


def _sysctl(c, target: str, key: str) -> str:
    return c.exec(target, "cat", "/proc/sys/" + key.replace(".", "/")).stdout.strip()


def test_sysctls_are_set_inside_each_node_namespace(nt):
    assert _sysctl(nt, "node/node-1", "net.core.somaxconn") == "8192"
    assert _sysctl(nt, "node/node-1", "net.ipv4.tcp_fin_timeout") == "15"
    assert _sysctl(nt, "node/node-2", "net.ipv4.tcp_fin_timeout") == "10"
    assert _sysctl(nt, "node/node-2", "net.ipv4.tcp_tw_reuse") == "1"
    assert _sysctl(nt, "node/node-2", "net.ipv4.tcp_max_syn_backlog") == "8192"


def test_node_mtu_and_flannel_mtu_follow_per_node(nt):
    def mtu(target: str, dev: str) -> int:
        return int(nt.exec(target, "cat", f"/sys/class/net/{dev}/mtu").stdout)
    assert (mtu("node/node-1", "eth0"), mtu("node/node-2", "eth0")) == (1500, 9000)
    assert (mtu("node/node-1", "flannel.1"), mtu("node/node-2", "flannel.1")) == (1450, 8950)
    assert (mtu("default/a", "eth0"), mtu("default/b", "eth0")) == (1450, 8950)
    items = {n["name"]: n for n in views.get(nt._cl, "nodes", None).items}
    assert (items["node-2"]["mtu"], items["node-2"]["podMTU"]) == (9000, 8950)
    assert items["node-2"]["sysctls"]["net.ipv4.tcp_fin_timeout"] == "10"
    table = views.get(nt._cl, "nodes", None).table(wide=True)
    row = next(line for line in table.splitlines() if line.startswith("node-2"))
    assert "9000" in row and "8950" in row and "net.ipv4.tcp_fin_timeout=10" in row


def test_pods_still_talk_across_nodes(nt):
    r = nt.probe("default/a", "default/b", port=80)
    assert r["ok"], r
