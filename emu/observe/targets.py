"""Probe endpoints named the way users name them: `NS/POD`, `node/NAME`, `external`, or an IP address."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.model import names
from emu.addons.kubeproxy import systempods
from emu.cluster.lifecycle import Cluster
from emu.errors import EmuError
from emu.alloc.ipam import external_ip, node_ips


@dataclass(frozen=True, slots=True)
class Target:
    label: str  # "default/web-0", "node/node-1", "external", "svc/default/web:80", or the IP
    netns: str | None  # where a probe from it runs (None for an address)
    ip: str
    kind: str  # "pod" | "node" | "external" | "ip" | "svc" | "nodeport" | "lb"
    port: int | None = None  # when the name carries one (svc/NS/NAME:PORT, nodeport/NODE:PORT, IP:PORT)
    protocol: str | None = None  # the Service port's protocol, when a Service port was named
    bind: str | None = None  # external@IP: the source address a probe from it binds to


class TargetError(EmuError):
    exit_code = 2


def _split_port(text: str) -> tuple[str, str | None]:
    head, sep, tail = text.rpartition(":")
    return (head, tail) if sep else (text, None)


def _service(cl: Cluster, text: str, kind: str, proto: str | None) -> Target:
    """svc/NS/NAME[:PORT] (ClusterIP) or lb/NS/NAME[:PORT] (LoadBalancer ingress IP); PORT is a number or a name."""
    ref, port_text = _split_port(text.split("/", 1)[1])
    if "/" not in ref:
        ref = f"default/{ref}"
    svc = next((s for s in cl.topology.services if s.key == ref), None)
    if svc is None:
        raise TargetError(f"{text}: no Service {ref} in cluster {cl.name} (emu get svc -A)")
    alloc = cl.allocations.services[svc.key]
    ports = [p for p in svc.ports if port_text in (None, p.name, str(p.port))]
    if proto and port_text is None:
        ports = [p for p in ports if p.protocol.value.lower() == proto] or ports
    if not ports:
        raise TargetError(f"{text}: Service {ref} has no port {port_text!r}")
    p = ports[0]
    if kind == "lb":
        if alloc.load_balancer_ip is None:
            raise TargetError(f"{text}: Service {ref} has no load balancer address (type {svc.type}; "
                              f"a LoadBalancer needs spec.loadBalancerPool in the Cluster)")
        ip = str(alloc.load_balancer_ip)
    else:
        if alloc.cluster_ip is None:
            raise TargetError(f"{text}: Service {ref} has no cluster IP (headless or ExternalName)")
        ip = str(alloc.cluster_ip)
    return Target(f"{kind}/{ref}:{p.name or p.port}", None, ip, kind, p.port, p.protocol.value.lower())


def resolve(cl: Cluster, text: str, proto: str | None = None) -> Target:
    c = cl.topology.cluster
    if text.startswith(("svc/", "lb/")):
        return _service(cl, text, text.split("/", 1)[0], proto)
    if text.startswith("nodeport/"):
        node, port = _split_port(text[len("nodeport/"):])
        if node not in c.nodes or port is None or not port.isdigit():
            raise TargetError(f"{text}: expected nodeport/NODE:PORT with a node of {c.name} "
                              f"({', '.join(c.nodes)})")
        return Target(text, None, str(node_ips(c)[node]), "nodeport", int(port))
    if text == "external":
        return Target("external", names.external_netns(c.name), str(external_ip(c)), "external")
    if text.startswith("external@"):
        ip = text.split("@", 1)[1]
        if ip not in {str(a) for a in c.external_clients}:
            known = ", ".join(str(a) for a in c.external_clients) or "none: add spec.externalClients to the Cluster"
            raise TargetError(f"{text}: {ip} is not one of the external host's client addresses ({known})")
        return Target(text, names.external_netns(c.name), ip, "external", bind=ip)
    if text.startswith("node/"):
        node = text[5:]
        if node not in c.nodes:
            raise TargetError(f"{text}: no node {node!r} in cluster {c.name} (nodes: {', '.join(c.nodes)})")
        return Target(text, names.node_netns(c.name, node), str(node_ips(c)[node]), "node")
    addr, port = _split_port(text)
    try:
        ip = ipaddress.IPv4Address(addr)
    except ValueError:
        pass
    else:
        if port is not None and not port.isdigit():
            raise TargetError(f"{text}: expected IP or IP:PORT")
        return Target(who(cl, str(ip)) or text, None, str(ip), "ip", int(port) if port else None)
    if "/" in text:
        pp = cl.plan.pod(text)
        sp = next((p for p in systempods.kube_proxy(cl) if p.key == text), None) if pp is None else None
        if sp is not None:  # a kube-proxy pod: hostNetwork, so its node's namespace and address
            return Target(text, sp.netns, sp.ip, "pod")
        if pp is None:
            raise TargetError(f"{text}: no pod {text} in cluster {c.name} (emu get pods -A)")
        return Target(text, pp.netns.name, str(pp.ip), "pod")
    raise TargetError(f"{text}: expected NS/POD, node/NAME, external[@IP], svc/NS/NAME[:PORT], lb/NS/NAME[:PORT], "
                      f"nodeport/NODE:PORT, IP or IP:PORT")


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
    if ip in {str(a) for a in c.external_clients}:
        return f"external@{ip}"
    for key, a in cl.allocations.services.items():
        if a.cluster_ip is not None and str(a.cluster_ip) == ip:
            return f"svc/{key}"
        if a.load_balancer_ip is not None and str(a.load_balancer_ip) == ip:
            return f"lb/{key}"
    return None
