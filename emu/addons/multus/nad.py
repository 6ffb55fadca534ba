"""Multus-style secondary networks, the model part: `NetworkAttachmentDefinition` (k8s.cni.cncf.io/v1) objects whose
`spec.config` is a macvlan CNI config with host-local or static IPAM, and pods asking for them with the annotation
`k8s.v1.cni.cncf.io/networks` (names, or network selection elements with `interface`, `ips` and `mac`), parsed and
checked as Multus reads them (pkg/k8sclient parsePodNetworkAnnotation).  Each request becomes `net1`, `net2`, ... (or
the requested interface).  A selection element's `ips` and `mac` are runtimeConfig: as libcni, they count only when
the NAD's config declares `capabilities: {ips: true}` / `{mac: true}` (emu.addons.multus.allocate hands them out,
emu.addons.multus.wire creates the interfaces)."""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from emu.model.documents import DNS_LABEL, DNS_SUBDOMAIN, Collector, Document
from emu.network.cni import capabilities
from emu.network.cni.netconf import NETWORK_NAME

LAYER = "model"

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
    raw_routes = ipam.get("routes") or []
    if not isinstance(raw_routes, list):
        c.add(doc, f, obj, "spec.config.ipam.routes", f"must be a list, got {raw_routes!r}")
        raw_routes = []
    for i, r in enumerate(raw_routes):
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
