"""What the CNI `bridge` plugin with `host-local` IPAM programs for a pod, as flannel's CNI plugin delegates it:
`{"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
"mtu": FLANNEL_MTU, "ipam": {"type": "host-local", "ranges": [[{"subnet": FLANNEL_SUBNET}]],
"routes": [{"dst": FLANNEL_NETWORK}]}}` (flannel-io/cni-plugin flannel_linux.go, containernetworking/plugins
plugins/main/bridge)."""
from __future__ import annotations

import ipaddress

from . import names
from .ipam import Assignment, gateway
from .model import ClusterSpec, Pod
from .plan import Address, Link, NetnsPlan, PodPlan, Route

BRIDGE = "cni0"
POD_IFNAME = "eth0"


def bridge_link(mtu: int) -> Link:
    """cni0, created by the plugin on a node's first pod with the delegate's MTU."""
    return Link(BRIDGE, "bridge", mtu=mtu)


def bridge_address(subnet: ipaddress.IPv4Network) -> Address:
    """isGateway: the gateway (subnet's first address, calcGatewayIP) goes on the bridge as gw/prefix."""
    return Address(BRIDGE, ipaddress.IPv4Interface(f"{gateway(subnet)}/{subnet.prefixlen}"))


def pod_plan(c: ClusterSpec, pod: Pod, a: Assignment, subnet: ipaddress.IPv4Network, mtu: int) -> PodPlan:
    pod_ns = names.pod_netns(c.name, pod.namespace, pod.name)
    gw = gateway(subnet)
    host = Link(names.host_veth(c.name, pod.namespace, pod.name), "veth", mtu=mtu, master=BRIDGE, hairpin=True,
                peer=POD_IFNAME, peer_netns=pod_ns, peer_mtu=mtu)
    ns = NetnsPlan(
        pod_ns, "pod", pod.key,
        up=("lo", POD_IFNAME),
        addresses=(Address(POD_IFNAME, ipaddress.IPv4Interface(f"{a.ip}/{subnet.prefixlen}")),),
        routes=(
            Route(c.pod_cidr, POD_IFNAME, via=gw),  # host-local "routes": [{"dst": FLANNEL_NETWORK}]
            Route(ipaddress.IPv4Network("0.0.0.0/0"), POD_IFNAME, via=gw),  # isDefaultGateway
        ),
        sysctls=((f"net.ipv4.conf.{POD_IFNAME}.arp_notify", "1"),),  # the bridge plugin's container sysctl
    )
    return PodPlan(pod.key, a.node, names.node_netns(c.name, a.node), a.ip, host, ns)
