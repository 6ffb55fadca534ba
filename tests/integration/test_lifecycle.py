"""Lifecycle and safety: several clusters with the same CIDRs, rollback of a failed up, down after SIGKILL, live
apply/delete, and a root namespace left exactly as it was."""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from emu.apply import links as apply_mod
from emu.cluster import lifecycle as clusters
from emu.apply import netns, processes, state
from emu.errors import ValidationError
from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until

VXLAN = str(TOPOLOGIES / "flannel-vxlan.yaml")


def emu(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, check=check)


def mine(name: str) -> list[str]:
    """Namespaces whose name says they are this cluster's (for assertions only; cleanup never works this way)."""
    return [n for n in netns.list_names() if n.startswith(name + ".")]


@contextlib.contextmanager
def downed(prefix: str) -> Iterator[str]:
    """A fresh cluster name for a test that drives `up` itself; the cluster is taken down when the block ends,
    also when an assertion failed half-way (`down` of a name that has no record is a no-op).  The name is unique,
    so the cluster is this test's own and nobody else's is ever removed."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    try:
        yield name
    finally:
        clusters.down(name)


def agent_gone(pid: int) -> bool:
    """The agent `pid` has exited (or is a zombie, or the pid now belongs to another program)."""
    argv = processes.cmdline(pid)
    return argv is None or "emu.cluster.agent" not in " ".join(argv)


def test_two_clusters_with_identical_cidrs_at_once(emu_cluster):
    with emu_cluster(VXLAN) as a, emu_cluster(VXLAN) as b:
        for c in (a, b):
            r = c.probe("default/web-0", "default/web-1", port=80)
            assert r["ok"] and r["client_ip_seen"] == "10.244.0.2"
        assert a.pod_ip("default/web-1") == b.pod_ip("default/web-1")
        assert a.netns("default/web-1") != b.netns("default/web-1")


def test_a_failed_up_rolls_back(monkeypatch):
    real = apply_mod.apply_pods

    def flaky(pods, s, ix, progress=lambda n: None):
        pods = list(pods)
        real(pods[:3], s, ix)  # half the pods are wired when the failure hits
        raise RuntimeError("injected failure")

    monkeypatch.setattr(apply_mod, "apply_pods", flaky)
    with downed("rollback") as name:
        with pytest.raises(RuntimeError, match="injected"):
            clusters.up(VXLAN, name)
        assert mine(name) == [] and state.load(name) is None


def test_validation_error_builds_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(VXLAN).read().replace("name: web-2", "name: web-1"))
    with downed("invalid") as name:
        r = emu("up", str(bad), "--name", name)
        assert r.returncode == 2
        assert f"{bad} (document 5): Pod default/web-1: metadata.name: duplicate pod default/web-1" in r.stderr
        assert "Traceback" not in r.stderr
        assert mine(name) == [] and state.load(name) is None


def test_sigkill_during_up_then_down_leaves_nothing(tmp_path):
    with downed("killed") as name:
        proc = subprocess.Popen([sys.executable, "-m", "emu", "up", VXLAN, "--name", name],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: len(mine(name)) >= 3, interval=0.005, max_interval=0.005,
                       what="up to create its first namespaces")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        rec = state.load(name)
        assert rec is not None and rec.netns  # the record was written before anything was made
        r = emu("down", name)
        assert r.returncode == 0, r.stderr
        assert mine(name) == [] and not os.path.exists(state.cluster_dir(name))
        if rec.pid("agent"):
            assert agent_gone(rec.pid("agent"))
        assert emu("down", name).returncode == 0  # idempotent


def test_down_is_idempotent_and_removes_the_agent():
    with downed("twice") as name:
        clusters.up(VXLAN, name)
        pid = state.load(name).pid("agent")
        assert pid and not agent_gone(pid)
        assert clusters.down(name) is True
        assert clusters.down(name) is False
        assert agent_gone(pid)  # down waits for the agent it stops
        assert mine(name) == []


def test_live_apply_and_delete(emu_cluster, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: late}\n---\n"
                     "apiVersion: v1\nkind: Pod\nmetadata: {name: newcomer, namespace: late}\n"
                     "spec: {nodeName: node-3, containers: [{name: c, ports: [{containerPort: 8080}]}]}\n")
    with emu_cluster(VXLAN) as c:
        before = c.probe("default/web-0", "default/web-1", port=80)
        ch = c.apply(str(extra))
        assert ch.added == ("late/newcomer",) and ch.removed == ()
        r = c.probe("default/web-0", "late/newcomer", port=8080)
        assert r["ok"] and r["answered_by"] == "late/newcomer"
        assert c.plan.pod("late/newcomer").node == "node-3"
        assert c.pod_ip("default/web-1") == before["to_ip"]  # existing pods untouched
        ns = c.netns("late/newcomer")
        veth = c.plan.pod("late/newcomer").host_link.name
        node_ns = c.plan.pod("late/newcomer").node_netns
        ch = c.delete(str(extra))
        assert ch.removed == ("late/newcomer",)
        assert not netns.exists(ns)
        # the bridge delegate's DEL: the host veth is gone at once, not when the kernel destroys the namespace later
        gone = subprocess.run(["ip", "-n", node_ns, "link", "show", veth], capture_output=True, text=True)
        assert gone.returncode != 0 and "does not exist" in gone.stderr
        assert c.apply(str(extra)).added == ("late/newcomer",)  # made again at once: its veth's name is free
        assert c.probe("default/web-0", "late/newcomer", port=8080)["answered_by"] == "late/newcomer"
        c.delete(str(extra))
        assert c.probe("default/web-0", "default/web-1", port=80)["ok"]
        with pytest.raises(ValidationError, match="nodeName: node 'node-9' does not exist"):
            extra.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"
                             "spec: {nodeName: node-9, containers: [{name: c}]}\n")
            c.apply(str(extra))


SNAPSHOT = [
    ["ip", "-d", "link", "show"], ["ip", "addr"], ["ip", "route", "show", "table", "all"], ["ip", "rule"],
    ["ip", "neigh", "show", "nud", "permanent"], ["bridge", "fdb", "show"],
    ["iptables-save"], ["iptables-legacy-save"], ["nft", "list", "ruleset"],
]
VOLATILE = ("nf_conntrack_count", "net.netfilter.nf_conntrack_expect_count", "random", "boot_id",
            "net.ipv4.tcp_fastopen_key", "base_reachable_time", "ip_local_reserved_ports")


def root_snapshot() -> dict[str, str]:
    out = {}
    for cmd in SNAPSHOT:
        r = subprocess.run(cmd, capture_output=True, text=True)
        out[" ".join(cmd)] = "\n".join(line for line in r.stdout.splitlines() if not line.startswith("#"))
    r = subprocess.run(["sysctl", "-a"], capture_output=True, text=True)
    out["sysctl net"] = "\n".join(line for line in r.stdout.splitlines()
                                  if line.startswith("net.") and not any(v in line for v in VOLATILE))
    return out


def test_root_namespace_is_identical_before_up_and_after_down(emu_cluster):
    before = root_snapshot()
    with emu_cluster(VXLAN) as c:
        assert c.probe("default/web-0", "default/web-2", port=80)["ok"]
        assert c.matrix("udp", 80)["failures"] == 0
        during = root_snapshot()
    after = root_snapshot()
    assert during == before
    assert after == before


def test_an_unrecorded_agent_exits_once_its_cluster_is_gone():
    """`up` killed between spawning the agent and recording its pid: down removes the record, the agent leaves."""
    with downed("orphan") as name:
        clusters.up(VXLAN, name)
        rec = state.load(name)
        pid = rec.pid("agent")
        try:
            rec.set_pid("agent", None)
            rec.save()
            os.unlink(os.path.join(rec.agent_dir, "agent.pid"))
            assert clusters.down(name)
            # the agent notices its record is gone at its next once-a-second check (agent.ORPHAN_CHECK)
            wait_until(lambda: agent_gone(pid), what=f"the unrecorded agent (pid {pid}) to exit by itself")
        finally:
            if not agent_gone(pid):  # the test failed: stop the agent it made unreachable for down
                os.kill(pid, signal.SIGTERM)


def test_ipvs_mode_on_a_kernel_without_ip_vs_fails_at_once_in_one_line(tmp_path):
    from emu.apply import kernel

    if kernel.has("ip_vs") and kernel.has("dummy"):
        pytest.skip("this kernel has IP_VS and dummy: the kernel-lane tests cover ipvs mode")
    topo = tmp_path / "ipvs.yaml"
    topo.write_text(open(VXLAN).read().replace("  cni:\n", "  proxy: {mode: ipvs}\n  cni:\n", 1))
    with downed("ipvsless") as name:
        r = emu("up", str(topo), "--name", name)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        (line,) = [x for x in r.stderr.splitlines() if x.strip()]
        assert "kube-proxy ipvs mode needs ip_vs" in line and "which this kernel lacks" in line
        assert mine(name) == [] and state.load(name) is None
