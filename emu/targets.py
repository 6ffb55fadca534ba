"""Probe endpoints named the way users name them: `NS/POD`, `node/NAME`, `external`, or an IP address."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import names
from .cluster import Cluster
from .errors import EmuError
from .ipam import external_ip, node_ips


@dataclass(frozen=True, slots=True)
class Target:
    label: str  # "default/web-0", "node/node-1", "external", or the IP
    netns: str | None  # where a probe from it runs (None for a bare IP)
    ip: str
    kind: str  # "pod" | "node" | "external" | "ip"


class TargetError(EmuError):
    exit_code = 2


def resolve(cl: Cluster, text: str) -> Target:
    c = cl.topology.cluster
    if text == "external":
        return Target("external", names.external_netns(c.name), str(external_ip(c)), "external")
    if text.startswith("node/"):
        node = text[5:]
        if node not in c.nodes:
            raise TargetError(f"{text}: no node {node!r} in cluster {c.name} (nodes: {', '.join(c.nodes)})")
        return Target(text, names.node_netns(c.name, node), str(node_ips(c)[node]), "node")
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        pass
    else:
        return Target(who(cl, str(ip)) or str(ip), None, str(ip), "ip")
    if "/" in text:
        pp = cl.plan.pod(text)
        if pp is None:
            raise TargetError(f"{text}: no pod {text} in cluster {c.name} (emu get pods -A)")
        return Target(text, pp.netns.name, str(pp.ip), "pod")
    raise TargetError(f"{text}: expected NS/POD, node/NAME, external or an IP address")


def who(cl: Cluster, ip: str) -> str | None:
    """The pod, node or host that owns an address, for answers that carry only an IP (ICMP)."""
    for p in cl.plan.pods:
        if str(p.ip) == ip:
            return p.key
    c = cl.topology.cluster
    for n in cl.plan.nodes:
        if str(n.ip) == ip or str(n.subnet.network_address) == ip or str(n.subnet.network_address + 1) == ip:
            return f"node/{n.name}"
    if str(external_ip(c)) == ip:
        return "external"
    return None
