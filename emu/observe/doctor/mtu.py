"""Check `mtu`: every link's MTU as planned, and the MTU along each node-to-node pod path.  Pure.

flannel gives the pods, cni0 and flannel.1 FLANNEL_MTU = the node's eth0 MTU minus the VXLAN overhead (50: outer
IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14); host-gw does not encapsulate.  A pod's packet to a pod on
another node must fit every MTU the kernel enforces on its way:

    sender eth0 -> host veth (a veth drops what exceeds its peer's MTU) -> flannel.1 (routed: ICMP frag-needed)
    -> node eth0, underlay ports and the far node's eth0 (outer packet: MTU - 50) -> far cni0 (routed)
    -> far host veth (bridged) -> receiver eth0

A hop smaller than the sender's eth0 is where large packets are dropped or fragmented: that hop is named.
The DF probe (an ICMP echo that fills the sender's MTU) shows what the dataplane really does with one.  The pod
network names its own part of the path (emu.network.base.MtuPath: flannel.1 and the VXLAN overhead, cni0), and
whether the pods are its plan's at all (`cni.plugin: cni`: the plugins choose their MTUs)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emu.model.types import ClusterSpec
from emu.network import table as networks
from emu.network.base import MtuPath
from emu.observe.readback import Observed
from emu.plan.objects import ClusterPlan, NetnsPlan, PodPlan
from emu.observe.doctor import findings as f
from emu.observe.doctor.findings import Finding
from emu.observe.doctor.pairs import Probe, result_text
from emu.observe.doctor.state import subject

CHECK = "mtu"


@dataclass(frozen=True, slots=True)
class LinkMtu:
    """One interface's planned MTU, and where that number comes from."""

    subject: str
    netns: str
    dev: str
    label: str  # the device, with whose host end it is for a pod's veth
    planned: int
    why: str


def _why(ns: NetnsPlan, dev: str, kind: str | None, spec: ClusterSpec, mp: MtuPath) -> str:
    if ns.role == "node":
        node = ns.owner
        if kind is not None and dev in mp.tunnel:
            return f"node MTU {spec.node_mtu(node)} - {mp.overhead} {mp.encap} overhead"
        if dev == "eth0":
            return "the node's MTU" + (" (nodeSettings)" if spec.node_mtu(node) != spec.mtu else " (spec.mtu)")
        return f"{mp.pod_mtu} of {node}"
    if ns.role == "underlay":
        return "the underlay MTU (spec.mtu)" if kind == "bridge" or dev == "to-external" else \
            "the MTU of the node it faces"
    return "the underlay MTU (spec.mtu)"


def planned(plan: ClusterPlan, spec: ClusterSpec, with_pods: bool = True) -> list[LinkMtu]:
    """Every interface MTU the plan sets: the infrastructure's links, veth peers arriving in a namespace (a node's
    eth0), and each pod's veth pair (the host end in its node, eth0 in the pod)."""
    mp = networks.for_cluster(spec).mtu_path(spec)
    out = []
    for ns in plan.infra:
        subj = subject(ns)
        for link in ns.links:
            if link.mtu:
                out.append(LinkMtu(subj, ns.name, link.name, link.name, link.mtu,
                                   _why(ns, link.name, link.kind, spec, mp)))
        for dev, value in ns.mtu:
            out.append(LinkMtu(subj, ns.name, dev, dev, value, _why(ns, dev, None, spec, mp)))
    for p in plan.pods:
        if p.host_network or not with_pods:
            continue
        why = f"{mp.pod_mtu} of {p.node}"
        if p.host_link.mtu:
            out.append(LinkMtu(p.key, p.node_netns, p.host_link.name, f"{p.host_link.name} (host end of {p.key})",
                               p.host_link.mtu, why))
        if p.host_link.peer_mtu and p.host_link.peer:
            out.append(LinkMtu(p.key, p.netns.name, p.host_link.peer, p.host_link.peer, p.host_link.peer_mtu, why))
    return out


def _mtu(observed: Mapping[str, Observed | None], ns: str, dev: str) -> int | None:
    got = observed.get(ns)
    link = got.links.get(dev) if got is not None else None
    return link.mtu if link is not None else None


@dataclass(frozen=True, slots=True)
class Hop:
    label: str
    mtu: int
    overhead: int = 0  # bytes of encapsulation the packet carries here
    encap: str = ""  # which ("VXLAN")

    @property
    def effective(self) -> int:
        """The largest inner packet this hop carries."""
        return self.mtu - self.overhead

    def text(self) -> str:
        extra = f" - {self.overhead} {self.encap} = {self.effective}" if self.overhead else ""
        return f"{self.label}: {self.mtu}{extra}"


@dataclass(frozen=True, slots=True)
class Path:
    src_node: str
    dst_node: str
    sender: str  # the pod with the largest eth0 MTU on src_node
    hops: tuple[Hop, ...]  # the sender's eth0 first

    @property
    def sender_mtu(self) -> int:
        return self.hops[0].effective

    @property
    def limit(self) -> Hop:
        return min(self.hops[1:], key=lambda h: h.effective)


def _pods_on(plan: ClusterPlan, node: str) -> list[PodPlan]:
    return [p for p in plan.pods if p.node == node and not p.host_network]


def path(plan: ClusterPlan, spec: ClusterSpec, observed: Mapping[str, Observed | None], x: str, y: str
         ) -> Path | None:
    """The hops a pod packet from node x to node y crosses, with the MTUs observed; None unless both nodes have
    pods whose eth0 can be read."""
    nodes = {n.name: n for n in plan.nodes}
    underlay = next(ns for ns in plan.infra if ns.role == "underlay")
    ports = {link.peer_netns: link.name for link in underlay.links if link.kind == "veth"}

    def eth0(p: PodPlan) -> int | None:
        return _mtu(observed, p.netns.name, p.host_link.peer or "eth0")

    senders = [(eth0(p), p) for p in _pods_on(plan, x)]
    senders = [(m, p) for m, p in senders if m is not None]
    receivers = [(min(filter(None, (eth0(q), _mtu(observed, q.node_netns, q.host_link.name))), default=None), q)
                 for q in _pods_on(plan, y)]
    receivers = [(m, q) for m, q in receivers if m is not None]
    if not senders or not receivers:
        return None
    _, p = max(senders, key=lambda t: t[0])
    _, q = min(receivers, key=lambda t: t[0])
    nx, ny = nodes[x].netns, nodes[y].netns
    mp = networks.for_cluster(spec).mtu_path(spec)
    oh = mp.overhead
    wanted: list[tuple[str, str | None, str, int]] = [
        (f"{p.key} eth0", p.netns.name, p.host_link.peer or "eth0", 0),
        (f"node/{x} {p.host_link.name} (host end of {p.key})", nx, p.host_link.name, 0),
        *((f"node/{x} {dev}", nx, dev, 0) for dev in mp.tunnel),
        (f"node/{x} eth0", nx, "eth0", oh),
        (f"underlay {ports.get(nx)}", underlay.name, ports.get(nx) or "", oh),
        (f"underlay {ports.get(ny)}", underlay.name, ports.get(ny) or "", oh),
        (f"node/{y} eth0", ny, "eth0", oh),
        *((f"node/{y} {dev}", ny, dev, 0) for dev in mp.receive),
        (f"node/{y} {q.host_link.name} (host end of {q.key})", ny, q.host_link.name, 0),
        (f"{q.key} eth0", q.netns.name, q.host_link.peer or "eth0", 0),
    ]
    hops = []
    for label, ns, dev, overhead in wanted:
        m = _mtu(observed, ns or "", dev)
        if m is not None:
            hops.append(Hop(label, m, overhead, mp.encap))
    return Path(x, y, p.key, tuple(hops))


def _link_findings(links: Sequence[LinkMtu], observed: Mapping[str, Observed | None]) -> list[Finding]:
    out, checked = [], 0
    for lm in links:
        got = _mtu(observed, lm.netns, lm.dev)
        if got is None:
            continue  # a missing link or namespace: the routes check names it
        checked += 1
        if got != lm.planned:
            out.append(f.fail(CHECK, lm.subject, f"{lm.label} in netns {lm.netns}: MTU {got}, planned {lm.planned}",
                              [f"{lm.label} mtu {got}, planned {lm.planned} ({lm.why})"]))
    if not out:
        out.append(f.ok(CHECK, "links", f"all {checked} links have their planned MTU"))
    return out


def _path_finding(pth: Path, probe: tuple[Probe, Mapping[str, Any]] | None) -> Finding:
    subj = f"{pth.src_node} -> {pth.dst_node}"
    lim = pth.limit
    evidence = [h.text() for h in pth.hops]
    if probe is not None:
        evidence.append(result_text(*probe))
    if lim.effective < pth.sender_mtu:
        msg = f"{pth.sender} sends up to {pth.sender_mtu} bytes but the path to {pth.dst_node} carries " \
              f"{lim.effective}: limited by {lim.label}"
        if probe is not None and probe[1].get("verdict") == "frag-needed":
            # the kernel says so (ICMP frag-needed): path MTU discovery copes, at the price of a round trip, and
            # datagrams sent without DF are fragmented; a link that differs from the plan fails on its own above
            return f.warn(CHECK, subj, msg + " (path MTU discovery works: frag-needed came back)", evidence)
        return f.fail(CHECK, subj, msg, evidence)
    if probe is not None and not probe[1].get("ok"):
        p, r = probe
        small = r.get("small")  # (Probe, result) of a small echo sent after the DF one failed
        if small is not None:
            evidence.append(result_text(*small))
            if not small[1].get("ok"):
                return f.warn(CHECK, subj, f"{p.src} does not reach {p.dst} at all (a {small[0].size}-byte echo: "
                                           f"{small[1].get('verdict')}): not an MTU problem, see pod-to-pod and "
                                           f"routes", evidence)
        icmp = r.get("icmp") or {}
        if r.get("verdict") == "frag-needed":
            by = icmp.get("sender_name") or icmp.get("sender")
            return f.fail(CHECK, subj, f"a {p.size}-byte DF echo {p.src} -> {p.dst} got frag-needed from {by}, "
                                       f"mtu {icmp.get('mtu')}", evidence)
        return f.fail(CHECK, subj, f"MTU black hole: small echoes {p.src} -> {p.dst} get through, the {p.size}-byte "
                                   f"DF one does not ({r.get('verdict')}, no frag-needed came back)", evidence)
    tested = f", a DF echo of {probe[0].size} bytes got through" if probe is not None else ""
    return f.ok(CHECK, subj, f"path MTU {lim.effective} carries the pods' {pth.sender_mtu}{tested}", evidence)


def check(plan: ClusterPlan, spec: ClusterSpec, observed: Mapping[str, Observed | None],
          probes: Sequence[tuple[Probe, Mapping[str, Any]]] = ()) -> list[Finding]:
    """Link MTUs against the plan, then one finding per ordered node pair whose nodes both have pods (unless the
    pod network's pods are not its plan's: then their links and paths are left out)."""
    unplanned = networks.for_cluster(spec).unplanned_pods
    out = _link_findings(planned(plan, spec, with_pods=unplanned is None), observed)
    if unplanned is not None:
        out.append(f.skip(CHECK, "paths", f"{unplanned}: their MTUs are the plugins' to set; pod paths are not "
                                          "analysed"))
        return out
    by_pair = {(p.src_node, p.dst_node): (p, r) for p, r in probes}
    nodes = [n.name for n in plan.nodes]
    for x in nodes:
        for y in nodes:
            if x == y:
                continue
            pth = path(plan, spec, observed, x, y)
            if pth is not None:
                out.append(_path_finding(pth, by_pair.get((x, y))))
    return out
