"""The Cluster document (emu.dev/v1alpha1), emu's own kind: the first document of a topology file, with its
defaults (CLUSTER_DEFAULTS) and checks (nodes, networks that must not overlap, MTU, CNI, proxy mode, node
settings, external clients).  Every problem is one line naming the file, the document, the object and the field."""
from __future__ import annotations

import ipaddress
from typing import Any

from emu.errors import ValidationError
from emu.model import names, nodesettings
from emu.model.documents import DNS_LABEL, Collector, Document
from emu.model.kinds import Plugins
from emu.model.types import ProxyMode, ProxySpec, ClusterSpec, CNISpec

CLUSTER_API = "emu.dev/v1alpha1"
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


def cluster_spec(doc: Document, name: str | None, plugins: Plugins) -> ClusterSpec:
    """The Cluster document's spec; raises ValidationError with every problem in it."""
    c = Collector()
    spec = parse_cluster(doc, c, name, plugins)
    if c.problems:
        raise ValidationError(c.problems)
    return spec


def parse_cluster(doc: Document, c: Collector, name_override: str | None, plugins: Plugins) -> ClusterSpec:
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
    cni = _parse_cni(s["cni"], doc, c, obj, plugins)
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


def _parse_cni(v: Any, doc: Document, c: Collector, obj: str, plugins: Plugins) -> CNISpec:
    """`spec.cni`, read by the network `plugin` names (`plugins.networks`: each network's own fields and parser, from
    its folder's spec.py); a field only other networks take is named as theirs, one no network takes is unknown (as
    the API server's strict decoding words it), and an unknown plugin's fields are read as the default network's."""
    default = plugins.network(CLUSTER_DEFAULTS["cni"]["plugin"])
    assert default is not None  # the Cluster's default network is one emu has
    if not isinstance(v, dict):
        c.add(doc, doc.file, obj, "spec.cni", "must be a mapping with plugin and backend")
        return default.parse({}, doc, c, obj)
    plugin = v.get("plugin", default.name)
    known = plugins.network(plugin)
    net = known or default
    for key in v:
        theirs = [s.name for s in plugins.networks if key in s.fields]
        if key != "plugin" and not theirs:
            c.add(doc, doc.file, doc.label(), f"spec.cni.{key}", f'unknown field "spec.cni.{key}"')
        if key != "plugin" and key not in net.fields and theirs:
            c.add(doc, doc.file, obj, f"spec.cni.{key}",
                  f"only valid with plugin {' or '.join(theirs)} (plugin {net.name} takes {', '.join(net.fields)})")
    if known is None:
        c.add(doc, doc.file, obj, "spec.cni.plugin",
              f"plugin {plugin!r} is not implemented (known: {', '.join(s.name for s in plugins.networks)})")
    return net.parse(v, doc, c, obj)
