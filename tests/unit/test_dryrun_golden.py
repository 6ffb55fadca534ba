"""Every topology's whole dry run (`emu up --dry-run`, emu.cluster.dryrun.script) against its golden file,
tests/golden/dryrun/<topology>.txt: the network part, then the pod network's files, the agent, kube-proxy,
NetworkPolicy, DNS and Ingress, as the real tools take them.

The goldens are emu's own output, reviewed as diffs: a change to any renderer shows up here as the lines it changes.
Regenerate them with

    EMU_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_dryrun_golden.py

(the files are written, then compared as usual), and read `git diff tests/golden` before committing.  When the goldens
were first made, their kube-proxy (iptables and nftables modes) and NetworkPolicy sections were fed to the real tools
(iptables-nft-restore 1.8.9, nft 1.0.6, ipset 7.17) in a throwaway namespace, their nginx.conf files passed
`nginx -t` (1.22.1), and their files were written by bash and read back byte for byte: by hand, not by this test.

Two things a dry run reads from the machine are pinned, so the goldens are the same everywhere: the state directory
(EMU_STATE_DIR=/run/emu, the default: `plugin: cni` dataDirs are under it) and the CNI plugin binaries (taken to be in
the first binDir, as tools/setup installs them).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from emu.addons.dns import desired as dns
from emu.addons.dns import records
from emu.addons.ingress import desired as ingress
from emu.addons.kubeproxy import desired as kubeproxy
from emu.addons.kubeproxy import inputs, modes
from emu.addons.netpol import desired as netpol
from emu.addons.netpol import resolve, restore, rules
from emu.cluster import dryrun, lifecycle, workload
from emu.model.types import ProxyMode
from emu.network.cni import dryrun as cni_dryrun
from emu.plan import content

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden" / "dryrun"
REGEN = os.environ.get("EMU_REGEN_GOLDEN") == "1"
HOW = "EMU_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_dryrun_golden.py"


@pytest.fixture(autouse=True)
def _machine_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMU_STATE_DIR", "/run/emu")
    monkeypatch.setattr(cni_dryrun, "find_plugin", lambda ptype, bin_dirs: os.path.join(bin_dirs[0], ptype))


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda p: p.stem)
def test_dry_run_matches_its_golden(topology: Path) -> None:
    text = dryrun.script(str(topology))
    golden = GOLDEN / f"{topology.stem}.txt"
    if REGEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{topology.name} has no dry-run golden {golden.relative_to(ROOT)}: {HOW}"
    want = golden.read_text()
    if text != want:
        diff = [f"line {i + 1}:\n  golden: {a!r}\n  now:    {b!r}"
                for i, (a, b) in enumerate(zip(want.splitlines(), text.splitlines())) if a != b][:3]
        pytest.fail(f"emu up --dry-run {topology.name} differs from {golden.relative_to(ROOT)} "
                    f"({len(want.splitlines())} lines, now {len(text.splitlines())}); if the change is meant, "
                    f"regenerate: {HOW}\n" + "\n".join(diff))


def test_every_golden_has_its_topology() -> None:
    stale = sorted(p.name for p in GOLDEN.glob("*.txt") if not (ROOT / "topologies" / f"{p.stem}.yaml").exists())
    assert not stale, f"goldens without a topology: {stale} (delete them)"


def test_the_network_part_comes_first_unchanged() -> None:
    """The components are added after the network part, which stays what `emu up --dry-run` printed before."""
    path = "topologies/flannel-vxlan.yaml"
    assert dryrun.script(path).startswith(dryrun.network_part(dryrun.planned(path)))


# --- the pieces: each component's desired state is computed by the functions its apply side uses -----------------


def _planned(path: str, **cluster: object) -> lifecycle.Cluster:
    """The plan of a topology, with fields of its Cluster spec replaced (e.g. another proxy mode)."""
    cl = dryrun.planned(path)
    if not cluster:
        return cl
    c = cl.topology.cluster
    proxy = dataclasses.replace(c.proxy, **{k: v for k, v in cluster.items() if k == "mode"})
    spec = dataclasses.replace(c, proxy=proxy, **{k: v for k, v in cluster.items() if k != "mode"})
    return dataclasses.replace(cl, topology=dataclasses.replace(cl.topology, cluster=spec))


@pytest.mark.parametrize("argv, kind", [
    (("ipset", "restore"), content.Ipsets), (("iptables-legacy-restore", "--noflush", "-w"), content.Ruleset),
    (("nft", "-f", "-"), content.Ruleset), (("ipvsadm", "--restore"), content.Ipvs),
    (("sysctl", "-w", "net.ipv4.vs.conntrack=1"), content.Command), (("ip", "-batch", "-"), content.Command)])
def test_each_tool_run_of_a_sync_is_the_plan_object_of_its_kind(argv: tuple[str, ...], kind: type) -> None:
    o = kubeproxy.plan_object("c.node-1", "node-1", modes.Load(argv, "text\n"))
    assert type(o) is kind and o.netns == "c.node-1" and o.owner == "node-1"


@pytest.mark.parametrize("mode, kinds", [
    (ProxyMode.IPTABLES, [content.Ruleset]), (ProxyMode.NFTABLES, [content.Ruleset]),
    (ProxyMode.IPVS, [content.Command, content.Command, content.Ipvs, content.Ipsets, content.Ruleset])])
def test_kube_proxy_is_the_modes_first_sync_on_every_node(mode: ProxyMode, kinds: list[type]) -> None:
    cl = _planned("topologies/services.yaml", mode=mode, iptables_backend="legacy")
    objs = kubeproxy.desired(cl.topology, cl.allocations, cl.plan)
    states = inputs.node_states(cl.topology, cl.allocations)
    for n in cl.plan.nodes:
        mine = [o for o in objs if o.owner == n.name]
        assert [type(o) for o in mine] == kinds and {o.netns for o in mine} == {n.netns}
        loads = modes.for_mode(mode).render(states[n.name], "legacy")
        assert [getattr(o, "text", getattr(o, "stdin", "")) for o in mine] == [ld.stdin for ld in loads]
    assert f"kube-proxy ({mode.value}) on node-1" in [h for h, _ in dryrun.sections(cl)]


def test_network_policy_is_kube_routers_first_sync_and_nothing_without_a_policy() -> None:
    bare = dryrun.planned("topologies/services.yaml")
    assert netpol.desired(bare.topology, bare.allocations, bare.plan) == ()
    cl = dryrun.planned("topologies/seed-guide.yaml")
    objs = netpol.desired(cl.topology, cl.allocations, cl.plan)
    inputs_ = resolve.node_inputs(cl.topology, cl.allocations)
    for n in cl.plan.nodes:
        nr = rules.generate(inputs_[n.name], netpol.VERSION)
        sets, table = [o for o in objs if o.owner == n.name]
        assert isinstance(sets, content.Ipsets) and sets.exist and sets.text == restore.ipset_text(nr.ipsets)
        assert isinstance(table, content.Ruleset) and table.tool == "iptables-nft-restore --noflush -w"
        assert table.text == restore.iptables_text(nr, netpol.NOTHING_YET) and table.text.startswith("*filter\n")


@pytest.mark.parametrize("path", ["topologies/dns.yaml", "topologies/seed-guide.yaml", "topologies/hostnetwork.yaml"])
def test_dns_files_are_the_ones_the_addon_writes(path: str) -> None:
    """The dry run's files are what the addon's functions compute (emu.addons.dns.addon writes them)."""
    cl = dryrun.planned(path)
    files = {o.path: o.text for o in dns.desired(cl) if isinstance(o, content.File)}
    for ns, text in dns.resolv_confs(cl).items():
        assert files[f"/etc/netns/{ns}/resolv.conf"] == text
    if dns.config(cl) is not None:
        zone = json.loads(files[f"$EMU_STATE/{cl.name}/dns/zone.json"])
        assert zone == records.snapshot(cl, dns.config(cl), serial=0)


def test_the_dns_server_runs_only_with_the_coredns_configmap() -> None:
    assert [o for o in dns.desired(dryrun.planned("topologies/services.yaml")) if isinstance(o, content.Daemon)] == []
    cl = dryrun.planned("topologies/dns.yaml")
    (server,) = [o for o in dns.desired(cl) if isinstance(o, content.Daemon)]
    assert server.argv == ("python3", "-m", "emu.addons.dns.server", "--dir", "$EMU_STATE/dns/dns")


def test_ingress_serves_nginx_in_the_controller_pod_with_its_config() -> None:
    assert ingress.desired(dryrun.planned("topologies/services.yaml")) == ()
    cl = dryrun.planned("topologies/ingress.yaml")
    objs = ingress.desired(cl)
    conf = next(o for o in objs if isinstance(o, content.File) and o.path.endswith("/nginx.conf"))
    assert conf.mode == 0o600 and 'pid "$EMU_STATE/ingress/ingress/nginx.pid";' in conf.text
    nginx = objs[-1]
    assert isinstance(nginx, content.Daemon) and nginx.netns == cl.plan.pod(nginx.owner).netns.name
    assert nginx.argv[-2:] == ("-g", "daemon off; master_process on;")
    assert "$EMU_STATE/ingress/ingress/certs/default.key" in ingress.generated(cl)


def test_the_agent_serves_every_declared_port_sctp_only_where_the_kernel_has_it() -> None:
    cl = dryrun.planned("topologies/netpol-model.yaml")
    with_sctp = workload.endpoints(cl.topology, cl.plan, sctp=True)
    without = workload.endpoints(cl.topology, cl.plan, sctp=False)
    assert {p["protocol"] for e in with_sctp for p in e["ports"]} == {"TCP", "UDP", "SCTP"}
    assert {p["protocol"] for e in without for p in e["ports"]} == {"TCP", "UDP"}
