"""CoreDNS's kubernetes plugin, as pure functions: the zone snapshot built from the model (Services with their
allocations and endpoints, pods, namespaces) and the answer to one question against it.

Record formats follow plugin/kubernetes (and its spec, kubernetes/dns docs/specification.md):
  <svc>.<ns>.svc.<zone>                A: the ClusterIP; headless: one A per ready endpoint; ExternalName: CNAME
  <ep>.<svc>.<ns>.svc.<zone>           A: a headless Service's endpoint (<ep>: hostname or dashed IP)
  _<port>._<proto>.<svc>.<ns>.svc.<zone>  SRV for a named port (headless: one per endpoint, targets <ep>.<svc>...)
  <a-b-c-d>.<ns>.pod.<zone>            A, with `pods insecure` (`verified`: only when a pod has that address)
  <reversed ip>.in-addr.arpa           PTR for ClusterIPs and endpoint addresses
  dns-version.<zone>                   TXT "1.1.0" with TTL 28800 (hard-coded in plugin/kubernetes/kubernetes.go);
                                       ns.dns.<zone> A: the DNS Service's ClusterIP
NXDOMAIN and NODATA carry the zone's SOA `ns.dns.<zone> hostmaster.<zone>` (refresh 7200, retry 1800,
expire 86400, minimum = ttl) with TTL min(ttl, 300), as plugin/backend_lookup.go builds it.

Checked against upstream's own expectations: tests/unit/upstream_coredns.py carries the cases of
plugin/kubernetes/handler_test.go (coredns/coredns@01c32383ad9695326d3ae029d9f9a41ba27b679e) and the differences.
Differences from the real plugin: IPv4 only (no AAAA answers); an ExternalName's target is chased by
emu.addons.dns.server (Server.chase), not here; an endpoint's name is its dashed IP (emu has no pod hostname/subdomain).
"""
from __future__ import annotations

import ipaddress
import random
import time
from typing import Any

from emu.addons.dns.corefile import Config
from emu.addons.dns.wire import RR, Message, fqdn

SCHEMA_VERSION = "1.1.0"
SCHEMA_TTL = 28800  # plugin/kubernetes/kubernetes.go: msg.Service{Text: DNSSchemaVersion, TTL: 28800}


def _dashed(ip: str) -> str:
    return ip.replace(".", "-")


def snapshot(cl: Any, cfg: Config, serial: int | None = None) -> dict[str, Any]:
    """The record set of a running cluster (emu.cluster.lifecycle.Cluster), JSON-serializable for the server."""
    from emu.alloc import endpoints as ep_mod

    topo, alloc = cl.topology, cl.allocations
    services = []
    for s in topo.services:
        a = alloc.services.get(s.key)
        eps: dict[str, dict[str, Any]] = {}
        for pe in ep_mod.for_service(topo, alloc, s):
            for e in pe.endpoints:
                if not e.ready:
                    continue
                ip = str(e.ip)
                d = eps.setdefault(ip, {"ip": ip, "hostname": _dashed(ip), "ports": {}})
                d["ports"][f"{pe.spec.name}/{pe.spec.protocol.value}"] = e.port
        services.append({
            "namespace": s.namespace, "name": s.name, "type": s.type, "headless": s.headless,
            "cluster_ip": str(a.cluster_ip) if a and a.cluster_ip else None, "external_name": s.external_name,
            "external_ips": [str(x) for x in s.external_ips],
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.value} for p in s.ports],
            "endpoints": sorted(eps.values(), key=lambda d: ipaddress.IPv4Address(d["ip"])),
        })
    dns_ip = next((x["cluster_ip"] for x in services if x["namespace"] == "kube-system" and x["name"] == "kube-dns"),
                  None)
    return {
        "serial": int(serial if serial is not None else time.time()),
        "zones": cfg.zones, "domain": cfg.cluster_domain, "pods": cfg.pods, "ttl": cfg.ttl,
        "fallthrough": cfg.fallthrough, "loadbalance": cfg.loadbalance, "dns_ip": dns_ip,
        "namespaces": sorted(n.name for n in topo.namespaces),
        "services": services,
        "pods_by_ip": {str(alloc.pods[p.key].ip): p.namespace for p in topo.pods if p.key in alloc.pods},
    }


def _zone_of(name: str, zones: list[str]) -> str | None:
    best = None
    for z in zones:
        if name == z or name.endswith("." + z) or z == ".":
            if best is None or len(z) > len(best):
                best = z
    return best


def soa(snap: dict[str, Any], zone: str) -> RR:
    ttl = snap["ttl"]
    return RR(zone, "SOA", min(ttl, 300), (fqdn("ns.dns." + zone), fqdn("hostmaster." + zone), snap["serial"],
                                            7200, 1800, 86400, ttl))


def _reply(q: Message, rcode: int = 0) -> Message:
    return Message(id=q.id, qr=True, opcode=q.opcode, aa=True, rd=q.rd, ra=True, rcode=rcode,
                   question=list(q.question))


def resolve(snap: dict[str, Any], q: Message) -> tuple[str, Message | None]:
    """("answer", reply) or ("forward", None) when the next plugin (forward) must answer."""
    if not q.question:
        return "answer", _reply(q, 1)
    qname, qtype = q.question[0]
    qname = fqdn(qname)
    zone = _zone_of(qname, snap["zones"])
    if zone is None:
        return "forward", None
    rcode, answer, extra = _lookup(snap, qname, qtype, zone)
    ft = snap.get("fallthrough")
    if rcode == 3 and ft is not None and (not ft or _zone_of(qname, ft) is not None):
        return "forward", None
    r = _reply(q, rcode)
    if snap.get("loadbalance") and sum(1 for x in answer if x.type == "A") > 1:
        a = [x for x in answer if x.type == "A"]
        random.shuffle(a)
        answer = [x for x in answer if x.type != "A"] + a
    r.answer = answer
    r.additional = extra
    if not answer:
        r.authority = [soa(snap, zone)]
    return "answer", r


def _services(snap: dict[str, Any], ns: str, name: str) -> dict[str, Any] | None:
    return next((s for s in snap["services"] if s["namespace"] == ns and s["name"] == name), None)


def _lookup(snap: dict[str, Any], qname: str, qtype: str, zone: str) -> tuple[int, list[RR], list[RR]]:
    """rcode, answer, additional for a name inside `zone`."""
    ttl = snap["ttl"]
    if zone.endswith("in-addr.arpa."):
        return _reverse(snap, qname, qtype)
    rel = qname[: -len(zone)].rstrip(".") if qname != zone else ""
    labels = rel.split(".") if rel else []
    if not labels:  # the apex
        if qtype == "SOA":
            return 0, [soa(snap, zone)], []
        if qtype == "NS":
            ns_name = fqdn("ns.dns." + zone)
            extra = [RR(ns_name, "A", ttl, snap["dns_ip"])] if snap["dns_ip"] else []
            return 0, [RR(zone, "NS", ttl, ns_name)], extra
        return 0, [], []
    if labels == ["dns-version"]:
        return 0, ([RR(qname, "TXT", SCHEMA_TTL, SCHEMA_VERSION)] if qtype == "TXT" else []), []
    if labels == ["ns", "dns"]:
        return 0, ([RR(qname, "A", ttl, snap["dns_ip"])] if qtype == "A" and snap["dns_ip"] else []), []
    if labels == ["dns"]:
        return 0, [], []
    kind = labels[-1]
    if labels == ["pod"]:
        return 0, [], []  # pod.<zone> is an empty non-terminal, as svc.<zone> (handler_test.go: NOERROR + SOA)
    if kind == "pod":
        return _pod(snap, qname, qtype, labels[:-1])
    if kind != "svc":
        return 3, [], []
    parts = labels[:-1]
    if not parts:
        return 0, [], []
    ns = parts[-1]
    if ns not in snap["namespaces"]:
        return 3, [], []
    if len(parts) == 1:
        return 0, [], []  # the namespace exists: an empty non-terminal
    svc = _services(snap, ns, parts[-2])
    if svc is None:
        return 3, [], []
    base = fqdn(f"{svc['name']}.{ns}.svc.{zone}")
    rest = parts[:-2]
    if not rest:
        return _service(svc, base, qname, qtype, ttl)
    if len(rest) == 1 and not rest[0].startswith("_"):  # an endpoint of a headless Service
        # every endpoint with that name answers (handler_test.go: two addresses share hostname "dup-name")
        eps = [e for e in svc["endpoints"] if e["hostname"] == rest[0]] if svc["headless"] else []
        if not eps:
            return 3, [], []
        return 0, ([RR(qname, "A", ttl, e["ip"]) for e in eps] if qtype == "A" else []), []
    if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
        pname, proto = rest[0][1:], rest[1][1:].upper()
        ports = [p for p in svc["ports"] if p["name"] == pname and p["protocol"] == proto and p["name"]]
        if not ports:
            return 3, [], []
        if qtype not in ("SRV", "A"):
            return 0, [], []
        return _srv(svc, base, qname, qtype, ports, ttl)
    return 3, [], []


def _service(svc: dict[str, Any], base: str, qname: str, qtype: str, ttl: int) -> tuple[int, list[RR], list[RR]]:
    if svc["type"] == "ExternalName":
        target = fqdn(svc["external_name"] or "")
        return 0, ([RR(qname, "CNAME", ttl, target)] if qtype in ("A", "AAAA", "CNAME") else []), []
    if svc["headless"]:
        if not svc["endpoints"]:
            return 3, [], []  # a headless Service without ready endpoints has no records
        if qtype == "A":
            return 0, [RR(qname, "A", ttl, e["ip"]) for e in svc["endpoints"]], []
        if qtype == "SRV":
            return _srv(svc, base, qname, qtype, svc["ports"], ttl)
        return 0, [], []
    if not svc["cluster_ip"]:
        return 3, [], []
    if qtype == "A":
        return 0, [RR(qname, "A", ttl, svc["cluster_ip"])], []
    if qtype == "SRV":
        return _srv(svc, base, qname, qtype, svc["ports"], ttl)
    return 0, [], []


def _srv(svc: dict[str, Any], base: str, qname: str, qtype: str, ports: list[dict[str, Any]],
         ttl: int) -> tuple[int, list[RR], list[RR]]:
    if svc["headless"]:
        targets = []
        for p in ports:
            for e in svc["endpoints"]:
                port = e["ports"].get(f"{p['name']}/{p['protocol']}")
                if port is not None:
                    targets.append((port, fqdn(f"{e['hostname']}.{base}"), e["ip"]))
    else:
        targets = [(p["port"], base, svc["cluster_ip"]) for p in ports]
    if qtype == "A":  # an A query for _port._proto.svc...: the addresses
        return 0, [RR(qname, "A", ttl, ip) for _, _, ip in dict.fromkeys(targets)], []
    # plugin/backend_lookup.go SRV: the weight is floor(100 / n) (at least 1), n counting every record before
    # duplicates are dropped; an SRV is a duplicate when (target, port) repeats, an address when (target, ip) does
    weight = max(1, 100 // len(targets)) if targets else 0
    answer = [RR(qname, "SRV", ttl, (0, weight, port, target)) for port, target in dict.fromkeys(
        (port, target) for port, target, _ in targets)]
    extra = list(dict.fromkeys(RR(target, "A", ttl, ip) for _, target, ip in targets))
    return 0, answer, extra


def _pod(snap: dict[str, Any], qname: str, qtype: str, parts: list[str]) -> tuple[int, list[RR], list[RR]]:
    if snap["pods"] == "disabled" or len(parts) != 2:
        return 3, [], []
    dashed, ns = parts
    if ns not in snap["namespaces"]:
        return 3, [], []
    try:
        ip = str(ipaddress.IPv4Address(dashed.replace("-", ".")))
    except ValueError:
        return 3, [], []
    if snap["pods"] == "verified" and snap["pods_by_ip"].get(ip) != ns:
        return 3, [], []
    return 0, ([RR(qname, "A", snap["ttl"], ip)] if qtype == "A" else []), []


def _reverse(snap: dict[str, Any], qname: str, qtype: str) -> tuple[int, list[RR], list[RR]]:
    octets = qname[: -len("in-addr.arpa.")].rstrip(".").split(".")
    if len(octets) != 4:
        return (0 if len(octets) < 4 else 3), [], []
    ip = ".".join(reversed(octets))
    ttl, zone = snap["ttl"], snap["domain"]
    names = [fqdn(f"{s['name']}.{s['namespace']}.svc.{zone}") for s in snap["services"] if s["cluster_ip"] == ip]
    for s in snap["services"]:
        for e in s["endpoints"]:
            if e["ip"] == ip:
                names.append(fqdn(f"{e['hostname']}.{s['name']}.{s['namespace']}.svc.{zone}"))
    if not names:
        return 3, [], []
    return 0, ([RR(qname, "PTR", ttl, n) for n in dict.fromkeys(names)] if qtype == "PTR" else []), []


def reverse_name(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
