"""The Addon seam: emu.addons.table lists every component once, each declares kinds the kind registry knows, the
daemons the record can own are the addons' (plus the agent), and the lifecycle is a loop over the table: preflight
and start in order, stop in reverse, repair through each addon's daemon (no root needed: the hooks are replaced by
recorders and the cluster is a record in a temporary state directory)."""
from __future__ import annotations

import dataclasses

import pytest

from emu.addons import table
from emu.addons.base import Addon, Daemon
from emu.apply import state
from emu.cluster import daemons, dryrun, lifecycle
from emu.model import kinds
from emu.plan.content import File


def test_every_addon_is_listed_once_and_reads_kinds_the_registry_knows():
    names = [a.name for a in table.ADDONS]
    assert len(set(names)) == len(names) and daemons.AGENT not in names
    known = {k.kind for k in kinds.TABLE}
    for a in table.ADDONS:
        assert isinstance(a, Addon) and a.kinds and set(a.kinds) <= known, a.name
        assert table.named(a.name) is a


def test_the_record_expects_exactly_the_daemons_of_the_addons_that_have_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    rec = state.Record("c", "t.yaml", status="up")
    assert [d.name for d in daemons.expected(rec)] == [daemons.AGENT]  # nothing recorded: only the agent
    for a in table.ADDONS:
        if a.daemon is not None:
            rec.set_pid(a.name, 999999)  # recorded, not running (and not ours)
    want = [daemons.AGENT] + [a.name for a in table.ADDONS if a.daemon is not None]
    assert [d.name for d in daemons.expected(rec)] == want == ["agent", "dns", "ingress-nginx"]
    assert [d.name for d in daemons.down(rec)] == want  # pid 999999 is no daemon of ours


def _recording(calls: list[str]) -> tuple[Addon, ...]:
    def hooks(name: str) -> Addon:
        def hook(verb: str):  # type: ignore[no-untyped-def]
            return lambda *_: calls.append(f"{verb} {name}")
        daemon = Daemon("x", lambda rec: set(), hook("restart"))
        return Addon(name, kinds=("Pod",), preflight=hook("preflight"), start=hook("start"), sync=hook("sync"),
                     pods_leaving=hook("leaving"), stop=hook("stop"), daemon=daemon)
    return (hooks("first"), hooks("second"), hooks("third"))


def test_down_stops_every_addon_in_reverse_order_then_forgets_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    calls: list[str] = []
    monkeypatch.setattr(lifecycle, "ADDONS", _recording(calls))
    rec, lock = state.claim("c", "t.yaml")
    lock.release()
    assert lifecycle.down("c")
    assert calls == ["stop third", "stop second", "stop first"]
    assert state.load("c") is None and not state.exists("c")


def test_preflight_asks_every_addon_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    calls: list[str] = []
    monkeypatch.setattr(lifecycle, "ADDONS", _recording(calls))
    topo, _, plan = lifecycle.plan_file("topologies/flannel-vxlan.yaml", "pre")
    monkeypatch.setattr(lifecycle.netns, "exists", lambda name: True)  # stop right after the addons' preflight
    with pytest.raises(Exception, match="already exists"):
        lifecycle.preflight(plan, topo)
    assert calls == ["preflight first", "preflight second", "preflight third"]


def test_repair_restarts_the_dead_daemons_through_their_addon(tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    calls: list[str] = []
    fakes = _recording(calls)
    monkeypatch.setattr(lifecycle, "ADDONS", fakes)
    monkeypatch.setattr(daemons, "ADDONS", fakes)
    monkeypatch.setattr(daemons, "agent_pids", lambda rec: {1})  # the agent runs
    cl = lifecycle.Cluster(state.Record("c", "t.yaml", status="up"), *lifecycle.plan_file(
        "topologies/flannel-vxlan.yaml", "c"))
    cl.record.set_pid("second", 999999)  # only "second" has a recorded daemon, and it is not running
    assert lifecycle.repair_daemons(cl) == ["second"] and calls == ["restart second"]


def test_the_dry_run_has_each_addons_sections_in_table_order(monkeypatch):
    cl = dryrun.planned("topologies/seed-guide.yaml")
    # the real sections, after the network's files and the agent: each addon's, grouped, in the table's order
    heads = [h for h, _ in dryrun.sections(cl)][2:]
    prefix = {"kube-proxy": "kube-proxy (", "networkpolicy": "kube-router ", "dns": "cluster DNS",
              "ingress-nginx": "ingress-nginx "}
    owners = [next(name for name, p in prefix.items() if h.startswith(p)) for h in heads]
    order = [a.name for a in table.ADDONS]
    assert owners == sorted(owners, key=order.index) and set(owners) == set(prefix)
    one = (File("/x", "o", "x\n"),)
    marked = [dataclasses.replace(a, dry_run=lambda cl, n=a.name: [(f"from {n}", one), ("empty", ())])
              for a in reversed(table.ADDONS)]
    monkeypatch.setattr(dryrun, "ADDONS", tuple(marked))
    # after the network's files and the agent, each addon's sections in the table's order; empty ones left out
    assert [h for h, _ in dryrun.sections(cl)][2:] == [f"from {a.name}" for a in reversed(table.ADDONS)]


def test_events_come_from_each_addons_hook_in_table_order(monkeypatch):
    from emu.cluster import events
    cl = lifecycle.Cluster(state.Record("c", "t.yaml"), *lifecycle.plan_file("topologies/flannel-vxlan.yaml", "c"))
    marked = tuple(dataclasses.replace(a, events=lambda old, new, emit, n=a.name:
                                       emit("Normal", "Marked", "Node", "", n, "", "test")) for a in table.ADDONS)
    monkeypatch.setattr(events, "ADDONS", marked)
    got = [e.name for e in events.between(None, cl) if e.reason == "Marked"]
    assert got == [a.name for a in table.ADDONS]
    kube_proxy = [e for e in events.between(None, cl) if e.source == "kube-proxy"]  # only the hooks record them
    monkeypatch.undo()
    assert not kube_proxy
    assert [e.name for e in events.between(None, cl) if e.source == "kube-proxy"] == [n.name for n in cl.plan.nodes]
