"""Topology files: multi-document YAML (a Cluster, then Kubernetes manifests) parsed into the typed model.

Validation collects every problem, one line each naming the file, the document, the object and the field, and
raises them together: nothing is built from a file with a problem in it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Any, Iterable


from emu.addons.multus import addon as multus
from emu.model import names, nodesettings, quantity, schema, services
from emu.addons.netpol import parse as netpol_parse
from emu.addons.ingress import addon as ingress_addon
from emu.addons.ingress import parse as ingress_parse
from emu.addons.ingress.model import Ingress, IngressClass, Secret
from emu.model.documents import (DNS_LABEL, DNS_SUBDOMAIN, IANA_SVC_NAME, Collector, Document, parse_labels,
    read_documents)
from emu.errors import Problem, ValidationError
from emu.model.types import (Backend, ProxyMode, ProxySpec, ClusterSpec, CNISpec, ContainerPort, Namespace, Pod,
    EndpointSlice, Protocol, Service, Topology)
from emu.addons.netpol.model import NetworkPolicy

CLUSTER_API = "emu.dev/v1alpha1"
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the API server sets it on every Namespace
READY_ANNOTATION = "emu.dev/ready"  # "false": the pod is not ready (its endpoints are not ready)
TERMINATING_ANNOTATION = "emu.dev/terminating"  # "true": the pod is terminating (deletionTimestamp set)
RESERVED_NODE_NAMES = ("underlay", "external")  # namespaces of the emulated infrastructure
CLUSTER_DEFAULTS: dict[str, Any] = {
    "nodes": 3,
    "podCIDR": "10.244.0.0/16",
    "serviceCIDR": "10.96.0.0/12",
    "nodeCIDRMaskSize": 24,
    "nodeNetwork": "172.18.0.0/24",
    "mtu": 1500,
    "cni": {"plugin": "flannel", "backend": "vxlan"},
    "proxy": {"mode": "iptables", "masqueradeAll": False},
    "loadBalancerPool": None,
    "iptablesBackend": "nft",
    "nodeSettings": None,  # {mtu, sysctls} for every node (emu.model.nodesettings); nodes[] entries may override
    "externalClients": [],  # more source addresses of the external host: `emu probe external@IP ...`
}
# The alphabet Kubernetes' rand.SafeEncodeString and rand.String use (no vowels, no look-alikes).
SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
MAX_GENERATED_NAME_LENGTH = 58  # k8s.io/apiserver pkg/storage/names: 63 - len(rand.String(5))


def load(path: str, name: str | None = None, text: str | None = None) -> Topology:
    """Read and validate a topology file: the first document is the Cluster, the rest manifests."""
    return load_documents(path, read_documents(path, text), name)


def load_documents(path: str, docs: list[Document], name: str | None = None) -> Topology:
    if not docs or docs[0].kind != "Cluster":
        raise ValidationError([Problem(path, docs[0].index if docs else None, "", "kind",
                                       f"the first document must be a Cluster ({CLUSTER_API}), "
                                       f"found {docs[0].kind if docs else 'nothing'!r}")])
    return build(path, cluster_spec(docs[0], name), docs[1:])


def cluster_spec(doc: Document, name: str | None = None) -> ClusterSpec:
    c = Collector()
    spec = parse_cluster(doc, c, name)
    if c.problems:
        raise ValidationError(c.problems)
    return spec


def build(path: str, cluster: ClusterSpec, docs: Iterable[Document]) -> Topology:
    """Turn manifests into a validated Topology for `cluster` (also used by `emu apply` on the merged set)."""
    c = Collector()
    namespaces: dict[str, Namespace] = {n: Namespace(n, {NAMESPACE_NAME_LABEL: n}) for n in BUILTIN_NAMESPACES}
    pods: list[tuple[Pod, Document]] = []
    svcs: list[tuple[Service, Document]] = []
    slices: list[tuple[EndpointSlice, Document]] = []
    policies: list[tuple[NetworkPolicy, Document]] = []
    nads: dict[str, multus.Nad] = {}
    seen_ns: set[str] = set()
    generated: set[str] = set()  # namespace/name of every generated pod name so far: generated names never collide
    from emu.addons.dns import addon as dns_addon  # the coredns ConfigMap brings kubeadm's CoreDNS addon objects
    docs = list(docs)
    docs += dns_addon.addon_documents(path, docs, cluster.service_cidr)
    docs += ingress_addon.addon_documents(path, docs, cluster.load_balancer_pool is not None)
    ingresses: list[tuple[Ingress, Document]] = []
    classes: list[tuple[IngressClass, Document]] = []
    secrets: list[tuple[Secret, Document]] = []
    for doc in docs:
        doc.strict_problems(c)  # unknown fields, as the API server's strict decoding reports them
        kind = doc.kind
        if kind == "Namespace":
            ns = _parse_namespace(doc, c)
            if ns:
                if ns.name in seen_ns:
                    c.add(doc, doc.file, doc.label(), "metadata.name", f"duplicate Namespace {ns.name!r}")
                seen_ns.add(ns.name)
                namespaces[ns.name] = ns
        elif kind == "Pod":
            p = _parse_pod(doc, c, doc.meta.get("namespace") or "default", doc.meta.get("name"), doc.body)
            if p:
                pods.append((p, doc))
        elif kind == "Deployment":
            pods.extend((p, doc) for p in _expand_deployment(doc, c, generated))
        elif kind == "Service":
            svc = services.parse_service(doc, c)
            if svc:
                svcs.append((svc, doc))
        elif kind in ("EndpointSlice", "Endpoints"):
            sl = services.parse_slice(doc, c)
            if sl:
                slices.append((sl, doc))
        elif kind == "NetworkPolicy":
            pol = netpol_parse.parse_policy(doc, c)
            if pol:
                policies.append((pol, doc))
        elif kind == "NetworkAttachmentDefinition":
            nad = multus.parse_nad(doc, c)
            if nad:
                if nad.key in nads:
                    c.add(doc, doc.file, doc.label(), "metadata.name",
                          f"duplicate NetworkAttachmentDefinition {nad.key}")
                nads[nad.key] = nad
        elif kind == "ConfigMap":
            dns_addon.check_configmap(doc, c)  # recorded; emu.addons.dns reads the kube-system/coredns Corefile
        elif kind == "Cluster":
            c.add(doc, doc.file, doc.label(), "kind", "only the first document may be the Cluster")
        elif not kind:
            c.add(doc, doc.file, doc.label(), "kind", "missing kind")
        elif kind == "Ingress":
            ing = ingress_parse.parse_ingress(doc, c)
            if ing:
                ingresses.append((ing, doc))
        elif kind == "IngressClass":
            cls = ingress_parse.parse_ingress_class(doc, c)
            if cls:
                classes.append((cls, doc))
        elif kind == "Secret":
            sec = ingress_parse.parse_secret(doc, c)
            if sec:
                secrets.append((sec, doc))
        else:
            c.add(doc, doc.file, doc.label(), "kind", f"kind {kind} is not implemented")
    _check_pods(pods, namespaces, cluster, c)
    services.check(svcs, slices, namespaces, cluster, c)
    netpol_parse.check(policies, namespaces, c)
    multus.check(pods, nads, c)
    ingress_parse.check(ingresses, classes, secrets, namespaces, c)
    if c.problems:
        raise ValidationError(c.problems)
    return Topology(path, cluster, tuple(namespaces.values()), tuple(p for p, _ in pods),
                    tuple(s for s, _ in svcs), tuple(s for s, _ in slices), tuple(p for p, _ in policies),
                    tuple(nads.values()), tuple(i for i, _ in ingresses), tuple(k for k, _ in classes),
                    tuple(s for s, _ in secrets))


# --- the Cluster document -------------------------------------------------------------------------------------------


def parse_cluster(doc: Document, c: Collector, name_override: str | None = None) -> ClusterSpec:
    f, body = doc.file, doc.body
    obj = f"Cluster {doc.meta.get('name', '<unnamed>')}"
    if body.get("apiVersion") != CLUSTER_API:
        c.add(doc, f, obj, "apiVersion", f"must be {CLUSTER_API}, got {body.get('apiVersion')!r}")
    name = name_override or doc.meta.get("name")
    bad = names.cluster_name_error(name)
    if bad:
        c.add(doc, f, obj, "--name" if name_override else "metadata.name", bad)
        name = "invalid"
    doc.strict_problems(c)  # unknown fields (emu.model.schema's Cluster)
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        c.add(doc, f, obj, "spec", "must be a mapping")
        spec = {}
    s = {**CLUSTER_DEFAULTS, **{k: v for k, v in spec.items() if k in CLUSTER_DEFAULTS}}
    own: dict[str, nodesettings.NodeSettings] = {}
    nodes = _parse_nodes(s["nodes"], doc, c, obj, own)
    default = nodesettings.parse(s["nodeSettings"], doc, c, obj, "spec.nodeSettings")
    settings = {n: nodesettings.merge(default, own.get(n, nodesettings.NodeSettings())) for n in nodes}
    nets = {k: _parse_net(s[k], doc, c, obj, f"spec.{k}") for k in ("podCIDR", "serviceCIDR", "nodeNetwork")}
    mask = s["nodeCIDRMaskSize"]
    if not isinstance(mask, int) or isinstance(mask, bool) or not 1 <= mask <= 30:
        c.add(doc, f, obj, "spec.nodeCIDRMaskSize", f"must be an integer from 1 to 30, got {mask!r}")
        mask = 24
    mtu = s["mtu"]
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 1280 <= mtu <= 9000:
        c.add(doc, f, obj, "spec.mtu", f"must be an integer from 1280 to 9000, got {mtu!r}")
        mtu = 1500
    cni = _parse_cni(s["cni"], doc, c, obj)
    proxy = _parse_proxy(s["proxy"], doc, c, obj)
    pool = _parse_net(s["loadBalancerPool"], doc, c, obj, "spec.loadBalancerPool") \
        if s["loadBalancerPool"] is not None else None
    pod, svc, nodenet = nets["podCIDR"], nets["serviceCIDR"], nets["nodeNetwork"]
    nets_named = [(pod, "podCIDR"), (svc, "serviceCIDR"), (nodenet, "nodeNetwork"), (pool, "loadBalancerPool")]
    for i, (a, an) in enumerate(nets_named):
        for b, bn in nets_named[i + 1:]:
            if a and b and a.overlaps(b):
                c.add(doc, f, obj, f"spec.{bn}", f"{b} overlaps spec.{an} {a}")
    if pod:
        if mask < pod.prefixlen:
            c.add(doc, f, obj, "spec.nodeCIDRMaskSize",
                  f"/{mask} does not fit in podCIDR {pod}: the mask must be at least /{pod.prefixlen}")
        elif nodes and 2 ** (mask - pod.prefixlen) < len(nodes):
            c.add(doc, f, obj, "spec.nodeCIDRMaskSize",
                  f"podCIDR {pod} holds {2 ** (mask - pod.prefixlen)} node subnets of /{mask}, "
                  f"but there are {len(nodes)} nodes")
    if nodenet and nodes and nodenet.num_addresses - 3 < len(nodes):
        c.add(doc, f, obj, "spec.nodeNetwork",
              f"{nodenet} has room for {max(nodenet.num_addresses - 3, 0)} nodes (and the external host), "
              f"not {len(nodes)}")
    fallback = ipaddress.IPv4Network("0.0.0.0/32")
    backend = s["iptablesBackend"]
    if backend not in ("nft", "legacy"):
        c.add(doc, f, obj, "spec.iptablesBackend", f"{backend!r} is not one of nft, legacy")
        backend = "nft"
    clients = _parse_clients(s["externalClients"], doc, c, obj, nets_named)
    return ClusterSpec(name, tuple(nodes), pod or fallback, svc or fallback, mask, nodenet or fallback, mtu, cni,
                       proxy, pool, backend,
                       {n: v for n, v in settings.items() if v.mtu is not None or v.sysctls or v.machine_wide},
                       clients)


def _parse_clients(v: Any, doc: Document, c: Collector, obj: str,
                   nets: list[tuple[ipaddress.IPv4Network | None, str]]) -> tuple[ipaddress.IPv4Address, ...]:
    """externalClients: addresses outside every cluster network (clients on the internet, say 172.17.0.10)."""
    if not isinstance(v, list):
        c.add(doc, doc.file, obj, "spec.externalClients", "must be a list of IPv4 addresses")
        return ()
    out: list[ipaddress.IPv4Address] = []
    for i, item in enumerate(v):
        at = f"spec.externalClients[{i}]"
        try:
            ip = ipaddress.IPv4Address(str(item))
        except ValueError:
            c.add(doc, doc.file, obj, at, f"{item!r} is not an IPv4 address")
            continue
        clash = next((name for net, name in nets if net and ip in net), None)
        if clash:
            c.add(doc, doc.file, obj, at, f"{ip} is inside spec.{clash}: a client outside needs an outside address")
        elif ip in out:
            c.add(doc, doc.file, obj, at, f"duplicate address {ip}")
        elif ip.is_loopback or ip.is_multicast or ip.is_unspecified:
            c.add(doc, doc.file, obj, at, f"{ip} cannot be a host's address")
        else:
            out.append(ip)
    return tuple(out)


def _parse_proxy(v: Any, doc: Document, c: Collector, obj: str) -> ProxySpec:
    if not isinstance(v, dict):
        c.add(doc, doc.file, obj, "spec.proxy", "must be a mapping with mode and masqueradeAll")
        return ProxySpec()
    mode = v.get("mode", "iptables")
    try:
        m = ProxyMode(mode)
    except ValueError:
        c.add(doc, doc.file, obj, "spec.proxy.mode", f"mode {mode!r} is not one of iptables, nftables, ipvs")
        m = ProxyMode.IPTABLES
    masq = v.get("masqueradeAll", False)
    if not isinstance(masq, bool):
        c.add(doc, doc.file, obj, "spec.proxy.masqueradeAll", f"must be true or false, got {masq!r}")
        masq = False
    return ProxySpec(m, masq)


def _parse_nodes(v: Any, doc: Document, c: Collector, obj: str,
                 settings: dict[str, Any] | None = None) -> list[str]:
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= 500:
            c.add(doc, doc.file, obj, "spec.nodes", f"a node count must be from 1 to 500, got {v}")
            return []
        return [f"node-{i}" for i in range(1, v + 1)]
    if isinstance(v, list) and v:
        names: list[str] = []
        for i, n in enumerate(v):
            fld = f"spec.nodes[{i}]"
            if isinstance(n, dict):  # {name, mtu, sysctls}: per-node settings (emu.model.nodesettings)
                own = nodesettings.parse(n, doc, c, obj, fld)
                n = n.get("name")
                fld += ".name"
                if settings is not None and isinstance(n, str):
                    settings[n] = own
            if not isinstance(n, str) or not DNS_LABEL.match(n) or len(n) > 63:
                c.add(doc, doc.file, obj, fld, f"node name {n!r} must be a DNS label (lowercase letters, digits, '-')")
            elif n in RESERVED_NODE_NAMES:
                c.add(doc, doc.file, obj, fld, f"node name {n!r} is reserved for the emulated infrastructure")
            elif n in names:
                c.add(doc, doc.file, obj, fld, f"duplicate node name {n!r}")
            else:
                names.append(n)
        return names
    c.add(doc, doc.file, obj, "spec.nodes",
          f"must be a node count or a non-empty list of names (or {{name, mtu, sysctls}}), got {v!r}")
    return []


def _parse_net(v: Any, doc: Document, c: Collector, obj: str, fld: str) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(str(v), strict=True)
    except ValueError as e:
        c.add(doc, doc.file, obj, fld, f"{v!r} is not a valid CIDR ({e})")
        return None
    if not isinstance(net, ipaddress.IPv4Network):
        c.add(doc, doc.file, obj, fld, f"{v} is IPv6; only IPv4 is supported so far")
        return None
    if net.prefixlen > 30:
        c.add(doc, doc.file, obj, fld, f"{v} is too small (at most /30)")
        return None
    return net


def _parse_cni(v: Any, doc: Document, c: Collector, obj: str) -> CNISpec:
    if not isinstance(v, dict):
        c.add(doc, doc.file, obj, "spec.cni", "must be a mapping with plugin and backend")
        return CNISpec()
    plugin = v.get("plugin", "flannel")
    if plugin == "cni":  # real plugin binaries: emu.network.cni
        from emu.network.cni import spec as cni_spec
        return cni_spec.parse(v, doc, c, obj)
    for key in v:
        if key not in ("plugin", "backend") and key in schema.CLUSTER_SPEC["cni"]:  # others: emu.model.schema's
            c.add(doc, doc.file, obj, f"spec.cni.{key}", "only valid with plugin cni (plugin flannel takes backend)")
    if plugin != "flannel":
        c.add(doc, doc.file, obj, "spec.cni.plugin", f"plugin {plugin!r} is not implemented (known: flannel, cni)")
    backend = v.get("backend", "vxlan")
    try:
        b = Backend(backend)
    except ValueError:
        c.add(doc, doc.file, obj, "spec.cni.backend", f"backend {backend!r} is not one of vxlan, host-gw")
        b = Backend.VXLAN
    return CNISpec("flannel", b)


# --- Namespaces, Pods, Deployments ----------------------------------------------------------------------------------


def _parse_namespace(doc: Document, c: Collector) -> Namespace | None:
    name = doc.meta.get("name")
    if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
        c.add(doc, doc.file, doc.label(), "metadata.name", f"namespace name {name!r} must be a DNS label")
        return None
    labels = parse_labels(doc.meta.get("labels"), doc, c, "metadata.labels")
    labels[NAMESPACE_NAME_LABEL] = name
    return Namespace(name, labels)


def _parse_pod(doc: Document, c: Collector, namespace: Any, name: Any, body: dict[str, Any],
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
    from emu.addons.dns import resolvconf
    for fld, msg in resolvconf.validate(spec):  # dnsPolicy, dnsConfig (emu.addons.dns writes the pod's resolv.conf)
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
        for pi, p in enumerate(ctr.get("ports") or []):
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


def _expand_deployment(doc: Document, c: Collector, taken: set[str] | None = None) -> list[Pod]:
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
    tlabels = (template.get("metadata") or {}).get("labels") or {}
    selector = (spec.get("selector") or {}).get("matchLabels")
    if not isinstance(selector, dict) or not selector:
        c.add(doc, doc.file, obj, "spec.selector.matchLabels", "a Deployment needs a selector")
        return []
    if any(str(tlabels.get(k)) != str(v) for k, v in selector.items()):
        c.add(doc, doc.file, obj, "spec.template.metadata.labels", "`selector` does not match template `labels`")
        return []
    template_hash = pod_template_hash(template)
    rs = f"{name}-{template_hash}"
    first = _parse_pod(doc, c, ns, generated_name(rs, random_suffix(ns, rs, 0)), template, "spec.template.",
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
    for b in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(h))


def random_suffix(namespace: str, rs: str, i: int, attempt: int = 0) -> str:
    """The 5-character random suffix (rand.String(5)), made deterministic so a topology always yields the same names;
    `attempt` > 0 draws the suffix of a retry after a taken name."""
    seed = f"{namespace}/{rs}/{i}" + (f"/{attempt}" if attempt else "")
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(SAFE_ALPHANUMS[b % len(SAFE_ALPHANUMS)] for b in digest[:5])


def _check_pods(pods: list[tuple[Pod, Document]], namespaces: dict[str, Namespace], cluster: ClusterSpec,
                c: Collector) -> None:
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
                  f"pod {p.key} needs the network namespace {netns[:40]}... of {len(netns.encode())} bytes: a namespace "
                  f"is a file in /run/netns and /etc/netns, at most {names.NETNS_NAME_MAX} bytes (NAME_MAX); "
                  f"shorten the pod or namespace name")
        if p.key in seen:
            first = seen[p.key]
            c.add(doc, doc.file, doc.label(), "metadata.name",
                  f"duplicate pod {p.key} (first defined in document {first.index})")
        else:
            seen[p.key] = doc
