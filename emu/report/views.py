"""kubectl-shaped views of a running cluster (`emu get`): the same columns kubectl prints, plus the dataplane
facts a reader of this tool wants (node subnet, netns, host-side veth)."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from emu.cluster import events
from emu.model import kinds
from emu.addons.ingress import routing
from emu.addons.ingress.addon import admitted_class
from emu.addons.multus import allocate as multus
from emu.apply import netns
from emu.model import nodesettings
from emu.report import output as report
from emu.addons.kubeproxy import systempods
from emu.cluster.lifecycle import Cluster
from emu.network import table as networks
from emu.alloc.endpoints import all_services
from emu.errors import EmuError, NotFound
from emu.model.types import Service
from emu.alloc.services import ServiceAlloc

VERSION = "v1.33.0-emu"


@dataclass
class View:
    headers: list[str]
    wide_headers: list[str]
    rows: list[list[Any]]
    wide_rows: list[list[Any]]
    items: list[dict[str, Any]]
    empty: str

    def named(self, resource: str, name: str) -> View:
        """`kubectl get KIND NAME`: the one object of that name; none is kubectl's NotFound error for `resource`
        (group-qualified, as the API server names it)."""
        keep = [i for i, item in enumerate(self.items) if item.get("name") == name]
        if not keep:
            raise NotFound(resource, name)
        return View(self.headers, self.wide_headers, [self.rows[i] for i in keep], [self.wide_rows[i] for i in keep],
                    [self.items[i] for i in keep], self.empty)

    def table(self, wide: bool = False) -> str:
        if not self.rows:
            return self.empty
        if wide:
            return report.table(self.headers + self.wide_headers, [r + w for r, w in zip(self.rows, self.wide_rows)])
        return report.table(self.headers, self.rows)


class BadRequest(EmuError):
    """What the API server refuses to read (a field selector it does not support)."""

    exit_code = 2


# the KIND words `emu get` takes (kinds.KINDS; endpointslices are shown as their Endpoints)
ALIASES = {a: k.resource for k in kinds.KINDS for a in (k.resource, *k.aliases)} | {"endpointslices": "endpoints"}


def get(cl: Cluster, kind: str, namespace: str | None, name: str | None = None,
        field_selector: str | None = None) -> View:
    """`kubectl get KIND [NAME] [--field-selector S]` (the selector: events only)."""
    resource = ALIASES[kind]
    if field_selector and resource != "events":
        raise BadRequest(f"--field-selector is supported for events here, not {resource}")
    if resource == "events":
        view = events_view(cl, namespace, field_selector or "")
    elif resource in ("nodes", "namespaces"):
        view = _VIEWS[resource](cl)
    else:
        view = _VIEWS[resource](cl, namespace)
    return view.named(kinds.kind_of(resource).qualified, name) if name else view


def _age(cl: Cluster) -> str:
    return report.age(cl.record.created)


def nodes(cl: Cluster) -> View:
    c = cl.topology.cluster
    net = networks.for_cluster(c)
    rows, wide, items = [], [], []
    for n in cl.plan.nodes:
        ready = "Ready" if netns.exists(n.netns) else "NotReady"
        role = "control-plane" if n.name == c.nodes[0] else "<none>"
        npods = sum(p.node == n.name for p in cl.plan.pods)
        rows.append([n.name, ready, role, _age(cl), VERSION])
        sysctls = dict(c.node_sysctls(n.name))
        s = c.node_settings.get(n.name)
        unapplied = dict(s.machine_wide) if s else {}
        shown = [f"{k}={v}" for k, v in sysctls.items()] + [
            f"{k}={v}(machine-wide,not-applied:{nodesettings.machine_value(k)})" for k, v in unapplied.items()]
        view = net.node_view(c, n)
        wide.append([n.ip, n.subnet, c.node_mtu(n.name), net.pod_mtu(c, n.name), view.cni,
                     npods, n.netns, ",".join(shown) or "<none>"])
        items.append({"name": n.name, "status": ready, "roles": role, "internalIP": str(n.ip),
                      "podCIDR": str(n.subnet), "mtu": c.node_mtu(n.name), "podMTU": net.pod_mtu(c, n.name),
                      **view.fields, "pods": npods, "netns": n.netns,
                      "sysctls": sysctls, "sysctlsNotApplied": {
                          k: {"asked": v, "machine": nodesettings.machine_value(k)} for k, v in unapplied.items()}})
    return View(["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
                ["INTERNAL-IP", "POD-CIDR", "MTU", "POD-MTU", "CNI", "PODS", "NETNS", "SYSCTLS"], rows, wide, items,
                "No resources found")


def pods(cl: Cluster, namespace: str | None) -> View:
    rows, wide, items = [], [], []
    # real CNI plugins name the host veth themselves: the cached result knows it, the model's name is a prediction
    host_veths = networks.for_cluster(cl.topology.cluster).host_veths
    veths = host_veths(cl.record) if host_veths is not None else None
    for pod in cl.topology.pods:
        if namespace is not None and pod.namespace != namespace:
            continue
        pp = cl.plan.pod(pod.key)
        assert pp is not None
        st = "Running" if netns.exists(pp.netns.name) else "Unknown"
        first = [pod.namespace] if namespace is None else []
        rows.append(first + [pod.name, "1/1" if st == "Running" else "0/1", st, 0, _age(cl)])
        veth = pp.host_link.name if veths is None else veths.get(pod.key, "")
        wide.append([pp.ip, pp.node, veth or "<none>", pp.netns.name])
        items.append({"namespace": pod.namespace, "name": pod.name, "status": st, "ip": str(pp.ip), "node": pp.node,
                      "labels": dict(pod.labels), "owner": pod.owner, "hostVeth": veth,
                      "netns": pp.netns.name, "hostNetwork": pod.host_network,
                      "networks": [{"name": a.nad, "interface": a.ifname, "ips": [str(a.ip)]}
                                   for a in multus.attachments(cl.allocations.secondary, pod.key)],
                      "ports": [{"name": p.name, "containerPort": p.container_port, "protocol": p.protocol.value}
                                for p in pod.ports]})
    for sp in systempods.kube_proxy(cl):  # kube-proxy's DaemonSet pods: hostNetwork, no veth of their own
        if namespace is not None and sp.namespace != namespace:
            continue
        st = "Running" if netns.exists(sp.netns) else "Unknown"
        rows.append(([sp.namespace] if namespace is None else []) +
                    [sp.name, "1/1" if st == "Running" else "0/1", st, 0, _age(cl)])
        wide.append([sp.ip, sp.node, "<none>", sp.netns])
        items.append({"namespace": sp.namespace, "name": sp.name, "status": st, "ip": sp.ip, "node": sp.node,
                      "labels": dict(sp.labels), "owner": sp.owner, "hostVeth": "", "netns": sp.netns,
                      "hostNetwork": True, "networks": [], "ports": []})
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    return View(headers, ["IP", "NODE", "HOST-VETH", "NETNS"], rows, wide, items, _none_found(namespace))


def namespaces(cl: Cluster) -> View:
    rows, wide, items = [], [], []
    for ns in cl.topology.namespaces:
        npods = sum(p.namespace == ns.name for p in cl.topology.pods)
        labels = ",".join(f"{k}={v}" for k, v in sorted(ns.labels.items()))
        rows.append([ns.name, "Active", _age(cl)])
        wide.append([npods, labels])
        items.append({"name": ns.name, "status": "Active", "labels": dict(ns.labels), "pods": npods})
    return View(["NAME", "STATUS", "AGE"], ["PODS", "LABELS"], rows, wide, items, "No resources found")


def _svc_ports(svc: Service, a: ServiceAlloc | None) -> str:
    out = []
    for p in svc.ports:
        np = a.node_ports.get(f"{p.port}/{p.protocol.value}") if a else None
        out.append(f"{p.port}:{np}/{p.protocol.value}" if np else f"{p.port}/{p.protocol.value}")
    return ",".join(out) or "<none>"


def _external(svc: Service, a: ServiceAlloc | None) -> str:
    if svc.type == "ExternalName":
        return svc.external_name or "<none>"
    ips = [str(ip) for ip in svc.external_ips]
    if svc.type == "LoadBalancer":
        ips = ([str(a.load_balancer_ip)] if a and a.load_balancer_ip else ["<pending>"]) + ips
    return ",".join(ips) or "<none>"


def services(cl: Cluster, namespace: str | None) -> View:
    rows, wide, items = [], [], []
    for svc in cl.topology.services:
        if namespace is not None and svc.namespace != namespace:
            continue
        a = cl.allocations.services.get(svc.key)
        cip = "None" if svc.headless else (str(a.cluster_ip) if a and a.cluster_ip else "<none>")
        selector = ",".join(f"{k}={v}" for k, v in (svc.selector or {}).items()) or "<none>"
        rows.append(([svc.namespace] if namespace is None else []) +
                    [svc.name, svc.type, cip, _external(svc, a), _svc_ports(svc, a), _age(cl)])
        wide.append([selector])
        items.append({"namespace": svc.namespace, "name": svc.name, "type": svc.type, "clusterIP": cip,
                      "externalIPs": [str(i) for i in svc.external_ips],
                      "loadBalancerIP": str(a.load_balancer_ip) if a and a.load_balancer_ip else None,
                      "healthCheckNodePort": a.health_check_node_port if a else None,
                      "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.value,
                                 "targetPort": p.target_port if p.target_port is not None else p.port,
                                 "nodePort": a.node_ports.get(f"{p.port}/{p.protocol.value}") if a else None}
                                for p in svc.ports],
                      "selector": dict(svc.selector) if svc.selector else None,
                      "externalTrafficPolicy": "Local" if svc.external_policy_local else "Cluster",
                      "internalTrafficPolicy": "Local" if svc.internal_policy_local else "Cluster",
                      "sessionAffinity": "ClientIP" if svc.session_affinity else "None"})
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                                              "PORT(S)", "AGE"]
    return View(headers, ["SELECTOR"], rows, wide, items, "No resources found")


def endpoints(cl: Cluster, namespace: str | None) -> View:
    """kubectl get endpoints: the ready addresses of each Service (EndpointSlice conditions in -o json/wide)."""
    rows, wide, items = [], [], []
    eps = all_services(cl.topology, cl.allocations)
    for svc in cl.topology.services:
        if namespace is not None and svc.namespace != namespace:
            continue
        ready = [f"{e.ip}:{e.port}" for pe in eps[svc.key] for e in pe.endpoints if e.ready]
        ready = list(dict.fromkeys(ready))
        shown = ",".join(ready[:3]) + (f" + {len(ready) - 3} more..." if len(ready) > 3 else "")
        other = [f"{e.ip}:{e.port}({'terminating' if e.terminating else 'not-ready'})"
                 for pe in eps[svc.key] for e in pe.endpoints if not e.ready]
        rows.append(([svc.namespace] if namespace is None else []) + [svc.name, shown or "<none>", _age(cl)])
        wide.append([",".join(dict.fromkeys(other)) or "<none>"])
        items.append({"namespace": svc.namespace, "name": svc.name, "ports": [
            {"name": pe.spec.name, "port": pe.spec.port, "protocol": pe.spec.protocol.value, "endpoints": [
                {"ip": str(e.ip), "port": e.port, "node": e.node, "pod": e.pod,
                 "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating}}
                for e in pe.endpoints]} for pe in eps[svc.key]]})
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME", "ENDPOINTS", "AGE"]
    return View(headers, ["NOT-READY"], rows, wide, items, "No resources found")


def ingresses(cl: Cluster, namespace: str | None) -> View:
    """kubectl get ingress: ADDRESS is what ingress-nginx publishes (its Service's LoadBalancer IP, else the
    controller's node); an Ingress no controller serves has none."""
    served = {i.key for i in routing.served(cl)}
    a = routing.address(cl)
    rows, wide, items = [], [], []
    for ing in cl.topology.ingresses:
        if namespace is not None and ing.namespace != namespace:
            continue
        hosts = [r.host for r in ing.rules if r.host]
        addr = a.ip if a and ing.key in served else ""
        ports = "80, 443" if ing.tls else "80"
        rules = [f"{r.host or '*'}{p.path}({p.path_type})->{p.backend.service}:{p.backend.port_text}"
                 for r in ing.rules for p in r.paths]
        rows.append(([ing.namespace] if namespace is None else []) +
                    [ing.name, admitted_class(ing, cl.topology.ingress_classes) or "<none>", ",".join(hosts) or "*",
                     addr, ports, _age(cl)])
        wide.append([" ".join(rules) or "<default backend>"])
        items.append({"namespace": ing.namespace, "name": ing.name, "class": ing.class_name, "hosts": hosts,
                      "address": addr or None, "served": ing.key in served,
                      "tls": [{"hosts": list(t.hosts), "secretName": t.secret_name} for t in ing.tls],
                      "rules": [{"host": r.host, "paths": [{"path": p.path, "pathType": p.path_type,
                                                            "service": p.backend.service,
                                                            "port": p.backend.port_number or p.backend.port_name}
                                                           for p in r.paths]} for r in ing.rules],
                      "annotations": dict(ing.annotations)})
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    return View(headers, ["RULES"], rows, wide, items, "No resources found")


def network_policies(cl: Cluster, namespace: str | None) -> View:
    """kubectl get networkpolicies: NAME, POD-SELECTOR (metav1.FormatLabelSelector: `<none>` for {}), AGE; wide and
    JSON add the policy types and the pods it selects now."""
    rows, wide, items = [], [], []
    for pol in cl.topology.network_policies:
        if namespace is not None and pol.namespace != namespace:
            continue
        sel = "<none>" if pol.pod_selector.empty else str(pol.pod_selector)
        selected = [p.key for p in cl.topology.pods
                    if p.namespace == pol.namespace and pol.pod_selector.matches(p.labels)]
        types = [t.value for t in pol.policy_types]
        rows.append(([pol.namespace] if namespace is None else []) + [pol.name, sel, _age(cl)])
        wide.append([",".join(types), len(selected)])
        items.append({"namespace": pol.namespace, "name": pol.name, "podSelector": sel, "policyTypes": types,
                      "selectedPods": selected, "ingressRules": len(pol.ingress), "egressRules": len(pol.egress)})
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME", "POD-SELECTOR", "AGE"]
    return View(headers, ["POLICY-TYPES", "PODS"], rows, wide, items, _none_found(namespace))


def _none_found(namespace: str | None) -> str:
    return "No resources found" + (f" in {namespace} namespace." if namespace else ".")


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def events_view(cl: Cluster, namespace: str | None, field_selector: str = "") -> View:
    """kubectl get events [--field-selector]: what the components recorded (emu.cluster.events), identical ones counted as
    the recorder's correlator counts them; a Node's events live in `default`."""
    try:
        terms = events.parse_field_selector(field_selector)
    except events.SelectorError as e:
        raise BadRequest(f"Error from server (BadRequest): {e}") from None
    rows, wide, items = [], [], []
    for seen in events.aggregate(events.select(events.load(cl.record), terms)):
        e = seen.event
        if namespace is not None and e.event_namespace != namespace:
            continue
        rows.append(([e.event_namespace] if namespace is None else []) +
                    [report.age(seen.last), e.type, e.reason, e.object, e.message])
        wide.append([e.source, report.age(seen.first), seen.count, e.event_name])
        items.append({"metadata": {"name": e.event_name, "namespace": e.event_namespace},
                      "involvedObject": {"kind": e.kind, "namespace": e.namespace or None, "name": e.name,
                                         "apiVersion": events.FIELDS["involvedObject.apiVersion"](e)},
                      "type": e.type, "reason": e.reason, "message": e.message, "source": {"component": e.source},
                      "count": seen.count, "firstTimestamp": _iso(seen.first), "lastTimestamp": _iso(seen.last)})
    headers = (["NAMESPACE"] if namespace is None else []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    return View(headers, ["SOURCE", "FIRST SEEN", "COUNT", "NAME"], rows, wide, items, _none_found(namespace))


_VIEWS: dict[str, Any] = {"nodes": nodes, "pods": pods, "namespaces": namespaces, "services": services,
                          "endpoints": endpoints, "ingresses": ingresses, "networkpolicies": network_policies}
