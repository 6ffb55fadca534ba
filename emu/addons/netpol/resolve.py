"""Policies resolved against the pods and namespaces of the model: kube-router's buildNetworkPoliciesInfo as pure
data (which pods a policy selects, which addresses each rule's peers are, which numbers its named ports resolve to),
and each node's input to the rule generator.  Selection uses the engine's peer semantics, so the dataplane and the
expectations share one reading of the API.

Named ports name the destination pod's containerPort: an ingress rule's names are resolved against the policy's
own pods (the destinations, as kube-router does), an egress rule's against every pod of the cluster, and its rules
match the peer set and the set of pods naming the port together (kube-router resolves egress names over the peers'
pods only, or the policy namespace's pods when the rule has no peers, and then matches any destination on the
number).
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.alloc.ipam import Allocations
from emu.model.types import Pod, Topology
from emu.addons.netpol.engine import Engine
from emu.addons.netpol.model import Direction, IPBlock, NetworkPolicy, Rule

LAYER = "plan"


@dataclass(frozen=True, slots=True)
class PortSpec:
    """protocolAndPort: `-p PROTO [--dport PORT[:END]]`."""

    protocol: str  # "tcp" | "udp" | "sctp"
    port: int | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class NamedPort:
    """endPoints: one number a port name resolves to, and the destination pods that give it that name."""

    name: str
    protocol: str
    port: int
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """ingressRule / egressRule: the other ends (pods, ipBlock entries) and the ports."""

    index: int
    match_all_peers: bool
    peer_ips: tuple[str, ...]  # pods the peers select (possibly none)
    ip_blocks: tuple[str, ...]  # ipset hash:net entries: "CIDR" or "CIDR nomatch" for an except
    match_all_ports: bool
    ports: tuple[PortSpec, ...]
    named_ports: tuple[NamedPort, ...]

    @property
    def has_pod_peers(self) -> bool:
        return bool(self.peer_ips)


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    namespace: str
    name: str
    directions: tuple[Direction, ...]
    targets: tuple[tuple[str, str], ...]  # (pod key, IP) of the pods the policy selects
    ingress: tuple[RuleInfo, ...]
    egress: tuple[RuleInfo, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def target_ips(self) -> tuple[str, ...]:
        return tuple(ip for _, ip in self.targets)

    def rules(self, direction: Direction) -> tuple[RuleInfo, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


@dataclass(frozen=True, slots=True)
class LocalPod:
    namespace: str
    name: str
    ip: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class NodeInput:
    """Everything one node's rules depend on; equal inputs give equal rules (up to the sync version)."""

    node: str
    pods: tuple[LocalPod, ...]
    policies: tuple[PolicyInfo, ...]
    service_cidr: str
    node_port_range: str = "30000:32767"  # --service-node-port-range, as iptables' multiport writes it
    lb_ranges: tuple[str, ...] = ()  # --loadbalancer-ip-range: the cluster's loadBalancerPool


def ip_block_entries(block: IPBlock) -> list[str]:
    """evalIPBlockPeer: the CIDR, and each except as a `nomatch` entry; a /0 becomes two /1 (hash:net cannot hold
    a /0)."""
    def split(net: str) -> list[str]:
        return ["0.0.0.0/1", "128.0.0.0/1"] if net.endswith("/0") else [net]

    return split(str(block.cidr)) + [f"{e} nomatch" for ex in block.except_ for e in split(str(ex))]


class Resolver:
    """Resolves every policy of one model; `node_input(node)` is what that node's rules are made from."""

    def __init__(self, topology: Topology, allocations: Allocations):
        self.topology = topology
        self.engine = Engine.for_cluster(topology, allocations)
        self.pods = [p for p in topology.pods if p.key in allocations.pods]  # actionable: they have an IP
        self.ip = {k: str(a.ip) for k, a in allocations.pods.items()}
        self.node = {k: a.node for k, a in allocations.pods.items()}
        self.policies = tuple(self.policy(p) for p in topology.network_policies)

    def node_input(self, node: str) -> NodeInput:
        c = self.topology.cluster
        local = tuple(LocalPod(p.namespace, p.name, self.ip[p.key]) for p in self.pods if self.node[p.key] == node)
        lb = (str(c.load_balancer_pool),) if c.load_balancer_pool is not None else ()
        return NodeInput(node, local, self.policies, str(c.service_cidr), lb_ranges=lb)

    def policy(self, pol: NetworkPolicy) -> PolicyInfo:
        targets = [p for p in self.pods if p.namespace == pol.namespace and pol.pod_selector.matches(p.labels)]
        ingress = tuple(self._rule(pol, Direction.INGRESS, i, r, targets) for i, r in enumerate(pol.ingress)) \
            if pol.applies(Direction.INGRESS) else ()
        egress = tuple(self._rule(pol, Direction.EGRESS, i, r, targets) for i, r in enumerate(pol.egress)) \
            if pol.applies(Direction.EGRESS) else ()
        return PolicyInfo(pol.namespace, pol.name, pol.policy_types, tuple((p.key, self.ip[p.key]) for p in targets),
                          ingress, egress)

    def _rule(self, pol: NetworkPolicy, direction: Direction, index: int, rule: Rule, targets: list[Pod]
              ) -> RuleInfo:
        peer_pods = [p for p in self.pods if any(
            peer.ip_block is None and self.engine.peer_matches(pol, peer, self.engine.endpoint(p.key))
            for peer in rule.peers)]
        blocks = [e for peer in rule.peers if peer.ip_block is not None for e in ip_block_entries(peer.ip_block)]
        destinations = targets if direction is Direction.INGRESS else self.pods
        ports = tuple(PortSpec(pp.protocol.value.lower(), pp.port, pp.end_port)  # type: ignore[arg-type]
                      for pp in rule.ports if not isinstance(pp.port, str))
        return RuleInfo(index, not rule.peers, tuple(self.ip[p.key] for p in peer_pods), tuple(blocks),
                        not rule.ports, ports, self._named(rule, destinations))

    def _named(self, rule: Rule, destinations: list[Pod]) -> tuple[NamedPort, ...]:
        """processNetworkPolicyPorts for names: one entry per (name, protocol, number), with the pods naming it."""
        out: list[NamedPort] = []
        for pp in rule.ports:
            if not isinstance(pp.port, str):
                continue
            by_number: dict[int, list[str]] = {}
            for p in destinations:
                for cp in p.ports:
                    if cp.name == pp.port and cp.protocol is pp.protocol:
                        by_number.setdefault(cp.container_port, []).append(self.ip[p.key])
            out.extend(NamedPort(pp.port, pp.protocol.value.lower(), n, tuple(ips))
                       for n, ips in sorted(by_number.items()))
        return tuple(out)


def node_inputs(topology: Topology, allocations: Allocations) -> dict[str, NodeInput]:
    """Every node's input, or {} when the cluster has no NetworkPolicy (then nothing is enforced or installed)."""
    if not topology.network_policies:
        return {}
    r = Resolver(topology, allocations)
    return {n: r.node_input(n) for n in topology.cluster.nodes}
