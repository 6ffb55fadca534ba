"""The typed, validated model of a cluster: what the topology file says, after defaults and checks."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


class Backend(str, Enum):
    VXLAN = "vxlan"
    HOST_GW = "host-gw"


class Protocol(str, Enum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True)
class CNISpec:
    plugin: str = "flannel"
    backend: Backend = Backend.VXLAN


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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole topology file: the cluster and the Kubernetes objects, in document order."""

    file: str
    cluster: ClusterSpec
    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)
