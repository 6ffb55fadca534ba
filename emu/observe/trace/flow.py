"""What the cluster model says about a probe's flow before it is sent: the names of the namespaces it may cross,
the addresses and ports it may carry after DNAT (a Service's endpoints), and where to listen."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.cluster.lifecycle import Cluster
from emu.alloc.ipam import node_ips
from emu.addons.kubeproxy import inputs
from emu.observe.targets import Target


@dataclass(frozen=True)
class Variants:
    """Destinations the probe may have on the wire: the target itself and, for a Service, every endpoint."""

    addrs: tuple[str, ...]
    ports: tuple[int, ...]
    endpoints: tuple[tuple[str, int, str | None], ...] = ()  # (ip, port, pod key) of a matched Service
    services: tuple[str, ...] = ()  # "ns/name:port" of the matched Service ports


def labels(cl: Cluster) -> dict[str, str]:
    """netns -> the name users give it: NS/POD, node/NAME, underlay, external."""
    out = {}
    for ns in cl.plan.infra:
        out[ns.name] = f"node/{ns.owner}" if ns.role == "node" else ns.role
    for p in cl.plan.pods:
        if not p.host_network:
            out[p.netns.name] = p.key
    return out


def roles(cl: Cluster) -> dict[str, str]:
    out = {ns.name: ns.role for ns in cl.plan.infra}
    out.update({p.netns.name: "pod" for p in cl.plan.pods if not p.host_network})
    return out


def node_netns(cl: Cluster) -> list[str]:
    return [n.netns for n in cl.plan.nodes]


def variants(cl: Cluster, dst: Target, proto: str, port: int | None) -> Variants:
    """The target and, when ip:port is a Service's (ClusterIP, external IP, load balancer address, or a node's
    address and a nodePort), the endpoints kube-proxy may DNAT it to."""
    addrs, ports = [dst.ip], [port] if port is not None else []
    eps: list[tuple[str, int, str | None]] = []
    svcs: list[str] = []
    if proto == "icmp" or port is None:
        return Variants(tuple(addrs), tuple(ports))
    states = inputs.node_states(cl.topology, cl.allocations)
    nodes = {str(ip) for ip in node_ips(cl.topology.cluster).values()}
    ip = ipaddress.IPv4Address(dst.ip)
    seen = set()
    for state in states.values():
        for sp, endpoints in state.services:
            if sp.proto != proto or sp.port_string in seen:
                continue
            front = {sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips}
            if not ((ip in front and port == sp.port) or (dst.ip in nodes and sp.node_port and port == sp.node_port)):
                continue
            seen.add(sp.port_string)
            svcs.append(sp.port_string)
            for e in endpoints:
                eps.append((str(e.ip), e.port, e.pod))
        break  # every node's state lists every service port
    for eip, eport, _pod in eps:
        if eip not in addrs:
            addrs.append(eip)
        if eport not in ports:
            ports.append(eport)
    return Variants(tuple(addrs), tuple(ports), tuple(eps), tuple(svcs))


def capture_netns(cl: Cluster, src_netns: str, addrs: tuple[str, ...]) -> list[str]:
    """Where to listen: the source, every node, the underlay, the external host, and the pods that own one of the
    flow's addresses (the target, the Service's endpoints)."""
    owned = {str(p.ip): p.netns.name for p in cl.plan.pods}
    out = [src_netns] + [ns.name for ns in cl.plan.infra]
    out += [owned[a] for a in addrs if a in owned]
    return list(dict.fromkeys(out))
