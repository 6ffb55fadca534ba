"""What the CNI `bridge` plugin with `host-local` IPAM programs for a pod, as flannel's CNI plugin delegates it:
`{"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
"mtu": FLANNEL_MTU, "ipam": {"type": "host-local", "ranges": [[{"subnet": FLANNEL_SUBNET}]],
"routes": [{"dst": FLANNEL_NETWORK}]}}` (flannel-io/cni-plugin flannel_linux.go, containernetworking/plugins
plugins/main/bridge)."""
from __future__ import annotations

import ipaddress

from emu.model import names
from emu.alloc.ipam import Assignment, gateway
from emu.model.types import ClusterSpec, Pod
from emu.plan.objects import Address, Link, NetnsPlan, PodPlan, Route

BRIDGE = "cni0"
POD_IFNAME = "eth0"


def bridge_mac(cluster: str, node: str) -> str:
    """cni0's hardware address, set explicitly so that it never changes while pods come and go.

    A Linux bridge whose address was never set follows its ports: br_stp_recalculate_bridge_id (net/bridge/
    br_stp_if.c) gives it the lowest port MAC each time a port joins or leaves, unless the device's
    addr_assign_type is NET_ADDR_SET.  Deleting the pod with the lowest MAC would then move the gateway's MAC
    and black-hole the node's other pods until their neighbour entry for the gateway expires.  The bridge plugin
    prevents this in ensureAddr (containernetworking/plugins plugins/main/bridge/bridge.go, v1.1.1 as Debian ships
    it and the newest alike), which cmdAdd calls for an isGateway bridge -- and flannel's CNI plugin always sets
    isGateway (flannel-io/cni-plugin flannel_linux.go); flanneld itself never touches cni0.  ensureAddr "sets the
    bridge's MAC to itself" (LinkSetHardwareAddr with the address the bridge had when ensureBridge read it, the
    random one the kernel gave it at creation), which marks it NET_ADDR_SET.  We give the address at creation
    (IFLA_ADDRESS on RTM_NEWLINK, which rtnl_create_link also marks NET_ADDR_SET), derived from the node's
    identity instead of random so that a plan is reproducible, as names.vtep_mac does for flannel.1."""
    return names.stable_mac(cluster, node, BRIDGE)


def bridge_link(mtu: int, mac: str) -> Link:
    """cni0, created by the plugin on a node's first pod with the delegate's MTU and a fixed address."""
    return Link(BRIDGE, "bridge", mtu=mtu, mac=mac)


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
