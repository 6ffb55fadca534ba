"""What flanneld programs on a node (flannel-io/flannel pkg/backend/{vxlan,hostgw}, pkg/trafficmngr/iptables),
plus the node's own interfaces.

vxlan: the device `flannel.1` (VNI 1, UDP 8472, learning off, MTU = underlay - 50) holds `<subnet>.0/32`.  For each
remote node flannel adds, in this order: a permanent neighbour `<remote subnet>.0 lladdr <remote VTEP MAC>` (ARP maps
the inner IP to the inner MAC), an FDB entry `<remote VTEP MAC> dst <remote node IP>` (the FDB maps the inner MAC to
the outer IP), and last the route `<remote subnet> via <remote subnet>.0 dev flannel.1 onlink`, "so the kernel won't
ARP".  host-gw: just `<remote subnet> via <remote node IP> dev eth0`.
"""
from __future__ import annotations

import ipaddress

from emu.network import bridge as cnibridge
from emu.network.flannel.spec import settings
from emu.model import names
from emu.alloc.ipam import external_ip, gateway
from emu.addons.kubeproxy import modes as proxier_modes
from emu.model.types import Backend, ClusterSpec
from emu.plan.objects import Address, Fdb, IptablesTable, Link, Neighbour, NetnsPlan, Route, Vxlan

VXLAN_DEV = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472  # flannel's Port 0 means the kernel's default, which is 8472 on Linux
VXLAN_OVERHEAD = 50
UNDERLAY_IFNAME = "eth0"
KUBE_PROXY_MARK = "0x4000/0x4000"
MASQ = 'flanneld masq'
FWD = 'flanneld forward'


def mtu(c: ClusterSpec, node: str | None = None) -> int:
    """FLANNEL_MTU: the MTU flannel hands to CNI (and gives flannel.1), from the node's eth0 MTU."""
    base = c.node_mtu(node)
    return base - VXLAN_OVERHEAD if settings(c).backend is Backend.VXLAN else base


def subnet_env(c: ClusterSpec, subnet: ipaddress.IPv4Network, node: str | None = None) -> str:
    """/run/flannel/subnet.env as WriteSubnetFile writes it; FLANNEL_SUBNET is the first usable address."""
    return (f"FLANNEL_NETWORK={c.pod_cidr}\nFLANNEL_SUBNET={gateway(subnet)}/{subnet.prefixlen}\n"
            f"FLANNEL_MTU={mtu(c, node)}\nFLANNEL_IPMASQ=true\n")


def masq_rules(c: ClusterSpec, subnet: ipaddress.IPv4Network) -> tuple[str, ...]:
    """flanneld --ip-masq: masqRules, in iptables-save form (MASQUERADE --random-fully where iptables supports it)."""
    net, sn, q = c.pod_cidr, subnet, f'-m comment --comment "{MASQ}"'
    return (
        f"-A POSTROUTING {q} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark {KUBE_PROXY_MARK} {q} -j RETURN",  # kube-proxy will masquerade it
        f"-A FLANNEL-POSTRTG -s {sn} -d {net} {q} -j RETURN",  # pod to pod: keep the pod IP
        f"-A FLANNEL-POSTRTG -s {net} -d {sn} {q} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {net} -d {sn} {q} -j RETURN",  # a node in the pod range reaching a pod
        f"-A FLANNEL-POSTRTG -s {net} ! -d 224.0.0.0/4 {q} -j MASQUERADE --random-fully",  # pods leaving the cluster
        f"-A FLANNEL-POSTRTG ! -s {net} -d {net} {q} -j MASQUERADE --random-fully",  # the host reaching flannel
    )


def forward_rules(c: ClusterSpec) -> tuple[str, ...]:
    q = f'-m comment --comment "{FWD}"'
    return (
        f"-A FORWARD {q} -j FLANNEL-FWD",
        f"-A FLANNEL-FWD -s {c.pod_cidr} {q} -j ACCEPT",
        f"-A FLANNEL-FWD -d {c.pod_cidr} {q} -j ACCEPT",
    )


def iptables(c: ClusterSpec, subnet: ipaddress.IPv4Network) -> tuple[IptablesTable, ...]:
    return (IptablesTable("nat", ("FLANNEL-POSTRTG",), masq_rules(c, subnet)),
            IptablesTable("filter", ("FLANNEL-FWD",), forward_rules(c)))


def peer_entries(c: ClusterSpec, node: str, subnets: dict[str, ipaddress.IPv4Network],
                 ips: dict[str, ipaddress.IPv4Address]) -> tuple[list[Neighbour], list[Fdb], list[Route]]:
    """What flannel's handleSubnetEvents programs for every other node's lease."""
    neigh, fdb, routes = [], [], []
    for other in c.nodes:
        if other == node:
            continue
        sn = subnets[other]
        if settings(c).backend is Backend.VXLAN:
            mac = names.vtep_mac(c.name, other)
            neigh.append(Neighbour(VXLAN_DEV, sn.network_address, mac))
            fdb.append(Fdb(VXLAN_DEV, mac, ips[other]))
            routes.append(Route(sn, VXLAN_DEV, via=sn.network_address, onlink=True))
        else:
            routes.append(Route(sn, UNDERLAY_IFNAME, via=ips[other]))
    return neigh, fdb, routes


def node_sysctls(c: ClusterSpec, node: str | None = None) -> tuple[tuple[str, str], ...]:
    """Forwarding (flanneld and the bridge plugin's isGateway), bridged traffic through iptables (kubeadm's
    preflight requires it: without it replies from a same-node endpoint skip the Service's reverse NAT), and
    what the proxier needs (route_localnet, which kube-proxy's iptables mode sets for localhost NodePorts)."""
    out = [("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1")]
    out += proxier_modes.for_mode(c.proxy.mode).node_sysctls
    return tuple(out) + (c.node_sysctls(node) if node is not None else ())  # the node's own settings last


def node_plan(c: ClusterSpec, node: str, subnets: dict[str, ipaddress.IPv4Network],
              ips: dict[str, ipaddress.IPv4Address], has_pods: bool) -> NetnsPlan:
    """A node: eth0 on the underlay, flannel's device and peers, cni0 once it has a pod, forwarding and rules."""
    subnet, ip = subnets[node], ips[node]
    links: list[Link] = []
    addrs = [Address(UNDERLAY_IFNAME, ipaddress.IPv4Interface(f"{ip}/{c.node_network.prefixlen}"))]
    if settings(c).backend is Backend.VXLAN:
        links.append(Link(VXLAN_DEV, "vxlan", mtu=mtu(c, node), mac=names.vtep_mac(c.name, node),
                          vxlan=Vxlan(VXLAN_VNI, VXLAN_PORT, ip, UNDERLAY_IFNAME)))
        addrs.append(Address(VXLAN_DEV, ipaddress.IPv4Interface(f"{subnet.network_address}/32")))
    if has_pods:
        links.append(cnibridge.bridge_link(mtu(c, node), cnibridge.bridge_mac(c.name, node)))
        addrs.append(cnibridge.bridge_address(subnet))
    neigh, fdb, peer_routes = peer_entries(c, node, subnets, ips)
    default = Route(ipaddress.IPv4Network("0.0.0.0/0"), UNDERLAY_IFNAME, via=external_ip(c))
    return NetnsPlan(
        names.node_netns(c.name, node), "node", node,
        links=tuple(links),
        up=("lo", UNDERLAY_IFNAME, *(link.name for link in links)),
        mtu=((UNDERLAY_IFNAME, c.node_mtu(node)),),
        addresses=tuple(addrs),
        routes=(default, *peer_routes),
        neighbours=tuple(neigh),
        fdb=tuple(fdb),
        sysctls=node_sysctls(c, node),
        iptables=iptables(c, subnet),
        iptables_restore=c.iptables("restore"),
    )
