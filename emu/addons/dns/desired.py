"""Cluster DNS's desired state, pure: kubelet's resolv.conf for every pod and node, and, with the coredns ConfigMap,
the DNS server's two files and the server itself (what emu.addons.dns.addon writes and starts).

The functions take the cluster as emu.addons.dns.addon's do (`cl`): they read cl.name, cl.record.documents,
cl.record.topology_file, cl.topology, cl.allocations and cl.plan, and nothing else, so a plan that is not running
(`emu up --dry-run`) passes a small object with those.

As plan objects (`desired`), in the order `start` writes them: /etc/netns/<netns>/resolv.conf of every node, the
external host (with the coredns ConfigMap) and every pod with a namespace; a hostNetwork pod's own file in the record;
then server.json and zone.json in the record's dns/ directory and the server (`python3 -m emu.addons.dns.server`).
The zone's serial is the time `start` runs (time.time()): the dry run prints 0.
"""
from __future__ import annotations

import json
from typing import Any

from emu.addons.dns import corefile, records, resolvconf
from emu.addons.dns.documents import DNS_LABELS, addon_documents, corefile_text
from emu.addons.ingress.routing import external_names
from emu.alloc.ipam import external_ip
from emu.model import names
from emu.model.documents import Document
from emu.plan.content import ETC_NETNS, Daemon, File, PlanObject, record_path

SERVER_MODULE = "emu.addons.dns.server"  # run with `python -m`; its command line tells our servers apart


def _bodies(rec: Any) -> list[dict[str, Any]]:
    return [d["body"] for d in rec.documents[1:]]


def config(cl: Any) -> corefile.Config | None:
    text = corefile_text(_bodies(cl.record))
    return corefile.parse(text) if text is not None else None


def cluster_dns_ip(cl: Any) -> str | None:
    a = cl.allocations.services.get("kube-system/kube-dns")
    return str(a.cluster_ip) if a and a.cluster_ip else None


def server_pods(cl: Any) -> list[str]:
    return [p.key for p in cl.topology.pods if p.namespace == "kube-system"
            and all(p.labels.get(k) == v for k, v in DNS_LABELS.items())]


def node_dns(cl: Any) -> resolvconf.DNSConfig:
    """The nodes' own /etc/resolv.conf (kubelet's --resolv-conf): the external host's resolver."""
    return resolvconf.DNSConfig(servers=[str(external_ip(cl.topology.cluster))])


def pod_specs(cl: Any) -> dict[str, dict[str, Any]]:
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
    return resolvconf.pod_dns(pod_specs(cl).get(key, {}), ns, [dns_ip] if dns_ip else [], domain, node_dns(cl))


def resolv_confs(cl: Any) -> dict[str, str]:
    """netns -> resolv.conf text, for every pod and node."""
    cfg = config(cl)
    specs = pod_specs(cl)
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
    specs = pod_specs(cl)
    dns_ip = cluster_dns_ip(cl) if cfg is not None else None
    domain = cfg.cluster_domain if cfg else "cluster.local."
    return {p.key: resolvconf.pod_dns(specs.get(p.key, {}), p.namespace, [dns_ip] if dns_ip else [], domain,
                                      node_dns(cl)).render()
            for p in cl.topology.pods if p.host_network}


def server_config(cl: Any, cfg: corefile.Config, text: str) -> dict[str, Any]:
    """server.json: what the DNS server serves (the coredns pods' namespaces, the Corefile, the upstreams, the
    external host's names for Ingress hosts)."""
    upstreams = [str(external_ip(cl.topology.cluster)) if u == "/etc/resolv.conf" else u for u in cfg.forward]
    pods = {cl.plan.pod(k).netns.name: k for k in server_pods(cl)}  # netns -> the coredns pod it is
    return {"cluster": cl.name, "port": cfg.port, "listen": list(pods), "upstreams": upstreams, "pods": pods,
            "corefile_text": text,
            "external_netns": names.external_netns(cl.name), "corefile": cfg.to_json(),
            "external_names": {f"{h}.": ip for h, ip in external_names(cl).items()}}


def desired(cl: Any) -> tuple[PlanObject, ...]:
    """The resolv.conf files, and with the coredns ConfigMap the server's files and the server."""
    out: list[PlanObject] = [File(f"{ETC_NETNS}/{ns}/resolv.conf", ns, text) for ns, text in resolv_confs(cl).items()]
    out += [File(record_path(cl.name, "pods", key, "resolv.conf"), key, text)
            for key, text in host_network_resolv_confs(cl).items()]
    text = corefile_text(_bodies(cl.record))
    if text is None:
        return tuple(out)
    cfg = corefile.parse(text)
    d = record_path(cl.name, "dns")
    out += [File(f"{d}/server.json", "dns", json.dumps(server_config(cl, cfg, text))),
            File(f"{d}/zone.json", "dns", json.dumps(records.snapshot(cl, cfg, serial=0))),
            Daemon("dns", "dns", None, ("python3", "-m", SERVER_MODULE, "--dir", d))]
    return tuple(out)
