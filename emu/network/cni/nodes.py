"""A node of a `plugin: cni` cluster before any plugin runs.

nodeConfig flannel: exactly what flanneld programs (emu.network.flannel.nodes: flannel.1 or host-gw routes,
neighbours, FDB, FLANNEL-* rules, subnet.env) but no cni0: the bridge plugin creates it on the node's first pod.
nodeConfig none: only the node's eth0 on the underlay, its default route to the external host and forwarding;
routes between nodes are left to the plugins (or nothing, for a single-node cluster)."""
from __future__ import annotations

import ipaddress

from emu.network.flannel import nodes as flannel
from emu.model import names
from emu.alloc.ipam import external_ip
from emu.model.types import ClusterSpec
from emu.network.cni.spec import settings
from emu.plan.objects import Address, NetnsPlan, Route


def node_plan(c: ClusterSpec, node: str, subnets: dict[str, ipaddress.IPv4Network],
              ips: dict[str, ipaddress.IPv4Address]) -> NetnsPlan:
    if settings(c).node_config == "flannel":
        return flannel.node_plan(c, node, subnets, ips, has_pods=False)
    ip = ips[node]
    return NetnsPlan(
        names.node_netns(c.name, node), "node", node,
        up=("lo", flannel.UNDERLAY_IFNAME),
        mtu=((flannel.UNDERLAY_IFNAME, c.node_mtu(node)),),
        addresses=(Address(flannel.UNDERLAY_IFNAME, ipaddress.IPv4Interface(f"{ip}/{c.node_network.prefixlen}")),),
        routes=(Route(ipaddress.IPv4Network("0.0.0.0/0"), flannel.UNDERLAY_IFNAME, via=external_ip(c)),),
        sysctls=flannel.node_sysctls(c, node),
        iptables_restore=c.iptables("restore"),
    )


def pod_mtu(c: ClusterSpec, node: str | None = None) -> int:
    return flannel.mtu(c, node) if settings(c).node_config == "flannel" else c.node_mtu(node)
