"""Per-node settings in the Cluster spec: MTU and per-namespace network sysctls."""
from __future__ import annotations

import pytest

from emu.cluster import dryrun
from emu.cluster import lifecycle as cluster
from emu.network.flannel import nodes as flannel
from emu.alloc import ipam
from emu.model import nodesettings
from emu.cluster import planner
from emu.errors import ValidationError
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "node-tuning.yaml")
HEAD = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
"""


def problems(spec: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        planner.load("t.yaml", text=HEAD + spec)
    return [str(p) for p in e.value.problems]


def test_counts_and_name_lists_still_work():
    assert planner.load("t.yaml", text=HEAD + "  nodes: 2\n").cluster.nodes == ("node-1", "node-2")
    c = planner.load("t.yaml", text=HEAD + "  nodes: [a, b]\n").cluster
    assert c.nodes == ("a", "b") and c.node_settings == {} and c.node_mtu("a") == 1500


def test_defaults_and_overrides_merge():
    topo, _, plan = cluster.plan_file(TOPO)
    c = topo.cluster
    assert c.nodes == ("node-1", "node-2")
    assert (c.node_mtu("node-1"), c.node_mtu("node-2")) == (1500, 9000)
    assert (flannel.mtu(c, "node-1"), flannel.mtu(c, "node-2")) == (1450, 8950)
    assert dict(c.node_sysctls("node-2"))["net.ipv4.tcp_fin_timeout"] == "10"
    assert dict(c.node_sysctls("node-1"))["net.core.somaxconn"] == "8192"
    n2 = next(ns for ns in plan.infra if ns.owner == "node-2")
    assert ("eth0", 9000) in n2.mtu and ("net.ipv4.tcp_fin_timeout", "10") in n2.sysctls
    assert next(link for link in n2.links if link.name == "flannel.1").mtu == 8950
    assert plan.pod("default/b").host_link.mtu == 8950 and plan.pod("default/a").host_link.mtu == 1450
    n2_files = dict(next(n for n in plan.nodes if n.name == "node-2").files)
    assert "FLANNEL_MTU=8950" in n2_files["run/flannel/subnet.env"]


def test_machine_wide_net_core_sysctls_are_recorded_never_applied():
    text = (f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n"
            f"  nodeSettings: {{sysctls: {{net.core.netdev_max_backlog: '16384', net.core.somaxconn: '32768'}}}}\n"
            f"  nodes: [a, {{name: b, sysctls: {{net.core.netdev_max_backlog: '2048'}}}}]\n")
    topo = planner.load("t.yaml", text=text)
    c = topo.cluster
    assert dict(c.node_sysctls("a")) == {"net.core.somaxconn": "32768"}  # only this one is applied
    assert dict(c.node_settings["a"].machine_wide) == {"net.core.netdev_max_backlog": "16384"}
    assert dict(c.node_settings["b"].machine_wide) == {"net.core.netdev_max_backlog": "2048"}
    warnings = nodesettings.unapplied(dict(c.node_settings))
    assert len(warnings) == 2 and "net.core.netdev_max_backlog=16384 (nodes a)" in warnings[0]
    assert "not applied" in warnings[0] and "the machine has" in warnings[0]
    plan = planner.build(topo, ipam.allocate(topo, ipam.Allocations.empty()))
    assert all(k != "net.core.netdev_max_backlog" for ns in plan.infra for k, _ in ns.sysctls)


@pytest.mark.parametrize("spec, field, words", [
    ("  nodes: [{name: a, sysctls: {kernel.pid_max: '1'}}]\n", "spec.nodes[0].sysctls[kernel.pid_max]",
     "not a network sysctl"),
    ("  nodes: [{name: a, mtu: 100}]\n", "spec.nodes[0].mtu", "from 1280 to 9000"),
    ("  nodes: [{name: a, color: red}]\n", "spec.nodes[0].color", "unknown field"),
    ("  nodes: [{mtu: 9000}]\n", "spec.nodes[0].name", "must be a DNS label"),
    ("  nodeSettings: {sysctls: {net.ipv4.tcp_mem: '1 2 3'}}\n", "spec.nodeSettings.sysctls[net.ipv4.tcp_mem]",
     "machine-wide"),
])
def test_problems_name_the_field(spec, field, words):
    (msg,) = problems(spec)
    assert f": {field}: " in msg and words in msg, msg


def test_dry_run_quotes_a_sysctl_value_with_a_space_as_one_argument(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(HEAD + "  nodes: 1\n  nodeSettings:\n    sysctls: {net.ipv4.ip_local_port_range: '32768 60999'}\n")
    assert "sysctl -qw 'net.ipv4.ip_local_port_range=32768 60999'" in dryrun.script(str(f))
