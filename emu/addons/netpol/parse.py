"""NetworkPolicy manifests -> `model.NetworkPolicy`, with the API server's validation (ValidateNetworkPolicy) and
defaulting, and kubectl's strict field validation (an unknown field is an error, not silently ignored: emu.model.schema).

Every problem is reported through the Collector with the file, the document, the object and the field, e.g.
`t.yaml (document 4): NetworkPolicy x/deny: spec.ingress[0].from[1].ipBlock.except[0]: ...`.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from emu.model.documents import DNS_LABEL, DNS_SUBDOMAIN, IANA_SVC_NAME, Collector, Document, check_namespaced
from emu.model.types import Namespace, Protocol
from emu.addons.netpol.model import (Direction, IPBlock, LabelSelector, NetworkPolicy, Operator, Peer, PolicyPort,
    Requirement, Rule)

LAYER = "model"

API_VERSION = "networking.k8s.io/v1"
PEER_FIELDS = ("podSelector", "namespaceSelector", "ipBlock")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")  # a qualified name's name part, and label values


class _Ctx:
    """Where we are: the document and its collector, so helpers only add the field path and the message."""

    def __init__(self, doc: Document, c: Collector):
        self.doc, self.c = doc, c
        self.ok = True

    def add(self, fld: str, msg: str) -> None:
        self.ok = False
        self.c.add(self.doc, self.doc.file, self.doc.label(), fld, msg)

    def mapping(self, v: Any, fld: str) -> dict[str, Any] | None:
        """v as a mapping ({} when absent); emu.model.schema has already reported the fields its type does not have."""
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.add(fld, "must be a mapping")
            return None
        return v

    def listing(self, v: Any, fld: str) -> list[Any]:
        if v is None:
            return []
        if not isinstance(v, list):
            self.add(fld, "must be a list")
            return []
        return v


def parse_policy(doc: Document, c: Collector) -> NetworkPolicy | None:
    """One NetworkPolicy document, validated; None if it has a problem (the problems are in `c`)."""
    x = _Ctx(doc, c)
    if doc.body.get("apiVersion") != API_VERSION:
        x.add("apiVersion", f"must be {API_VERSION}, got {doc.body.get('apiVersion')!r}")
    name, ns = doc.meta.get("name"), doc.meta.get("namespace") or "default"
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        x.add("metadata.name", f"NetworkPolicy name {name!r} must be a DNS subdomain")
    if not isinstance(ns, str) or not DNS_LABEL.match(ns):
        x.add("metadata.namespace", f"{ns!r} is not a valid namespace name")
    spec = x.mapping(doc.body.get("spec"), "spec")
    if spec is None:
        return None
    selector = selector_of(x, spec.get("podSelector"), "spec.podSelector") or LabelSelector()
    ingress = _rules(x, spec, "ingress", "from")
    egress = _rules(x, spec, "egress", "to")
    types = _policy_types(x, spec)
    if not x.ok:
        return None
    return NetworkPolicy(ns, name, selector, types, ingress, egress, doc.index)


def _policy_types(x: _Ctx, spec: dict[str, Any]) -> tuple[Direction, ...]:
    """policyTypes, or the API server's default: Ingress always, Egress when spec.egress has at least one rule."""
    raw = spec.get("policyTypes")
    if raw is None or raw == []:
        egress = isinstance(spec.get("egress"), list) and len(spec["egress"]) > 0
        return (Direction.INGRESS, Direction.EGRESS) if egress else (Direction.INGRESS,)
    out: list[Direction] = []
    for i, t in enumerate(x.listing(raw, "spec.policyTypes")):
        try:
            d = Direction(t)
        except ValueError:
            x.add(f"spec.policyTypes[{i}]", f"{t!r} is not one of Ingress, Egress")
            continue
        if d in out:
            x.add(f"spec.policyTypes[{i}]", f"duplicate policy type {t!r}")
        out.append(d)
    return tuple(out)


def _rules(x: _Ctx, spec: dict[str, Any], key: str, peers_key: str) -> tuple[Rule, ...]:
    out = []
    for i, r in enumerate(x.listing(spec.get(key), f"spec.{key}")):
        fld = f"spec.{key}[{i}]"
        body = x.mapping(r, fld)
        if body is None:
            continue
        peers = [_peer(x, p, f"{fld}.{peers_key}[{j}]") for j, p in enumerate(x.listing(body.get(peers_key),
                                                                                       f"{fld}.{peers_key}"))]
        ports = [_port(x, p, f"{fld}.ports[{j}]") for j, p in enumerate(x.listing(body.get("ports"), f"{fld}.ports"))]
        out.append(Rule(tuple(p for p in peers if p), tuple(p for p in ports if p)))
    return tuple(out)


def _peer(x: _Ctx, v: Any, fld: str) -> Peer | None:
    """ValidateNetworkPolicyPeer: at least one field; ipBlock may not be combined with the selectors."""
    body = x.mapping(v, fld)
    if body is None:
        return None
    if not any(body.get(k) is not None for k in PEER_FIELDS):
        x.add(fld, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
        return None
    if body.get("ipBlock") is not None and (body.get("podSelector") is not None or
                                            body.get("namespaceSelector") is not None):
        x.add(fld, "may not specify more than 1 peer type (ipBlock cannot be combined with selectors)")
        return None
    pods = selector_of(x, body.get("podSelector"), f"{fld}.podSelector")
    nss = selector_of(x, body.get("namespaceSelector"), f"{fld}.namespaceSelector")
    block = _ip_block(x, body.get("ipBlock"), f"{fld}.ipBlock") if body.get("ipBlock") is not None else None
    return Peer(pods, nss, block)


def _cidr(x: _Ctx, v: Any, fld: str) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(str(v), strict=False)  # ParseCIDRSloppy: host bits are allowed
    except ValueError:
        x.add(fld, f"{v!r} is not a valid CIDR")
        return None
    if not isinstance(net, ipaddress.IPv4Network):
        x.add(fld, f"{v} is IPv6; only IPv4 is supported so far")
        return None
    return net


def _ip_block(x: _Ctx, v: Any, fld: str) -> IPBlock | None:
    body = x.mapping(v, fld)
    if body is None:
        return None
    if body.get("cidr") in (None, ""):
        x.add(f"{fld}.cidr", "required")
        return None
    cidr = _cidr(x, body["cidr"], f"{fld}.cidr")
    excepts = []
    for i, e in enumerate(x.listing(body.get("except"), f"{fld}.except")):
        net = _cidr(x, e, f"{fld}.except[{i}]")
        if net is None or cidr is None:
            continue
        if not (net.subnet_of(cidr) and net.prefixlen > cidr.prefixlen):
            x.add(f"{fld}.except[{i}]", f"must be a strict subset of `cidr` {cidr}, got {net}")
            continue
        excepts.append(net)
    return IPBlock(cidr, tuple(excepts)) if cidr is not None else None


def _port(x: _Ctx, v: Any, fld: str) -> PolicyPort | None:
    """ValidateNetworkPolicyPort: a protocol (default TCP), a number or an IANA port name, endPort >= port."""
    body = x.mapping(v, fld)
    if body is None:
        return None
    proto_raw = body.get("protocol") or "TCP"
    try:
        proto = Protocol(proto_raw)
    except ValueError:
        x.add(f"{fld}.protocol", f"{proto_raw!r} is not one of TCP, UDP, SCTP")
        return None
    port, end = body.get("port"), body.get("endPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)  # intstr "80" is the number 80
    if port is not None and not _port_value(port):
        x.add(f"{fld}.port", f"{port!r} is neither a port number (1-65535) nor a port name (IANA_SVC_NAME)")
        return None
    if end is not None:
        if port is None or isinstance(port, str):
            x.add(f"{fld}.endPort", "may only be set with a numeric `port`")
            return None
        if not _number(end) or end < port:
            x.add(f"{fld}.endPort", f"must be a port number from `port` ({port}) to 65535, got {end!r}")
            return None
    return PolicyPort(proto, port, end)


def _number(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535


def _port_value(v: Any) -> bool:
    if _number(v):
        return True
    return isinstance(v, str) and len(v) <= 15 and bool(IANA_SVC_NAME.match(v)) and \
        bool(re.search("[a-z]", v)) and "--" not in v


def selector_of(x: _Ctx, v: Any, fld: str) -> LabelSelector | None:
    """A LabelSelector, or None when absent (absent and `{}` differ in peers: `{}` selects everything)."""
    if v is None:
        return None
    body = x.mapping(v, fld)
    if body is None:
        return None
    labels = body.get("matchLabels") or {}
    if not isinstance(labels, dict):
        x.add(f"{fld}.matchLabels", "must be a mapping of label keys to values")
        labels = {}
    pairs = []
    for k, val in labels.items():
        val = str(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else val
        if _label_key(x, k, f"{fld}.matchLabels.{k}") and _label_value(x, val, f"{fld}.matchLabels.{k}"):
            pairs.append((k, val))
    exprs = [_requirement(x, r, f"{fld}.matchExpressions[{i}]")
             for i, r in enumerate(x.listing(body.get("matchExpressions"), f"{fld}.matchExpressions"))]
    return LabelSelector(tuple(sorted(pairs)), tuple(r for r in exprs if r))


def _requirement(x: _Ctx, v: Any, fld: str) -> Requirement | None:
    body = x.mapping(v, fld)
    if body is None:
        return None
    key, op_raw = body.get("key"), body.get("operator")
    if not _label_key(x, key, f"{fld}.key"):
        return None
    try:
        op = Operator(op_raw)
    except ValueError:
        x.add(f"{fld}.operator", f"{op_raw!r} is not one of In, NotIn, Exists, DoesNotExist")
        return None
    values = [str(s) for s in x.listing(body.get("values"), f"{fld}.values")]
    if op in (Operator.IN, Operator.NOT_IN) and not values:
        x.add(f"{fld}.values", f"must be specified when `operator` is {op.value}")
        return None
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        x.add(f"{fld}.values", f"may not be specified when `operator` is {op.value}")
        return None
    if not all(_label_value(x, s, f"{fld}.values") for s in values):
        return None
    return Requirement(key, op, tuple(values))


def _label_key(x: _Ctx, k: Any, fld: str) -> bool:
    """A qualified name: [DNS-subdomain prefix/]name, the name at most 63 characters."""
    if isinstance(k, str):
        prefix, _, name = k.rpartition("/")
        if (not prefix or (len(prefix) <= 253 and DNS_SUBDOMAIN.match(prefix))) and len(name) <= 63 and \
                _NAME.match(name):
            return True
    x.add(fld, f"{k!r} is not a valid label key")
    return False


def _label_value(x: _Ctx, v: Any, fld: str) -> bool:
    if isinstance(v, str) and (v == "" or (len(v) <= 63 and _NAME.match(v))):
        return True
    x.add(fld, f"{v!r} is not a valid label value")
    return False


def check(policies: list[tuple[NetworkPolicy, Document]], namespaces: dict[str, Namespace], c: Collector) -> None:
    """Cross-object rules: the namespace exists and each namespace/name is defined once."""
    check_namespaced(policies, namespaces, "NetworkPolicy", c)
