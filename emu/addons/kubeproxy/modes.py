"""kube-proxy's proxier modes as data: for each `--proxy-mode`, what the planner, the logs, `emu rules`, doctor and
trace need to know of it, and `render`, the rules its first sync writes into an empty node as the real tools take
them.  Pure: no subprocess, no kernel access (the planner reaches this through flannel's node sysctls);
`emu.addons.kubeproxy.proxiers` adds the drivers that apply a mode and read it back.

Upstream: cmd/kube-proxy/app/server_linux.go picks one proxier per mode and logs "Using iptables proxy", "Using
nftables Proxier" or "Using ipvs Proxier"; pkg/proxy/iptables/proxier.go sets net.ipv4.conf.all.route_localnet=1
for localhost NodePorts (emu sets it in the node plan, before any pod exists).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import ipvs_desired
from emu.addons.kubeproxy import iptables_text, nftables_sync
from emu.addons.kubeproxy.model import NodeProxyState
from emu.addons.kubeproxy.nftables import FAMILY, TABLE
from emu.errors import EmuError
from emu.model.types import ProxyMode

LAYER = "plan"

NFT_LOAD = ("nft", "-f", "-")


@dataclass(frozen=True, slots=True)
class Load:
    """One run of a real tool with its input (`iptables-restore`, `nft -f`, `ipset restore`, ...): what a sync runs
    and what a dry run prints."""

    argv: tuple[str, ...]
    stdin: str = ""


@dataclass(frozen=True, slots=True)
class Mode:
    """One proxier mode as a row of the table: every place that used to branch on the mode reads its column."""

    mode: ProxyMode
    name: str  # the proxier as kube-proxy names it when it picks it: "Using <name>"
    node_sysctls: tuple[tuple[str, str], ...]  # set on every node by the node plan, before the proxier runs
    render: Callable[[NodeProxyState, str], tuple[Load, ...]]  # (state, iptables backend): a first sync, in order
    listing: Callable[[str], tuple[str, ...]]  # iptables backend -> the argv printing its rules back (doctor)
    listing_what: str  # how doctor names that output ("{backend}" is the iptables backend)
    compared_as: str | None  # the text doctor diffs desired and live in: "nft" | "iptables-save"; None: not yet
    not_compared: str  # why doctor does not compare it (when compared_as is None)
    rules: Callable[[str, str | None], tuple[str, ...]]  # `emu rules`: (iptables backend, -t TABLE) -> argv
    log_table: str  # its sync log line: "Reloading service <log_table> data"
    partial_sync: bool  # a sync after the first rewrites only the services that changed (else every sync is full)
    service_rules_in_iptables: bool  # Service NAT is iptables rules: tracing them needs the nft iptables backend
    nat_outside_netfilter: bool  # Services are rewritten outside netfilter's rules (IPVS): trace names no rule


def iptables_restore(backend: str) -> tuple[str, ...]:
    """How every sync loads iptables rules: `iptables-<backend>-restore --noflush -w`, the node's backend."""
    return (f"iptables-{backend}-restore", "--noflush", "-w")


def _iptables_save(backend: str) -> tuple[str, ...]:
    return (f"iptables-{backend}-save",)


def _iptables_rules(backend: str, table: str | None) -> tuple[str, ...]:
    return _iptables_save(backend) + (("-t", table) if table else ())


def _render_iptables(state: NodeProxyState, backend: str) -> tuple[Load, ...]:
    """The jump rules and canary chains, then the full restore, in one `iptables-restore` (a first sync)."""
    text = ipt.first_sync_jumps() + iptables_text.restore_text(state, {"nat": set(), "filter": set()})
    return (Load(iptables_restore(backend), text),)


def _render_nftables(state: NodeProxyState, backend: str) -> tuple[Load, ...]:
    """One `nft -f` transaction (a first sync)."""
    return (Load(NFT_LOAD, nftables_sync.sync_text(state)),)


def _render_ipvs(state: NodeProxyState, backend: str) -> tuple[Load, ...]:
    """A first sync, in the order emu.addons.kubeproxy.ipvs applies it: NewProxier's sysctls, kube-ipvs0 with its
    addresses, the virtual servers (netlink; shown as ipvsadm input), the ipsets, the iptables rules.  The node's
    addresses are taken to be its node IPs (a sync reads them from the kernel)."""
    want = ipvs_desired.desired(state)
    return (Load(("sysctl", "-w", *(f"{path.replace('/', '.')}={value}" for path, value in want.sysctls))),
            Load(("ip", "-batch", "-"), ipvs_desired.dummy_batch(want)),
            Load(("ipvsadm", "--restore"), ipvs_desired.ipvsadm_text(want)),
            Load(("ipset", "restore"), ipvs_desired.ipset_restore_text(want)),
            Load(iptables_restore(backend), want.jumps + want.iptables))


IPTABLES = Mode(
    ProxyMode.IPTABLES, "iptables proxy", node_sysctls=(("net.ipv4.conf.all.route_localnet", "1"),),
    render=_render_iptables, listing=_iptables_save, listing_what="the output of iptables-{backend}-save",
    compared_as="iptables-save", not_compared="", rules=_iptables_rules, log_table="iptables",
    partial_sync=False, service_rules_in_iptables=True, nat_outside_netfilter=False)
NFTABLES = Mode(
    ProxyMode.NFTABLES, "nftables Proxier", node_sysctls=(),
    render=_render_nftables, listing=lambda backend: ("nft", "list", "table", FAMILY, TABLE),
    listing_what=f"table {FAMILY} {TABLE}", compared_as="nft", not_compared="",
    rules=lambda backend, table: ("nft", "list", "ruleset"), log_table="nftables",
    partial_sync=True, service_rules_in_iptables=False, nat_outside_netfilter=False)
IPVS = Mode(
    ProxyMode.IPVS, "ipvs Proxier", node_sysctls=(),  # NewProxier's own sysctls are written by its first sync
    render=_render_ipvs, listing=_iptables_save, listing_what="the output of iptables-{backend}-save",
    compared_as=None, not_compared="ipvs mode: virtual servers and ipsets are not compared yet "
                                   "(emu rules node/NAME shows the iptables part)",
    rules=_iptables_rules, log_table="iptables",
    partial_sync=False, service_rules_in_iptables=False, nat_outside_netfilter=True)

MODES = (IPTABLES, NFTABLES, IPVS)


def for_mode(mode: ProxyMode) -> Mode:
    """The row of `mode`."""
    for m in MODES:
        if m.mode is mode:
            return m
    raise EmuError(f"proxy mode {mode.value} has no proxier")
