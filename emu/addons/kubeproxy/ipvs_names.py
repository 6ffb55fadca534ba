"""kube-proxy's IPVS proxier, its names: the dummy device, the iptables chains and jump rules, the ipsets with
their comments and the rules that match them, and the sysctls, as `pkg/proxy/ipvs/proxier.go` and
`pkg/proxy/ipvs/ipset.go` declare them; and the proxier settings that change what it writes.  Pure data."""
from __future__ import annotations

import socket
from dataclasses import dataclass

from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy.model import MASQUERADE_MARK

LAYER = "plan"

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


@dataclass(frozen=True, slots=True)
class Options:
    """Proxier settings that change the result; the defaults are kube-proxy's."""

    scheduler: str = DEFAULT_SCHEDULER  # --ipvs-scheduler
    random_fully: bool = True  # ipt.HasRandomFully() (iptables >= 1.6.2)
    strict_arp: bool = False  # --ipvs-strict-arp
    kernel_version: tuple[int, int] | None = None  # (major, minor) of the running kernel, for conn_reuse_mode
    masquerade_mark: str = MASQUERADE_MARK
