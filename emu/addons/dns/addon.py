"""The cluster DNS addon, as kubeadm installs it: the `coredns` ConfigMap (kube-system) brings the `coredns`
Deployment (2 replicas, k8s-app=kube-dns, dnsPolicy Default) and the `kube-dns` Service at serviceCIDR .10 (dns
53/UDP, dns-tcp 53/TCP, metrics 9153/TCP) into the model, unless the topology has a kube-dns Service of its own.

The server is a second per-cluster daemon (emu.addons.dns.server) answering inside the coredns pods' namespaces, so
queries reach it through kube-proxy's rules for the ClusterIP.  Every pod and node gets kubelet's resolv.conf in
/etc/netns/<netns>/resolv.conf (what `ip netns exec`, hence `emu exec`, bind-mounts over /etc/resolv.conf)."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from typing import Any

from emu.model import names
from emu.apply import processes, state
from emu.model.documents import DNS_SUBDOMAIN, Collector, Document
from emu.errors import ClusterError
from emu.alloc.ipam import external_ip
from emu.addons.ingress import controller as ingress
from emu.addons.dns import corefile, corelog, records, resolvconf, server

CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+\Z")  # k8s.io/apimachinery validation.IsConfigMapKey
ADDON_INDEX = 100000  # document index of the synthesized objects (error messages name them as documents)
DNS_LABELS = {"k8s-app": "kube-dns"}
ETC_NETNS = processes.etc_netns()  # one reading of EMU_ETC_NETNS, in processes


def _is_coredns_configmap(body: dict[str, Any]) -> bool:
    meta = body.get("metadata") or {}
    return (body.get("kind") == "ConfigMap" and meta.get("name") == "coredns"
            and (meta.get("namespace") or "default") == "kube-system")


def corefile_text(bodies: list[dict[str, Any]]) -> str | None:
    cm = next((b for b in bodies if _is_coredns_configmap(b)), None)
    if cm is None:
        return None
    return str((cm.get("data") or {}).get("Corefile") or corefile.DEFAULT_COREFILE)


def check_configmap(doc: Document, c: Collector) -> None:
    """ConfigMaps are recorded; the coredns one must hold a Corefile CoreDNS would start with."""
    name = doc.meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        c.add(doc, doc.file, doc.label(), "metadata.name", f"ConfigMap name {name!r} must be a DNS subdomain")
    data = doc.body.get("data")
    if data is not None and not isinstance(data, dict):
        c.add(doc, doc.file, doc.label(), "data", "must be a mapping of keys to strings")
        return
    for key in data or {}:  # IsConfigMapKey: a key is a file name in a volume
        if not isinstance(key, str) or len(key) > 253 or not CONFIGMAP_KEY.match(key) or key in (".", ".."):
            c.add(doc, doc.file, doc.label(), f"data[{key}]", f"{key!r} must be letters, digits, '-', '_' or '.'")
    if _is_coredns_configmap(doc.body) and data and "Corefile" in data:
        try:
            corefile.parse(str(data["Corefile"]))
        except corefile.CorefileError as e:
            c.add(doc, doc.file, doc.label(), "data.Corefile", str(e))


def addon_documents(path: str, docs: list[Document], service_cidr: ipaddress.IPv4Network) -> list[Document]:
    """kubeadm's CoreDNS addon objects, when the coredns ConfigMap is there and no kube-dns Service is."""
    bodies = [d.body for d in docs]
    if corefile_text(bodies) is None:
        return []
    has_svc = any(b.get("kind") == "Service" and (b.get("metadata") or {}).get("name") == "kube-dns"
                  and (b.get("metadata") or {}).get("namespace") == "kube-system" for b in bodies)
    has_deploy = any(b.get("kind") == "Deployment" and (b.get("metadata") or {}).get("name") == "coredns"
                     and (b.get("metadata") or {}).get("namespace") == "kube-system" for b in bodies)
    out = []
    if not has_deploy:
        out.append(Document(path, ADDON_INDEX, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(DNS_LABELS)},
            "spec": {"replicas": 2, "selector": {"matchLabels": dict(DNS_LABELS)},
                     "template": {"metadata": {"labels": dict(DNS_LABELS)},
                                  "spec": {"dnsPolicy": "Default",
                                           "containers": [{"name": "coredns",
                                                           "image": "registry.k8s.io/coredns/coredns:v1.11.1"}]}}}}))
    if not has_svc:
        out.append(Document(path, ADDON_INDEX + 1, {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"selector": dict(DNS_LABELS), "clusterIP": str(service_cidr.network_address + 10),
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                               {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}))
    return out


# --- a running cluster ---------------------------------------------------------------------------------------------


def _bodies(rec: state.Record) -> list[dict[str, Any]]:
    return [d["body"] for d in rec.documents[1:]]


def config(cl: Any) -> corefile.Config | None:
    text = corefile_text(_bodies(cl.record))
    return corefile.parse(text) if text is not None else None


def dns_dir(rec: state.Record) -> str:
    return os.path.join(rec.dir, "dns")


def cluster_dns_ip(cl: Any) -> str | None:
    a = cl.allocations.services.get("kube-system/kube-dns")
    return str(a.cluster_ip) if a and a.cluster_ip else None


def server_pods(cl: Any) -> list[str]:
    return [p.key for p in cl.topology.pods if p.namespace == "kube-system"
            and all(p.labels.get(k) == v for k, v in DNS_LABELS.items())]


def node_dns(cl: Any) -> resolvconf.DNSConfig:
    """The nodes' own /etc/resolv.conf (kubelet's --resolv-conf): the external host's resolver."""
    return resolvconf.DNSConfig(servers=[str(external_ip(cl.topology.cluster))])


def _pod_specs(cl: Any) -> dict[str, dict[str, Any]]:
    """Each pod's spec as written (a Deployment's template spec for its pods), by pod key."""
    by_ident: dict[tuple[str, str, str], dict[str, Any]] = {}
    bodies = _bodies(cl.record)
    path = cl.record.topology_file
    bodies += [d.body for d in addon_documents(path, [Document(path, 0, b) for b in bodies],
                                                cl.topology.cluster.service_cidr)]
    for b in bodies:
        meta = b.get("metadata") or {}
        by_ident[(str(b.get("kind")), meta.get("namespace") or "default", str(meta.get("name")))] = b
    out = {}
    for p in cl.topology.pods:
        if p.owner:
            deploy = p.owner.split("/", 1)[1].rsplit("-", 1)[0]
            b = by_ident.get(("Deployment", p.namespace, deploy)) or {}
            spec = ((b.get("spec") or {}).get("template") or {}).get("spec") or {}
        else:
            spec = (by_ident.get(("Pod", p.namespace, p.name)) or {}).get("spec") or {}
        out[p.key] = spec
    return out


def pod_dns_config(cl: Any, key: str, cfg: corefile.Config | None = None) -> resolvconf.DNSConfig:
    cfg = cfg if cfg is not None else config(cl)
    ns = key.split("/", 1)[0]
    dns_ip = cluster_dns_ip(cl) if cfg is not None else None
    domain = cfg.cluster_domain if cfg else "cluster.local."
    return resolvconf.pod_dns(_pod_specs(cl).get(key, {}), ns, [dns_ip] if dns_ip else [], domain, node_dns(cl))


def resolv_confs(cl: Any) -> dict[str, str]:
    """netns -> resolv.conf text, for every pod and node."""
    cfg = config(cl)
    specs = _pod_specs(cl)
    dns_ip = cluster_dns_ip(cl) if cfg is not None else None
    domain = cfg.cluster_domain if cfg else "cluster.local."
    host = node_dns(cl)
    out = {n.netns: host.render() for n in cl.plan.nodes}
    if cfg is not None:
        out[names.external_netns(cl.topology.cluster.name)] = host.render()  # the external host asks itself
    for p in cl.topology.pods:
        pp = cl.plan.pod(p.key)
        if pp is None or pp.host_network:
            continue
        out[pp.netns.name] = resolvconf.pod_dns(specs.get(p.key, {}), p.namespace, [dns_ip] if dns_ip else [],
                                                domain, host).render()
    return out


def host_network_resolv_confs(cl: Any) -> dict[str, str]:
    """pod key -> resolv.conf text for hostNetwork pods: kubelet writes each its own file (ClusterFirstWithHostNet
    gives the cluster's DNS, ClusterFirst and Default the node's), though they share the node's namespace."""
    cfg = config(cl)
    specs = _pod_specs(cl)
    dns_ip = cluster_dns_ip(cl) if cfg is not None else None
    domain = cfg.cluster_domain if cfg else "cluster.local."
    return {p.key: resolvconf.pod_dns(specs.get(p.key, {}), p.namespace, [dns_ip] if dns_ip else [], domain,
                                      node_dns(cl)).render()
            for p in cl.topology.pods if p.host_network}


def pod_resolv_path(rec: state.Record, key: str) -> str:
    """Where a hostNetwork pod's resolv.conf is kept (the record: removed with it); `emu exec` mounts it."""
    return os.path.join(rec.dir, "pods", key, "resolv.conf")


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_resolv_confs(cl: Any) -> None:
    rec = cl.record
    want = {os.path.join(ETC_NETNS, ns, "resolv.conf"): text for ns, text in resolv_confs(cl).items()}
    rec.etc_files = sorted(set(rec.etc_files) | set(want))
    rec.save()  # ownership first
    for path, text in want.items():
        _write_atomic(path, text)
    for key, text in host_network_resolv_confs(cl).items():
        _write_atomic(pod_resolv_path(rec, key), text)
    for path in set(rec.etc_files) - set(want):
        if path.endswith("/resolv.conf"):  # other files (the external host's /etc/hosts) are emu.addons.ingress's
            processes.remove_etc(path)
    rec.etc_files = sorted(set(want) | {p for p in rec.etc_files if not p.endswith("/resolv.conf")})
    rec.save()


def write_zone(cl: Any) -> bool:
    text = corefile_text(_bodies(cl.record))
    if text is None:
        return False
    cfg = corefile.parse(text)
    d = dns_dir(cl.record)
    os.makedirs(d, exist_ok=True)
    upstreams = [str(external_ip(cl.topology.cluster)) if u == "/etc/resolv.conf" else u for u in cfg.forward]
    pods = {cl.plan.pod(k).netns.name: k for k in server_pods(cl)}  # netns -> the coredns pod it is
    _write_atomic(os.path.join(d, "server.json"), json.dumps({
        "cluster": cl.name, "port": cfg.port, "listen": list(pods), "upstreams": upstreams, "pods": pods,
        "corefile_text": text,
        "external_netns": names.external_netns(cl.name), "corefile": cfg.to_json(),
        "external_names": {f"{h}.": ip for h, ip in ingress.external_names(cl).items()}}))
    _write_atomic(os.path.join(d, "zone.json"), json.dumps(records.snapshot(cl, cfg)))
    return True


def start(cl: Any) -> None:
    """Up: resolv.conf for every pod and node; with the coredns ConfigMap, the zone and the server."""
    write_resolv_confs(cl)
    if not write_zone(cl):
        return
    if pids(cl.record):
        return
    d = dns_dir(cl.record)
    ready = os.path.join(d, "dns.ready")
    if os.path.exists(ready):
        os.unlink(ready)
    proc = processes.spawn_module("emu.addons.dns.server", d, "dns.log", server.PID_FILE)
    cl.record.dns_pid = proc.pid
    cl.record.save()
    deadline = time.monotonic() + 20
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"the DNS server did not start: {_log_tail(d)}")
        time.sleep(0.02)


def sync(cl: Any) -> None:
    """After emu apply/delete/mark: new records (the server re-reads zone.json), resolv.conf for new pods."""
    start(cl)


def pod_log(rec: state.Record, pod_key: str) -> str:
    """Where the DNS server writes what this coredns pod's CoreDNS would print (emu.addons.dns.corelog)."""
    return corelog.log_path(dns_dir(rec), pod_key)


def _log_tail(d: str) -> str:
    try:
        with open(os.path.join(d, "dns.log")) as f:
            return " | ".join(f.read().splitlines()[-5:])
    except OSError:
        return "(no dns.log)"


def _is_ours(pid: int, d: str) -> bool:
    argv = processes.cmdline(pid)
    return argv is not None and "emu.addons.dns.server" in argv and os.path.abspath(d) in argv


def pids(rec: state.Record) -> set[int]:
    """The live DNS server processes of this cluster: the recorded pid and the server's own pid file."""
    d = dns_dir(rec)
    found = {rec.dns_pid} if rec.dns_pid else set()
    found |= processes.read_pids(os.path.join(d, server.PID_FILE))
    return {p for p in found if _is_ours(p, d)}


def stop(rec: state.Record) -> None:
    """Down: the server, then the resolv.conf files the record names."""
    d = dns_dir(rec)
    for pid in pids(rec):
        processes.stop(pid, lambda p: _is_ours(p, d))
    for path in getattr(rec, "etc_files", []) or []:
        processes.remove_etc(path)
