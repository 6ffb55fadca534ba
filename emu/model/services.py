"""Service, EndpointSlice and Endpoints manifests parsed into the model, with the API server's validation rules
that matter to the dataplane (ports, nodePorts, clusterIPs, traffic policies)."""
from __future__ import annotations

import ipaddress
from typing import Any

from emu.model.documents import DNS_LABEL, IANA_SVC_NAME, Collector, Document, check_namespaced, parse_labels
from emu.model.types import (ClusterSpec, EndpointSlice, Namespace, Protocol, Service, ServicePortSpec, SliceEndpoint,
    SlicePort)

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODE_PORT_RANGE = (30000, 32767)  # --service-node-port-range
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _port_number(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535


def _protocol(v: Any, doc: Document, c: Collector, fld: str) -> Protocol | None:
    try:
        return Protocol(v if v is not None else "TCP")
    except ValueError:
        c.add(doc, doc.file, doc.label(), fld, f"{v!r} is not one of TCP, UDP, SCTP")
        return None


def _ports(spec: dict[str, Any], stype: str, doc: Document, c: Collector) -> tuple[ServicePortSpec, ...]:
    raw = spec.get("ports") or []
    if not isinstance(raw, list):
        c.add(doc, doc.file, doc.label(), "spec.ports", "must be a list")
        return ()
    out: list[ServicePortSpec] = []
    for i, p in enumerate(raw):
        f = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            c.add(doc, doc.file, doc.label(), f, "must be a mapping with port")
            continue
        name = p.get("name") or ""
        if len(raw) > 1 and not name:
            c.add(doc, doc.file, doc.label(), f"{f}.name", "a Service with several ports must name each of them")
        elif name and (not isinstance(name, str) or len(name) > 63 or not DNS_LABEL.match(name)):
            c.add(doc, doc.file, doc.label(), f"{f}.name", f"{name!r} must be a DNS label")
        port = p.get("port")
        if not _port_number(port):
            c.add(doc, doc.file, doc.label(), f"{f}.port", f"must be a port number from 1 to 65535, got {port!r}")
            continue
        proto = _protocol(p.get("protocol"), doc, c, f"{f}.protocol")
        target = p.get("targetPort")
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if target is not None and not _port_number(target) and not (
                isinstance(target, str) and len(target) <= 15 and IANA_SVC_NAME.match(target)):
            c.add(doc, doc.file, doc.label(), f"{f}.targetPort", f"{target!r} is neither a port number nor a port name")
            continue
        node_port = p.get("nodePort")
        if node_port is not None:
            if stype not in ("NodePort", "LoadBalancer"):
                c.add(doc, doc.file, doc.label(), f"{f}.nodePort", f"may not be set for type {stype}")
                node_port = None
            elif not isinstance(node_port, int) or not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]:
                c.add(doc, doc.file, doc.label(), f"{f}.nodePort",
                      f"{node_port!r} is not in the node port range {NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}")
                node_port = None
        if proto is None:
            continue
        if any(q.name == name for q in out if name):
            c.add(doc, doc.file, doc.label(), f"{f}.name", f"duplicate port name {name!r}")
        if any(q.port == port and q.protocol is proto for q in out):
            c.add(doc, doc.file, doc.label(), f, f"duplicate port {port}/{proto.value}")
        out.append(ServicePortSpec(port, proto, name, target, node_port))
    return tuple(out)


def _listed(v: Any, doc: Document, c: Collector, fld: str, what: str) -> list[Any]:
    """v as a list ([] when absent); anything else is one problem."""
    if v is None:
        return []
    if not isinstance(v, list):
        c.add(doc, doc.file, doc.label(), fld, f"must be a list of {what}")
        return []
    return v


def _mappings(v: Any, doc: Document, c: Collector, fld: str, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(index, item) for each item of the list v that is a mapping; the others, and a v that is not a list, are
    one problem each."""
    out = []
    for i, x in enumerate(_listed(v, doc, c, fld, f"mappings with {what}")):
        if isinstance(x, dict):
            out.append((i, x))
        else:
            c.add(doc, doc.file, doc.label(), f"{fld}[{i}]", f"must be a mapping with {what}")
    return out


def _mapping(v: Any, doc: Document, c: Collector, fld: str) -> dict[str, Any]:
    """v as a mapping ({} when absent, or when it is not one: one problem)."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        c.add(doc, doc.file, doc.label(), fld, "must be a mapping")
        return {}
    return v


def _ips(v: Any, doc: Document, c: Collector, fld: str) -> tuple[ipaddress.IPv4Address, ...]:
    out = []
    for i, x in enumerate(_listed(v, doc, c, fld, "IPv4 addresses")):
        try:
            out.append(ipaddress.IPv4Address(str(x)))
        except ValueError:
            c.add(doc, doc.file, doc.label(), f"{fld}[{i}]", f"{x!r} is not an IPv4 address")
    return tuple(out)


def _nets(v: Any, doc: Document, c: Collector, fld: str) -> tuple[ipaddress.IPv4Network, ...]:
    out = []
    for i, x in enumerate(_listed(v, doc, c, fld, "IPv4 CIDRs")):
        try:
            out.append(ipaddress.IPv4Network(str(x), strict=False))
        except ValueError:
            c.add(doc, doc.file, doc.label(), f"{fld}[{i}]", f"{x!r} is not an IPv4 CIDR")
    return tuple(out)


def parse_service(doc: Document, c: Collector) -> Service | None:
    meta, spec = doc.meta, doc.body.get("spec")
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
        c.add(doc, doc.file, doc.label(), "metadata.name", f"service name {name!r} must be a DNS label")
        return None
    if not isinstance(spec, dict):
        c.add(doc, doc.file, doc.label(), "spec", "missing spec")
        return None
    stype = spec.get("type") or "ClusterIP"
    if stype not in SERVICE_TYPES:
        c.add(doc, doc.file, doc.label(), "spec.type", f"{stype!r} is not one of {', '.join(SERVICE_TYPES)}")
        return None
    ports = _ports(spec, stype, doc, c)
    selector = spec.get("selector")
    if selector is not None and not isinstance(selector, dict):
        c.add(doc, doc.file, doc.label(), "spec.selector", "must be a mapping of labels")
        selector = None
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "", "None"):
        try:
            ipaddress.IPv4Address(str(cluster_ip))
        except ValueError:
            c.add(doc, doc.file, doc.label(), "spec.clusterIP", f"{cluster_ip!r} is not an IPv4 address or None")
            cluster_ip = None
    external_name = spec.get("externalName")
    if stype == "ExternalName" and not external_name:
        c.add(doc, doc.file, doc.label(), "spec.externalName", "required for type ExternalName")
    elif external_name is not None and not isinstance(external_name, str):
        c.add(doc, doc.file, doc.label(), "spec.externalName", f"must be a string, got {external_name!r}")
        external_name = None
    if stype not in ("ExternalName",) and not ports and cluster_ip != "None":
        c.add(doc, doc.file, doc.label(), "spec.ports", "a Service needs at least one port")
    etp = spec.get("externalTrafficPolicy", "Cluster")
    itp = spec.get("internalTrafficPolicy", "Cluster")
    for fld, v in (("externalTrafficPolicy", etp), ("internalTrafficPolicy", itp)):
        if v not in ("Cluster", "Local"):
            c.add(doc, doc.file, doc.label(), f"spec.{fld}", f"{v!r} is not one of Cluster, Local")
    if etp == "Local" and stype not in ("NodePort", "LoadBalancer"):
        c.add(doc, doc.file, doc.label(), "spec.externalTrafficPolicy",
              "Local is only valid for NodePort and LoadBalancer Services")
    affinity = spec.get("sessionAffinity", "None")
    if affinity not in ("None", "ClientIP"):
        c.add(doc, doc.file, doc.label(), "spec.sessionAffinity", f"{affinity!r} is not one of None, ClientIP")
    affinity_config = _mapping(spec.get("sessionAffinityConfig"), doc, c, "spec.sessionAffinityConfig")
    client_ip = _mapping(affinity_config.get("clientIP"), doc, c, "spec.sessionAffinityConfig.clientIP")
    timeout = client_ip.get("timeoutSeconds", 10800)
    if not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        c.add(doc, doc.file, doc.label(), "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
              f"must be from 1 to 86400, got {timeout!r}")
        timeout = 10800
    hc = spec.get("healthCheckNodePort")
    if hc is not None and (etp != "Local" or stype != "LoadBalancer"):
        c.add(doc, doc.file, doc.label(), "spec.healthCheckNodePort",
              "may only be set for a LoadBalancer with externalTrafficPolicy Local")
        hc = None
    elif hc is not None and (not isinstance(hc, int) or isinstance(hc, bool)
                             or not NODE_PORT_RANGE[0] <= hc <= NODE_PORT_RANGE[1]):
        c.add(doc, doc.file, doc.label(), "spec.healthCheckNodePort",
              f"{hc!r} is not in the node port range {NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}")
        hc = None
    external = _ips(spec.get("externalIPs"), doc, c, "spec.externalIPs")
    lb_ip = spec.get("loadBalancerIP")
    lb = _ips([lb_ip], doc, c, "spec.loadBalancerIP") if lb_ip else ()  # not an address: reported, None
    return Service(
        ns, name, stype, ports, dict(selector) if selector else None,
        cluster_ip if cluster_ip not in ("",) else None,
        external, external_name,
        affinity == "ClientIP", timeout, etp == "Local", itp == "Local", hc,
        lb[0] if lb else None,
        _nets(spec.get("loadBalancerSourceRanges"), doc, c, "spec.loadBalancerSourceRanges"),
        bool(spec.get("publishNotReadyAddresses", False)),
        parse_labels(meta.get("labels"), doc, c, "metadata.labels"), doc.index)


def parse_slice(doc: Document, c: Collector) -> EndpointSlice | None:
    """An EndpointSlice (discovery.k8s.io/v1), or a v1 Endpoints converted to one (as the mirroring controller
    does: addresses are ready, notReadyAddresses are not)."""
    meta = doc.meta
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str):
        c.add(doc, doc.file, doc.label(), "metadata.name", "missing name")
        return None
    if doc.kind == "Endpoints":
        return _from_endpoints(doc, c, ns, name)
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        c.add(doc, doc.file, doc.label(), "metadata.labels", "labels must be a mapping")
        return None
    service = labels.get(SERVICE_NAME_LABEL)
    if not service:
        c.add(doc, doc.file, doc.label(), f"metadata.labels.{SERVICE_NAME_LABEL}", "names the Service; required")
        return None
    eps = []
    for i, e in _mappings(doc.body.get("endpoints"), doc, c, "endpoints", "addresses"):
        cond = _mapping(e.get("conditions"), doc, c, f"endpoints[{i}].conditions")
        ready = cond.get("ready", True) is not False
        target = _mapping(e.get("targetRef"), doc, c, f"endpoints[{i}].targetRef")
        for ip in _ips(e.get("addresses"), doc, c, f"endpoints[{i}].addresses"):
            eps.append(SliceEndpoint(ip, ready, cond.get("serving", ready) is not False,
                                     bool(cond.get("terminating", False)), e.get("nodeName"),
                                     f"{target.get('namespace', ns)}/{target['name']}" if target.get("name") else None))
    ports = []
    for i, p in _mappings(doc.body.get("ports"), doc, c, "ports", "port"):
        proto = _protocol(p.get("protocol"), doc, c, f"ports[{i}].protocol")
        if not _port_number(p.get("port")) or proto is None:
            c.add(doc, doc.file, doc.label(), f"ports[{i}].port", f"must be a port number, got {p.get('port')!r}")
            continue
        ports.append(SlicePort(p["port"], proto, p.get("name") or ""))
    return EndpointSlice(ns, name, service, tuple(eps), tuple(ports))


def _from_endpoints(doc: Document, c: Collector, ns: str, name: str) -> EndpointSlice:
    eps, ports = [], []
    for si, subset in _mappings(doc.body.get("subsets"), doc, c, "subsets", "addresses and ports"):
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for ai, a in _mappings(subset.get(key), doc, c, f"subsets[{si}].{key}", "ip"):
                for ip in _ips([a.get("ip")], doc, c, f"subsets[{si}].{key}[{ai}].ip"):
                    eps.append(SliceEndpoint(ip, ready, ready, False, a.get("nodeName")))
        for pi, p in _mappings(subset.get("ports"), doc, c, f"subsets[{si}].ports", "port"):
            proto = _protocol(p.get("protocol"), doc, c, f"subsets[{si}].ports[{pi}].protocol")
            if _port_number(p.get("port")) and proto is not None:
                ports.append(SlicePort(p["port"], proto, p.get("name") or ""))
    return EndpointSlice(ns, name, name, tuple(eps), tuple(ports))


def check(svcs: list[tuple[Service, Document]], slices: list[tuple[EndpointSlice, Document]],
          namespaces: dict[str, Namespace], cluster: ClusterSpec, c: Collector) -> None:
    """Cross-object rules: namespaces exist, names and explicit clusterIPs/nodePorts are unique and in range."""
    ips: dict[str, str] = {}
    node_ports: dict[tuple[int, Protocol], str] = {}
    reserved = {str(cluster.service_cidr.network_address + 1): "the kubernetes Service",
                str(cluster.service_cidr.network_address + 10): "kube-dns"}
    check_namespaced(svcs, namespaces, "Service", c)
    for s, doc in svcs:
        if s.cluster_ip not in (None, "None"):
            ip = ipaddress.IPv4Address(s.cluster_ip)
            if ip not in cluster.service_cidr:
                c.add(doc, doc.file, doc.label(), "spec.clusterIP",
                      f"{ip} is not in the service CIDR {cluster.service_cidr}")
            elif s.cluster_ip in ips:
                c.add(doc, doc.file, doc.label(), "spec.clusterIP", f"{ip} is already allocated to {ips[s.cluster_ip]}")
            elif s.cluster_ip in reserved and not (s.namespace == "kube-system" and s.name == "kube-dns"):
                c.add(doc, doc.file, doc.label(), "spec.clusterIP", f"{ip} is reserved for {reserved[s.cluster_ip]}")
            ips[s.cluster_ip] = s.key
        for i, p in enumerate(s.ports):
            if p.node_port is not None:
                key = (p.node_port, p.protocol)
                if key in node_ports:
                    c.add(doc, doc.file, doc.label(), f"spec.ports[{i}].nodePort",
                          f"{p.node_port}/{p.protocol.value} is already allocated to {node_ports[key]}")
                node_ports[key] = s.key
    for sl, doc in slices:
        if sl.namespace not in namespaces:
            c.add(doc, doc.file, doc.label(), "metadata.namespace", f"namespace {sl.namespace!r} does not exist")
