"""kube-proxy's IPVS proxier: what `pkg/proxy/ipvs/proxier.go` (syncProxyRules, syncService, syncEndpoint,
writeIptablesRules, createAndLinkKubeChain) and `pkg/proxy/ipvs/ipset.go` program on one node, re-implemented.

`desired()` is pure: from a node's NodeProxyState it computes everything kube-proxy would leave in the kernel --
the addresses bound to the `kube-ipvs0` dummy device, the IPVS virtual servers with their real servers, the ipsets
with their entries (`ipset_restore_text()` turns them into one `ipset restore` input), the iptables-restore text
(`*nat` then `*filter`, as upstream concatenates its buffers), the sysctls NewProxier ensures and, for a first sync,
the `iptablesJumpChain` rules as restore lines.

`sync_node()` is the only code here that touches a kernel.  It runs inside the node's network namespace and needs a
kernel with IP_VS and the dummy link type (this emulator's host kernel has neither; the kernel lane has both).

Deliberate differences from kube-proxy, all invisible in the resulting kernel state:

* kube-proxy diffs ipset entries and adds/deletes them one `ipset` exec at a time; here each set is declared with
  `create -exist`, flushed and refilled in one `ipset restore`;
* kube-proxy's graceful termination manager sets a removed TCP real server's weight to 0 and deletes it once it has
  no connections (retrying every minute); here the retry happens on the node's next sync;
* the startup probe (`CanUseIPVSProxier`: add and delete a dummy VS at 198.51.100.0:20000) is not repeated.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from emu.apply import netns
from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy.model import (MASQUERADE_MARK, Endpoint, NodeProxyState, ServicePort, SyncError, SyncResult,
    categorize)

IPv4Address = ipaddress.IPv4Address

DUMMY_DEVICE = "kube-ipvs0"  # defaultDummyDevice
DEFAULT_SCHEDULER = "rr"  # defaultScheduler
FLAG_PERSISTENT = 0x1  # utilipvs.FlagPersistent (IP_VS_SVC_F_PERSISTENT): ClientIP session affinity
FLAG_HASHED = 0x2  # IP_VS_SVC_F_HASHED: set by the kernel on every service, ignored when comparing
FWD_MASQ = 0  # IP_VS_CONN_F_MASQ: kube-proxy's real servers use NAT forwarding (moby/ipvs' default)
LOCALNET = "127.0.0.0/8"

# Chains (proxier.go constants); the ones iptables mode shares come from there.
KUBE_SERVICES = ipt.KUBE_SERVICES
KUBE_POSTROUTING = ipt.KUBE_POSTROUTING
KUBE_MARK_MASQ = ipt.KUBE_MARK_MASQ
KUBE_FORWARD = ipt.KUBE_FORWARD
KUBE_PROXY_FIREWALL = ipt.KUBE_PROXY_FIREWALL
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"

# iptablesChains: every chain the proxier owns, (table, chain), in upstream order.
CHAINS: tuple[tuple[str, str], ...] = (
    ("nat", KUBE_SERVICES), ("nat", KUBE_POSTROUTING), ("nat", KUBE_NODE_PORT), ("nat", KUBE_LOAD_BALANCER),
    ("nat", KUBE_MARK_MASQ),
    ("filter", KUBE_FORWARD), ("filter", KUBE_NODE_PORT), ("filter", KUBE_PROXY_FIREWALL),
    ("filter", KUBE_SOURCE_RANGES_FIREWALL), ("filter", KUBE_IPVS_FILTER), ("filter", KUBE_IPVS_OUT_FILTER),
)

# iptablesJumpChain: (table, builtin chain, target, comment); each one EnsureRule(Prepend)ed.
JUMPS: tuple[tuple[str, str, str, str], ...] = (
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    ("filter", "INPUT", KUBE_NODE_PORT, "kubernetes health check rules"),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "INPUT", KUBE_IPVS_FILTER, "kubernetes ipvs access filter"),
    ("filter", "OUTPUT", KUBE_IPVS_OUT_FILTER, "kubernetes ipvs access filter"),
)

# ipset names and comments (ipset.go constants).
LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"

HASH_IP, HASH_IP_PORT = "hash:ip", "hash:ip,port"
HASH_IP_PORT_IP, HASH_IP_PORT_NET, BITMAP_PORT = "hash:ip,port,ip", "hash:ip,port,net", "bitmap:port"

# ipsetInfo: (name, type, comment) in upstream order.
IPSET_INFO: tuple[tuple[str, str, str], ...] = (
    (LOOP_BACK, HASH_IP_PORT_IP, "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    (CLUSTER_IP, HASH_IP_PORT, "Kubernetes service cluster ip + port for masquerade purpose"),
    (EXTERNAL_IP, HASH_IP_PORT, "Kubernetes service external ip + port for masquerade and filter purpose"),
    (EXTERNAL_IP_LOCAL, HASH_IP_PORT, "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    (LOAD_BALANCER, HASH_IP_PORT, "Kubernetes service lb portal"),
    (LOAD_BALANCER_FW, HASH_IP_PORT,
     "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    (LOAD_BALANCER_LOCAL, HASH_IP_PORT,
     "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    (LOAD_BALANCER_SOURCE_IP, HASH_IP_PORT_IP,
     "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),
    (LOAD_BALANCER_SOURCE_CIDR, HASH_IP_PORT_NET,
     "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),
    (NODE_PORT_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    (NODE_PORT_LOCAL_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    (NODE_PORT_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    (NODE_PORT_LOCAL_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    (NODE_PORT_SCTP, HASH_IP_PORT, "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    (NODE_PORT_LOCAL_SCTP, HASH_IP_PORT,
     "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),
    (HEALTH_CHECK_NODE_PORT, BITMAP_PORT, "Kubernetes health check node port"),
    (IPVS_IPS, HASH_IP, "Addresses on the ipvs interface"),
)
IPSET_COMMENTS = {name: comment for name, _, comment in IPSET_INFO}

# ipsetWithIptablesChain: (set, table, from chain, to, match type, protocol match), in upstream order.  A rule is
# written only when its set has entries.  The LOCAL node-port sets RETURN before the plain ones mark for masquerade.
IPSET_JUMPS: tuple[tuple[str, str, str, str, str, str], ...] = (
    (LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src", ""),
    (LOAD_BALANCER, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, "dst,dst", ""),
    (LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", "dst,dst", ""),
    (NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    (NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "tcp"),
    (NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    (NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "udp"),
    (NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    (NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst,dst", "sctp"),
    (LOAD_BALANCER_FW, "filter", KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, "dst,dst", ""),
    (LOAD_BALANCER_SOURCE_CIDR, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
    (LOAD_BALANCER_SOURCE_IP, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
)

IPSET_HASH_OPTIONS = "family inet hashsize 1024 maxelem 65536"  # setIPSetDefaults
IPSET_BITMAP_RANGE = "0-65535"  # DefaultPortRange

# Sysctls (NewProxier), as paths under /proc/sys.
SYSCTL_VS_CONNTRACK = "net/ipv4/vs/conntrack"
SYSCTL_CONN_REUSE = "net/ipv4/vs/conn_reuse_mode"
SYSCTL_EXPIRE_NODEST_CONN = "net/ipv4/vs/expire_nodest_conn"
SYSCTL_EXPIRE_QUIESCENT_TEMPLATE = "net/ipv4/vs/expire_quiescent_template"
SYSCTL_FORWARD = "net/ipv4/ip_forward"
SYSCTL_ARP_IGNORE = "net/ipv4/conf/all/arp_ignore"
SYSCTL_ARP_ANNOUNCE = "net/ipv4/conf/all/arp_announce"
CONN_REUSE_MIN_KERNEL = (4, 1)  # IPVSConnReuseModeMinSupportedKernelVersion
CONN_REUSE_FIXED_KERNEL = (5, 9)  # IPVSConnReuseModeFixedKernelVersion (kubernetes#93297)

PROTOCOL_NUMBERS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_NUMBERS.items()}


# --------------------------------------------------------------------------------------------- desired state


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
class Options:
    """Proxier settings that change the result; the defaults are kube-proxy's."""

    scheduler: str = DEFAULT_SCHEDULER  # --ipvs-scheduler
    random_fully: bool = True  # ipt.HasRandomFully() (iptables >= 1.6.2)
    strict_arp: bool = False  # --ipvs-strict-arp
    kernel_version: tuple[int, int] | None = None  # (major, minor) of the running kernel, for conn_reuse_mode
    masquerade_mark: str = MASQUERADE_MARK


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


def first_sync_jumps() -> str:
    """createAndLinkKubeChain for a namespace that has none of them yet: every chain of CHAINS declared, then each
    jump of JUMPS as `-I BUILTIN 1`, in upstream order -- the same rules in the same order as its
    `iptables -C || iptables -I` calls leave."""
    out = []
    for table in ("nat", "filter"):
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for t, chain in CHAINS if t == table]
        out += [f'-I {builtin} 1 -m comment --comment "{comment}" -j {target}'
                for t, builtin, target, comment in JUMPS if t == table]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class _Text:
    opts: Options
    local_cidr: str | None
    masquerade_all: bool
    sets: dict[str, tuple[str, ...]]
    lb_no_node_access: tuple[tuple[str, str, int], ...]

    def empty(self, name: str) -> bool:
        return not self.sets[name]


def _comment(name: str) -> str:
    """IPSet.getComment(): the set's comment, always double-quoted."""
    return f'"{IPSET_COMMENTS[name]}"'


def _ipset_jump_rules(t: _Text, nat: list[str], flt: list[str]) -> None:
    for name, table, src, to, match, proto in IPSET_JUMPS:
        if t.empty(name):
            continue
        words = ["-A", src, *(["-p", proto] if proto else []), "-m", "comment", "--comment", _comment(name),
                 "-m", "set", "--match-set", name, match, "-j", to]
        (flt if table == "filter" else nat).append(" ".join(words))


def _cluster_ip_masquerade(t: _Text, nat: list[str]) -> None:
    if t.empty(CLUSTER_IP):
        return
    head = f"-A {KUBE_SERVICES} -m comment --comment {_comment(CLUSTER_IP)} -m set --match-set {CLUSTER_IP}"
    if t.masquerade_all:
        nat.append(f"{head} dst,dst -j {KUBE_MARK_MASQ}")
    elif t.local_cidr:  # LocalTrafficDetector.IfNotLocal(): off-cluster traffic to a service VIP
        nat.append(f"{head} dst,dst ! -s {t.local_cidr} -j {KUBE_MARK_MASQ}")
    else:  # no detector: masquerade node-originated traffic whose source is a VIP
        nat.append(f"{head} src,dst -j {KUBE_MARK_MASQ}")


def _external_ip_rules(t: _Text, nat: list[str]) -> None:
    """Masquerade for external IPs, and ACCEPT traffic to them from off-machine or to a local address."""
    for name, masquerade in ((EXTERNAL_IP, True), (EXTERNAL_IP_LOCAL, False)):
        if t.empty(name):
            continue
        head = f"-A {KUBE_SERVICES} -m comment --comment {_comment(name)} -m set --match-set {name} dst,dst"
        if masquerade:
            nat.append(f"{head} -j {KUBE_MARK_MASQ}")
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")


def _accept_ipvs_traffic(t: _Text, nat: list[str]) -> None:
    """acceptIPVSTraffic: must be at the end of KUBE-SERVICES."""
    for name in (CLUSTER_IP, LOAD_BALANCER):
        if not t.empty(name):
            nat.append(f"-A {KUBE_SERVICES} -m set --match-set {name} dst,dst -j ACCEPT")


def _ipvs_filter_rules(flt: list[str]) -> None:
    """KUBE-IPVS-FILTER: no new connections to ports on the host through a VIP (kubernetes#72236)."""
    for name, match in ((LOAD_BALANCER, "dst,dst"), (CLUSTER_IP, "dst,dst"), (EXTERNAL_IP, "dst,dst"),
                        (EXTERNAL_IP_LOCAL, "dst,dst"), (HEALTH_CHECK_NODE_PORT, "dst")):
        flt.append(f"-A {KUBE_IPVS_FILTER} -m set --match-set {name} {match} -j RETURN")
    flt.append(f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set {IPVS_IPS} dst -j REJECT")


def _masquerade_rules(t: _Text, nat: list[str]) -> None:
    """KUBE-POSTROUTING and KUBE-MARK-MASQ, the same rules as iptables mode."""
    mark = t.opts.masquerade_mark
    nat.append(f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN")
    nat.append(f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}")
    nat.append(f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
               + (" --random-fully" if t.opts.random_fully else ""))
    nat.append(f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}")


def _forward_rules(t: _Text, flt: list[str]) -> None:
    mark = t.opts.masquerade_mark
    flt.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
               f"-m mark --mark {mark}/{mark} -j ACCEPT")
    flt.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
               "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")


def iptables_text(t: _Text) -> str:
    """writeIptablesRules after createAndLinkKubeChain, concatenated as syncProxyRules does: natChains, natRules,
    filterChains, filterRules."""
    nat: list[str] = [f"-A {KUBE_SERVICES} -s {LOCALNET} -j RETURN"]  # dismiss connects to localhost early
    flt: list[str] = []
    _ipset_jump_rules(t, nat, flt)
    _cluster_ip_masquerade(t, nat)
    _external_ip_rules(t, nat)
    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    flt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for ip, proto, port in t.lb_no_node_access:  # for IPVS the source and destination are both the LB IP
        flt.append(f"-A {KUBE_IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP")
    _accept_ipvs_traffic(t, nat)
    _forward_rules(t, flt)
    flt.append(f"-A {KUBE_NODE_PORT} -m comment --comment {_comment(HEALTH_CHECK_NODE_PORT)} "
               f"-m set --match-set {HEALTH_CHECK_NODE_PORT} dst -j ACCEPT")
    _ipvs_filter_rules(flt)
    _masquerade_rules(t, nat)
    lines = ["*nat", *(f":{c} - [0:0]" for tb, c in CHAINS if tb == "nat"), *nat, "COMMIT",
             "*filter", *(f":{c} - [0:0]" for tb, c in CHAINS if tb == "filter"), *flt, "COMMIT"]
    return "\n".join(lines) + "\n"


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
    text = iptables_text(_Text(options, str(state.cluster_cidr) if state.cluster_cidr is not None else None,
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


def kernel_version(release: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string such as "6.1.0-18-amd64" (default: the running kernel)."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else None


# --------------------------------------------------------------------------------------------- kernel side
#
# Everything below runs on a netns.run_in thread inside the node's namespace: netlink sockets keep the namespace
# they were opened in, and subprocesses forked from that thread start in it.


class _Step(Exception):
    """A failed step: its one-line description becomes the SyncError message."""


def _reason(e: BaseException) -> str:
    """One line for an exception: an OSError's strerror, a pyroute2 NetlinkError's message (its args are
    (code, message)), else the last line of its text."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    args = getattr(e, "args", ())
    if len(args) == 2 and isinstance(args[0], int):
        return str(args[1])
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def _fail(what: str, e: BaseException) -> _Step:
    return _Step(f"{what}: {_reason(e)}")


def _open_ipvs():  # type: ignore[no-untyped-def]
    """The IPVS generic-netlink socket; asking for the family loads ip_vs if the kernel has it as a module."""
    from pyroute2 import IPVS

    try:
        return IPVS()
    except Exception as e:  # NetlinkError(ENOENT): no "IPVS" family
        if getattr(e, "code", None) == errno.ENOENT:
            raise _Step("the kernel has no IP_VS (no IPVS generic netlink family)") from e
        raise _fail("cannot open the IPVS netlink socket", e) from e


def _write_sysctls(pairs: Iterable[tuple[str, str]]) -> None:
    """EnsureSysctl: read, write only when different."""
    for path, value in pairs:
        p = "/proc/sys/" + path
        try:
            with open(p) as f:
                if f.read().strip() == value:
                    continue
            with open(p, "w") as f:
                f.write(value)
        except OSError as e:
            raise _fail(f"cannot set sysctl {path.replace('/', '.')}={value}", e) from e


def _addr_of(msg) -> str | None:  # type: ignore[no-untyped-def]
    return msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")


def _local_addresses(ipr, exclude_index: int | None) -> list[IPv4Address]:  # type: ignore[no-untyped-def]
    """GetAllLocalAddressesExcept: IPv4 addresses of every link but `exclude_index`, loopback ones left out."""
    out = []
    for msg in ipr.get_addr(family=socket.AF_INET):
        a = _addr_of(msg)
        if a and msg["index"] != exclude_index and not IPv4Address(a).is_loopback:
            out.append(IPv4Address(a))
    return sorted(set(out))


def _link_index(ipr, name: str) -> int | None:  # type: ignore[no-untyped-def]
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _load_dummy_without_dummy0() -> None:
    """The dummy module creates `dummy0` in the root namespace when it loads (numdummies defaults to 1); load it
    ourselves with numdummies=0 first, so creating kube-ipvs0 leaves no link in the root namespace."""
    if os.path.isdir("/sys/module/dummy"):
        return
    subprocess.run(["modprobe", "dummy", "numdummies=0"], capture_output=True)


def ensure_dummy_device(ipr) -> int:  # type: ignore[no-untyped-def]
    """EnsureDummyDevice: create kube-ipvs0 (type dummy) if missing and leave it down, as kube-proxy does."""
    index = _link_index(ipr, DUMMY_DEVICE)
    if index is not None:
        return index
    _load_dummy_without_dummy0()
    try:
        ipr.link("add", ifname=DUMMY_DEVICE, kind="dummy")
    except Exception as e:
        hint = " (the kernel has no dummy link type)" if getattr(e, "code", None) == errno.EOPNOTSUPP else ""
        raise _Step(f"cannot create dummy device {DUMMY_DEVICE}: {_reason(e)}{hint}") from e
    index = _link_index(ipr, DUMMY_DEVICE)
    if index is None:
        raise _Step(f"dummy device {DUMMY_DEVICE} vanished after creation")
    return index


def bound_addresses(ipr, index: int) -> list[IPv4Address]:  # type: ignore[no-untyped-def]
    """GetLocalAddresses(kube-ipvs0)."""
    return sorted({IPv4Address(a) for msg in ipr.get_addr(family=socket.AF_INET, index=index)
                   if (a := _addr_of(msg)) and not IPv4Address(a).is_loopback})


def bind_addresses(ipr, index: int, want: Iterable[IPv4Address]) -> list[IPv4Address]:  # type: ignore[no-untyped-def]
    """EnsureAddressBind for each address not bound yet (as /32); returns those added."""
    have = set(bound_addresses(ipr, index))
    added = []
    for a in sorted(set(want) - have):
        try:
            ipr.addr("add", index=index, address=str(a), prefixlen=32)
        except Exception as e:
            if getattr(e, "code", None) != errno.EEXIST:
                raise _fail(f"cannot bind {a} to {DUMMY_DEVICE}", e) from e
        added.append(a)
    return added


def unbind_superfluous(ipr, index: int,  # type: ignore[no-untyped-def]
                       want: Iterable[IPv4Address]) -> list[IPv4Address]:
    """UnbindAddress for every address on kube-ipvs0 this sync did not want; returns those removed."""
    extra = sorted(set(bound_addresses(ipr, index)) - set(want))
    for a in extra:
        try:
            ipr.addr("del", index=index, address=str(a), prefixlen=32)
        except Exception as e:
            if getattr(e, "code", None) not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                raise _fail(f"cannot unbind {a} from {DUMMY_DEVICE}", e) from e
    return extra


# IPVS through pyroute2 (pyroute2.ipvs: IPVS, IPVSService, IPVSDest).  Kernel requests need, for a new service,
# scheduler, flags, timeout and netmask; for a new destination, forwarding method, weight and both thresholds
# (ip_vs_genl_parse_service / _dest with full_entry); pyroute2's defaults supply the ones not given here.


def _service_msg(vs: VirtualServer):  # type: ignore[no-untyped-def]
    from pyroute2.ipvs import IPVSService

    return IPVSService(addr=str(vs.address), port=vs.port, protocol=PROTOCOL_NUMBERS[vs.protocol],
                       sched_name=vs.scheduler, timeout=vs.timeout, flags={"flags": vs.flags, "mask": 0xFFFFFFFF})


def _service_key_msg(key: tuple[IPv4Address, str, int]):  # type: ignore[no-untyped-def]
    return _service_msg(VirtualServer(*key))


def _dest_msg(rs: RealServer):  # type: ignore[no-untyped-def]
    from pyroute2.ipvs import IPVSDest

    return IPVSDest(addr=str(rs.ip), port=rs.port, weight=rs.weight, fwd_method=FWD_MASQ)


@dataclass(frozen=True, slots=True)
class AppliedService:
    """A virtual server as the kernel reports it (flags without FLAG_HASHED)."""

    address: IPv4Address
    protocol: str
    port: int
    scheduler: str
    flags: int
    timeout: int

    @property
    def key(self) -> tuple[IPv4Address, str, int]:
        return (self.address, self.protocol, self.port)

    def matches(self, vs: VirtualServer) -> bool:
        """VirtualServer.Equal."""
        return (self.scheduler, self.flags, self.timeout) == (vs.scheduler, vs.flags, vs.timeout)


@dataclass(frozen=True, slots=True)
class AppliedDest:
    ip: IPv4Address
    port: int
    weight: int
    active: int
    inactive: int


def parse_service(msg) -> AppliedService | None:  # type: ignore[no-untyped-def]
    """An IPVS_CMD_GET_SERVICE answer; None for what kube-proxy ignores (fwmark services, IPv6)."""
    s = msg.get("IPVS_CMD_ATTR_SERVICE")
    if s is None or s.get("IPVS_SVC_ATTR_AF") != socket.AF_INET or s.get("IPVS_SVC_ATTR_ADDR") is None:
        return None
    proto = PROTOCOL_NAMES.get(s.get("IPVS_SVC_ATTR_PROTOCOL"))
    if proto is None:
        return None
    flags = (s.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0) & ~FLAG_HASHED
    return AppliedService(IPv4Address(s.get("IPVS_SVC_ATTR_ADDR")), proto, s.get("IPVS_SVC_ATTR_PORT"),
                          s.get("IPVS_SVC_ATTR_SCHED_NAME") or "", flags, s.get("IPVS_SVC_ATTR_TIMEOUT") or 0)


def parse_dest(msg) -> AppliedDest | None:  # type: ignore[no-untyped-def]
    d = msg.get("IPVS_CMD_ATTR_DEST")
    if d is None or d.get("IPVS_DEST_ATTR_ADDR") is None:
        return None
    return AppliedDest(IPv4Address(d.get("IPVS_DEST_ATTR_ADDR")), d.get("IPVS_DEST_ATTR_PORT"),
                       d.get("IPVS_DEST_ATTR_WEIGHT") or 0, d.get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0,
                       d.get("IPVS_DEST_ATTR_INACT_CONNS") or 0)


def applied_services(ipvs) -> dict[tuple[IPv4Address, str, int], AppliedService]:  # type: ignore[no-untyped-def]
    out = {}
    for msg in ipvs.service("dump"):
        svc = parse_service(msg)
        if svc is not None:
            out[svc.key] = svc
    return out


def applied_dests(ipvs, key: tuple[IPv4Address, str, int]) -> list[AppliedDest]:  # type: ignore[no-untyped-def]
    return [d for msg in ipvs.dest("dump", service=_service_key_msg(key)) if (d := parse_dest(msg)) is not None]


def sync_service(ipvs, vs: VirtualServer, applied: AppliedService | None) -> None:  # type: ignore[no-untyped-def]
    """syncService (without the address binding): add the virtual server, or update it when it differs."""
    try:
        if applied is None:
            ipvs.service("add", service=_service_msg(vs))
        elif not applied.matches(vs):
            ipvs.service("set", service=_service_msg(vs))
    except Exception as e:
        raise _fail(f"cannot {'add' if applied is None else 'update'} IPVS service {vs}", e) from e


def sync_endpoint(ipvs, vs: VirtualServer) -> None:  # type: ignore[no-untyped-def]
    """syncEndpoint: add missing real servers (weight 1), restore the weight of ones being drained, and remove the
    ones no longer wanted -- a TCP one with connections left is drained first (weight 0), as the graceful
    termination manager does; UDP and SCTP ones go at once."""
    want = {(rs.ip, rs.port): rs for rs in vs.real_servers}
    try:
        have = {(d.ip, d.port): d for d in applied_dests(ipvs, vs.key)}
        svc = _service_key_msg(vs.key)
        for key, rs in want.items():
            cur = have.get(key)
            if cur is None:
                ipvs.dest("add", service=svc, dest=_dest_msg(rs))
            elif cur.weight != rs.weight:
                ipvs.dest("set", service=svc, dest=_dest_msg(rs))
        for key, cur in have.items():
            if key in want:
                continue
            if vs.protocol == "TCP" and cur.active + cur.inactive > 0:
                if cur.weight != 0:
                    ipvs.dest("set", service=svc, dest=_dest_msg(RealServer(cur.ip, cur.port, 0)))
            else:
                ipvs.dest("del", service=svc, dest=_dest_msg(RealServer(cur.ip, cur.port)))
    except _Step:
        raise
    except Exception as e:
        raise _fail(f"cannot sync the real servers of IPVS service {vs}", e) from e


def clean_legacy_services(ipvs, applied: Iterable[tuple[IPv4Address, str, int]],  # type: ignore[no-untyped-def]
                          active: Iterable[tuple[IPv4Address, str, int]]) -> list[tuple[IPv4Address, str, int]]:
    """cleanLegacyService: delete every IPv4 virtual server this sync did not produce; returns their keys."""
    stale = sorted(set(applied) - set(active))
    for key in stale:
        try:
            ipvs.service("del", service=_service_key_msg(key))
        except Exception as e:
            if getattr(e, "code", None) != errno.ESRCH:
                raise _fail(f"cannot delete IPVS service {key[0]}:{key[2]}/{key[1]}", e) from e
    return stale


def _restore(argv: list[str], text: str, what: str) -> None:
    try:
        r = subprocess.run(argv, input=text, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise _Step(f"{argv[0]} is not installed") from e
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        raise _Step(f"{what} failed: {lines[-1] if lines else f'exit status {r.returncode}'}")


def load_ipsets(want: IpvsDesired) -> None:
    """One `ipset restore` for every set (in the calling thread's namespace)."""
    _restore(["ipset", "restore"], ipset_restore_text(want), "ipset restore")


def load_iptables(want: IpvsDesired, first: bool, backend: str = "nft") -> None:
    """One `iptables-restore --noflush -w` (in the calling thread's namespace); a first sync prefixes the jumps."""
    _restore([f"iptables-{backend}-restore", "--noflush", "-w"], (want.jumps if first else "") + want.iptables,
             f"iptables-{backend}-restore")


def node_addresses_here() -> list[IPv4Address]:
    """The nodeAddressSet of the namespace the calling thread is in."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return _local_addresses(ipr, _link_index(ipr, DUMMY_DEVICE))


def _sync_here(state: NodeProxyState, first: bool, backend: str, options: Options) -> tuple[IpvsDesired, int]:
    """One syncProxyRules inside the node's namespace, in upstream order: IPVS (loading ip_vs), sysctls (first
    sync, as NewProxier), kube-ipvs0, virtual and real servers with their addresses bound, ipsets, iptables, then
    superfluous addresses unbound and legacy virtual servers deleted.  Returns the desired state and the number of
    kernel objects it covers."""
    from pyroute2 import IPRoute

    ipvs = _open_ipvs()
    try:
        with IPRoute() as ipr:
            if first:
                _write_sysctls(sysctls(options))
            index = ensure_dummy_device(ipr)
            want = desired(state, _local_addresses(ipr, index), options)
            applied = applied_services(ipvs)
            for vs in want.virtual_servers:
                sync_service(ipvs, vs, applied.get(vs.key))
                sync_endpoint(ipvs, vs)
            bind_addresses(ipr, index, want.bind_addresses)
            load_ipsets(want)
            load_iptables(want, first, backend)
            unbind_superfluous(ipr, index, want.bind_addresses)
            clean_legacy_services(ipvs, applied_services(ipvs), [vs.key for vs in want.virtual_servers])
    finally:
        ipvs.close()
    objects = (len(want.virtual_servers) + sum(len(vs.real_servers) for vs in want.virtual_servers)
               + sum(len(s.entries) for s in want.ipsets) + want.iptables.count("\n"))
    return want, objects


def sync_node(ns: str, state: NodeProxyState, first: bool, backend: str = "nft",
              previous: NodeProxyState | None = None, options: Options | None = None) -> SyncResult:
    """One full IPVS-mode sync of one node, inside its namespace `ns`.  `previous` is accepted for the common
    signature and not needed: every sync is a full one, and what is stale is read back from the kernel (kube-ipvs0's
    addresses, the IPVS table) or replaced wholesale (ipsets, the proxier's chains).  Raises SyncError with one
    line saying which step failed."""
    t0 = time.monotonic()
    opts = options or Options(kernel_version=kernel_version())
    try:
        _, objects = netns.run_in(ns, lambda: _sync_here(state, first, backend, opts))
    except _Step as e:
        raise SyncError(f"ipvs sync of {state.node} failed: {e}") from None
    except OSError as e:  # entering the namespace
        raise SyncError(f"ipvs sync of {state.node} failed: {e.strerror or e}") from None
    return SyncResult(state.node, time.monotonic() - t0, objects)
