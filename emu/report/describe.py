"""`emu describe`: the text `kubectl describe` prints (kubectl/pkg/describe/describe.go and
pkg/cmd/describe) for Services, Pods, NetworkPolicies, Nodes, Ingresses and Endpoints, made from the cluster's
model, allocations, plan and recorded Events.  Pure: no kernel access, no printing.

Field labels, their order and the alignment are kubectl's (emu.report.tabwriter reproduces Go's tabwriter); what
kubectl would show and emu does not model (container runtime IDs, a node's kubelet conditions, capacity,
leases) is left out or empty, never invented.  Pods and Nodes are in emu.report.describe_pod.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from emu.addons.kubeproxy import systempods
from emu.cluster.lifecycle import Cluster
from emu.report.describe_pod import describe_node, describe_pod
from emu.report.describe_text import (Context, format_labels, format_selector, go_time, write_annotations, write_events,
    write_labels)
from emu.alloc.endpoints import PortEndpoints, for_service
from emu.errors import EmuError, NotFound
from emu.cluster.events import Event
from emu.addons.ingress import routing
from emu.addons.ingress.model import Backend as IngressBackend
from emu.addons.ingress.model import Ingress
from emu.addons.ingress import addon as ingress_addon
from emu.model.kinds import Kind, kind_of
from emu.model.types import Service
from emu.addons.netpol.model import NetworkPolicy, Peer, Rule
from emu.report.tabwriter import Writer

# --- kinds ----------------------------------------------------------------------------------------------------------


def describable(word: str) -> Kind:
    """kind_of, for the kinds emu describes."""
    k = kind_of(word)
    if k.resource not in DESCRIBERS:
        raise EmuError(f"emu describe does not describe {k.resource}: emu get {k.resource} lists them")
    return k


class NameAcrossNamespaces(EmuError):
    def __init__(self) -> None:
        super().__init__("a resource cannot be retrieved by name across all namespaces")


# --- the objects of a kind, and how kubectl picks them -------------------------------------------------------------


def _keys(cl: Cluster, kind: Kind) -> list[tuple[str, str]]:
    """(namespace, name) of every object of the kind ("" namespace for Nodes)."""
    t = cl.topology
    if kind.resource == "services":
        return [(s.namespace, s.name) for s in t.services]
    if kind.resource == "pods":
        return [(p.namespace, p.name) for p in t.pods] + [(p.namespace, p.name) for p in systempods.kube_proxy(cl)]
    if kind.resource == "networkpolicies":
        return [(p.namespace, p.name) for p in t.network_policies]
    if kind.resource == "nodes":
        return [("", n.name) for n in cl.plan.nodes]
    if kind.resource == "ingresses":
        return [(i.namespace, i.name) for i in t.ingresses]
    return [(e.namespace, e.name) for e in endpoints_objects(cl)]


@dataclass(frozen=True, slots=True)
class Selection:
    """What kubectl describes for `KIND [NAME]`: every object (a list), the one named, or, when no object has that
    name, every object whose name starts with it (DescribeMatchingResources)."""

    kind: Kind
    objects: tuple[tuple[str, str], ...]
    how: str  # "list" | "exact" | "prefix"


def select(cl: Cluster, kind: Kind, namespace: str | None, name: str | None) -> Selection:
    """namespace None: every namespace (-A).  Objects come in the API server's list order (namespace, name)."""
    objs = sorted(o for o in _keys(cl, kind) if namespace is None or not kind.namespaced or o[0] == namespace)
    if name is None:
        return Selection(kind, tuple(objs), "list")
    if namespace is None and kind.namespaced:
        raise NameAcrossNamespaces()
    exact = [o for o in objs if o[1] == name]
    if exact:
        return Selection(kind, tuple(exact), "exact")
    prefix = [o for o in objs if o[1].startswith(name)]
    if prefix:
        return Selection(kind, tuple(prefix), "prefix")
    raise NotFound(kind.qualified, name)


def describe(cl: Cluster, kind: str, namespace: str | None, name: str | None, events: Sequence[Event],
             show_events: bool | None = None, now: float | None = None) -> str:
    """kubectl describe KIND [NAME] [-n NAMESPACE | -A]: the text, "" when there is nothing to describe.

    Events are shown for a single object unless show_events says otherwise (kubectl: --show-events defaults to true
    for one object, false for several and for a name prefix).  Several objects are separated as kubectl separates
    them: "\\n\\n" between listed ones, one "\\n" after each prefix match.  Raises UnknownKind, NotFound,
    NameAcrossNamespaces."""
    sel = select(cl, describable(kind), namespace, name)
    if show_events is None:
        show_events = sel.how != "prefix" and len(sel.objects) <= 1
    ctx = Context(cl, events, time.time() if now is None else now, show_events)
    texts = [DESCRIBERS[sel.kind.resource](ctx, ns, n) for ns, n in sel.objects]
    if sel.how == "prefix":
        return "".join(t + "\n" for t in texts)
    return "\n\n".join(texts)


def describe_json(cl: Cluster, kind: str, namespace: str | None, name: str | None, events: Sequence[Event],
                  now: float | None = None) -> list[dict[str, object]]:
    """`emu describe -o json` (kubectl describe has no JSON): per object its identity, the text describe prints
    for it alone, and its Events as data."""
    sel = select(cl, describable(kind), namespace, name)
    ctx = Context(cl, events, time.time() if now is None else now, True)
    out: list[dict[str, object]] = []
    for ns, n in sel.objects:
        mine = [e for e in events if e.kind == sel.kind.kind and e.name == n and (e.namespace or "") == (ns or "")]
        out.append({"kind": sel.kind.kind, "namespace": ns or None, "name": n,
                    "text": DESCRIBERS[sel.kind.resource](ctx, ns, n),
                    "events": [{"type": e.type, "reason": e.reason, "message": e.message, "source": e.source,
                                "timestamp": e.timestamp} for e in mine]})
    return out


# --- Service ---------------------------------------------------------------------------------------------------------

def _has_slices(cl: Cluster, svc: Service) -> bool:
    """The EndpointSlice controller makes slices for every Service with a selector but ExternalName ones (issue
    105986); a selector-less Service has the slices (or Endpoints) the user wrote."""
    if svc.type == "ExternalName":
        return False
    if svc.selector is not None:
        return True
    return any(s.namespace == svc.namespace and s.service == svc.name for s in cl.topology.endpoint_slices)


def format_endpoints(cl: Cluster, svc: Service, port_names: set[str], eps: Sequence[PortEndpoints]) -> str:
    """describe.go formatEndpointSlices: the ready ip:port of the Service ports with these names, at most three and
    "+ N more..." (counted as kubectl counts them); "" when slices exist without a ready endpoint, <none> when the
    Service has no EndpointSlice at all."""
    if not _has_slices(cl, svc):
        return "<none>"
    shown: list[str] = []
    count, more = 0, False
    for pe in eps:
        if pe.spec.name not in port_names:
            continue
        for e in pe.endpoints:
            if len(shown) == 3:
                more = True
            if not e.ready:
                continue
            if not more:
                shown.append(f"{e.ip}:{e.port}")
            count += 1
    text = ",".join(shown)
    return f"{text} + {count - 3} more..." if more else text


def _policy(local: bool) -> str:
    return "Local" if local else "Cluster"


def _service(ctx: Context, namespace: str, name: str) -> str:
    cl = ctx.cl
    svc = next(s for s in cl.topology.services if s.namespace == namespace and s.name == name)
    a = cl.allocations.services.get(svc.key)
    eps = for_service(cl.topology, cl.allocations, svc)
    w = Writer()
    w.write(0, f"Name:\t{svc.name}\n")
    w.write(0, f"Namespace:\t{svc.namespace}\n")
    write_labels(w, "Labels", svc.labels)
    write_annotations(w, {})
    w.write(0, f"Selector:\t{format_labels(svc.selector)}\n")
    w.write(0, f"Type:\t{svc.type}\n")
    if svc.type == "ExternalName":  # no ClusterIP, no IP families
        w.write(0, "IP Families:\t<none>\n")
        w.write(0, "IP:\t\n")
        w.write(0, "IPs:\t<none>\n")
    else:
        # the API server's defaulting: headless without a selector asks for every family the cluster has
        family = "RequireDualStack" if svc.headless and svc.selector is None else "SingleStack"
        w.write(0, f"IP Family Policy:\t{family}\n")
        w.write(0, "IP Families:\tIPv4\n")
        cip = "None" if svc.headless else (str(a.cluster_ip) if a and a.cluster_ip else "")
        w.write(0, f"IP:\t{cip}\n")
        w.write(0, f"IPs:\t{cip or '<none>'}\n")
    if svc.external_ips:
        w.write(0, f"External IPs:\t{','.join(map(str, svc.external_ips))}\n")
    if svc.load_balancer_ip:
        w.write(0, f"Desired LoadBalancer IP:\t{svc.load_balancer_ip}\n")
    if svc.external_name:
        w.write(0, f"External Name:\t{svc.external_name}\n")
    if svc.type == "LoadBalancer" and a and a.load_balancer_ip:
        w.write(0, f"LoadBalancer Ingress:\t{a.load_balancer_ip} (VIP)\n")  # status ipMode, defaulted to VIP
    for p in svc.ports:
        pname = p.name or "<unset>"
        proto = p.protocol.value
        w.write(0, f"Port:\t{pname}\t{p.port}/{proto}\n")
        w.write(0, f"TargetPort:\t{p.port if p.target_port is None else p.target_port}/{proto}\n")
        node_port = a.node_ports.get(f"{p.port}/{proto}") if a else None
        if node_port:
            w.write(0, f"NodePort:\t{pname}\t{node_port}/{proto}\n")
        w.write(0, f"Endpoints:\t{format_endpoints(cl, svc, {p.name}, eps)}\n")
    w.write(0, f"Session Affinity:\t{'ClientIP' if svc.session_affinity else 'None'}\n")
    if svc.type in ("NodePort", "LoadBalancer") or svc.external_policy_local:
        w.write(0, f"External Traffic Policy:\t{_policy(svc.external_policy_local)}\n")
    if svc.type != "ExternalName":
        w.write(0, f"Internal Traffic Policy:\t{_policy(svc.internal_policy_local)}\n")
    if a and a.health_check_node_port:
        w.write(0, f"HealthCheck NodePort:\t{a.health_check_node_port}\n")
    if svc.load_balancer_source_ranges:
        w.write(0, f"LoadBalancer Source Ranges:\t{','.join(map(str, svc.load_balancer_source_ranges))}\n")
    write_events(w, ctx.shown("Service", namespace, name), ctx.now)
    return w.text()


# --- Endpoints -------------------------------------------------------------------------------------------------------

MANAGED_BY = "endpoints.kubernetes.io/managed-by"  # the endpoints controller's label (LabelManagedBy)
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
HEADLESS = "service.kubernetes.io/headless"


@dataclass(frozen=True, slots=True)
class Subset:
    addresses: tuple[str, ...]
    not_ready: tuple[str, ...]
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)


@dataclass(frozen=True, slots=True)
class EndpointsObject:
    """A v1 Endpoints as the endpoints controller writes it for a Service with a selector, or as the user wrote it
    for one without."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    subsets: tuple[Subset, ...]


def _ip_key(ip: str) -> bytes:
    return ip.encode()  # addrsByIPAndUID: bytes.Compare of the IP strings


def _controller_subsets(svc: Service, eps: Sequence[PortEndpoints]) -> tuple[Subset, ...]:
    """The endpoints controller: one entry per pod with the ports it resolves; pods with the same ports share a
    subset (RepackSubsets); terminating pods are left out unless publishNotReadyAddresses."""
    per_pod: dict[str, list[tuple[str, int, str]]] = {}
    ready: dict[str, tuple[str, bool]] = {}
    for pe in eps:
        for e in pe.endpoints:
            if e.terminating and not svc.publish_not_ready:
                continue
            key = e.pod or str(e.ip)
            per_pod.setdefault(key, []).append((pe.spec.name, e.port, pe.spec.protocol.value))
            ready[key] = (str(e.ip), e.ready)
    groups: dict[tuple[tuple[str, int, str], ...], list[tuple[str, bool]]] = {}
    for key, ports in per_pod.items():
        groups.setdefault(tuple(ports), []).append(ready[key])
    return tuple(Subset(tuple(sorted((ip for ip, r in addrs if r), key=_ip_key)),
                        tuple(sorted((ip for ip, r in addrs if not r), key=_ip_key)), ports)
                 for ports, addrs in groups.items())


def endpoints_objects(cl: Cluster) -> list[EndpointsObject]:
    out = []
    for svc in cl.topology.services:
        if svc.selector is not None:
            eps = for_service(cl.topology, cl.allocations, svc)
            labels = {**svc.labels, MANAGED_BY: "endpoint-controller"}
            if svc.headless:
                labels[HEADLESS] = ""
            trigger = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(cl.record.created)))
            out.append(EndpointsObject(svc.namespace, svc.name, labels, {TRIGGER_TIME: trigger},
                                       _controller_subsets(svc, eps)))
            continue
        # selector-less: only an Endpoints the user wrote (emu keeps it as a slice named like its Service)
        for sl in cl.topology.endpoint_slices:
            if sl.namespace == svc.namespace and sl.service == svc.name and sl.name == svc.name:
                ports = tuple((p.name, p.port, p.protocol.value) for p in sl.ports)
                out.append(EndpointsObject(sl.namespace, sl.name, {}, {}, (Subset(
                    tuple(str(e.address) for e in sl.endpoints if e.ready),
                    tuple(str(e.address) for e in sl.endpoints if not e.ready), ports),) if sl.endpoints else ()))
    return out


def _endpoints(ctx: Context, namespace: str, name: str) -> str:
    objs = ctx.memo("endpoints", lambda: endpoints_objects(ctx.cl))
    ep = next(e for e in objs if e.namespace == namespace and e.name == name)
    w = Writer()
    w.write(0, f"Name:\t{ep.name}\n")
    w.write(0, f"Namespace:\t{ep.namespace}\n")
    write_labels(w, "Labels", ep.labels)
    write_annotations(w, ep.annotations)
    w.write(0, "Subsets:\n")
    for s in ep.subsets:
        w.write(1, f"Addresses:\t{','.join(s.addresses) or '<none>'}\n")
        w.write(1, f"NotReadyAddresses:\t{','.join(s.not_ready) or '<none>'}\n")
        if s.ports:
            w.write(1, "Ports:\n")
            w.write(2, "Name\tPort\tProtocol\n")
            w.write(2, "----\t----\t--------\n")
            for pname, port, proto in s.ports:
                w.write(2, f"{pname or '<unset>'}\t{port}\t{proto}\n")
        w.write(0, "\n")
    write_events(w, ctx.shown("Endpoints", namespace, name), ctx.now)
    return w.text()


# --- NetworkPolicy ---------------------------------------------------------------------------------------------------


def _peers(w: Writer, rules: Sequence[Rule], word: str, isolated: str, unrestricted: str) -> None:
    """printNetworkPolicySpecIngressFrom / EgressTo (initial indent four spaces; rules separated by a dashed line)."""
    ind = "    "
    if not rules:
        w.write(0, f"{ind}<none> (Selected pods are isolated for {isolated} connectivity)\n")
        return
    for i, r in enumerate(rules):
        if not r.ports:
            w.write(0, f"{ind}To Port: <any> (traffic allowed to all ports)\n")
        for p in r.ports:
            port = "<nil>" if p.port is None else str(p.port)  # fmt's %s of a nil *IntOrString
            if p.end_port is None:
                w.write(0, f"{ind}To Port: {port}/{p.protocol.value}\n")
            else:
                w.write(0, f"{ind}To Port Range: {port}-{p.end_port}/{p.protocol.value}\n")
        if not r.peers:
            w.write(0, f"{ind}{word}: <any> (traffic not restricted by {unrestricted})\n")
        for peer in r.peers:
            _peer(w, ind, word, peer)
        if i != len(rules) - 1:
            w.write(0, f"{ind}----------\n")


def _peer(w: Writer, ind: str, word: str, peer: Peer) -> None:
    w.write(0, f"{ind}{word}:\n")
    if peer.namespace_selector is not None:
        w.write(1, f"{ind}NamespaceSelector: {format_selector(peer.namespace_selector)}\n")
    if peer.pod_selector is not None:
        w.write(1, f"{ind}PodSelector: {format_selector(peer.pod_selector)}\n")
    if peer.ip_block is not None and peer.pod_selector is None and peer.namespace_selector is None:
        w.write(1, f"{ind}IPBlock:\n")
        w.write(2, f"{ind}CIDR: {peer.ip_block.cidr}\n")
        w.write(2, f"{ind}Except: {', '.join(map(str, peer.ip_block.except_))}\n")


def _network_policy(ctx: Context, namespace: str, name: str) -> str:
    """describeNetworkPolicy (kubectl shows no Events for NetworkPolicies)."""
    pol: NetworkPolicy = next(p for p in ctx.cl.topology.network_policies
                              if p.namespace == namespace and p.name == name)
    w = Writer()
    w.write(0, f"Name:\t{pol.name}\n")
    w.write(0, f"Namespace:\t{pol.namespace}\n")
    w.write(0, f"Created on:\t{go_time(ctx.created('NetworkPolicy', namespace, name))}\n")
    write_labels(w, "Labels", {})
    write_annotations(w, {})
    w.write(0, "Spec:\n")
    w.write(1, "PodSelector: ")
    if pol.pod_selector.empty:
        w.write(2, "<none> (Allowing the specific traffic to all pods in this namespace)\n")
    else:
        w.write(2, f"{format_selector(pol.pod_selector)}\n")
    types = [t.value for t in pol.policy_types]
    if "Ingress" in types:
        w.write(1, "Allowing ingress traffic:\n")
        _peers(w, pol.ingress, "From", "ingress", "source")
    else:
        w.write(1, "Not affecting ingress traffic\n")
    if "Egress" in types:
        w.write(1, "Allowing egress traffic:\n")
        _peers(w, pol.egress, "To", "egress", "destination")
    else:
        w.write(1, "Not affecting egress traffic\n")
    w.write(1, f"Policy Types: {', '.join(types) or '<none>'}\n")
    return w.text()


# --- Ingress ---------------------------------------------------------------------------------------------------------


def _backend(cl: Cluster, namespace: str, b: IngressBackend) -> str:
    """describeBackendV1: `svc:port (ready endpoints of that Service port)`, or the API error when the Service is
    missing."""
    text = f"{b.service}:{b.port_text}"
    svc = next((s for s in cl.topology.services if s.namespace == namespace and s.name == b.service), None)
    if svc is None:
        return f'{text} (<error: services "{b.service}" not found>)'
    port_name = ""
    for p in svc.ports:
        if (b.port_number is not None and b.port_number == p.port) or (b.port_name and b.port_name == p.name):
            port_name = p.name
    return f"{text} ({format_endpoints(cl, svc, {port_name}, for_service(cl.topology, cl.allocations, svc))})"


def _ingress_class(cl: Cluster, ing: Ingress) -> str:
    return ingress_addon.admitted_class(ing, cl.topology.ingress_classes) or "<none>"


def _ingress(ctx: Context, namespace: str, name: str) -> str:
    """describeIngressV1: the Address ingress-nginx publishes, the class, TLS, each path's Service endpoints."""
    cl = ctx.cl
    ing = next(i for i in cl.topology.ingresses if i.namespace == namespace and i.name == name)
    served = {i.key for i in routing.served(cl)}
    addr = routing.address(cl)
    w = Writer()
    w.write(0, f"Name:\t{ing.name}\n")
    write_labels(w, "Labels", {})
    w.write(0, f"Namespace:\t{ing.namespace}\n")
    w.write(0, f"Address:\t{addr.ip if addr and ing.key in served else ''}\n")
    w.write(0, f"Ingress Class:\t{_ingress_class(cl, ing)}\n")
    default = _backend(cl, namespace, ing.default_backend) if ing.default_backend else "<default>"
    w.write(0, f"Default backend:\t{default}\n")
    if ing.tls:
        w.write(0, "TLS:\n")
        for t in ing.tls:
            hosts = ",".join(t.hosts)
            w.write(1, f"{t.secret_name} terminates {hosts}\n" if t.secret_name else f"SNI routes {hosts}\n")
    w.write(0, "Rules:\n  Host\tPath\tBackends\n")
    w.write(1, "----\t----\t--------\n")
    rules = [r for r in ing.rules if r.paths]
    for r in rules:
        w.write(1, f"{r.host or '*'}\t\n")
        for p in r.paths:
            w.write(2, f"\t{p.path} \t{_backend(cl, namespace, p.backend)}\n")
    if not rules:
        w.write(1, f"*\t*\t{default}\n")
    write_annotations(w, ing.annotations)
    write_events(w, ctx.shown("Ingress", namespace, name), ctx.now)
    return w.text()


DESCRIBERS: dict[str, Callable[[Context, str, str], str]] = {
    "services": _service, "pods": describe_pod, "networkpolicies": _network_policy, "nodes": describe_node,
    "ingresses": _ingress, "endpoints": _endpoints}
