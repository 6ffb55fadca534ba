"""Multus-style secondary networks: `NetworkAttachmentDefinition` (k8s.cni.cncf.io/v1) objects whose `spec.config`
is a macvlan CNI config with host-local or static IPAM, and pods asking for them with the annotation
`k8s.v1.cni.cncf.io/networks` (names, or network selection elements with `interface`, `ips` and `mac`).  Each request
becomes `net1`, `net2`, ... (or the requested interface).  Built-in mode: a macvlan over the node namespace's
`master`, created straight into the pod's namespace (IFLA_LINK = master, IFLA_NET_NS_FD = the pod's namespace, one
RTM_NEWLINK), with an address as host-local hands them out (rangeStart..rangeEnd, round robin, the gateway skipped)
or as static gives them, and `arp_notify=1`, as the macvlan plugin sets it.  A selection element's `ips` and `mac`
are runtimeConfig: as libcni, they count only when the NAD's config declares `capabilities: {ips: true}` /
`{mac: true}`; then host-local reserves that address, static takes it instead of its `addresses`, and the macvlan
is created with that MAC."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Iterable

from emu.network.cni import capabilities
from emu.network.cni.runtime import NETWORK_NAME
from emu.model.documents import DNS_LABEL, DNS_SUBDOMAIN, Collector, Document
from emu.errors import Problem, ValidationError

API = "k8s.cni.cncf.io/v1"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPAM_TYPES = ("host-local", "static")
IFNAME_MAX = 15
IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}\Z")
JSON_FORM = '[{"'  # Multus reads the annotation as JSON when it holds any of these (strings.ContainsAny)

IPv4Address = ipaddress.IPv4Address
IPv4Interface = ipaddress.IPv4Interface
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
    subnet: IPv4Network | None  # host-local; None for static
    range_start: IPv4Address | None
    range_end: IPv4Address | None
    gateway: IPv4Address | None  # host-local: ipam.gateway, else the subnet's first address (Range.Canonicalize)
    routes: tuple[tuple[IPv4Network, IPv4Address | None], ...] = ()  # (dst, gw as written)
    ipam: str = "host-local"
    addresses: tuple[tuple[IPv4Interface, IPv4Address | None], ...] = ()  # static: ipam.addresses (CIDR, gateway)
    capabilities: frozenset[str] = frozenset()  # the config's capabilities that are true (libcni's filter)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Request:
    """One entry of a pod's networks annotation (a network selection element), resolved to a NAD and an ifname."""

    nad: str  # "ns/name"
    ifname: str
    ips: tuple[str, ...] = ()  # "ips": runtimeConfig.ips for the delegate, as written
    mac: str | None = None  # "mac": runtimeConfig.mac


@dataclass(frozen=True, slots=True)
class Attachment:
    nad: str
    ifname: str
    ip: IPv4Address
    prefixlen: int
    mac: str | None = None  # built-in: the MAC asked for; CNI mode: the one the plugin reports
    gateway: IPv4Address | None = None  # the IPAM result's gateway: routes without their own gw go via it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nad": self.nad, "interface": self.ifname, "ip": str(self.ip),
                               "prefixLength": self.prefixlen}
        if self.mac:
            out["mac"] = self.mac
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Attachment":
        return cls(d["nad"], d["interface"], IPv4Address(d["ip"]), int(d["prefixLength"]), d.get("mac"),
                   IPv4Address(d["gateway"]) if d.get("gateway") else None)


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
    cname = conf.get("name")
    if cname is not None and (not isinstance(cname, str) or not NETWORK_NAME.match(cname)):
        c.add(doc, f, obj, "spec.config.name", f"{cname!r} must be letters, digits, '_', '.' and '-', starting with "
                                               f"a letter or digit (libcni's ValidateNetworkName)")
    master = conf.get("master", "eth0")
    if not isinstance(master, str) or ifname_problem(master):
        c.add(doc, f, obj, "spec.config.master", f"{master!r} is not an interface name")
    mode = conf.get("mode", "bridge")
    if mode not in MACVLAN_MODES:
        c.add(doc, f, obj, "spec.config.mode", f"mode {mode!r} is not one of {', '.join(MACVLAN_MODES)}")
    mtu = conf.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        c.add(doc, f, obj, "spec.config.mtu", f"must be an integer from 68 to 65535, got {mtu!r}")
    caps = conf.get("capabilities", {})
    if not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values()):
        c.add(doc, f, obj, "spec.config.capabilities",
              f"must be an object of booleans (libcni's map[string]bool), got {caps!r}")
        caps = {}
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict) or ipam.get("type") not in IPAM_TYPES:
        c.add(doc, f, obj, "spec.config.ipam.type", f"ipam must be one of {', '.join(IPAM_TYPES)}, got "
              f"{(ipam or {}).get('type') if isinstance(ipam, dict) else ipam!r}")
        return None
    routes = []
    for i, r in enumerate(ipam.get("routes") or []):
        try:
            routes.append((ipaddress.IPv4Network(str(r["dst"]), strict=False),
                           IPv4Address(str(r["gw"])) if r.get("gw") else None))
        except (TypeError, KeyError, ValueError) as e:
            c.add(doc, f, obj, f"spec.config.ipam.routes[{i}]", f"{r!r} is not a route with dst and gw ({e})")
    common = dict(namespace=ns, name=name, config=raw, type=typ, master=master, mode=mode, mtu=mtu,
                  routes=tuple(routes), capabilities=frozenset(k for k, v in caps.items() if v))
    if ipam["type"] == "static":
        addresses = _static_addresses(ipam, doc, c, obj)
        if len(c.problems) > n0:
            return None
        return Nad(subnet=None, range_start=None, range_end=None, gateway=None, ipam="static", addresses=addresses,
                   **common)  # type: ignore[arg-type]
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
    gw = addr("gateway", first)  # host-local: "If the gateway is nil, claim .1"
    if start is not None and end is not None and start > end:
        c.add(doc, f, obj, "spec.config.ipam.rangeEnd", f"rangeEnd {end} is before rangeStart {start}")
    if len(c.problems) > n0 or start is None or end is None:
        return None
    return Nad(subnet=subnet, range_start=start, range_end=end, gateway=gw, **common)  # type: ignore[arg-type]


def _static_addresses(ipam: dict[str, Any], doc: Document, c: Collector, obj: str
                      ) -> tuple[tuple[IPv4Interface, IPv4Address | None], ...]:
    """static's `addresses`: each `{address: CIDR, gateway}` (the plugin wants CIDR notation)."""
    out = []
    items = ipam.get("addresses") or []
    if not isinstance(items, list):
        c.add(doc, doc.file, obj, "spec.config.ipam.addresses", f"must be a list, got {items!r}")
        return ()
    for i, a in enumerate(items):
        fld = f"spec.config.ipam.addresses[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("address"), str) or "/" not in a["address"]:
            c.add(doc, doc.file, obj, fld, f"{a!r} needs an address in CIDR notation (10.1.0.5/24)")
            continue
        try:
            cidr = IPv4Interface(a["address"])
        except ValueError:
            c.add(doc, doc.file, obj, f"{fld}.address", f"{a['address']!r} is not an IPv4 CIDR (secondary networks "
                  f"are IPv4 in emu)")
            continue
        gw = None
        if a.get("gateway") is not None:
            try:
                gw = IPv4Address(str(a["gateway"]))
            except ValueError:
                c.add(doc, doc.file, obj, f"{fld}.gateway", f"{a['gateway']!r} is not an IPv4 address")
                continue
        out.append((cidr, gw))
    return tuple(out)


def parse_requests(pod_namespace: str, value: str) -> tuple[list[Request], list[tuple[str, str]]]:
    """The annotation as Multus reads it (parsePodNetworkAnnotation): a JSON list of network selection elements when
    it holds any of `[{"`, else a comma list of `[ns/]name[@ifname]`.  Returns the requests and the problems found,
    each as (where in the value, e.g. "[0].ips[1]", message); an element with a problem is left out."""
    value = value.strip()
    out: list[Request] = []
    problems: list[tuple[str, str]] = []
    if not any(ch in value for ch in JSON_FORM):
        for i, part in enumerate((x.strip() for x in value.split(",") if x.strip()), 1):
            iface = None
            if "@" in part:
                part, iface = part.split("@", 1)
            ns, _, name = part.rpartition("/")
            out.append(Request(f"{ns or pod_namespace}/{name}", iface or f"net{i}"))
        return out, problems
    try:
        items = json.loads(value)
    except ValueError as e:
        return [], [("", f"is not valid JSON ({e})")]
    if not isinstance(items, list):
        return [], [("", "the JSON form must be a list of network selection elements "
                         '([{"name": ..., "interface": ..., "ips": [...], "mac": ...}])')]
    for i, it in enumerate(items):
        where = f"[{i}]"
        n0 = len(problems)
        if not isinstance(it, dict):
            problems.append((where, f"{it!r} is not a network selection element (an object with a name)"))
            continue
        name, ns, iface = it.get("name"), it.get("namespace") or pod_namespace, it.get("interface")
        if not isinstance(name, str) or not name:
            problems.append((f"{where}.name", f"must be the NetworkAttachmentDefinition's name, got {name!r}"))
        if not isinstance(ns, str):
            problems.append((f"{where}.namespace", f"must be a string, got {ns!r}"))
        if iface is not None and not isinstance(iface, str):
            problems.append((f"{where}.interface", f"must be a string, got {iface!r}"))
        ips = it.get("ips")
        if ips is not None and not isinstance(ips, list):
            problems.append((f"{where}.ips", f'must be a list of addresses (["192.168.1.205/24"]), got {ips!r}'))
            ips = None
        for j, ip in enumerate(ips or []):
            problem = capabilities.ip_problem(ip)
            if problem:
                problems.append((f"{where}.ips[{j}]", problem))
        mac = it.get("mac")
        if mac is not None:
            problem = capabilities.mac_problem(mac)
            if problem:
                problems.append((f"{where}.mac", problem))
        if len(problems) == n0:
            out.append(Request(f"{ns}/{name}", iface or f"net{i + 1}", tuple(ips or ()), mac or None))
    return out, problems


def ifname_problem(name: str) -> str | None:
    """Linux's dev_valid_name (net/core/dev.c) takes 1 to 15 bytes, not `.` or `..`, without '/', ':' or whitespace;
    emu takes only letters, digits, '_', '.' and '-' of those (the name also reaches CNI_IFNAME, the CNI result
    cache's file name and the dry-run's command text, where a quote, '$' or ';' has no business)."""
    if not IFNAME.match(name) or name in (".", ".."):
        return f"not an interface name (1 to {IFNAME_MAX} letters, digits, '_', '.' or '-'; not '.' or '..')"
    return None


def check(pods: Iterable[tuple[Any, Document]], nads: dict[str, Nad], c: Collector) -> None:
    """Every pod's networks annotation names existing NADs with distinct, valid interface names, and its
    selection elements' ips and mac are addresses (as Multus checks them); the pod's emu.dev/ips and emu.dev/mac
    (runtimeConfig for eth0) are checked here too, with the rest of the pod's network requests."""
    for p, doc in pods:
        capabilities.check_pod(p, doc, c)
        value = p.annotations.get(NETWORKS_ANNOTATION)
        if value is None:
            continue
        fld = ("spec.template." if p.owner else "") + f"metadata.annotations[{NETWORKS_ANNOTATION}]"
        reqs, problems = parse_requests(p.namespace, value)
        for where, msg in problems:
            c.add(doc, doc.file, doc.label(), fld + where, msg)
        names = set()
        for r in reqs:
            if r.nad not in nads:
                c.add(doc, doc.file, doc.label(), fld, f"NetworkAttachmentDefinition {r.nad} does not exist")
            bad = ifname_problem(r.ifname)
            if bad or r.ifname in names or r.ifname in ("eth0", "lo"):
                c.add(doc, doc.file, doc.label(), fld, f"interface name {r.ifname!r} is {bad or 'used twice'}")
            names.add(r.ifname)


def resolve(pod_namespace: str, value: str | None) -> list[Request]:
    """The requests of a checked annotation (raises ValueError when it is malformed)."""
    if not value:
        return []
    reqs, problems = parse_requests(pod_namespace, value)
    if problems:
        raise ValueError("; ".join(f"{w}: {m}" if w else m for w, m in problems))
    return reqs


# --- allocation (host-local over rangeStart..rangeEnd, or static) -------------------------------------------------


class _Refused(Exception):
    """What the IPAM plugin (or the kernel) would answer the ADD of one request with."""


class _Exhausted(_Refused):
    pass


def _next_free(nad: Nad, last: IPv4Address | None, used: dict[IPv4Address, str]) -> IPv4Address | None:
    assert nad.range_start is not None and nad.range_end is not None
    start, end = int(nad.range_start), int(nad.range_end)
    size = end - start + 1
    first = int(last) + 1 if last is not None and start <= int(last) <= end else start
    for k in range(size):
        cand = IPv4Address(start + (first - start + k) % size)
        if cand != nad.gateway and cand not in used:
            return cand
    return None


def _keeps(nad: Nad, a: Attachment, cni: bool) -> bool:
    """A running pod keeps its address (a sandbox is never re-wired); a built-in host-local one while the range
    still holds it.  In CNI mode the record holds what the plugin gave, whatever the IPAM."""
    if cni or nad.ipam == "static":
        return True
    assert nad.range_start is not None and nad.range_end is not None
    return nad.range_start <= a.ip <= nad.range_end


def _static(nad: Nad, r: Request, ips: list[str], mac: str | None, cni: bool) -> Attachment | None:
    """static: runtimeConfig ips replace ipam.addresses ("runtimeConfig IP overwrites IP"); CIDR notation only."""
    addrs: list[tuple[IPv4Interface, IPv4Address | None]] = []
    if ips:
        for text in ips:
            if "/" not in text:
                if cni:
                    continue
                raise _Refused(f"static: an entry in the 'ips' field is NOT in CIDR notation, got: "
                               f"'{text}'")
            cidr = ipaddress.ip_interface(text)
            if not isinstance(cidr, IPv4Interface):
                if cni:
                    continue
                raise _Refused(f"{text} is not IPv4: the built-in wiring gives secondary interfaces IPv4 addresses "
                               f"(real plugins take it with spec.cni.plugin: cni)")
            addrs.append((cidr, None))
    else:
        addrs = list(nad.addresses)
    if not addrs:
        if cni:
            return None  # the plugin answers; nothing to predict
        raise _Refused("static has no address to give (the macvlan plugin fails with \"IPAM plugin returned missing "
                       "IP config\"): set ipam.addresses, or ips in the selection element with the NAD's "
                       "capabilities {ips: true}")
    if len(addrs) > 1 and not cni:
        raise _Refused(f"{len(addrs)} addresses: the built-in wiring gives a secondary interface one address "
                       f"(real plugins take more with spec.cni.plugin: cni)")
    cidr, gw = addrs[0]
    return Attachment(nad.key, r.ifname, cidr.ip, cidr.network.prefixlen, mac, gw)


def _host_local(nad: Nad, r: Request, ips: list[str], mac: str | None, last: IPv4Address | None,
                used: dict[IPv4Address, str], cni: bool) -> Attachment | None:
    """host-local (allocator.Get): a requested address must be in the range, not the gateway and free; else the
    next free one, round robin from the last reserved.  host-local reads "a.b.c.d" and "a.b.c.d/nn" alike and
    gives the range's prefix length."""
    assert nad.subnet is not None
    want = None
    if ips:
        asked = [ipaddress.ip_interface(x).ip for x in ips]
        inside = [ip for ip in asked if isinstance(ip, IPv4Address) and nad.range_start <= ip <= nad.range_end]
        if cni:  # a prediction only: the plugin decides (and answers with its own error)
            want = next((ip for ip in inside if ip not in used and ip != nad.gateway), None)
        else:
            left = [str(ip) for ip in asked if not inside or ip != inside[0]]
            if left:
                raise _Refused(f"host-local: failed to allocate all requested IPs: {', '.join(left)} "
                               f"(range {nad.range_start}-{nad.range_end})")
            want = inside[0]
            if want == nad.gateway:
                raise _Refused(f"host-local: requested ip {want} is subnet's gateway")
            if want in used:
                raise _Refused(f"host-local: requested IP address {want} is not available in range set "
                               f"{nad.range_start}-{nad.range_end} (pod {used[want]} holds it)")
    ip = want if want is not None else _next_free(nad, last, used)
    if ip is None:
        raise _Exhausted(f"its range {nad.range_start}-{nad.range_end} has no free address")
    return Attachment(nad.key, r.ifname, ip, nad.subnet.prefixlen, mac, nad.gateway)


def _mac_for_kernel(mac: str) -> str:
    raw = capabilities.parse_mac(mac)
    assert raw is not None
    if len(raw) != 6:
        raise _Refused(f"mac {mac} is not a 48-bit Ethernet address (the kernel refuses it for a macvlan)")
    if raw[0] & 1:
        raise _Refused(f"mac {mac} is a multicast address (the kernel refuses it for an interface)")
    return ":".join(f"{b:02x}" for b in raw)


def allocate(topo: Any, previous: dict[str, Any]) -> dict[str, Any]:
    """{"pods": {pod: [attachment json]}, "lastReserved": {nad: ip}}: pods keep theirs, new ones get the address
    their IPAM gives, in document order; what the plugin would refuse (an exhausted range, a requested address
    outside it or held by another pod, static without an address) is a validation error naming the pod and the
    NAD.  In CNI mode the addresses are a prediction that the plugins' results replace, and their refusals are
    left to the plugins."""
    problems = capabilities.builtin_problems(topo)  # the one place that sees the pods and the cluster's mode
    cni = topo.cluster.cni.plugin == "cni"
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    prev_pods = previous.get("pods", {}) if previous else {}
    last = {k: IPv4Address(v) for k, v in (previous or {}).get("lastReserved", {}).items()}
    out: dict[str, list[Attachment]] = {}
    used: dict[str, dict[IPv4Address, str]] = {k: {} for k in nads}
    todo = []
    for p in topo.pods:
        reqs = [] if p.host_network else resolve(p.namespace, p.annotations.get(NETWORKS_ANNOTATION))
        if not reqs:
            continue
        old = [Attachment.from_json(a) for a in prev_pods.get(p.key, [])]
        if [(a.nad, a.ifname) for a in old] == [(r.nad, r.ifname) for r in reqs] and all(
                a.nad in nads and _keeps(nads[a.nad], a, cni) for a in old):
            out[p.key] = old
            for a in old:
                used[a.nad][a.ip] = p.key
        else:
            todo.append((p, reqs))
    for p, reqs in todo:
        got = []
        for r in reqs:
            nad = nads[r.nad]
            # libcni hands the delegate runtimeConfig.ips / .mac only when its config declares the capability
            ips = list(r.ips) if "ips" in nad.capabilities else []
            mac = r.mac if "mac" in nad.capabilities else None
            try:
                if mac and not cni:
                    mac = _mac_for_kernel(mac)
                if nad.ipam == "static":
                    a = _static(nad, r, ips, mac, cni)
                else:
                    a = _host_local(nad, r, ips, mac, last.get(r.nad), used[r.nad], cni)
                    assert a is not None
                    used[r.nad][a.ip] = p.key
                    last[r.nad] = a.ip  # host-local's store.Reserve writes last_reserved_ip, asked for or not
            except _Refused as e:
                fld = ("spec.template." if p.owner else "") + f"metadata.annotations[{NETWORKS_ANNOTATION}]"
                what = "is exhausted" if isinstance(e, _Exhausted) else f"refuses {r.ifname}"
                problems.append(Problem(topo.file, p.document, f"Pod {p.key}", fld,
                                        f"NetworkAttachmentDefinition {r.nad} {what}: {e}"))
                break
            if a is not None:
                got.append(a)
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

    from emu.apply import netns

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
                if a.mac:  # runtimeConfig.mac: the macvlan plugin sets it as the link's address at creation
                    kw["address"] = a.mac
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
                    for dst, gw in nads[a.nad].routes:
                        via = gw or a.gateway  # ipam.ConfigureIface: a route without gw goes via the IP's gateway
                        rkw: dict[str, Any] = {"dst": str(dst), "oif": idx}
                        if via is not None:
                            rkw["gateway"] = str(via)
                        ipr.route("add", **rkw)

        netns.run_in(pod_ns, inside)


# --- CNI mode (cni.plugin: cni): the real plugin from binDir runs each secondary network -----------------------------


def cni_networks(topo: Any, pod: Any, data_dir: str, state_dir: str | None = None, primary: Any = None,
                 pod_args: dict[str, Any] | None = None) -> list[tuple[Any, str, str, dict[str, Any]]]:
    """(network config list, ifname, NAD key, capability args) per secondary network of `pod`, as Multus delegates
    them: the NAD's config (named after the NAD when it has no name), host-local and tuning keeping their state in
    the node's own directories, and the runtimeConfig Multus offers the delegate (capabilities.multus_args: what the
    runtime gave Multus for the `primary` network list, then the selection element's ips and mac)."""
    from emu.network.cni import config as cni_config
    from emu.network.cni.runtime import NetConfList

    if pod is None or pod.host_network:
        return []
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    out = []
    for r in resolve(pod.namespace, pod.annotations.get(NETWORKS_ANNOTATION)):
        conf = cni_config.node_local(json.loads(nads[r.nad].config), data_dir, state_dir)
        conf.setdefault("name", nads[r.nad].name)
        conf.setdefault("cniVersion", "0.3.1")
        offers = capabilities.multus_args(primary, pod_args or {}, r.ips, r.mac)
        out.append((NetConfList.from_dict(conf), r.ifname, r.nad, offers))
    return out


def record_cni(secondary: dict[str, Any], key: str, got: list[tuple[str, ...]]) -> dict[str, Any]:
    """The allocations' secondary record with the addresses the plugins gave `key` ((nad, ifname, cidr[, mac])
    each)."""
    pods = dict((secondary or {}).get("pods", {}))
    pods[key] = [Attachment(g[0], g[1], IPv4Interface(g[2]).ip, IPv4Interface(g[2]).network.prefixlen,
                            g[3] if len(g) > 3 and g[3] else None).to_json() for g in got]
    return {**(secondary or {}), "pods": pods}
