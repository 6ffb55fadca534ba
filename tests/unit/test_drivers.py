"""emu.apply.drivers without root: the order a batch of plan objects is applied in (felix's: ipsets, tables, IPVS,
files, daemons, stale ipsets last), the argv and stdin each object becomes (the command the dry run prints before
its here-document), the one-line failure, and the syncs that go through the drivers (kube-router's node sync,
kube-proxy's iptables and nftables syncs) with the runner faked.

Where the expectations come from: emu's own (emu.plan.content.render prints the same commands); the order is
felix/dataplane/linux/int_dataplane.go apply()'s."""
from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import iptables_text, modes, nftables_sync, proxiers
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort, SyncError
from emu.addons.netpol import restore, rules
from emu.addons.netpol import sync as npsync
from emu.apply import drivers, tools
from emu.plan.content import Command, Daemon, DestroyIpsets, File, Ipsets, Ipvs, PlanObject, Ruleset, render

NS = "c.node-1"
IP = ipaddress.IPv4Address


class Runner:
    """tools.run's stand-in: records (ns, argv, stdin) and answers from `answers` (the whole argv, its first two
    words or its first, joined by spaces -> (rc, out, err)); anything else succeeds silently."""

    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None):
        self.calls: list[tuple[str, list[str], str | None]] = []
        self.answers = answers or {}

    def __call__(self, ns: str, argv: list[str], stdin: str | None = None,
                 timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        self.calls.append((ns, list(argv), stdin))
        keys = (" ".join(argv), " ".join(argv[:2]), argv[0])
        rc, out, err = next((self.answers[k] for k in keys if k in self.answers), (0, "", ""))
        return subprocess.CompletedProcess(argv, rc, out, err)


MIXED: list[PlanObject] = [
    DestroyIpsets(NS, "n", ("KUBE-SRC-OLD", "KUBE-SRC-OLDER")),
    Daemon("d", "x", None, ("true",)), File("/f", "x", "a\n"), Ipvs(NS, "n", "-A -t 1.2.3.4:80 -s rr\n"),
    Ruleset(NS, "n", "nft -f -", "table ip t {}\n"), Ipsets(NS, "n", "create s hash:ip\n"),
    Ruleset(NS, "n", "iptables-nft-restore --noflush -w", "*filter\nCOMMIT\n"),
    Command(NS, "n", ("sysctl", "-w", "net.ipv4.vs.conntrack=1"))]


def test_a_batch_is_applied_in_felixs_order_with_stale_sets_last(tmp_path: Path) -> None:
    run, started = Runner(), []
    objs = [o if not isinstance(o, File) else File(str(tmp_path / "f"), "x", "a\n") for o in MIXED]
    pids = drivers.apply(objs, run=run, start=lambda d: started.append(d) or 42, state_dir=str(tmp_path))
    assert [argv for _, argv, _ in run.calls] == [
        ["sysctl", "-w", "net.ipv4.vs.conntrack=1"], ["ipset", "restore", "-exist"],
        ["nft", "-f", "-"], ["iptables-nft-restore", "--noflush", "-w"], ["ipvsadm", "--restore"],
        ["ipset", "restore", "-exist"]]
    assert [stdin for _, _, stdin in run.calls] == [
        None, "create s hash:ip\n", "table ip t {}\n", "*filter\nCOMMIT\n", "-A -t 1.2.3.4:80 -s rr\n",
        "destroy KUBE-SRC-OLD\ndestroy KUBE-SRC-OLDER\n"]
    assert {ns for ns, _, _ in run.calls} == {NS}
    assert (tmp_path / "f").read_text() == "a\n" and pids == {"d": 42} and started[0].argv == ("true",)


def test_each_objects_argv_is_the_command_the_dry_run_prints() -> None:
    for o in MIXED:
        if isinstance(o, drivers.TOOL_KINDS):
            head = render([o])[0].split("\n")[0].removesuffix(" <<'EOF'")
            assert head == f"ip netns exec {NS} " + " ".join(drivers.argv(o))
    assert drivers.argv(Ipsets(NS, "n", "x\n", exist=False)) == ["ipset", "restore"]
    assert drivers.stdin(Command(NS, "n", ("ip", "-batch", "-"), "link add d type dummy\n")) == \
        "link add d type dummy\n"
    with pytest.raises(TypeError):
        drivers.argv(File("/f", "x", ""))


def test_stale_sets_render_as_one_ipset_restore() -> None:
    assert render([DestroyIpsets(NS, "n", ("A", "B"))]) == [
        f"ip netns exec {NS} ipset restore -exist <<'EOF'\ndestroy A\ndestroy B\nEOF"]


def test_the_first_failure_stops_the_batch_in_one_line() -> None:
    run = Runner({"nft": (1, "", "Error: syntax error\n  here\n")})
    with pytest.raises(drivers.ToolFailed) as e:
        drivers.apply(MIXED[3:], run=run, start=lambda d: 1)
    assert str(e.value) == f"nft in {NS} failed: Error: syntax error\n  here"
    assert e.value.argv == ("nft", "-f", "-") and e.value.netns == NS and e.value.stderr.startswith("Error")
    assert [argv[0] for _, argv, _ in run.calls] == ["sysctl", "ipset", "nft"]  # nothing after it ran


def test_files_get_the_state_directory_and_their_mode(tmp_path: Path) -> None:
    f = File("$EMU_STATE/c/ingress/nginx.conf", "x", 'pid "$EMU_STATE/c/ingress/nginx.pid";\n', 0o600)
    drivers.apply([f], run=Runner(), state_dir=str(tmp_path))
    out = tmp_path / "c" / "ingress" / "nginx.conf"
    assert out.read_text() == f'pid "{tmp_path}/c/ingress/nginx.pid";\n'
    assert out.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["nginx.conf"]  # no temporary file left


def test_daemons_get_the_state_directory(tmp_path: Path) -> None:
    started: list[Daemon] = []
    drivers.apply([Daemon("dns", "dns", "c.x", ("python3", "-m", "m", "--dir", "$EMU_STATE/c/dns"))],
                  run=Runner(), start=lambda d: started.append(d) or 7, state_dir=str(tmp_path))
    assert started == [Daemon("dns", "dns", "c.x", ("python3", "-m", "m", "--dir", f"{tmp_path}/c/dns"))]


# --- the syncs that go through the drivers ---------------------------------------------------------------------------


def _netpol_rules() -> rules.NodeRules:
    nr = rules.NodeRules("node-1", "1")
    nr.ipsets["KUBE-SRC-NEW"] = rules.IPSet("KUBE-SRC-NEW", "hash:ip", ("10.244.1.2",))
    nr.chains.append("KUBE-ROUTER-FORWARD")
    nr.rules.append("-A KUBE-ROUTER-FORWARD -j ACCEPT")
    return nr


def test_kube_routers_node_sync_is_sets_then_table_then_stale_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = "*filter\n:KUBE-ROUTER-FORWARD - [0:0]\n-A FORWARD -j KUBE-ROUTER-FORWARD\nCOMMIT\n"
    run = Runner({"iptables-nft-save": (0, saved, ""), "ipset list": (0, "KUBE-SRC-OLD\nKUBE-SRC-NEW\nother\n", "")})
    monkeypatch.setattr(tools, "run", run)
    nr = _netpol_rules()
    monkeypatch.setattr(npsync.rules, "generate", lambda inp, version: nr)
    inp = type("Input", (), {"node": "node-1"})()
    res, got = npsync.sync_node(NS, inp, "1", "nft")  # type: ignore[arg-type]
    cur = restore.Current(frozenset({"KUBE-ROUTER-FORWARD"}), ("-A FORWARD -j KUBE-ROUTER-FORWARD",),
                          frozenset({"KUBE-SRC-OLD", "KUBE-SRC-NEW"}))
    assert got is nr and (res.node, res.action, res.ipsets) == ("node-1", "sync", 1)
    assert run.calls == [
        (NS, ["iptables-nft-save", "-t", "filter"], None), (NS, ["ipset", "list", "-n"], None),
        (NS, ["ipset", "restore", "-exist"], restore.ipset_text(nr.ipsets)),
        (NS, ["iptables-nft-restore", "--noflush", "-w"], restore.iptables_text(nr, cur)),
        (NS, ["ipset", "restore", "-exist"], "destroy KUBE-SRC-OLD\n")]


def test_kube_routers_sync_words_a_failure_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Runner({"iptables-nft-restore": (2, "", "iptables-restore: line 3 failed\n")})
    monkeypatch.setattr(tools, "run", run)
    monkeypatch.setattr(npsync.rules, "generate", lambda inp, version: _netpol_rules())
    with pytest.raises(npsync.SyncError) as e:
        npsync.sync_node(NS, type("Input", (), {"node": "node-1"})(), "1", "nft")  # type: ignore[arg-type]
    assert str(e.value) == f"iptables-nft-restore --noflush in {NS} failed: iptables-restore: line 3 failed"
    with pytest.raises(npsync.SyncError) as e:
        monkeypatch.setattr(tools, "run", Runner({"ipset list": (1, "", "no ipset\n")}))
        npsync.current(NS, "nft")
    assert str(e.value) == f"ipset list in {NS} failed: no ipset"


STATE = NodeProxyState("node-1", (IP("172.18.0.2"),), ipaddress.IPv4Network("10.244.0.0/16"),
                       (ipaddress.IPv4Network("10.96.0.0/12"),),
                       ((ServicePort("ns", "web", "", "TCP", IP("10.96.0.20"), 80),
                         (Endpoint(IP("10.244.1.2"), 8080, "node-2"),)),))


def test_kube_proxys_first_syncs_run_exactly_the_dry_runs_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    for proxier, backend in ((proxiers.IPTABLES, "legacy"), (proxiers.NFTABLES, "nft")):
        run = Runner()
        monkeypatch.setattr(tools, "run", run)
        res = proxier.sync(NS, STATE, True, backend, None)
        (load,) = proxier.spec.render(STATE, backend)
        assert run.calls == [(NS, list(load.argv), load.stdin)]
        assert res.rules == load.stdin.count("\n")


def test_kube_proxys_later_iptables_sync_and_its_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Runner({"iptables-nft-save -t nat": (0, "*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\nCOMMIT\n", ""),
                  "iptables-nft-restore": (1, "", "iptables-restore: line 9 failed\n")})
    monkeypatch.setattr(tools, "run", run)
    with pytest.raises(SyncError) as e:
        proxiers.IPTABLES.sync(NS, STATE, False, "nft", None)
    assert str(e.value) == "iptables sync of node-1 failed: iptables-restore: line 9 failed"
    assert ipt.is_service_chain_name("KUBE-SVC-AAAAAAAAAAAAAAAA")
    existing: dict[str, set[str]] = {"filter": set(), "nat": {"KUBE-SVC-AAAAAAAAAAAAAAAA"}}
    assert run.calls[-1] == (NS, ["iptables-nft-restore", "--noflush", "-w"],
                             iptables_text.restore_text(STATE, existing))


def test_kube_proxys_partial_nftables_sync_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Runner()
    monkeypatch.setattr(tools, "run", run)
    proxiers.NFTABLES.sync(NS, STATE, False, "nft", STATE)
    text = nftables_sync.sync_text(STATE, nftables_sync.managed_names(STATE), first_sync=False, previous=STATE)
    assert run.calls == [(NS, list(modes.NFT_LOAD), text)]
