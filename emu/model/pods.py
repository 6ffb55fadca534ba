"""Namespaces, Pods and Deployments as the API server validates them, and the pods a Deployment makes, named as the
ReplicaSet controller names them (k8s.io/apiserver pkg/storage/names, pkg/controller/controller_utils.go: the
pod-template-hash).  Every problem is one line naming the file, the document, the object and the field."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from emu.model import names, quantity
from emu.model.documents import DNS_LABEL, DNS_SUBDOMAIN, IANA_SVC_NAME, Collector, Document, parse_labels
from emu.model.types import ClusterSpec, ContainerPort, Namespace, Pod, Protocol
from emu.addons.dns import validation as dns_validation

BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the API server sets it on every Namespace
READY_ANNOTATION = "emu.dev/ready"  # "false": the pod is not ready (its endpoints are not ready)
TERMINATING_ANNOTATION = "emu.dev/terminating"  # "true": the pod is terminating (deletionTimestamp set)
# The alphabet Kubernetes' rand.SafeEncodeString and rand.String use (no vowels, no look-alikes).
SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
MAX_GENERATED_NAME_LENGTH = 58  # k8s.io/apiserver pkg/storage/names: 63 - len(rand.String(5))


def parse_namespace(doc: Document, c: Collector) -> Namespace | None:
    name = doc.meta.get("name")
    if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
        c.add(doc, doc.file, doc.label(), "metadata.name", f"namespace name {name!r} must be a DNS label")
        return None
    labels = parse_labels(doc.meta.get("labels"), doc, c, "metadata.labels")
    labels[NAMESPACE_NAME_LABEL] = name
    return Namespace(name, labels)


def parse_pod(doc: Document, c: Collector, namespace: Any, name: Any, body: dict[str, Any],
              prefix: str = "", owner: str | None = None) -> Pod | None:
    """Parse a Pod (or a Deployment's template when prefix is "spec.template.")."""
    obj = doc.label()
    ok = True
    if not isinstance(namespace, str) or not DNS_LABEL.match(namespace):
        c.add(doc, doc.file, obj, "metadata.namespace", f"{namespace!r} is not a valid namespace name")
        ok = False
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        c.add(doc, doc.file, obj, "metadata.name", f"pod name {name!r} must be a DNS subdomain")
        ok = False
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    labels = parse_labels(meta.get("labels"), doc, c, f"{prefix}metadata.labels")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        c.add(doc, doc.file, obj, f"{prefix}spec", "missing pod spec")
        return None
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        c.add(doc, doc.file, obj, f"{prefix}spec.hostNetwork", f"must be true or false, got {host_network!r}")
        ok = False
    for fld, msg in dns_validation.validate(spec):  # dnsPolicy, dnsConfig (emu.addons.dns writes resolv.conf)
        c.add(doc, doc.file, obj, f"{prefix}spec.{fld}", msg)
        ok = False
    node = spec.get("nodeName")
    if node is not None and not isinstance(node, str):
        c.add(doc, doc.file, obj, f"{prefix}spec.nodeName", "must be a node name")
        node = None
    ports = _parse_ports(spec.get("containers"), doc, c, f"{prefix}spec.containers")
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    ready = str(annotations.get(READY_ANNOTATION, "true")).lower() != "false"
    terminating = str(annotations.get(TERMINATING_ANNOTATION, "false")).lower() == "true"
    for ann in (quantity.INGRESS_BANDWIDTH, quantity.EGRESS_BANDWIDTH):
        if ann in annotations:
            try:
                quantity.bandwidth_bps(annotations[ann])
            except ValueError as e:
                c.add(doc, doc.file, obj, f"{prefix}metadata.annotations[{ann}]", str(e))
                ok = False
    if not ok or ports is None:
        return None
    return Pod(str(namespace), str(name), labels, ports, node, owner, doc.index, ready, terminating,
               {str(k): str(v) for k, v in annotations.items()}, host_network is True)


def _parse_ports(containers: Any, doc: Document, c: Collector, fld: str) -> tuple[ContainerPort, ...] | None:
    if not isinstance(containers, list) or not containers:
        c.add(doc, doc.file, doc.label(), fld, "a pod needs at least one container")
        return None
    ports: list[ContainerPort] = []
    seen: set[tuple[int, Protocol]] = set()
    names: set[str] = set()
    for ci, ctr in enumerate(containers):
        if not isinstance(ctr, dict):
            c.add(doc, doc.file, doc.label(), f"{fld}[{ci}]", "must be a mapping")
            continue
        raw = ctr.get("ports") or []
        if not isinstance(raw, list):
            c.add(doc, doc.file, doc.label(), f"{fld}[{ci}].ports", "must be a list")
            continue
        for pi, p in enumerate(raw):
            pf = f"{fld}[{ci}].ports[{pi}]"
            port = _parse_port(p, doc, c, pf)
            if port is None:
                continue
            if (port.container_port, port.protocol) in seen:
                c.add(doc, doc.file, doc.label(), pf, f"duplicate port {port.container_port}/{port.protocol.value}")
                continue
            if port.name and port.name in names:
                c.add(doc, doc.file, doc.label(), f"{pf}.name", f"duplicate port name {port.name!r}")
                continue
            seen.add((port.container_port, port.protocol))
            if port.name:
                names.add(port.name)
            ports.append(port)
    return tuple(ports)


def _parse_port(p: Any, doc: Document, c: Collector, pf: str) -> ContainerPort | None:
    if not isinstance(p, dict):
        c.add(doc, doc.file, doc.label(), pf, "must be a mapping with containerPort")
        return None
    num = p.get("containerPort")
    if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= 65535:
        c.add(doc, doc.file, doc.label(), f"{pf}.containerPort", f"must be a port number from 1 to 65535, got {num!r}")
        return None
    proto = p.get("protocol", "TCP")
    try:
        protocol = Protocol(proto)
    except ValueError:
        c.add(doc, doc.file, doc.label(), f"{pf}.protocol", f"{proto!r} is not one of TCP, UDP, SCTP")
        return None
    name = p.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 15 or not IANA_SVC_NAME.match(name)
                             or not re.search("[a-z]", name) or "--" in name):
        c.add(doc, doc.file, doc.label(), f"{pf}.name",
              f"{name!r} must be an IANA service name (at most 15 lowercase letters, digits and '-')")
        return None
    host_port = p.get("hostPort")
    if host_port is not None and (not isinstance(host_port, int) or isinstance(host_port, bool)
                                  or not 1 <= host_port <= 65535):
        c.add(doc, doc.file, doc.label(), f"{pf}.hostPort", f"must be a port number from 1 to 65535, got {host_port!r}")
        return None
    return ContainerPort(num, protocol, name, host_port)


def expand_deployment(doc: Document, c: Collector, taken: set[str] | None = None) -> list[Pod]:
    """A Deployment's pods, named as the ReplicaSet controller names them: <deploy>-<pod-template-hash>-<5 chars>."""
    obj, spec = doc.label(), doc.body.get("spec")
    name, ns = doc.meta.get("name"), doc.meta.get("namespace") or "default"
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        c.add(doc, doc.file, obj, "metadata.name", f"deployment name {name!r} must be a DNS subdomain")
        return []
    if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
        c.add(doc, doc.file, obj, "spec.template", "missing pod template")
        return []
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        c.add(doc, doc.file, obj, "spec.replicas", f"must be a non-negative integer, got {replicas!r}")
        return []
    template = spec["template"]
    tmeta = template.get("metadata") or {}
    if not isinstance(tmeta, dict):
        c.add(doc, doc.file, obj, "spec.template.metadata", "must be a mapping")
        return []
    tlabels = tmeta.get("labels") or {}
    if not isinstance(tlabels, dict):
        c.add(doc, doc.file, obj, "spec.template.metadata.labels", "labels must be a mapping")
        return []
    selector = spec.get("selector")
    selector = selector.get("matchLabels") if isinstance(selector, dict) else None
    if not isinstance(selector, dict) or not selector:
        c.add(doc, doc.file, obj, "spec.selector.matchLabels", "a Deployment needs a selector")
        return []
    if any(str(tlabels.get(k)) != str(v) for k, v in selector.items()):
        c.add(doc, doc.file, obj, "spec.template.metadata.labels", "`selector` does not match template `labels`")
        return []
    template_hash = pod_template_hash(template)
    rs = f"{name}-{template_hash}"
    first = parse_pod(doc, c, ns, generated_name(rs, random_suffix(ns, rs, 0)), template, "spec.template.",
                       f"ReplicaSet/{rs}")
    if first is None:  # the template is the same for every replica: one parse says it all
        return []
    taken = set() if taken is None else taken
    pods = []
    for i in range(replicas):
        pod_name = _unique_name(ns, rs, i, taken)
        pods.append(Pod(first.namespace, pod_name, {**first.labels, "pod-template-hash": template_hash}, first.ports,
                        first.node_name, first.owner, doc.index, first.ready, first.terminating, first.annotations,
                        first.host_network))
    return pods


def generated_name(base: str, suffix: str) -> str:
    """names.SimpleNameGenerator (k8s.io/apiserver pkg/storage/names): generateName `<rs>-` cut to 58 characters
    (maxGeneratedNameLength = 63 - 5), then 5 random characters: a ReplicaSet's pod name is at most 63 characters."""
    return f"{base}-"[:MAX_GENERATED_NAME_LENGTH] + suffix


def _unique_name(namespace: str, rs: str, i: int, taken: set[str]) -> str:
    """Replica i's name, never one already in `taken` (namespace/name keys; the name is added to it).

    The API server answers AlreadyExists for a generated name that is taken and the ReplicaSet controller creates
    the pod again with a new random suffix; here attempt 0 is the name emu has always given replica i, and each
    retry draws the next suffix from the same deterministic source (5 characters of 27: a collision is likely past a
    few thousand replicas, by the birthday bound)."""
    attempt = 0
    while True:
        name = generated_name(rs, random_suffix(namespace, rs, i, attempt))
        if f"{namespace}/{name}" not in taken:
            taken.add(f"{namespace}/{name}")
            return name
        attempt += 1


def safe_encode(s: str) -> str:
    """Kubernetes' rand.SafeEncodeString: each byte mapped into the vowel-free alphabet."""
    return "".join(SAFE_ALPHANUMS[b % len(SAFE_ALPHANUMS)] for b in s.encode())


def pod_template_hash(template: dict[str, Any]) -> str:
    """The pod-template-hash label: SafeEncodeString of the decimal FNV-32a hash of the template.

    Kubernetes hashes the Go struct as printed by spew; we hash canonical JSON instead, so the value has the real
    shape and alphabet (e.g. "7d4b9c8f5d") and is stable for a template, but is not byte-identical to a real cluster's.
    """
    h = 0x811C9DC5
    for b in json.dumps(_json_keys(template), sort_keys=True, separators=(",", ":"), default=str).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(h))


def _json_keys(v: Any) -> Any:
    """v with every mapping key a string, as sigs.k8s.io/yaml turns a YAML key into a JSON one (a template with a
    key like `7:` is refused by strict field validation, but is hashed before the problems are raised).  A value
    JSON has no type for (a YAML timestamp, !!binary) is hashed as its text, as goyaml would read it."""
    if isinstance(v, dict):
        return {k if isinstance(k, str) else json.dumps(k, default=str): _json_keys(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_keys(x) for x in v]
    return v


def random_suffix(namespace: str, rs: str, i: int, attempt: int = 0) -> str:
    """The 5-character random suffix (rand.String(5)), made deterministic so a topology always yields the same names;
    `attempt` > 0 draws the suffix of a retry after a taken name."""
    seed = f"{namespace}/{rs}/{i}" + (f"/{attempt}" if attempt else "")
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(SAFE_ALPHANUMS[b % len(SAFE_ALPHANUMS)] for b in digest[:5])


def check(pods: list[tuple[Pod, Document]], namespaces: dict[str, Namespace], cluster: ClusterSpec,
          c: Collector) -> None:
    """Every pod's namespace and node exist, its network namespace's name fits in a file name, and its key is
    unique."""
    seen: dict[str, Document] = {}
    for p, doc in pods:
        if p.namespace not in namespaces:
            c.add(doc, doc.file, doc.label(), "metadata.namespace",
                  f"namespace {p.namespace!r} does not exist (declare a Namespace or use one of "
                  f"{', '.join(BUILTIN_NAMESPACES)})")
        if p.node_name is not None and p.node_name not in cluster.nodes:
            fld = "spec.template.spec.nodeName" if p.owner else "spec.nodeName"
            c.add(doc, doc.file, doc.label(), fld,
                  f"node {p.node_name!r} does not exist (nodes: {', '.join(cluster.nodes)})")
        netns = names.pod_netns(cluster.name, p.namespace, p.name)
        if len(netns.encode()) > names.NETNS_NAME_MAX:
            c.add(doc, doc.file, doc.label(), "metadata.name",
                  f"pod {p.key} needs the network namespace {netns[:40]}... of {len(netns.encode())} bytes: a "
                  f"namespace is a file in /run/netns and /etc/netns, at most {names.NETNS_NAME_MAX} bytes (NAME_MAX); "
                  f"shorten the pod or namespace name")
        if p.key in seen:
            first = seen[p.key]
            c.add(doc, doc.file, doc.label(), "metadata.name",
                  f"duplicate pod {p.key} (first defined in document {first.index})")
        else:
            seen[p.key] = doc
