"""Writing a node's proxier state into its namespace with the real tools, as kube-proxy does: iptables mode ensures
its jump rules, then one `iptables-restore --noflush`; nftables mode one `nft -f` transaction.  After a sync, stale
UDP conntrack entries are flushed as kube-proxy's conntrack cleanup does."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from collections.abc import Iterable

from emu.apply import netns
from emu.model.types import ProxyMode
from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import ipvs
from emu.addons.kubeproxy import nftables as nft
from emu.addons.kubeproxy.model import NodeProxyState, SyncError, SyncResult, categorize  # the two named here too: kpsync.SyncError

LOG_FILE = "kube-proxy.log"  # per node, under <record>/nodes/<node>/
_PROXIER_NAMES = {ProxyMode.IPTABLES: "iptables proxy", ProxyMode.NFTABLES: "nftables Proxier",
                  ProxyMode.IPVS: "ipvs Proxier"}
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")


def _run(ns: str, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return netns.run_in(ns, lambda: subprocess.run(argv, input=stdin, capture_output=True, text=True))


def iptables_chains(ns: str, backend: str = "nft") -> dict[str, set[str]]:
    """The per-service chains kube-proxy owns that the kernel holds now, by table (to delete stale ones)."""
    out: dict[str, set[str]] = {}
    for table in ("filter", "nat"):
        saved = _run(ns, [f"iptables-{backend}-save", "-t", table]).stdout
        out[table] = {line[1:].split()[0] for line in saved.splitlines()
                      if line.startswith(":") and line[1:].startswith(SERVICE_CHAIN_PREFIXES)}
    return out


def nft_objects(ns: str) -> set[str]:
    """Chains and sets now in `table ip kube-proxy` (empty when the table does not exist yet)."""
    r = _run(ns, ["nft", "-j", "list", "table", "ip", nft.TABLE])
    if r.returncode != 0:
        return set()
    names = set()
    for item in json.loads(r.stdout).get("nftables", []):
        for kind in ("chain", "set", "map"):
            if kind in item:
                names.add(item[kind]["name"])
    return names


def first_sync_jumps() -> str:
    """kube-proxy's EnsureChain + EnsureRule(Prepend) for its jump rules and canary chains, for a namespace we just
    created (so none exist yet): as iptables-restore lines, one `-I CHAIN 1` per jump in kube-proxy's order, which
    leaves the same rules in the same order as its `iptables -C || iptables -I` calls, in one exec instead of ~40."""
    tables: dict[str, list[str]] = {}
    for table, chain in ipt.CANARY_CHAINS:
        tables.setdefault(table, []).append(f":{chain} - [0:0]")
    for step in ipt.ensure_steps():
        lines = tables.setdefault(step.table, [])
        decl = f":{step.target} - [0:0]"
        if decl not in lines:
            lines.append(decl)
    for step in ipt.ensure_steps():
        args = step.insert[step.insert.index("-I") + 3:]  # after "-I CHAIN 1"
        rule = ipt.jump_rule(step.table, step.chain, args)
        tables[step.table].append(rule.replace(f"-A {step.chain} ", f"-I {step.chain} 1 ", 1))
    return "".join(f"*{t}\n" + "\n".join(lines) + "\nCOMMIT\n" for t, lines in tables.items())


def sync_node(ns: str, state: NodeProxyState, mode: ProxyMode, first: bool, backend: str = "nft",
              previous: NodeProxyState | None = None) -> SyncResult:
    """One sync of one node.  `previous` is the state of the node's last successful sync (nftables mode then
    rewrites only the services that changed and knows what it created without listing the table)."""
    t0 = time.monotonic()
    if mode is ProxyMode.IPTABLES:
        existing: dict[str, set[str]] = {"nat": set(), "filter": set()} if first else iptables_chains(ns, backend)
        text = (first_sync_jumps() if first else "") + ipt.restore_text(state, existing)
        r = _run(ns, [f"iptables-{backend}-restore", "--noflush", "-w"], text)
    elif mode is ProxyMode.NFTABLES:
        existing = set() if first else nft.managed_names(previous) if previous is not None else nft_objects(ns)
        text = nft.sync_text(state, existing, first_sync=first, previous=previous)
        r = _run(ns, ["nft", "-f", "-"], text)
    elif mode is ProxyMode.IPVS:
        return ipvs.sync_node(ns, state, first, backend, previous)
    else:
        raise SyncError(f"proxy mode {mode.value} is not implemented by this sync")
    if r.returncode != 0:
        raise SyncError(f"{mode.value} sync of {state.node} failed: {r.stderr.strip()[:2000]}")
    return SyncResult(state.node, time.monotonic() - t0, text.count("\n"))


def _udp_targets(state: NodeProxyState) -> dict[tuple[str, int], set[str]]:
    """(service IP, port) -> endpoint IPs this node sends UDP to, for every address a UDP service answers on."""
    out: dict[tuple[str, int], set[str]] = {}
    for svc, eps in state.services:
        if svc.protocol != "UDP":
            continue
        ips = {str(e.ip) for e in categorize(eps, svc, state.node).all_reachable}
        addrs = [(str(svc.cluster_ip), svc.port)] + [(str(a), svc.port) for a in
                                                       (*svc.external_ips, *svc.load_balancer_ips)]
        if svc.node_port:
            addrs.append(("nodeport", svc.node_port))
        for a in addrs:
            out[a] = ips
    return out


def conntrack_cleanup(ns: str, old: NodeProxyState | None, new: NodeProxyState) -> list[list[str]]:
    """kube-proxy's cleanup: for a UDP service whose endpoint went away, delete the flows DNATed to it; for one
    that had no endpoints and now has some, delete its flows (they were answered with REJECT)."""
    if old is None:
        return []
    before, after = _udp_targets(old), _udp_targets(new)
    cmds = []
    for (addr, port), eps in after.items():
        prev = before.get((addr, port), set())
        match = ["-p", "udp", "--dport", str(port)] if addr == "nodeport" else \
            ["--orig-dst", addr, "-p", "udp", "--dport", str(port)]
        if not prev and eps:
            cmds.append(["conntrack", "-D", *match])
        for gone in sorted(prev - eps):
            cmds.append(["conntrack", "-D", *match, "--dst-nat", gone])
    for (addr, port), prev in before.items():
        if (addr, port) not in after and addr != "nodeport":
            cmds.append(["conntrack", "-D", "--orig-dst", addr, "-p", "udp", "--dport", str(port)])
    for argv in cmds:
        _run(ns, argv)  # exit 1 means "0 flow entries deleted": fine
    return cmds


def cleanup(ns: str, mode: ProxyMode) -> None:
    if mode is ProxyMode.NFTABLES:
        _run(ns, ["nft", "-f", "-"], nft.cleanup_text())


def sync_all(states: Iterable[tuple[str, NodeProxyState, NodeProxyState | None]], mode: ProxyMode,
             first: bool, backend: str = "nft", log_dir: str | None = None) -> list[SyncResult]:
    """Sync every node whose state changed; with `log_dir`, each sync (or failure) is one line of
    <log_dir>/<node>/kube-proxy.log, what `emu logs -n kube-system kube-proxy-...` shows."""
    out = []
    for ns, state, old in states:
        if not first and old == state:
            continue
        if first:  # what server_linux.go logs when it picks the proxier
            _log(log_dir, state.node, f'"Using {_PROXIER_NAMES[mode]}"')
        try:
            res = sync_node(ns, state, mode, first, backend, old)
        except SyncError as e:
            _log(log_dir, state.node, f'"Sync failed" mode="{mode.value}" err="{e}"')
            raise
        flushed = conntrack_cleanup(ns, old, state)
        out.append(res)
        full = first or old is None or mode is not ProxyMode.NFTABLES  # nftables rewrites changed services only
        # the proxier's own two lines (its V(2) "Reloading service ... data" and "SyncProxyRules complete"), with
        # what emu adds: full or partial, the rule count and the conntrack entries deleted
        table = "nftables" if mode is ProxyMode.NFTABLES else "iptables"
        _log(log_dir, state.node, f'"Reloading service {table} data" numServices={len(state.services)} '
                                  f'numEndpoints={sum(len(eps) for _, eps in state.services)} '
                                  f'sync="{"full" if full else "partial"}" rules={res.rules} '
                                  f'conntrackDeletes={len(flushed)}')
        _log(log_dir, state.node, f'"SyncProxyRules complete" elapsed="{res.seconds * 1000:.1f}ms"')
    return out


def _log(log_dir: str | None, node: str, text: str) -> None:
    """One line of the node's kube-proxy log, with a local ISO timestamp (kube-proxy itself logs through klog)."""
    if log_dir is None:
        return
    d = os.path.join(log_dir, node)
    os.makedirs(d, exist_ok=True)
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="microseconds")
    with open(os.path.join(d, LOG_FILE), "a") as f:
        f.write(f"{stamp} {text}\n")
