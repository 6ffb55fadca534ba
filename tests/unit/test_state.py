"""The state directory's guards (issue 12): names that are no cluster names never become paths, nothing emu writes
or deletes resolves outside its own directories, and the per-cluster lock makes changing commands take turns."""
from __future__ import annotations

import os
import threading
import time

import pytest

from emu.model import names
from emu.apply import netns, processes, state
from emu.errors import ClusterError, InvalidName
from tests.waiting import wait_until


@pytest.fixture
def root(tmp_path, monkeypatch):
    d = tmp_path / "state"
    d.mkdir()
    monkeypatch.setenv("EMU_STATE_DIR", str(d))
    return d


@pytest.mark.parametrize("bad", ["", "..", "../x", "/tmp/x", "a/b", "A", "a.b", "a_b", "-a", "a-", "a\n", "a\0",
                                 "x" * (names.CLUSTER_NAME_MAX + 1), 7, None])
def test_no_path_is_built_from_a_name_that_is_no_cluster_name(root, bad):
    assert names.cluster_name_error(bad)
    with pytest.raises(InvalidName, match="DNS-1123 label"):
        state.cluster_dir(bad)


@pytest.mark.parametrize("good", ["a", "demo", "t0a1b2c", "x" * names.CLUSTER_NAME_MAX, "a-b-1"])
def test_cluster_names(root, good):
    assert names.cluster_name_error(good) is None and state.cluster_dir(good) == os.path.join(str(root), good)


def test_forget_unlinks_a_planted_symlink_and_never_follows_it(root, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.symlink(victim, root / "evil")
    state.forget("evil")
    assert not os.path.lexists(root / "evil") and (victim / "keep").exists()


def test_write_file_refuses_a_planted_symlink_out_of_the_cluster_directory(root, tmp_path):
    rec, lock = state.claim("c1", "t.yaml")
    lock.release()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(rec.dir, "nodes"))
    with pytest.raises(ClusterError, match="outside"):
        state.write_file(rec, "nodes/n1/run/flannel/subnet.env", "FLANNEL_MTU=1450\n")
    assert not list(outside.iterdir())
    with pytest.raises(ClusterError, match="outside"):
        state.write_file(rec, "../c2/cluster.json", "{}")
    assert state.write_file(rec, "agent/agent.json", "{}").startswith(rec.dir + os.sep)


def test_status_lists_only_directories_with_a_record(root, tmp_path):
    rec, lock = state.claim("real", "t.yaml")
    lock.release()
    (root / "junk").mkdir()  # no record
    (root / "Not_A_Name").mkdir()
    (root / "Not_A_Name" / state.RECORD_FILE).write_text("{}")
    outside = tmp_path / "o"
    outside.mkdir()
    (outside / state.RECORD_FILE).write_text("{}")
    os.symlink(outside, root / "linked")
    assert state.names() == ["real"]


def test_a_damaged_record_loads_as_an_empty_one(root):
    rec, lock = state.claim("c1", "t.yaml")
    lock.release()
    with open(os.path.join(rec.dir, state.RECORD_FILE), "w") as f:
        f.write('{"name": "c1", "surprise": 1}')
    assert state.load("c1") == state.Record("c1", "")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", ".", "..", "", "x\0y", "x" * 256])
def test_a_namespace_name_from_a_record_never_becomes_another_path(bad):
    with pytest.raises(ValueError, match="not a network namespace name"):
        netns.path(bad)


def test_remove_etc_touches_only_files_of_etc_netns(tmp_path, monkeypatch):
    etc = tmp_path / "etc-netns"
    (etc / "c1.n1").mkdir(parents=True)
    (etc / "c1.n1" / "resolv.conf").write_text("x")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "resolv.conf").write_text("keep")
    monkeypatch.setenv("EMU_ETC_NETNS", str(etc))
    processes.remove_etc(str(other / "resolv.conf"))
    processes.remove_etc(str(etc / "c1.n1" / ".." / ".." / "elsewhere" / "resolv.conf"))
    assert (other / "resolv.conf").read_text() == "keep"
    processes.remove_etc(str(etc / "c1.n1" / "resolv.conf"))
    assert not (etc / "c1.n1").exists()


# --- the per-cluster lock -----------------------------------------------------------------------------------------


def _taker(name: str, got: list, said: list) -> threading.Thread:
    def run() -> None:
        try:
            lock = state.Lock.take(name, "emu apply", said.append)
            got.append("locked")
            lock.release()
        except ClusterError as e:
            got.append(str(e))

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_second_command_waits_says_who_holds_the_lock_then_goes_on(root, monkeypatch):
    monkeypatch.setattr(state, "LOCK_NOTICE", 0.1)
    rec, lock = state.claim("c1", "t.yaml", "emu up")
    got: list[str] = []
    said: list[str] = []
    t = _taker("c1", got, said)
    wait_until(lambda: said, what="the waiting notice")
    assert got == [] and said == [f"waiting for cluster 'c1': pid {os.getpid()} (emu up) is changing it"]
    lock.release()
    t.join(5)
    assert got == ["locked"]


def _waiting(name: str, monkeypatch) -> tuple[threading.Thread, list[str]]:
    """A command (a thread) that is now waiting for the cluster's lock, and where its outcome will be."""
    monkeypatch.setattr(state, "LOCK_NOTICE", 0.0)
    got: list[str] = []
    said: list[str] = []
    t = _taker(name, got, said)
    wait_until(lambda: said, what="the command to wait for the lock")
    return t, got


def test_a_command_that_waited_for_a_removed_cluster_fails_cleanly(root, monkeypatch):
    rec, lock = state.claim("c1", "t.yaml")
    t, got = _waiting("c1", monkeypatch)
    state.forget("c1")  # what `down` does while it holds the lock
    lock.release()
    t.join(5)
    assert got == ["cluster 'c1' was removed (emu down) while emu apply waited for it"]


def test_a_command_that_waited_locks_the_new_cluster_of_the_same_name(root, monkeypatch):
    rec, lock = state.claim("c1", "t.yaml")
    t, got = _waiting("c1", monkeypatch)
    state.forget("c1")
    again, lock2 = state.claim("c1", "t.yaml")  # a new `up` of the same name, holding the new lock file
    lock.release()
    time.sleep(0.2)  # a chance to go wrong: it must not take the removed file's lock
    assert got == []  # it moved on to the new file and waits for the new holder
    lock2.release()
    t.join(5)
    assert got == ["locked"]


def test_no_lock_for_a_cluster_that_does_not_exist(root):
    with pytest.raises(ClusterError, match="not found"):
        state.Lock.take("nope", "emu apply")


def test_up_refuses_a_state_directory_too_deep_for_the_agents_socket(tmp_path, monkeypatch):
    from emu.cluster import lifecycle as clusters
    from tests.conftest import TOPOLOGIES

    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path / ("d" * 90)))
    topo, _, plan = clusters.plan_file(str(TOPOLOGIES / "flannel-vxlan.yaml"))
    with pytest.raises(ClusterError, match="choose a shorter EMU_STATE_DIR"):
        clusters.preflight(plan, topo)
    assert not os.path.exists(tmp_path / ("d" * 90))  # refused before anything was made


def test_a_record_of_an_older_emu_keeps_what_it_names(root):
    """A cluster made before components had one entry each is still removed whole by `down` after an upgrade."""
    import json
    d = state.cluster_dir("old")
    os.makedirs(d)
    with open(os.path.join(d, state.RECORD_FILE), "w") as f:
        json.dump({"name": "old", "topology_file": "t.yaml", "status": "up", "netns": ["old.node-1"],
                   "agent_pid": 11, "dns_pid": 22, "ingress_pid": 33,
                   "etc_files": ["/etc/netns/old.node-1/resolv.conf", "/etc/netns/old.external/hosts"]}, f)
    rec = state.load("old")
    assert (rec.pid("agent"), rec.pid("dns"), rec.pid("ingress-nginx")) == (11, 22, 33)
    assert rec.files("dns") == ["/etc/netns/old.node-1/resolv.conf"]
    assert rec.files("ingress-nginx") == ["/etc/netns/old.external/hosts"]
    assert rec.netns == ["old.node-1"] and rec.status == "up"


def test_each_component_has_one_entry_in_the_record(root):
    rec = state.Record("c", "t.yaml")
    rec.set_pid("dns", 5)
    rec.set_files("dns", ["/etc/netns/c.n/resolv.conf", "/etc/netns/c.n/resolv.conf"])
    rec.set_pid("dns", None)
    assert rec.components == {"dns": {"files": ["/etc/netns/c.n/resolv.conf"]}} and rec.pid("dns") is None
    rec.components["agent"] = {"pid": "7; rm -rf /"}  # a hand-edited record: not a pid
    assert rec.pid("agent") is None
