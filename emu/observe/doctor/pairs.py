"""Which probes the doctor sends: one pod per node and per ordered node pair, chosen so that the cluster's
NetworkPolicies allow the probe (a denied probe says nothing about routing).  Pure: the model, the plan and the
policy engine decide; `gather` sends."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emu.alloc.ipam import Allocations
from emu.model.types import Pod, Protocol, Topology
from emu.addons.netpol.engine import Engine
from emu.addons.netpol.model import Direction
from emu.plan.objects import ClusterPlan

CANDIDATES = 8  # pods tried per node when policies deny the first choice
IP_ICMP_HEADERS = 28  # IPv4 20 + ICMP 8: the echo payload that fills an MTU
SMALL_ECHO = 56  # ping's default payload: what tells a black hole for large packets from no path at all


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe between two pods on two nodes (`size` and `df` for the MTU probe)."""

    src: str
    dst: str
    src_node: str
    dst_node: str
    src_ip: str
    dst_ip: str
    proto: str  # tcp | udp | icmp
    port: int | None = None
    size: int | None = None
    df: bool = False

    @property
    def what(self) -> str:
        p = self.proto + (f"/{self.port}" if self.port else "")
        if self.size is not None:
            p += f" {self.size} bytes" + (" DF" if self.df else "")
        return p

    @property
    def pair(self) -> str:
        return f"{self.src_node} -> {self.dst_node}"


def result_text(p: Probe, r: Mapping[str, Any]) -> str:
    """One line: what was sent, from where to where, and what the kernel did with it."""
    line = f"probe {p.what} {p.src} ({p.src_node}) -> {p.dst} ({p.dst_ip}, {p.dst_node}): {r.get('verdict')}"
    if r.get("answered_by"):
        line += f", answered by {r['answered_by']}"
    if r.get("rtt_ms") is not None:
        line += f", rtt {r['rtt_ms']:.2f} ms"
    icmp = r.get("icmp")
    if icmp:
        name = icmp.get("sender_name")
        line += f"; ICMP type {icmp.get('type')} code {icmp.get('code')} from {icmp.get('sender')}" + \
            (f" ({name})" if name else "")
        if icmp.get("mtu"):
            line += f", mtu {icmp['mtu']}"
    elif r.get("detail") and not r.get("ok"):
        line += f" ({r['detail']})"
    return line


def node_pods(topo: Topology, plan: ClusterPlan) -> dict[str, list[Pod]]:
    """Per node, its pods that have a namespace of their own (hostNetwork pods are their node), in model order with
    kube-system's last (the addons' pods are the least representative)."""
    out: dict[str, list[Pod]] = {n.name: [] for n in plan.nodes}
    for pod in sorted(topo.pods, key=lambda p: p.namespace == "kube-system"):
        pp = plan.pod(pod.key)
        if pp is not None and not pp.host_network:
            out.setdefault(pp.node, []).append(pod)
    return out


def _target(pod: Pod) -> tuple[str, int | None]:
    """What to probe a pod with: its first TCP port, else its first UDP port (the agent answers both), else ICMP
    echo (the kernel answers)."""
    for want in (Protocol.TCP, Protocol.UDP):
        port = next((p.container_port for p in pod.ports if p.protocol is want), None)
        if port is not None:
            return want.value.lower(), port
    return "icmp", None


def _open(engine: Engine, a: Pod, b: Pod) -> bool:
    """No policy isolates a for egress or b for ingress: anything may pass (ICMP included)."""
    return not engine.selecting(a, Direction.EGRESS) and not engine.selecting(b, Direction.INGRESS)


def _allowed(engine: Engine, a: Pod, b: Pod, proto: str, port: int | None) -> bool:
    if proto == "icmp":
        return _open(engine, a, b)
    assert port is not None
    return engine.allowed(a.key, b.key, port, Protocol(proto.upper()))


def connectivity(topo: Topology, alloc: Allocations, plan: ClusterPlan
                 ) -> tuple[list[Probe], list[tuple[str, str]]]:
    """For every ordered pair of nodes, one probe from a pod on the first to a pod on the second that the policies
    allow; and the pairs that get none, with the reason."""
    engine = Engine.for_cluster(topo, alloc)
    pods = node_pods(topo, plan)
    nodes = [n.name for n in plan.nodes]
    probes, skipped = [], []
    for x in nodes:
        for y in nodes:
            if x == y:
                continue
            if not pods[x] or not pods[y]:
                empty = x if not pods[x] else y
                skipped.append((f"{x} -> {y}", f"no pod with its own network namespace on {empty}"))
                continue
            chosen = None
            for a in pods[x][:CANDIDATES]:
                for b in pods[y][:CANDIDATES]:
                    proto, port = _target(b)
                    if _allowed(engine, a, b, proto, port):
                        chosen = (a, b, proto, port)
                        break
                if chosen:
                    break
            if chosen is None:
                skipped.append((f"{x} -> {y}", "the NetworkPolicies deny every probe between the pods tried "
                                                f"({pods[x][0].key} ... -> {pods[y][0].key} ...)"))
                continue
            a, b, proto, port = chosen
            probes.append(Probe(a.key, b.key, x, y, str(alloc.pods[a.key].ip), str(alloc.pods[b.key].ip), proto,
                                port))
    return probes, skipped


def mtu(topo: Topology, alloc: Allocations, plan: ClusterPlan, pod_mtu: Mapping[str, int]) -> list[Probe]:
    """For every ordered pair of nodes, an ICMP echo with Don't Fragment that fills the sender's eth0 MTU (as
    observed; the pod with the largest one sends), between pods no policy isolates; pairs without such pods get
    none."""
    engine = Engine.for_cluster(topo, alloc)
    pods = node_pods(topo, plan)
    out = []
    for x, senders in pods.items():
        for y, receivers in pods.items():
            if x == y:
                continue
            biggest = sorted((a for a in senders if a.key in pod_mtu), key=lambda a: -pod_mtu[a.key])
            pair = next(((a, b) for a in biggest[:CANDIDATES] for b in receivers[:CANDIDATES]
                         if _open(engine, a, b)), None)
            if pair is None:
                continue
            a, b = pair
            out.append(Probe(a.key, b.key, x, y, str(alloc.pods[a.key].ip), str(alloc.pods[b.key].ip), "icmp",
                             size=pod_mtu[a.key] - IP_ICMP_HEADERS, df=True))
    return out
