"""The underlay: one L2 segment (a bridge in its own namespace) joining every node's eth0, plus the `external` host.

This stands in for the network a real cluster's machines share; it lives entirely in namespaces emu creates, so no
packet of the emulated network can reach the machine's real interfaces.
"""
from __future__ import annotations

import ipaddress

from emu.model import names
from emu.alloc.ipam import external_ip
from emu.model.types import ClusterSpec
from emu.plan.objects import Address, Link, NetnsPlan, Route

UNDERLAY_BRIDGE = "br-underlay"


def underlay_plan(c: ClusterSpec) -> NetnsPlan:
    ports = [Link(names.underlay_port(n, i), "veth", mtu=c.node_mtu(n), master=UNDERLAY_BRIDGE, peer="eth0",
                  peer_netns=names.node_netns(c.name, n), peer_mtu=c.node_mtu(n))
             for i, n in enumerate(c.nodes, start=1)]
    ports.append(Link("to-external", "veth", mtu=c.mtu, master=UNDERLAY_BRIDGE, peer="eth0",
                      peer_netns=names.external_netns(c.name), peer_mtu=c.mtu))
    links = (Link(UNDERLAY_BRIDGE, "bridge", mtu=c.mtu), *ports)
    return NetnsPlan(names.underlay_netns(c.name), "underlay", "underlay", links=links,
                     up=("lo", *(link.name for link in links)))


def external_plan(c: ClusterSpec, lb_routes: tuple[Route, ...] = ()) -> NetnsPlan:
    """The external host: a client outside the cluster, and the router that learns LoadBalancer addresses the way a
    BGP-announcing load balancer advertises them (an ECMP route via every announcing node, hashed on L4)."""
    ip = ipaddress.IPv4Interface(f"{external_ip(c)}/{c.node_network.prefixlen}")
    clients = tuple(Address("lo", ipaddress.IPv4Interface(f"{a}/32")) for a in c.external_clients)
    return NetnsPlan(names.external_netns(c.name), "external", "external", up=("lo", "eth0"),
                     mtu=(("eth0", c.mtu),), addresses=(Address("eth0", ip), *clients), routes=lb_routes,
                     sysctls=(("net.ipv4.fib_multipath_hash_policy", "1"),))
