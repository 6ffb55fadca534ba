"""The proxier's view of one node: service ports with their endpoints, as kube-proxy's ServicePort and Endpoint
interfaces present them (pkg/proxy/types.go, pkg/proxy/endpoint.go), plus CategorizeEndpoints (pkg/proxy/topology.go).
Pure data and pure functions; no kernel access."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emu.errors import EmuError

LAYER = "alloc"

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network

DEFAULT_AFFINITY_TIMEOUT = 10800  # v1.DefaultClientIPServiceAffinitySeconds
MASQUERADE_MARK = "0x4000"  # 1 << masqueradeBit (14), printed %#08x


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of one Service (kube-proxy's ServicePortName + ServicePort)."""

    namespace: str
    name: str
    port_name: str  # "" when the Service port is unnamed
    protocol: str  # "TCP" | "UDP" | "SCTP"
    cluster_ip: IPv4Address
    port: int
    node_port: int = 0
    external_ips: tuple[IPv4Address, ...] = ()
    load_balancer_ips: tuple[IPv4Address, ...] = ()  # status.loadBalancer.ingress[].ip
    load_balancer_source_ranges: tuple[IPv4Network, ...] = ()
    session_affinity: bool = False  # ClientIP
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    external_policy_local: bool = False  # externalTrafficPolicy: Local
    internal_policy_local: bool = False  # internalTrafficPolicy: Local
    health_check_node_port: int = 0

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def port_string(self) -> str:
        """ServicePortName.String(): "ns/name:port" (":port" omitted for an unnamed port)."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.load_balancer_ips or self.external_ips)

    @property
    def external_local(self) -> bool:
        """ExternalPolicyLocal(): only meaningful for externally accessible services."""
        return self.external_policy_local and self.externally_accessible

    @property
    def uses_cluster_endpoints(self) -> bool:
        # "Even if the external traffic policy is Local, we need Cluster endpoints to implement short circuiting."
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or self.external_local


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a service port (EndpointSlice endpoint + the resolved port)."""

    ip: IPv4Address
    port: int
    node: str | None = None  # nodeName; `is_local` compares it with the proxier's node
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    pod: str | None = None  # "ns/name" of the targetRef, for display

    @property
    def host_port(self) -> str:
        """net.JoinHostPort form, as in chain-name hashes and comments."""
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Categorized:
    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    all_reachable: tuple[Endpoint, ...]
    has_any: bool


def categorize(endpoints: tuple[Endpoint, ...], svc: ServicePort, node: str) -> Categorized:
    """proxy.CategorizeEndpoints (without topology hints): ready endpoints are preferred; if none are ready,
    serving-and-terminating ones are used (KEP-1669); Local policies use only this node's endpoints."""
    cluster: tuple[Endpoint, ...] = ()
    has_any = False
    if svc.uses_cluster_endpoints:
        cluster = tuple(e for e in endpoints if e.ready)
        if not cluster:
            cluster = tuple(e for e in endpoints if e.serving and e.terminating)
        has_any = bool(cluster)
    if not svc.uses_local_endpoints:
        return Categorized(cluster, (), cluster, has_any)
    local_ready = local_term = False
    for e in endpoints:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.node == node
        elif e.serving and e.terminating:
            has_any = True
            local_term = local_term or e.node == node
    local: tuple[Endpoint, ...] = ()
    if local_ready:
        local = tuple(e for e in endpoints if e.node == node and e.ready)
    elif local_term:
        local = tuple(e for e in endpoints if e.node == node and e.serving and e.terminating)
    if not svc.uses_cluster_endpoints:
        return Categorized(cluster, local, local, has_any)
    seen = set(cluster)
    union = cluster + tuple(e for e in local if e not in seen)
    return Categorized(cluster, local, union, has_any)


@dataclass(frozen=True, slots=True)
class NodeProxyState:
    """Everything one node's kube-proxy syncs from."""

    node: str
    node_ips: tuple[IPv4Address, ...]
    cluster_cidr: IPv4Network  # --cluster-cidr: the local traffic detector ("! -s <cidr>")
    service_cidrs: tuple[IPv4Network, ...]
    services: tuple[tuple[ServicePort, tuple[Endpoint, ...]], ...] = field(default=())
    masquerade_all: bool = False


class SyncError(EmuError):
    """A node's proxier state could not be written (any mode; emu.addons.kubeproxy.proxiers and .ipvs raise it)."""


@dataclass(frozen=True)
class SyncResult:
    """One node's sync: how long it took and how many rules (or IPVS objects) it wrote."""
    node: str
    seconds: float
    rules: int
