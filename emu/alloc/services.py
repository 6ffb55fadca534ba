"""Service addresses as the API server allocates them (ClusterIPs from --service-cluster-ip-range, nodePorts and
healthCheckNodePorts from --service-node-port-range) and as a load balancer hands out ingress IPs from its pool.

The API server picks a random free address, from the upper band first (KEP-3070 ServiceIPStaticSubrange, KEP-3668
for node ports) so that the lower band stays free for explicit requests.  We pick a pseudo-random start from a hash
of the Service's name, so a topology always gets the same addresses, then probe linearly.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from emu.model.types import Service, Topology

IPv4Address = ipaddress.IPv4Address
NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767


@dataclass(frozen=True, slots=True)
class ServiceAlloc:
    """What the API server (ClusterIP, nodePorts, healthCheckNodePort) and the load balancer (ingress IP) gave a
    Service.  node_ports maps "port/PROTOCOL" to the allocated nodePort."""

    cluster_ip: IPv4Address | None  # None for headless and ExternalName
    node_ports: dict[str, int]
    health_check_node_port: int | None = None
    load_balancer_ip: IPv4Address | None = None  # None: <pending> (no pool, or the pool is full)

    def to_json(self) -> dict[str, object]:
        return {"clusterIP": str(self.cluster_ip) if self.cluster_ip else None, "nodePorts": self.node_ports,
                "healthCheckNodePort": self.health_check_node_port,
                "loadBalancerIP": str(self.load_balancer_ip) if self.load_balancer_ip else None}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> "ServiceAlloc":
        def ip(v: object) -> IPv4Address | None:
            return IPv4Address(v) if isinstance(v, str) else None

        hc = d.get("healthCheckNodePort")
        return cls(ip(d.get("clusterIP")), dict(d.get("nodePorts") or {}),  # type: ignore[call-overload]
                   hc if isinstance(hc, int) else None, ip(d.get("loadBalancerIP")))


def _start(key: str, size: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % size


def _pick(key: str, lo: int, hi: int, used: set[int], band: int) -> int | None:
    """A free value in [lo, hi]: the upper band (above lo+band) first from a hashed start, then the lower band."""
    for a, b in ((lo + band, hi), (lo, lo + band - 1)):
        size = b - a + 1
        if size <= 0:
            continue
        first = _start(key, size)
        for k in range(size):
            v = a + (first + k) % size
            if v not in used:
                return v
    return None


def _ip_band(size: int) -> int:
    return min(max(16, size // 16), 256)


def _port_band(size: int) -> int:
    return min(max(16, size // 32), 128)


def allocate(topo: Topology, previous: dict[str, ServiceAlloc]) -> dict[str, ServiceAlloc]:
    """Allocations for every Service: explicit values first, then what earlier syncs gave, then new ones."""
    c = topo.cluster
    net = c.service_cidr
    lo, hi = int(net.network_address) + 1, int(net.broadcast_address) - 1
    used_ips = {int(net.network_address) + 1, int(net.network_address) + 10}  # kubernetes, kube-dns
    used_ports: set[int] = set()
    used_lb: set[IPv4Address] = set()
    for s in topo.services:
        if s.cluster_ip not in (None, "None"):
            used_ips.add(int(IPv4Address(s.cluster_ip)))
        used_ports.update(p.node_port for p in s.ports if p.node_port)
        if s.health_check_node_port:
            used_ports.add(s.health_check_node_port)
    keep = {s.key: previous[s.key] for s in topo.services if s.key in previous}
    for a in keep.values():
        if a.cluster_ip:
            used_ips.add(int(a.cluster_ip))
        used_ports.update(a.node_ports.values())
        if a.health_check_node_port:
            used_ports.add(a.health_check_node_port)
        if a.load_balancer_ip:
            used_lb.add(a.load_balancer_ip)
    out = {}
    for s in topo.services:
        out[s.key] = _one(s, keep.get(s.key), c.load_balancer_pool, lo, hi, used_ips, used_ports, used_lb)
    return out


def _one(s: Service, prev: ServiceAlloc | None, pool: ipaddress.IPv4Network | None, lo: int, hi: int,
         used_ips: set[int], used_ports: set[int], used_lb: set[IPv4Address]) -> ServiceAlloc:
    if s.type == "ExternalName" or s.headless:
        return ServiceAlloc(None, {})
    if s.cluster_ip not in (None, "None"):
        cip: IPv4Address | None = IPv4Address(s.cluster_ip)
    elif prev and prev.cluster_ip:
        cip = prev.cluster_ip
    else:
        n = _pick(s.key, lo, hi, used_ips, _ip_band(hi - lo + 1))
        cip = IPv4Address(n) if n is not None else None
        if n is not None:
            used_ips.add(n)
    node_ports: dict[str, int] = {}
    if s.type in ("NodePort", "LoadBalancer"):
        for p in s.ports:
            key = f"{p.port}/{p.protocol.value}"
            v = p.node_port or (prev.node_ports.get(key) if prev else None) or \
                _pick(f"{s.key}/{key}", NODE_PORT_MIN, NODE_PORT_MAX, used_ports,
                      _port_band(NODE_PORT_MAX - NODE_PORT_MIN + 1))
            if v is not None:
                used_ports.add(v)
                node_ports[key] = v
    hc = None
    if s.type == "LoadBalancer" and s.external_policy_local:
        hc = s.health_check_node_port or (prev.health_check_node_port if prev else None) or \
            _pick(f"{s.key}/healthcheck", NODE_PORT_MIN, NODE_PORT_MAX, used_ports,
                  _port_band(NODE_PORT_MAX - NODE_PORT_MIN + 1))
        if hc is not None:
            used_ports.add(hc)
    lb = None
    if s.type == "LoadBalancer" and pool is not None:
        lb = prev.load_balancer_ip if prev and prev.load_balancer_ip else None
        if lb is None and s.load_balancer_ip and s.load_balancer_ip in pool and s.load_balancer_ip not in used_lb:
            lb = s.load_balancer_ip
        if lb is None:  # first free address of the pool, as MetalLB assigns them
            lb = next((h for h in pool.hosts() if h not in used_lb), None)
        if lb is not None:
            used_lb.add(lb)
    return ServiceAlloc(cip, node_ports, hc, lb)
