"""kube-proxy's sync loop over the nodes: each node whose input changed gets one sync by its proxier
(emu.addons.kubeproxy.proxiers: iptables mode ensures its jump rules, then one `iptables-restore --noflush`; nftables
mode one `nft -f` transaction; ipvs mode netlink, `ipset restore` and `iptables-restore`).  After a sync, stale UDP
conntrack entries are flushed as kube-proxy's conntrack cleanup does, and each sync is a line of the node's
kube-proxy log."""
from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

from emu.apply import tools
from emu.model.types import ProxyMode
from emu.addons.kubeproxy import proxiers
# SyncError and SyncResult are named here too (kpsync.SyncError, kpsync.SyncResult)
from emu.addons.kubeproxy.model import NodeProxyState, SyncError, SyncResult, categorize

LOG_FILE = "kube-proxy.log"  # per node, under <record>/nodes/<node>/


def sync_node(ns: str, state: NodeProxyState, mode: ProxyMode, first: bool, backend: str = "nft",
              previous: NodeProxyState | None = None) -> SyncResult:
    """One sync of one node by the proxier of `mode`.  `previous` is the state of the node's last successful sync
    (nftables mode then rewrites only the services that changed and knows what it created without listing the
    table)."""
    return proxiers.for_mode(mode).sync(ns, state, first, backend, previous)


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
        tools.run(ns, argv)  # exit 1 means "0 flow entries deleted": fine
    return cmds


def cleanup(ns: str, mode: ProxyMode) -> None:
    """What the proxier of `mode` leaves behind in the node namespace, removed (CleanupLeftovers)."""
    proxiers.for_mode(mode).cleanup(ns)


def sync_all(states: Iterable[tuple[str, NodeProxyState, NodeProxyState | None]], mode: ProxyMode,
             first: bool, backend: str = "nft", log_dir: str | None = None) -> list[SyncResult]:
    """Sync every node whose state changed; with `log_dir`, each sync (or failure) is one line of
    <log_dir>/<node>/kube-proxy.log, what `emu logs -n kube-system kube-proxy-...` shows."""
    out = []
    spec = proxiers.for_mode(mode).spec
    for ns, state, old in states:
        if not first and old == state:
            continue
        if first:  # what server_linux.go logs when it picks the proxier
            _log(log_dir, state.node, f'"Using {spec.name}"')
        try:
            res = sync_node(ns, state, mode, first, backend, old)
        except SyncError as e:
            _log(log_dir, state.node, f'"Sync failed" mode="{mode.value}" err="{e}"')
            raise
        flushed = conntrack_cleanup(ns, old, state)
        out.append(res)
        full = first or old is None or not spec.partial_sync  # nftables rewrites changed services only
        # the proxier's own two lines (its V(2) "Reloading service ... data" and "SyncProxyRules complete"), with
        # what emu adds: full or partial, the rule count and the conntrack entries deleted
        _log(log_dir, state.node, f'"Reloading service {spec.log_table} data" numServices={len(state.services)} '
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
