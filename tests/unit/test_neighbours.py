"""The shared ARP table: estimates and the warning emu prints (it never changes the sysctl)."""
from __future__ import annotations

from emu import ipam, neighbours, planner, topology


def plan(nodes: int, per_node: int):
    text = f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: n}}\nspec: {{nodes: {nodes}}}\n"
    for n in range(1, nodes + 1):
        for i in range(per_node):
            text += (f"---\nkind: Pod\nmetadata: {{name: p-{n}-{i}}}\n"
                     f"spec: {{nodeName: node-{n}, containers: [{{name: c}}]}}\n")
    t = topology.load("t.yaml", text=text)
    return planner.build(t, ipam.allocate(t, ipam.Allocations.empty()))


def test_small_cluster_is_not_at_risk(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    p = plan(3, 2)
    assert not neighbours.for_up(p).at_risk and not neighbours.for_matrix(p).at_risk


def test_all_pairs_on_a_large_cluster_warns_with_the_sysctl(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    p = plan(10, 30)
    up, matrix = neighbours.for_up(p), neighbours.for_matrix(p)
    assert not up.at_risk  # 2 x 300 pods + 190 underlay/vxlan entries
    assert matrix.at_risk and matrix.entries == 10 * 30 * 29 + 600 + 190
    msg = matrix.message()
    assert "net.ipv4.neigh.default.gc_thresh3=1024" in msg and "sysctl -w net.ipv4.neigh.default.gc_thresh3=" in msg
    assert "never changes it" in msg


def test_unknown_limit_is_no_risk(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: None)
    assert not neighbours.for_matrix(plan(10, 30)).at_risk
