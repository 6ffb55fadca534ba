"""Multus-style secondary networks (built-in mode): `NetworkAttachmentDefinition` (k8s.cni.cncf.io/v1) objects
whose `spec.config` is a macvlan CNI config with host-local IPAM, and pods asking for them with the annotation
`k8s.v1.cni.cncf.io/networks`.  Each request becomes `net1`, `net2`, ... (or the requested interface): a macvlan
over the node namespace's `master`, created straight into the pod's namespace (IFLA_LINK = master, IFLA_NET_NS_FD =
the pod's namespace, one RTM_NEWLINK), with an address from the NAD's range as host-local hands them out
(rangeStart..rangeEnd, round robin, the gateway skipped) and `arp_notify=1`, as the macvlan plugin sets it."""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterable

from .documents import DNS_LABEL, DNS_SUBDOMAIN, Collector, Document
from .errors import Problem, ValidationError

API = "k8s.cni.cncf.io/v1"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IFNAME_MAX = 15

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class Nad:
    namespace: str
    name: str
    config: str  # spec.config as written (the network config a CNI-mode cluster hands the plugin)
    type: str
    master: str
    mode: str
    mtu: int | None
    subnet: IPv4Network
    range_start: IPv4Address
    range_end: IPv4Address
    gateway: IPv4Address | None
    routes: tuple[tuple[IPv4Network, IPv4Address | None], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Request:
    """One entry of a pod's networks annotation, resolved to a NAD and an interface name."""

    nad: str  # "ns/name"
    ifname: str


@dataclass(frozen=True, slots=True)
class Attachment:
    nad: str
    ifname: str
    ip: IPv4Address
    prefixlen: int

    def to_json(self) -> dict[str, Any]:
        return {"nad": self.nad, "interface": self.ifname, "ip": str(self.ip), "prefixLength": self.prefixlen}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Attachment":
        return cls(d["nad"], d["interface"], IPv4Address(d["ip"]), int(d["prefixLength"]))


# --- parsing --------------------------------------------------------------------------------------------------------


def parse_nad(doc: Document, c: Collector) -> Nad | None:
    f, obj = doc.file, doc.label()
    body = doc.body
    if body.get("apiVersion") != API:
        c.add(doc, f, obj, "apiVersion", f"must be {API}, got {body.get('apiVersion')!r}")
        return None
    name, ns = doc.meta.get("name"), doc.meta.get("namespace") or "default"
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        c.add(doc, f, obj, "metadata.name", f"name {name!r} must be a DNS subdomain")
        return None
    if not isinstance(ns, str) or not DNS_LABEL.match(ns):
        c.add(doc, f, obj, "metadata.namespace", f"{ns!r} is not a valid namespace name")
        return None
    spec = body.get("spec")
    raw = spec.get("config") if isinstance(spec, dict) else None
    if not isinstance(raw, str):
        c.add(doc, f, obj, "spec.config", "must be a string holding a CNI network config (JSON)")
        return None
    try:
        conf = json.loads(raw)
    except ValueError as e:
        c.add(doc, f, obj, "spec.config", f"is not valid JSON ({e})")
        return None
    if not isinstance(conf, dict):
        c.add(doc, f, obj, "spec.config", "must be a JSON object")
        return None
    n0 = len(c.problems)
    typ = conf.get("type")
    if typ != "macvlan":
        c.add(doc, f, obj, "spec.config.type", f"type {typ!r} is not supported (known: macvlan)")
    master = conf.get("master", "eth0")
    if not isinstance(master, str) or not master or len(master) > IFNAME_MAX:
        c.add(doc, f, obj, "spec.config.master", f"{master!r} is not an interface name")
    mode = conf.get("mode", "bridge")
    if mode not in MACVLAN_MODES:
        c.add(doc, f, obj, "spec.config.mode", f"mode {mode!r} is not one of {', '.join(MACVLAN_MODES)}")
    mtu = conf.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        c.add(doc, f, obj, "spec.config.mtu", f"must be an integer from 68 to 65535, got {mtu!r}")
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
        c.add(doc, f, obj, "spec.config.ipam.type",
              f"ipam must be host-local, got {(ipam or {}).get('type') if isinstance(ipam, dict) else ipam!r}")
        return None
    try:
        subnet = ipaddress.IPv4Network(str(ipam.get("subnet")), strict=True)
    except ValueError as e:
        c.add(doc, f, obj, "spec.config.ipam.subnet", f"{ipam.get('subnet')!r} is not an IPv4 CIDR ({e})")
        return None
    first, last = subnet.network_address + 1, subnet.broadcast_address - 1

    def addr(key: str, default: IPv4Address | None) -> IPv4Address | None:
        v = ipam.get(key)
        if v is None:
            return default
        try:
            a = IPv4Address(str(v))
        except ValueError:
            c.add(doc, f, obj, f"spec.config.ipam.{key}", f"{v!r} is not an IPv4 address")
            return None
        if not first <= a <= last:
            c.add(doc, f, obj, f"spec.config.ipam.{key}", f"{a} is not a host address of subnet {subnet}")
            return None
        return a

    start, end = addr("rangeStart", first), addr("rangeEnd", last)
    gw = addr("gateway", None)
    if start is not None and end is not None and start > end:
        c.add(doc, f, obj, "spec.config.ipam.rangeEnd", f"rangeEnd {end} is before rangeStart {start}")
    routes = []
    for i, r in enumerate(ipam.get("routes") or []):
        try:
            dst = ipaddress.IPv4Network(str(r["dst"]), strict=False)
            via = IPv4Address(str(r["gw"])) if r.get("gw") else gw
            routes.append((dst, via))
        except (TypeError, KeyError, ValueError) as e:
            c.add(doc, f, obj, f"spec.config.ipam.routes[{i}]", f"{r!r} is not a route with dst and gw ({e})")
    if len(c.problems) > n0 or start is None or end is None:
        return None
    return Nad(ns, name, raw, typ, master, mode, mtu, subnet, start, end, gw, tuple(routes))


def requests(pod_namespace: str, value: str) -> list[tuple[str, str, str | None]]:
    """The annotation's entries as (namespace, name, interface or None); raises ValueError when malformed."""
    value = value.strip()
    out: list[tuple[str, str, str | None]] = []
    if value.startswith("["):
        items = json.loads(value)
        if not isinstance(items, list):
            raise ValueError("the JSON form must be a list")
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("name"), str):
                raise ValueError(f"entry {it!r} has no name")
            iface = it.get("interface")
            if iface is not None and not isinstance(iface, str):
                raise ValueError(f"interface {iface!r} must be a string")
            out.append((str(it.get("namespace") or pod_namespace), it["name"], iface))
        return out
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        iface = None
        if "@" in part:
            part, iface = part.split("@", 1)
        ns, _, name = part.rpartition("/")
        out.append((ns or pod_namespace, name, iface))
    return out


def check(pods: Iterable[tuple[Any, Document]], nads: dict[str, Nad], c: Collector) -> None:
    """Every pod's networks annotation names existing NADs with distinct, valid interface names."""
    for p, doc in pods:
        value = p.annotations.get(NETWORKS_ANNOTATION)
        if value is None:
            continue
        fld = ("spec.template." if p.owner else "") + f"metadata.annotations[{NETWORKS_ANNOTATION}]"
        try:
            reqs = requests(p.namespace, value)
        except ValueError as e:
            c.add(doc, doc.file, doc.label(), fld, f"is malformed ({e})")
            continue
        names = set()
        for (ns, name, _), r in zip(reqs, resolve(p.namespace, value)):
            if f"{ns}/{name}" not in nads:
                c.add(doc, doc.file, doc.label(), fld, f"NetworkAttachmentDefinition {ns}/{name} does not exist")
            if r.ifname in names or r.ifname in ("eth0", "lo") or len(r.ifname) > IFNAME_MAX or "/" in r.ifname:
                c.add(doc, doc.file, doc.label(), fld, f"interface name {r.ifname!r} is invalid or used twice")
            names.add(r.ifname)


def resolve(pod_namespace: str, value: str | None) -> list[Request]:
    if not value:
        return []
    return [Request(f"{ns}/{name}", iface or f"net{i}")
            for i, (ns, name, iface) in enumerate(requests(pod_namespace, value), 1)]


# --- allocation (host-local over rangeStart..rangeEnd) --------------------------------------------------------------


def _next_free(nad: Nad, last: IPv4Address | None, used: set[IPv4Address]) -> IPv4Address | None:
    start, end = int(nad.range_start), int(nad.range_end)
    size = end - start + 1
    first = int(last) + 1 if last is not None and start <= int(last) <= end else start
    for k in range(size):
        cand = IPv4Address(start + (first - start + k) % size)
        if cand != nad.gateway and cand not in used:
            return cand
    return None


def allocate(topo: Any, previous: dict[str, Any]) -> dict[str, Any]:
    """{"pods": {pod: [attachment json]}, "lastReserved": {nad: ip}}: pods keep theirs, new ones get the next free
    address of each NAD's range; an exhausted range is a validation error naming the pod and the NAD."""
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    prev_pods = previous.get("pods", {}) if previous else {}
    last = {k: IPv4Address(v) for k, v in (previous or {}).get("lastReserved", {}).items()}
    out: dict[str, list[Attachment]] = {}
    used: dict[str, set[IPv4Address]] = {k: set() for k in nads}
    todo = []
    for p in topo.pods:
        reqs = [] if p.host_network else resolve(p.namespace, p.annotations.get(NETWORKS_ANNOTATION))
        if not reqs:
            continue
        old = [Attachment.from_json(a) for a in prev_pods.get(p.key, [])]
        if [(a.nad, a.ifname) for a in old] == [(r.nad, r.ifname) for r in reqs] and all(
                a.nad in nads and nads[a.nad].range_start <= a.ip <= nads[a.nad].range_end for a in old):
            out[p.key] = old
            for a in old:
                used[a.nad].add(a.ip)
        else:
            todo.append((p, reqs))
    problems = []
    for p, reqs in todo:
        got = []
        for r in reqs:
            nad = nads[r.nad]
            ip = _next_free(nad, last.get(r.nad), used[r.nad])
            if ip is None:
                problems.append(Problem(topo.file, p.document, f"Pod {p.key}",
                                        f"metadata.annotations[{NETWORKS_ANNOTATION}]",
                                        f"NetworkAttachmentDefinition {r.nad} is exhausted: its range "
                                        f"{nad.range_start}-{nad.range_end} has no free address"))
                break
            used[r.nad].add(ip)
            last[r.nad] = ip
            got.append(Attachment(r.nad, r.ifname, ip, nad.subnet.prefixlen))
        out[p.key] = got
    if problems:
        raise ValidationError(problems)
    order = [p.key for p in topo.pods if p.key in out]
    return {"pods": {k: [a.to_json() for a in out[k]] for k in order},
            "lastReserved": {k: str(v) for k, v in last.items()}}


def attachments(secondary: dict[str, Any], pod_key: str) -> list[Attachment]:
    return [Attachment.from_json(a) for a in (secondary or {}).get("pods", {}).get(pod_key, [])]


# --- wiring (built-in mode) -----------------------------------------------------------------------------------------


def wire(topo: Any, secondary: dict[str, Any], pods: Iterable[Any]) -> None:
    """Create each pod's macvlans from its node's namespace straight into the pod's, then address them."""
    from pyroute2 import IPRoute

    from . import netns

    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    for pp in pods:
        atts = attachments(secondary, pp.key)
        if not atts:
            continue
        node_ns, pod_ns = pp.node_netns, pp.netns.name
        fd = os.open(netns.path(pod_ns), os.O_RDONLY)
        node = IPRoute(use_socket=netns.socket_in(node_ns, socket.AF_NETLINK, socket.SOCK_DGRAM, 0), groups=0)
        try:
            for a in atts:
                nad = nads[a.nad]
                master = node.link_lookup(ifname=nad.master)
                if not master:
                    raise ValidationError([Problem(topo.file, None, f"NetworkAttachmentDefinition {a.nad}",
                                                   "spec.config.master",
                                                   f"node namespace {node_ns} has no interface {nad.master}")])
                kw: dict[str, Any] = {"ifname": a.ifname, "kind": "macvlan", "link": master[0],
                                      "macvlan_mode": nad.mode, "net_ns_fd": fd}
                if nad.mtu:
                    kw["mtu"] = nad.mtu
                node.link("add", **kw)  # one RTM_NEWLINK: it never lives in the node namespace
        finally:
            node.close()
            os.close(fd)

        def inside(atts: list[Attachment] = atts) -> None:
            for a in atts:
                with open(f"/proc/sys/net/ipv4/conf/{a.ifname}/arp_notify", "w") as f:
                    f.write("1")
            with IPRoute() as ipr:
                for a in atts:
                    idx = ipr.link_lookup(ifname=a.ifname)[0]
                    ipr.addr("add", index=idx, address=str(a.ip), prefixlen=a.prefixlen)
                    ipr.link("set", index=idx, state="up")
                    for dst, via in nads[a.nad].routes:
                        rkw: dict[str, Any] = {"dst": str(dst), "oif": idx}
                        if via is not None:
                            rkw["gateway"] = str(via)
                        ipr.route("add", **rkw)

        netns.run_in(pod_ns, inside)


# --- CNI mode (cni.plugin: cni): the real plugin from binDir runs each secondary network -----------------------------


def cni_networks(topo: Any, pod: Any, data_dir: str) -> list[tuple[Any, str, str]]:
    """(network config list, ifname, NAD key) per secondary network of `pod`, as Multus delegates them: the NAD's config
    (named after the NAD when it has no name), host-local with the node's own dataDir."""
    from .cni.runtime import NetConfList

    if pod is None or pod.host_network:
        return []
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    out = []
    for r in resolve(pod.namespace, pod.annotations.get(NETWORKS_ANNOTATION)):
        conf = json.loads(nads[r.nad].config)
        conf.setdefault("name", nads[r.nad].name)
        conf.setdefault("cniVersion", "0.3.1")
        ipam = conf.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local" and not ipam.get("dataDir"):
            ipam["dataDir"] = data_dir
        out.append((NetConfList.from_dict(conf), r.ifname, r.nad))
    return out


def record_cni(secondary: dict[str, Any], key: str, got: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The allocations' secondary record with the addresses the plugins gave `key` ((nad, ifname, cidr) each)."""
    pods = dict((secondary or {}).get("pods", {}))
    pods[key] = [Attachment(nad, ifname, ipaddress.IPv4Interface(cidr).ip,
                            ipaddress.IPv4Interface(cidr).network.prefixlen).to_json() for nad, ifname, cidr in got]
    return {**(secondary or {}), "pods": pods}
