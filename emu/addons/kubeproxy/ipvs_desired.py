"""kube-proxy's IPVS proxier, its desired state: what `pkg/proxy/ipvs/proxier.go` (syncProxyRules, syncService,
syncEndpoint) and `pkg/proxy/ipvs/ipset.go` leave on one node after a sync, re-implemented.

`desired()` is pure: from a node's NodeProxyState it computes everything kube-proxy would leave in the kernel --
the addresses bound to the `kube-ipvs0` dummy device, the IPVS virtual servers with their real servers, the ipsets
with their entries (`ipset_restore_text()` turns them into one `ipset restore` input), the iptables-restore text
(`*nat` then `*filter`, as upstream concatenates its buffers, from `ipvs_rules`), the sysctls NewProxier ensures
and, for a first sync, the `iptablesJumpChain` rules as restore lines.  `emu.addons.kubeproxy.ipvs` writes it into a
node's namespace.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from emu.addons.kubeproxy.ipvs_names import (BITMAP_PORT, CLUSTER_IP, CONN_REUSE_FIXED_KERNEL, CONN_REUSE_MIN_KERNEL,
    DEFAULT_SCHEDULER, DUMMY_DEVICE, EXTERNAL_IP, EXTERNAL_IP_LOCAL, FLAG_PERSISTENT, HEALTH_CHECK_NODE_PORT,
    IPSET_BITMAP_RANGE, IPSET_HASH_OPTIONS, IPSET_INFO, IPVS_IPS, LOAD_BALANCER, LOAD_BALANCER_FW, LOAD_BALANCER_LOCAL,
    LOAD_BALANCER_SOURCE_CIDR, LOAD_BALANCER_SOURCE_IP, LOOP_BACK, NODE_PORT_LOCAL_SCTP, NODE_PORT_LOCAL_TCP,
    NODE_PORT_LOCAL_UDP, NODE_PORT_SCTP, NODE_PORT_TCP, NODE_PORT_UDP, SYSCTL_ARP_ANNOUNCE, SYSCTL_ARP_IGNORE,
    SYSCTL_CONN_REUSE, SYSCTL_EXPIRE_NODEST_CONN, SYSCTL_EXPIRE_QUIESCENT_TEMPLATE, SYSCTL_FORWARD, SYSCTL_VS_CONNTRACK,
    Options)
from emu.addons.kubeproxy.ipvs_rules import Text, first_sync_jumps, iptables_text
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort, categorize

LAYER = "plan"

IPv4Address = ipaddress.IPv4Address


@dataclass(frozen=True, order=True, slots=True)
class RealServer:
    """utilipvs.RealServer: an endpoint behind a virtual server (weight 1 = active, 0 = being drained)."""

    ip: IPv4Address
    port: int
    weight: int = 1

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """utilipvs.VirtualServer with the real servers syncEndpoint gives it, and what it was made for."""

    address: IPv4Address
    protocol: str  # "TCP" | "UDP" | "SCTP"
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    flags: int = 0  # FLAG_PERSISTENT for ClientIP affinity
    timeout: int = 0  # persistence timeout (stickyMaxAgeSeconds)
    real_servers: tuple[RealServer, ...] = ()
    service: str = ""  # "ns/name:port" (ServicePortName.String())
    kind: str = ""  # "cluster-ip" | "external-ip" | "load-balancer" | "node-port"

    @property
    def key(self) -> tuple[IPv4Address, str, int]:
        return (self.address, self.protocol, self.port)

    @property
    def persistent(self) -> bool:
        return bool(self.flags & FLAG_PERSISTENT)

    def __str__(self) -> str:
        """VirtualServer.String(): "ip:port/PROTOCOL"."""
        return f"{self.address}:{self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class IPSet:
    """One of kube-proxy's ipsets with the entries it holds after a sync (entry strings as Entry.String())."""

    name: str
    set_type: str
    comment: str
    entries: tuple[str, ...] = ()

    def create_line(self) -> str:
        """createSet's arguments (no comment extension: the comment only shows up in iptables rules)."""
        opts = IPSET_HASH_OPTIONS if self.set_type.startswith("hash:") else f"range {IPSET_BITMAP_RANGE}"
        return f"create {self.name} {self.set_type} {opts} -exist"


@dataclass(frozen=True, slots=True)
class IpvsDesired:
    """Everything one node's IPVS proxier leaves in the kernel after a sync."""

    node: str
    bind_addresses: tuple[IPv4Address, ...]  # on kube-ipvs0, each /32
    virtual_servers: tuple[VirtualServer, ...]
    ipsets: tuple[IPSet, ...]  # all of ipsetInfo, in its order, empty ones included
    iptables: str  # iptables-restore --noflush input: *nat, then *filter
    sysctls: tuple[tuple[str, str], ...]  # (path under /proc/sys, value)
    jumps: str  # iptablesJumpChain as restore lines, for a first sync
    node_port_addresses: tuple[IPv4Address, ...] = ()  # where NodePort virtual servers listen

    def ipset(self, name: str) -> IPSet:
        return next(s for s in self.ipsets if s.name == name)

    def virtual_server(self, address: str | IPv4Address, protocol: str, port: int) -> VirtualServer:
        key = (IPv4Address(address), protocol.upper(), port)
        return next(v for v in self.virtual_servers if v.key == key)


@dataclass
class _Sync:
    """What one syncProxyRules pass accumulates (activeEntries per set, activeIPVSServices, activeBindAddrs)."""

    node: str
    node_ip: IPv4Address | None
    node_addresses: tuple[IPv4Address, ...]
    opts: Options
    entries: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name, _, _ in IPSET_INFO})
    virtual_servers: dict[tuple[IPv4Address, str, int], VirtualServer] = field(default_factory=dict)
    bind: set[IPv4Address] = field(default_factory=set)
    lb_no_node_access: list[tuple[str, str, int]] = field(default_factory=list)  # (LB IP, proto, port)


def _unique_endpoints(eps: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """The EndpointsMap keeps one endpoint per "IP:port"."""
    seen: dict[str, Endpoint] = {}
    for e in eps:
        seen.setdefault(e.host_port, e)
    return tuple(seen.values())


def real_servers(svc: ServicePort, eps: tuple[Endpoint, ...], node: str, only_node_local: bool
                 ) -> tuple[RealServer, ...]:
    """syncEndpoint's choice: the cluster endpoints; with onlyNodeLocalEndpoints the local ones -- or, when the node
    has none, the cluster endpoints after all (kubernetes#97081: local pods keep working; replies to external
    clients carry the pod address and are dropped)."""
    cat = categorize(eps, svc, node)
    chosen = cat.cluster
    if only_node_local and cat.local:
        chosen = cat.local
    return tuple(sorted({RealServer(e.ip, e.port) for e in chosen}))


def _virtual_server(s: _Sync, svc: ServicePort, address: IPv4Address, port: int, kind: str,
                    rs: tuple[RealServer, ...]) -> None:
    flags, timeout = (FLAG_PERSISTENT, svc.affinity_timeout) if svc.session_affinity else (0, 0)
    vs = VirtualServer(address, svc.protocol, port, s.opts.scheduler, flags, timeout, rs, svc.port_string, kind)
    s.virtual_servers[vs.key] = vs  # a later service on the same ip:port/proto takes the VS over, as upstream


def _entry(ip: object, svc: ServicePort, port: int | None = None) -> str:
    """Entry.String() of a hash:ip,port entry: "ip,proto:port"."""
    return f"{ip},{svc.proto}:{svc.port if port is None else port}"


def _loop_back(s: _Sync, svc: ServicePort, eps: tuple[Endpoint, ...]) -> None:
    """Hairpin: every local endpoint as dst ip,port + src ip (all of them, ready or not)."""
    for e in eps:
        if e.node == s.node:
            s.entries[LOOP_BACK].add(f"{e.ip},{svc.proto}:{e.port},{e.ip}")


def _cluster_ip(s: _Sync, svc: ServicePort, eps: tuple[Endpoint, ...]) -> None:
    s.entries[CLUSTER_IP].add(_entry(svc.cluster_ip, svc))
    rs = real_servers(svc, eps, s.node, svc.internal_policy_local)
    _virtual_server(s, svc, svc.cluster_ip, svc.port, "cluster-ip", rs)
    s.bind.add(svc.cluster_ip)  # always bound, even when it is also a node address


def _external_ips(s: _Sync, svc: ServicePort, eps: tuple[Endpoint, ...]) -> None:
    for eip in svc.external_ips:
        s.entries[EXTERNAL_IP_LOCAL if svc.external_local else EXTERNAL_IP].add(_entry(eip, svc))
        _virtual_server(s, svc, eip, svc.port, "external-ip", real_servers(svc, eps, s.node, svc.external_local))
        if eip not in s.node_addresses:  # never bind an address another interface has
            s.bind.add(eip)


def _load_balancer_ips(s: _Sync, svc: ServicePort, eps: tuple[Endpoint, ...]) -> None:
    for lbip in svc.load_balancer_ips:
        entry = _entry(lbip, svc)
        s.entries[LOAD_BALANCER].add(entry)
        if svc.external_local:
            s.entries[LOAD_BALANCER_LOCAL].add(entry)
        if svc.load_balancer_source_ranges:
            s.entries[LOAD_BALANCER_FW].add(entry)
            allow_from_node = False
            for cidr in svc.load_balancer_source_ranges:
                s.entries[LOAD_BALANCER_SOURCE_CIDR].add(f"{entry},{cidr}")
                allow_from_node = allow_from_node or (s.node_ip is not None and s.node_ip in cidr)
            if allow_from_node:
                s.entries[LOAD_BALANCER_SOURCE_IP].add(f"{entry},{lbip}")
            else:  # the node itself is not in a source range: KUBE-IPVS-OUT-FILTER drops it
                s.lb_no_node_access.append((str(lbip), svc.proto, svc.port))
        _virtual_server(s, svc, lbip, svc.port, "load-balancer", real_servers(svc, eps, s.node, svc.external_local))
        if lbip not in s.node_addresses:
            s.bind.add(lbip)


_NODE_PORT_SETS = {"tcp": (NODE_PORT_TCP, NODE_PORT_LOCAL_TCP), "udp": (NODE_PORT_UDP, NODE_PORT_LOCAL_UDP),
                   "sctp": (NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP)}


def _node_port(s: _Sync, svc: ServicePort, eps: tuple[Endpoint, ...]) -> bool:
    """NodePort sets and one virtual server per node address.  False when the node has no address for NodePorts
    (upstream then skips the rest of this service port, its health check node port included)."""
    if not svc.node_port:
        return True
    if not s.node_addresses:
        return False
    plain, local = _NODE_PORT_SETS[svc.proto]
    if svc.proto == "sctp":  # hash:ip,port: one entry per node address
        entries = {_entry(ip, svc, svc.node_port) for ip in s.node_addresses}
    else:  # bitmap:port
        entries = {str(svc.node_port)}
    s.entries[plain] |= entries
    if svc.external_local:
        s.entries[local] |= entries
    rs = real_servers(svc, eps, s.node, svc.external_local)
    for ip in s.node_addresses:
        _virtual_server(s, svc, ip, svc.node_port, "node-port", rs)  # node addresses are never bound
    return True


def _service_port(s: _Sync, svc: ServicePort, eps: tuple[Endpoint, ...]) -> None:
    """One iteration of syncProxyRules' service loop, in upstream order."""
    eps = _unique_endpoints(eps)
    _loop_back(s, svc, eps)
    _cluster_ip(s, svc, eps)
    _external_ips(s, svc, eps)
    _load_balancer_ips(s, svc, eps)
    if not _node_port(s, svc, eps):
        return
    if svc.health_check_node_port:
        s.entries[HEALTH_CHECK_NODE_PORT].add(str(svc.health_check_node_port))


def _sorted_entries(set_type: str, entries: set[str]) -> tuple[str, ...]:
    if set_type == BITMAP_PORT:
        return tuple(sorted(entries, key=int))
    return tuple(sorted(entries, key=lambda e: (ipaddress.ip_address(e.split(",")[0]), e)))


def conn_reuse_mode(kernel_version: tuple[int, int] | None) -> str | None:
    """NewProxier: conn_reuse_mode=0 only on kernels from 4.1 (first with the sysctl) up to before 5.9 (which fixed
    the reuse bug, kubernetes#93297); otherwise left as it is (None).  An unknown kernel counts as a new one."""
    if kernel_version is None or kernel_version < CONN_REUSE_MIN_KERNEL or kernel_version >= CONN_REUSE_FIXED_KERNEL:
        return None
    return "0"


def sysctls(opts: Options = Options()) -> tuple[tuple[str, str], ...]:
    """The sysctls NewProxier ensures (EnsureSysctl: written only when different), in its order."""
    out = [(SYSCTL_VS_CONNTRACK, "1")]
    reuse = conn_reuse_mode(opts.kernel_version)
    if reuse is not None:
        out.append((SYSCTL_CONN_REUSE, reuse))
    out += [(SYSCTL_EXPIRE_NODEST_CONN, "1"), (SYSCTL_EXPIRE_QUIESCENT_TEMPLATE, "1"), (SYSCTL_FORWARD, "1")]
    if opts.strict_arp:
        out += [(SYSCTL_ARP_IGNORE, "1"), (SYSCTL_ARP_ANNOUNCE, "2")]
    return tuple(out)


def desired(state: NodeProxyState, node_addresses: Iterable[IPv4Address] | None = None,
            options: Options = Options()) -> IpvsDesired:
    """What one syncProxyRules leaves on the node.

    `node_addresses` is the node's nodeAddressSet: every local IPv4 address except loopback and kube-ipvs0's (with
    --nodeport-addresses unset, NodePort virtual servers listen on all of them, and external/LB IPs among them are
    not bound to kube-ipvs0).  It defaults to the node IPs.  Services are processed in `state.services` order
    (upstream: Go map order); when two claim the same ip:port/protocol, the later one's real servers win.
    """
    addrs = tuple(sorted(set(node_addresses if node_addresses is not None else state.node_ips)))
    s = _Sync(state.node, state.node_ips[0] if state.node_ips else None, addrs, options)
    for svc, eps in state.services:
        _service_port(s, svc, eps)
    s.entries[IPVS_IPS] = {str(a) for a in s.bind}  # KUBE-IPVS-IPS = activeBindAddrs
    sets = {name: _sorted_entries(kind, s.entries[name]) for name, kind, _ in IPSET_INFO}
    text = iptables_text(Text(options, str(state.cluster_cidr) if state.cluster_cidr is not None else None,
                               state.masquerade_all, sets, tuple(s.lb_no_node_access)))
    return IpvsDesired(
        node=state.node,
        bind_addresses=tuple(sorted(s.bind)),
        virtual_servers=tuple(s.virtual_servers.values()),
        ipsets=tuple(IPSet(name, kind, comment, sets[name]) for name, kind, comment in IPSET_INFO),
        iptables=text,
        sysctls=sysctls(options),
        jumps=first_sync_jumps(),
        node_port_addresses=addrs,
    )


def ipset_restore_text(want: IpvsDesired) -> str:
    """`ipset restore` input programming every set: create (-exist), flush, add the entries."""
    lines = []
    for st in want.ipsets:
        lines += [st.create_line(), f"flush {st.name}", *(f"add {st.name} {e}" for e in st.entries)]
    return "\n".join(lines) + "\n"


_IPVSADM_SERVICE = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}


def ipvsadm_text(want: IpvsDesired) -> str:
    """The virtual servers and their real servers as `ipvsadm --restore` input, the form `ipvsadm -S -n` prints
    (`-A` a service with its scheduler and persistence, `-a` a masquerading real server with its weight).  emu
    programs them over generic netlink, as kube-proxy does; this text is how a dry run shows them."""
    lines = []
    for vs in want.virtual_servers:
        svc = f"{_IPVSADM_SERVICE[vs.protocol]} {vs.address}:{vs.port}"
        lines.append(f"-A {svc} -s {vs.scheduler}" + (f" -p {vs.timeout}" if vs.persistent else ""))
        lines += [f"-a {svc} -r {rs} -m -w {rs.weight}" for rs in vs.real_servers]
    return "".join(line + "\n" for line in lines)


def dummy_batch(want: IpvsDesired) -> str:
    """`ip -batch` input for kube-ipvs0: the dummy device (left down, as EnsureDummyDevice leaves it) and every
    address a sync binds to it, each a /32."""
    return f"link add {DUMMY_DEVICE} type dummy\n" + "".join(
        f"address add {a}/32 dev {DUMMY_DEVICE}\n" for a in want.bind_addresses)


def kernel_version(release: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string such as "6.1.0-18-amd64" (default: the running kernel)."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else None
