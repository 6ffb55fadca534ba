"""The shared ARP table: estimates and the warning emu prints (it never changes the sysctl)."""
from __future__ import annotations

from types import SimpleNamespace

import click

from emu.alloc import ipam
from emu.apply import neighbours
from emu.cluster import planner
from emu.errors import ClusterError


def plan(nodes: int, per_node: int):
    text = f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: n}}\nspec: {{nodes: {nodes}}}\n"
    for n in range(1, nodes + 1):
        for i in range(per_node):
            text += (f"---\nkind: Pod\nmetadata: {{name: p-{n}-{i}}}\n"
                     f"spec: {{nodeName: node-{n}, containers: [{{name: c}}]}}\n")
    t = planner.load("t.yaml", text=text)
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


# --- several clusters share the table --------------------------------------------------------------------------------


def clusters_up(**plans):
    """A fake of the state directory: names as emu.apply.state.names() lists them, plans as the records give them."""
    def plan_of(name):
        if plans[name] is None:
            raise ClusterError(f"cluster {name!r} not found")  # a record that cannot be read (half made)
        return plans[name]
    return sorted(plans), plan_of


def test_up_counts_every_other_cluster_that_is_up(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    mine, big = plan(3, 2), plan(10, 30)
    assert not neighbours.for_up(mine).at_risk and not neighbours.for_up(big).at_risk  # each fits alone
    names, plan_of = clusters_up(mine=mine, a=big, b=big, half=None)
    others = neighbours.others(names, "mine", plan_of)
    assert others.names == ("a", "b") and others.entries == 2 * (2 * 300 + 190)  # not itself, not the unreadable
    risk = neighbours.for_up(mine, others)
    assert risk.at_risk and risk.entries == (2 * 6 + 15) + 2 * 790
    msg = risk.message()
    assert "27 for it, 1580 held by 2 other clusters up: a, b" in msg
    assert "net.ipv4.neigh.default.gc_thresh3=1024" in msg and "sysctl -w net.ipv4.neigh.default.gc_thresh3=4096" \
        in msg


def test_up_alone_in_the_state_directory_is_what_it_holds(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    mine = plan(3, 2)
    names, plan_of = clusters_up(mine=mine)
    risk = neighbours.for_up(mine, neighbours.others(names, "mine", plan_of))
    assert risk.entries == neighbours.held(mine) and "other cluster" not in risk.message()


def test_matrix_warns_before_sending_when_other_clusters_fill_the_table(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    mine, other = plan(3, 10), plan(8, 40)
    alone = neighbours.for_matrix(mine)
    assert not alone.at_risk and alone.entries == 3 * 10 * 9 + 60 + 15
    names, plan_of = clusters_up(mine=mine, other=other)
    risk = neighbours.for_matrix(mine, neighbours.others(names, "mine", plan_of))
    assert risk.at_risk and risk.entries == alone.entries + 2 * 320 + 8 * 8 + 8 * 7
    assert not neighbours.for_up(other).at_risk  # the other cluster fits too: only together do they overflow
    assert "held by 1 other cluster up: other" in risk.message()


def test_matrix_counts_only_the_namespaces_it_probes(monkeypatch):
    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    p = plan(10, 30)  # every pod in namespace default
    assert neighbours.for_matrix(p, namespaces=["default"]).entries == neighbours.for_matrix(p).entries
    quiet = neighbours.for_matrix(p, namespaces=["shop"])  # no pod probed: only what the cluster holds
    assert not quiet.at_risk and quiet.entries == neighbours.held(p)


def test_emu_matrix_warns_before_its_first_probe_counting_the_other_clusters(monkeypatch):
    """The CLI wiring: `emu matrix` reads every cluster in the state directory and warns before it sends."""
    from click.testing import CliRunner

    from emu.cli import commands as cli
    from emu.observe import probing
    from emu.report import matrix as matrix_report
    from emu.apply import state
    from emu.cluster import lifecycle as clusters

    monkeypatch.setattr(neighbours, "gc_thresh3", lambda: 1024)
    plans = {"mine": plan(3, 10), "other": plan(8, 40)}
    monkeypatch.setattr(state, "names", lambda: sorted(plans))
    monkeypatch.setattr(clusters, "pick", lambda name: name or "mine")
    monkeypatch.setattr(clusters, "open_cluster", lambda name: SimpleNamespace(name=name, plan=plans[name]))
    sent = []

    def fake_matrix(cl, *args, **kwargs):
        sent.append(cl.name)
        click.echo("probing")
        return {}

    monkeypatch.setattr(probing, "matrix", fake_matrix)
    monkeypatch.setattr(matrix_report, "matrix_text", lambda res: "")
    monkeypatch.setattr(probing, "matrix_failed", lambda res: False)
    out = CliRunner().invoke(cli.main, ["matrix"]).output
    assert sent == ["mine"]
    assert "warning: an all-pairs matrix needs about 1105 ARP entries" in out
    assert out.index("held by 1 other cluster up: other") < out.index("probing")
    del plans["other"]  # alone, the same matrix fits
    assert "warning" not in CliRunner().invoke(cli.main, ["matrix"]).output
