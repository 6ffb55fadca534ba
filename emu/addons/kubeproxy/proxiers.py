"""The Proxier seam: how Services are programmed on a node, one row per kube-proxy mode in one literal tuple,
`PROXIERS`.  Cluster preflight, the sync, `emu rules`, doctor, trace and flannel's node sysctls read their row
(`for_mode`) instead of branching on the mode.

A proxier is its mode (emu.addons.kubeproxy.modes: the pure part -- name, node sysctls, `render`, how doctor
compares it, what trace needs) plus its drivers: `preflight` (the kernel features and tools it needs, checked before
anything is built, as kube-proxy's CanUseIPVSProxier / nftables checks refuse to start), `sync` (one node, in its
namespace), `cleanup` (CleanupLeftovers) and `read_back` (its rules as its own tool prints them).  An iptables or
nftables sync is one tool run, the plan object the dry run prints for a first sync (emu.addons.kubeproxy.desired,
`plan_object`), applied by its driver (emu.apply.drivers); the IPVS sync stays netlink (emu.addons.kubeproxy.ipvs:
its steps read the node's addresses and IPVS table between writes, which a batch of objects cannot).

Adding a proxier is one module with its drivers and one row here.  An eBPF replacement of kube-proxy (Cilium-like
tc programs and pinned maps, issue 19) fits the same row: its mode renders the maps' contents as `bpftool` input
and sets `nat_outside_netfilter`; its preflight requires the kernel's BPF features; its sync attaches the programs
and updates the maps; cleanup detaches them; read_back dumps the maps for doctor.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import ipvs
from emu.addons.kubeproxy import iptables_text, modes, nftables_sync
from emu.addons.kubeproxy import nftables as nft
from emu.addons.kubeproxy.desired import plan_object
from emu.addons.kubeproxy.model import NodeProxyState, SyncError, SyncResult
from emu.apply import drivers, kernel, tools
from emu.errors import ClusterError
from emu.model.types import ProxyMode

# (node netns, state, first sync, iptables backend, the state of the last successful sync) -> what it wrote
Sync = Callable[[str, NodeProxyState, bool, str, NodeProxyState | None], SyncResult]


def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Proxier:
    """One proxier mode: its pure row (`spec`) and the drivers that apply it to a node."""

    spec: modes.Mode
    preflight: Callable[[], None]  # a ClusterError (one line) when this kernel or host cannot run it
    sync: Sync
    cleanup: Callable[[str], None] = _nothing  # remove what it left in a node namespace (CleanupLeftovers)

    @property
    def mode(self) -> ProxyMode:
        return self.spec.mode

    def read_back(self, ns: str, backend: str) -> str | None:
        """The rules it holds in the namespace, as its tool prints them (`spec.listing`); None when the tool
        failed (nothing there yet)."""
        return tools.output(ns, list(self.spec.listing(backend)))


def _load(ns: str, load: modes.Load, mode: ProxyMode, state: NodeProxyState, t0: float) -> SyncResult:
    """One tool run of a sync, applied as the plan object it is (the one the dry run prints for a first sync) by its
    driver; a failure is the sync's one line, naming the node."""
    try:
        drivers.apply([plan_object(ns, state.node, load)])
    except drivers.ToolFailed as e:
        raise SyncError(f"{mode.value} sync of {state.node} failed: {e.stderr.strip()[:2000]}") from None
    return SyncResult(state.node, time.monotonic() - t0, load.stdin.count("\n"))


# --------------------------------------------------------------------------------------------- iptables


def iptables_chains(ns: str, backend: str = "nft") -> dict[str, set[str]]:
    """The per-service chains kube-proxy owns that the kernel holds now, by table (to delete stale ones)."""
    out: dict[str, set[str]] = {}
    for table in ("filter", "nat"):
        saved = tools.run(ns, [f"iptables-{backend}-save", "-t", table]).stdout
        out[table] = {line[1:].split()[0] for line in saved.splitlines()
                      if line.startswith(":") and ipt.is_service_chain_name(line[1:])}
    return out


def _sync_iptables(ns: str, state: NodeProxyState, first: bool, backend: str,
                   previous: NodeProxyState | None) -> SyncResult:
    """kube-proxy's jump rules (first sync), then one `iptables-restore --noflush` of the full ruleset."""
    t0 = time.monotonic()
    existing: dict[str, set[str]] = {"nat": set(), "filter": set()} if first else iptables_chains(ns, backend)
    text = (ipt.first_sync_jumps() if first else "") + iptables_text.restore_text(state, existing)
    return _load(ns, modes.Load(modes.iptables_restore(backend), text), ProxyMode.IPTABLES, state, t0)


# --------------------------------------------------------------------------------------------- nftables


def nft_objects(ns: str) -> set[str]:
    """Chains and sets now in `table ip kube-proxy` (empty when the table does not exist yet)."""
    listed = tools.output(ns, ["nft", "-j", "list", "table", nft.FAMILY, nft.TABLE])
    if listed is None:
        return set()
    names = set()
    for item in json.loads(listed).get("nftables", []):
        for kind in ("chain", "set", "map"):
            if kind in item:
                names.add(item[kind]["name"])
    return names


def _sync_nftables(ns: str, state: NodeProxyState, first: bool, backend: str,
                   previous: NodeProxyState | None) -> SyncResult:
    """One `nft -f` transaction; with `previous`, only the services that changed are rewritten, and what exists is
    known without listing the table."""
    t0 = time.monotonic()
    existing = set() if first else nftables_sync.managed_names(previous) if previous is not None else nft_objects(ns)
    text = nftables_sync.sync_text(state, existing, first_sync=first, previous=previous)
    return _load(ns, modes.Load(modes.NFT_LOAD, text), ProxyMode.NFTABLES, state, t0)


def _nftables_preflight() -> None:
    kernel.require("nftables", "kube-proxy nftables mode")


def _nftables_cleanup(ns: str) -> None:
    tools.run(ns, list(modes.NFT_LOAD), nft.cleanup_text())  # nothing to delete is fine


# --------------------------------------------------------------------------------------------- ipvs


def _ipvs_preflight() -> None:
    kernel.require("ip_vs", "kube-proxy ipvs mode")
    kernel.require("dummy", "kube-proxy ipvs mode (kube-ipvs0)")
    if shutil.which("ipset") is None:
        raise ClusterError("kube-proxy ipvs mode needs the ipset tool (run tools/setup)")


def _sync_ipvs(ns: str, state: NodeProxyState, first: bool, backend: str,
               previous: NodeProxyState | None) -> SyncResult:
    return ipvs.sync_node(ns, state, first, backend, previous)


# --------------------------------------------------------------------------------------------- the table


IPTABLES = Proxier(modes.IPTABLES, preflight=_nothing, sync=_sync_iptables)
NFTABLES = Proxier(modes.NFTABLES, preflight=_nftables_preflight, sync=_sync_nftables, cleanup=_nftables_cleanup)
IPVS = Proxier(modes.IPVS, preflight=_ipvs_preflight, sync=_sync_ipvs)

PROXIERS = (IPTABLES, NFTABLES, IPVS)


def for_mode(mode: ProxyMode) -> Proxier:
    """The proxier of `mode`."""
    for p in PROXIERS:
        if p.mode is mode:
            return p
    raise SyncError(f"proxy mode {mode.value} is not implemented by this sync")
