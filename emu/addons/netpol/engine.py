"""The policy engine: from the model alone (pods, namespaces and their labels, policies, and where IPAM put each
pod), is a connection allowed, which policies select its ends, which rule allows it, or why nothing does.

Pure and deterministic; no root.  The semantics are networking.k8s.io/v1's:

* A pod is isolated for ingress (egress) when a policy in its namespace selects it and lists Ingress (Egress) in
  its policyTypes; a pod selected by no such policy is open in that direction.
* A connection is allowed when the source's egress allows it and the destination's ingress allows it.  For an
  isolated pod, that means at least one rule of at least one selecting policy matches (policies add up; order
  does not matter).  Replies of an allowed connection are allowed (connection tracking: not the engine's job).
* A rule matches when one of its peers matches the other end (no peers: every end) and one of its ports matches
  (no ports: every port).  Peers: podSelector alone selects pods in the policy's namespace; namespaceSelector alone
  every pod of the matching namespaces; both, the matching pods of the matching namespaces; ipBlock an address
  range minus its excepts (applied to pod addresses too, as iptables-based CNIs do).  Ports: a protocol and a
  number, a number range (endPort), no number (every port of the protocol), or a name, resolved against the
  destination pod's named containerPorts.
* Two exceptions from the Kubernetes documentation: a pod cannot block traffic to itself (loopback never leaves
  its network namespace; kubernetes#95879, the upstream e2e suite ignores it), and traffic to and from the node a
  pod runs on is always allowed.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from emu.alloc.ipam import Allocations, external_ip, gateway, node_ips, node_subnets
from emu.model.types import Pod, Protocol, Topology
from emu.addons.netpol.model import Direction, NetworkPolicy, Peer, PolicyPort, Rule

LAYER = "alloc"

IPv4Address = ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a connection: an address, and the pod or node that owns it (if any)."""

    label: str  # "x/a", "node/node-1", "external" or the address
    ip: IPv4Address
    pod: Pod | None = None
    node: str | None = None  # the pod's node, or the node owning the address


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that allows the connection: policy, direction, rule index, and the peer and port that matched."""

    policy: str
    direction: Direction
    rule: int
    peer: str  # "every peer" or the peer's description
    port: str  # "every port" or the port's description

    def __str__(self) -> str:
        key = "from" if self.direction is Direction.INGRESS else "to"
        return f"{self.policy} {self.direction.lower}[{self.rule}]: {key} {self.peer}, port {self.port}"


@dataclass(frozen=True, slots=True)
class Side:
    """One direction of a connection: the source's egress or the destination's ingress."""

    direction: Direction
    pod: str | None  # the pod whose policies decide, None for a non-pod end
    policies: tuple[str, ...]  # the policies selecting that pod in this direction
    allowed: bool
    reason: str
    matches: tuple[Match, ...] = ()
    misses: tuple[str, ...] = ()  # why each rule of each selecting policy does not match


@dataclass(frozen=True, slots=True)
class Verdict:
    src: str
    dst: str
    port: int
    protocol: Protocol
    allowed: bool
    egress: Side
    ingress: Side
    reason: str


class Engine:
    """Decisions for one model.  Build it once per topology (it indexes namespaces, pods and policies)."""

    def __init__(self, topology: Topology, pod_ips: Mapping[str, IPv4Address], pod_nodes: Mapping[str, str]):
        self.topology = topology
        self.ns_labels = {n.name: dict(n.labels) for n in topology.namespaces}
        self.pods = {p.key: p for p in topology.pods}
        self.pod_ips = dict(pod_ips)
        self.pod_nodes = dict(pod_nodes)
        self.by_ip = {ip: key for key, ip in self.pod_ips.items()}
        self.node_addrs = _node_addresses(topology)

    @classmethod
    def for_cluster(cls, topology: Topology, allocations: Allocations) -> "Engine":
        return cls(topology, {k: a.ip for k, a in allocations.pods.items()},
                   {k: a.node for k, a in allocations.pods.items()})

    # --- ends --------------------------------------------------------------------------------------------------

    def endpoint(self, name: str) -> Endpoint:
        """`NS/POD`, `node/NAME`, `external` or an IPv4 address; raises KeyError for an unknown name."""
        if name in self.pods:
            return Endpoint(name, self.pod_ips[name], self.pods[name], self.pod_nodes.get(name))
        if name.startswith("node/"):
            node = name[5:]
            return Endpoint(name, node_ips(self.topology.cluster)[node], None, node)
        if name == "external":
            return Endpoint(name, external_ip(self.topology.cluster))
        ip = IPv4Address(name)
        key = self.by_ip.get(ip)
        if key is not None:
            return self.endpoint(key)
        return Endpoint(name, ip, None, self.node_addrs.get(ip))

    # --- selection ---------------------------------------------------------------------------------------------

    def selecting(self, pod: Pod, direction: Direction) -> list[NetworkPolicy]:
        """The policies that isolate `pod` in `direction`: same namespace, podSelector matches, type listed."""
        return [p for p in self.topology.network_policies
                if p.namespace == pod.namespace and p.applies(direction) and p.pod_selector.matches(pod.labels)]

    def peer_matches(self, policy: NetworkPolicy, peer: Peer, other: Endpoint) -> bool:
        if peer.ip_block is not None:
            return peer.ip_block.contains(other.ip)
        if other.pod is None:
            return False  # selectors select pods; a node or an outside address is reachable through ipBlock only
        if peer.namespace_selector is not None:
            ns_ok = peer.namespace_selector.matches(self.ns_labels.get(other.pod.namespace, {}))
        else:
            ns_ok = other.pod.namespace == policy.namespace
        return ns_ok and (peer.pod_selector is None or peer.pod_selector.matches(other.pod.labels))

    # --- decisions ---------------------------------------------------------------------------------------------

    def check(self, src: Endpoint, dst: Endpoint, port: int, protocol: Protocol) -> Verdict:
        if src.pod is not None and dst.pod is not None and src.pod.key == dst.pod.key:
            why = "a pod cannot block traffic to itself (loopback never leaves its network namespace)"
            sides = [Side(d, src.pod.key, (), True, why) for d in (Direction.EGRESS, Direction.INGRESS)]
            return Verdict(src.label, dst.label, port, protocol, True, sides[0], sides[1], why)
        egress = self._side(Direction.EGRESS, src, dst, dst, port, protocol)
        ingress = self._side(Direction.INGRESS, dst, src, dst, port, protocol)
        allowed = egress.allowed and ingress.allowed
        if allowed:
            reason = "allowed: " + "; ".join(s.reason for s in (egress, ingress))
        else:
            reason = "denied: " + "; ".join(s.reason for s in (egress, ingress) if not s.allowed)
        return Verdict(src.label, dst.label, port, protocol, allowed, egress, ingress, reason)

    def allowed(self, src: str, dst: str, port: int, protocol: Protocol) -> bool:
        return self.check(self.endpoint(src), self.endpoint(dst), port, protocol).allowed

    def matrix(self, keys: Iterable[str], port: int, protocol: Protocol) -> dict[str, dict[str, bool]]:
        """expected[FROM][TO] for every pair of the given pods (itself included)."""
        keys = list(keys)
        ends = {k: self.endpoint(k) for k in keys}
        return {a: {b: self.check(ends[a], ends[b], port, protocol).allowed for b in keys} for a in keys}

    def _side(self, direction: Direction, own: Endpoint, other: Endpoint, dst: Endpoint, port: int,
              protocol: Protocol) -> Side:
        """Egress of the source (own=src) or ingress of the destination (own=dst)."""
        word = direction.lower
        if own.pod is None:
            return Side(direction, None, (), True, f"{word}: {own.label} is not a pod (no policy applies)")
        if other.pod is None and other.node is not None and other.node == own.node:
            note = "" if direction is Direction.INGRESS else \
                " (kube-router, and so emu's dataplane, still applies the pod's egress policies to it: " \
                "KUBE-ROUTER-INPUT)"
            return Side(direction, own.pod.key, (), True,
                        f"{word}: traffic {'to' if direction is Direction.EGRESS else 'from'} the pod's own node "
                        f"({other.label}) is always allowed{note}")
        policies = self.selecting(own.pod, direction)
        names = tuple(p.key for p in policies)
        if not policies:
            return Side(direction, own.pod.key, (), True,
                        f"{word} of {own.pod.key}: no policy selects it for {direction.value}, so it is open")
        matches, misses = [], []
        for pol in policies:
            found, why = self._policy(pol, direction, other, dst, port, protocol)
            matches.extend(found)
            misses.extend(why)
        if matches:
            first = f"{matches[0].policy} {word}[{matches[0].rule}]"
            more = f" (and {len(matches) - 1} more)" if len(matches) > 1 else ""
            return Side(direction, own.pod.key, names, True,
                        f"{word} of {own.pod.key} is isolated by {', '.join(names)} and allowed by {first}{more}",
                        tuple(matches), tuple(misses))
        return Side(direction, own.pod.key, names, False,
                    f"{word} of {own.pod.key} is isolated by {', '.join(names)} and no rule allows it",
                    (), tuple(misses))

    def _policy(self, pol: NetworkPolicy, direction: Direction, other: Endpoint, dst: Endpoint, port: int,
                protocol: Protocol) -> tuple[list[Match], list[str]]:
        rules = pol.rules(direction)
        if not rules:
            return [], [f"{pol.key} has no {direction.lower} rules: it allows no {direction.lower} traffic"]
        matches, misses = [], []
        for i, rule in enumerate(rules):
            peer = self._peer(pol, rule, other)
            pp = _port(rule, dst, port, protocol)
            where = f"{pol.key} {direction.lower}[{i}]"
            if peer is not None and pp is not None:
                matches.append(Match(pol.key, direction, i, peer, pp))
            elif peer is None:
                key = "from" if direction is Direction.INGRESS else "to"
                peers = "; ".join(p.describe(pol.namespace) for p in rule.peers)
                misses.append(f"{where}: {other.label} is not among its `{key}` peers ({peers})")
            else:
                ports = ", ".join(str(p) for p in rule.ports)
                misses.append(f"{where}: {protocol.value}/{port} is not among its ports ({ports})")
        return matches, misses

    def _peer(self, pol: NetworkPolicy, rule: Rule, other: Endpoint) -> str | None:
        if not rule.peers:
            return "every peer"
        for peer in rule.peers:
            if self.peer_matches(pol, peer, other):
                return peer.describe(pol.namespace)
        return None


def port_matches(pp: PolicyPort, dst: Endpoint, port: int, protocol: Protocol) -> bool:
    """A rule's port against the destination: protocol first; a name is looked up in the destination pod."""
    if pp.protocol is not protocol:
        return False
    if pp.port is None:
        return True
    if isinstance(pp.port, int):
        return pp.port <= port <= (pp.end_port if pp.end_port is not None else pp.port)
    if dst.pod is None:
        return False  # a named port needs a destination pod to name it
    return any(cp.name == pp.port and cp.protocol is protocol and cp.container_port == port for cp in dst.pod.ports)


def _port(rule: Rule, dst: Endpoint, port: int, protocol: Protocol) -> str | None:
    if not rule.ports:
        return "every port"
    for pp in rule.ports:
        if port_matches(pp, dst, port, protocol):
            return str(pp)
    return None


def _node_addresses(topology: Topology) -> dict[IPv4Address, str]:
    """Every address a node owns: its underlay IP, flannel.1's <subnet>.0 and cni0's gateway."""
    c = topology.cluster
    out: dict[IPv4Address, str] = {ip: n for n, ip in node_ips(c).items()}
    for n, sn in node_subnets(c).items():
        out[sn.network_address] = n
        out[gateway(sn)] = n
    return out
