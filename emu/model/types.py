"""The typed, validated model of a cluster: what the topology file says, after defaults and checks."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from emu.addons.multus.nad import Nad
    from emu.model.documents import Collector, Document
    from emu.model.nodesettings import NodeSettings
    from emu.addons.netpol.model import NetworkPolicy
    from emu.addons.ingress.model import Ingress, IngressClass, Secret

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


class Backend(str, Enum):
    VXLAN = "vxlan"
    HOST_GW = "host-gw"


class ProxyMode(str, Enum):
    IPTABLES = "iptables"
    NFTABLES = "nftables"
    IPVS = "ipvs"


class Protocol(str, Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True)
class CNISpec:
    """`spec.cni`: the pod network that wires the cluster (`plugin`: flannel, cni, ...).  Each network subclasses it
    in its own folder with its own fields (emu.network.flannel.spec.FlannelSpec: backend), and its NetworkSpec
    parses them."""

    plugin: str


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """What the model knows of a pod network: the `spec.cni.plugin` that picks it, the other fields of `spec.cni` it
    takes (in the order its messages name them), and how it reads them: `parse(spec.cni, document, collector,
    object)` reports each problem as one line and returns the network's CNISpec.  Each PodNetwork of
    emu.network.table names its own; the composition layer hands them to the loader (emu.model.kinds.Plugins)."""

    name: str
    fields: tuple[str, ...]
    parse: Callable[[Mapping[str, Any], "Document", "Collector", str], CNISpec]


@dataclass(frozen=True, slots=True)
class ProxySpec:
    mode: ProxyMode = ProxyMode.IPTABLES
    masquerade_all: bool = False


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    nodes: tuple[str, ...]
    pod_cidr: IPv4Network
    service_cidr: IPv4Network
    node_cidr_mask_size: int
    node_network: IPv4Network
    mtu: int
    cni: CNISpec
    proxy: ProxySpec = field(default_factory=ProxySpec)
    load_balancer_pool: IPv4Network | None = None
    iptables_backend: str = "nft"  # the nodes' iptables alternative: "nft" (Debian's default) or "legacy"
    node_settings: Mapping[str, "NodeSettings"] = field(default_factory=dict)  # per node (emu.model.nodesettings)
    external_clients: tuple[IPv4Address, ...] = ()  # more addresses of the external host (clients outside)

    def node_mtu(self, node: str | None) -> int:
        """The node's eth0 MTU: its own setting, else the underlay's."""
        s = self.node_settings.get(node) if node is not None else None
        return s.mtu if s is not None and s.mtu is not None else self.mtu

    def node_sysctls(self, node: str) -> tuple[tuple[str, str], ...]:
        s = self.node_settings.get(node)
        return s.sysctls if s is not None else ()

    def iptables(self, tool: str = "") -> str:
        """The iptables binary every component on the nodes uses (one backend per node, as iptables-wrapper
        picks it: mixing them is a known dataplane bug)."""
        return f"iptables-{self.iptables_backend}" + (f"-{tool}" if tool else "")


@dataclass(frozen=True, slots=True)
class Source:
    """Where an object came from, for error messages."""

    file: str
    document: int


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    protocol: Protocol = Protocol.TCP
    name: str | None = None
    host_port: int | None = None  # hostPort: with plugin cni, the portmap plugin's portMappings capability


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: tuple[ContainerPort, ...]
    node_name: str | None = None  # as written (spec.nodeName); placement decides when None
    owner: str | None = None  # "ReplicaSet/web-7d4b9c8f5d" for pods a controller made
    document: int | None = field(default=None, compare=False)  # YAML document it came from, for errors
    ready: bool = True  # annotation emu.dev/ready: "false" makes the pod not ready (its endpoints too)
    terminating: bool = False  # annotation emu.dev/terminating: "true": deletionTimestamp set, still serving
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)  # metadata.annotations (strings)
    host_network: bool = False  # spec.hostNetwork: the pod lives in its node's namespace, with the node's IP

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServicePortSpec:
    port: int
    protocol: Protocol = Protocol.TCP
    name: str = ""
    target_port: int | str | None = None  # number, container port name, or None (= port)
    node_port: int | None = None  # as written; allocation fills the rest


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str  # ClusterIP | NodePort | LoadBalancer | ExternalName
    ports: tuple[ServicePortSpec, ...]
    selector: Mapping[str, str] | None  # None: selector-less (explicit EndpointSlices/Endpoints)
    cluster_ip: str | None = None  # as written: an address, "None" (headless) or None (allocate)
    external_ips: tuple[IPv4Address, ...] = ()
    external_name: str | None = None
    session_affinity: bool = False
    affinity_timeout: int = 10800
    external_policy_local: bool = False
    internal_policy_local: bool = False
    health_check_node_port: int | None = None  # as written
    load_balancer_ip: IPv4Address | None = None  # spec.loadBalancerIP (deprecated, honoured from the pool)
    load_balancer_source_ranges: tuple[IPv4Network, ...] = ()
    publish_not_ready: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    document: int | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    address: IPv4Address
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    target: str | None = None  # targetRef "ns/name"


@dataclass(frozen=True, slots=True)
class SlicePort:
    port: int
    protocol: Protocol = Protocol.TCP
    name: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice (or Endpoints, converted) written by the user for a selector-less Service."""

    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[SlicePort, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole topology file: the cluster and the Kubernetes objects, in document order."""

    file: str
    cluster: ClusterSpec
    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    network_policies: tuple["NetworkPolicy", ...] = ()  # networking.k8s.io/v1, in document order (emu.addons.netpol)
    attachments: tuple["Nad", ...] = ()  # k8s.cni.cncf.io/v1 NetworkAttachmentDefinitions (emu.addons.multus.nad)
    ingresses: tuple["Ingress", ...] = ()  # networking.k8s.io/v1 Ingresses, in document order (emu.addons.ingress)
    ingress_classes: tuple["IngressClass", ...] = ()
    secrets: tuple["Secret", ...] = ()  # kubernetes.io/tls Secrets (and others, recorded)

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)
