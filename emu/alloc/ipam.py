"""Address management: node subnets as kube-controller-manager's range allocator hands them out, node IPs on the
underlay, and pod IPs as the host-local IPAM plugin allocates them (round robin from the last reserved address)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emu.errors import Problem, ValidationError
from emu.addons.multus import allocate as multus
from emu.alloc import services as svcalloc
from emu.alloc.services import ServiceAlloc
from emu.model.types import ClusterSpec, Pod, Topology

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


def node_subnets(cluster: ClusterSpec) -> dict[str, IPv4Network]:
    """The range allocator gives nodes consecutive /nodeCIDRMaskSize subnets of the cluster CIDR in registration
    order: the first node gets 10.244.0.0/24, the second 10.244.1.0/24, ..."""
    subnets = cluster.pod_cidr.subnets(new_prefix=cluster.node_cidr_mask_size)
    return {node: next(subnets) for node in cluster.nodes}


def node_ips(cluster: ClusterSpec) -> dict[str, IPv4Address]:
    """Nodes sit on the underlay from .2 up (like kind's nodes on their docker network); .1 is the external host."""
    base = cluster.node_network.network_address
    return {node: base + 2 + i for i, node in enumerate(cluster.nodes)}


def external_ip(cluster: ClusterSpec) -> IPv4Address:
    return cluster.node_network.network_address + 1


def gateway(subnet: IPv4Network) -> IPv4Address:
    """host-local's and the bridge plugin's default gateway: the subnet's first address."""
    return subnet.network_address + 1


def pod_capacity(subnet: IPv4Network) -> int:
    """Addresses host-local can hand out: network+1 .. broadcast-1, minus the gateway."""
    return max(subnet.num_addresses - 3, 0)


@dataclass(frozen=True, slots=True)
class Assignment:
    node: str
    ip: IPv4Address


@dataclass
class Allocations:
    """What IPAM has handed out; kept in the cluster record so live changes keep every existing pod where it is."""

    pods: dict[str, Assignment]  # pod key "ns/name" -> assignment
    last_reserved: dict[str, IPv4Address]  # node -> host-local's last_reserved_ip.0
    services: dict[str, ServiceAlloc] = field(default_factory=dict)
    secondary: dict[str, object] = field(default_factory=dict)  # Multus secondary networks (emu.addons.multus.allocate)

    @classmethod
    def empty(cls) -> "Allocations":
        return cls({}, {})

    def to_json(self) -> dict[str, object]:
        return {
            "pods": {k: {"node": a.node, "ip": str(a.ip)} for k, a in self.pods.items()},
            "lastReserved": {n: str(ip) for n, ip in self.last_reserved.items()},
            "services": {k: a.to_json() for k, a in self.services.items()},
            "secondary": self.secondary,
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> "Allocations":
        pods = d.get("pods", {})
        last = d.get("lastReserved", {})
        svcs = d.get("services", {})
        assert isinstance(pods, dict) and isinstance(last, dict) and isinstance(svcs, dict)
        return cls({k: Assignment(v["node"], IPv4Address(v["ip"])) for k, v in pods.items()},
                   {n: IPv4Address(ip) for n, ip in last.items()},
                   {k: ServiceAlloc.from_json(v) for k, v in svcs.items()}, dict(d.get("secondary") or {}))


def _next_free(subnet: IPv4Network, last: IPv4Address | None, used: set[IPv4Address]) -> IPv4Address | None:
    """host-local's iterator: start after last_reserved_ip, skip the gateway and used addresses, wrap once."""
    start, end = subnet.network_address + 1, subnet.broadcast_address - 1
    size = int(end) - int(start) + 1
    first = int(last) + 1 if last is not None and start <= last <= end else int(start)
    for k in range(size):
        cand = IPv4Address(int(start) + (first - int(start) + k) % size)
        if cand != gateway(subnet) and cand not in used:
            return cand
    return None


def allocate(topo: Topology, previous: Allocations) -> Allocations:
    """Place new pods (the node with the fewest pods, ties in node order, unless spec.nodeName says) and give them
    addresses; pods already allocated keep node and IP, pods gone release theirs.  Raises ValidationError when a
    node's subnet is full."""
    cluster = topo.cluster
    subnets = node_subnets(cluster)
    keep = {p.key: previous.pods[p.key] for p in topo.pods
            if p.key in previous.pods and previous.pods[p.key].node in subnets
            and (p.node_name is None or p.node_name == previous.pods[p.key].node)
            and p.host_network == (previous.pods[p.key].ip == node_ips(cluster)[previous.pods[p.key].node])}
    load = {n: 0 for n in cluster.nodes}
    used: dict[str, set[IPv4Address]] = {n: set() for n in cluster.nodes}
    for a in keep.values():
        load[a.node] += 1
        used[a.node].add(a.ip)  # (a hostNetwork pod's node IP is outside the pod subnet: harmless)
    out = Allocations(dict(keep), dict(previous.last_reserved))
    problems: list[Problem] = []
    for p in topo.pods:
        if p.key in keep:
            continue
        node = p.node_name or min(cluster.nodes, key=lambda n: (load[n], cluster.nodes.index(n)))
        if p.host_network:  # the node's own address; nothing from the node's pod subnet
            load[node] += 1
            out.pods[p.key] = Assignment(node, node_ips(cluster)[node])
            continue
        ip = _next_free(subnets[node], out.last_reserved.get(node), used[node])
        if ip is None:
            problems.append(_full(topo, p, node, subnets[node]))
            continue
        load[node] += 1
        used[node].add(ip)
        out.last_reserved[node] = ip
        out.pods[p.key] = Assignment(node, ip)
    if problems:
        raise ValidationError(problems)
    out.pods = {p.key: out.pods[p.key] for p in topo.pods}  # document order, drops removed pods
    out.services = svcalloc.allocate(topo, previous.services)
    out.secondary = multus.allocate(topo, previous.secondary)
    return out


def _full(topo: Topology, p: Pod, node: str, subnet: IPv4Network) -> Problem:
    fld = "spec.nodeName" if p.node_name else "metadata.name"
    return Problem(topo.file, p.document, f"Pod {p.key}", fld,
                   f"node {node} is full: its subnet {subnet} holds {pod_capacity(subnet)} pods "
                   f"(use a smaller spec.nodeCIDRMaskSize or more nodes)")
