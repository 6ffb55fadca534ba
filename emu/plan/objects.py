"""The plan: pure data describing every namespace, link, address, route, neighbour, FDB entry, sysctl and rule set
the cluster should have.  Built from the model without touching the kernel; `apply` is the only code that does."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IPv4Address = ipaddress.IPv4Address
IPv4Interface = ipaddress.IPv4Interface
IPv4Network = ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class Vxlan:
    vni: int
    port: int
    local: IPv4Address
    dev: str  # the underlay device (VTEP dev = external interface)
    learning: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """An interface to create in a namespace.  A veth is created with its peer already in `peer_netns`
    (as the CNI plugins do), so nothing ever lives, even briefly, in the wrong namespace."""

    name: str
    kind: str  # "bridge" | "vxlan" | "veth"
    mtu: int | None = None
    master: str | None = None
    mac: str | None = None
    hairpin: bool = False
    peer: str | None = None
    peer_netns: str | None = None
    peer_mtu: int | None = None
    vxlan: Vxlan | None = None


@dataclass(frozen=True, slots=True)
class Address:
    dev: str
    cidr: IPv4Interface


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPv4Network  # 0.0.0.0/0 for the default route
    dev: str
    via: IPv4Address | None = None
    onlink: bool = False
    nexthops: tuple[IPv4Address, ...] = ()  # ECMP: several gateways on `dev` (via is None then)


@dataclass(frozen=True, slots=True)
class Neighbour:
    dev: str
    ip: IPv4Address
    lladdr: str  # permanent, as flannel programs them


@dataclass(frozen=True, slots=True)
class Fdb:
    dev: str
    lladdr: str
    dst: IPv4Address  # permanent, "self", as flannel programs them


@dataclass(frozen=True, slots=True)
class IptablesTable:
    name: str  # "nat" | "filter" | ...
    chains: tuple[str, ...]  # chains this component owns (declared with ":NAME - [0:0]")
    rules: tuple[str, ...]  # in iptables-save form: '-A CHAIN ...'


@dataclass(frozen=True, slots=True)
class NetnsPlan:
    """Everything one namespace should hold.  `up` lists interfaces to bring up (peers arrive from elsewhere)."""

    name: str
    role: str  # "underlay" | "external" | "node" | "pod"
    owner: str  # node name, pod key, or the role
    links: tuple[Link, ...] = ()
    up: tuple[str, ...] = ()
    mtu: tuple[tuple[str, int], ...] = ()  # MTUs of interfaces that arrive as veth peers
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[Fdb, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    iptables: tuple[IptablesTable, ...] = ()
    iptables_restore: str = "iptables-restore"  # the backend's binary (iptables-nft-restore, ...)


@dataclass(frozen=True, slots=True)
class PodPlan:
    """A pod: its own namespace, plus the host end of its veth in its node's namespace."""

    key: str
    node: str
    node_netns: str
    ip: IPv4Address
    host_link: Link
    netns: NetnsPlan

    @property
    def host_network(self) -> bool:
        """spec.hostNetwork: the pod's namespace is its node's (no veth, no namespace of its own)."""
        return self.netns.name == self.node_netns


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as its pod network describes it: its namespace, underlay address and pod subnet, the MAC of its
    tunnel device (flannel.1's VtepMAC; None without one), and the files the network keeps for it, as (path
    relative to the node's directory in the record, text): flannel's run/flannel/subnet.env."""

    name: str
    netns: str
    ip: IPv4Address
    subnet: IPv4Network
    vtep_mac: str | None
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    cluster: str
    infra: tuple[NetnsPlan, ...]  # underlay, external, nodes: in creation order
    pods: tuple[PodPlan, ...]
    nodes: tuple[NodeInfo, ...] = field(default=())

    def all_netns(self) -> list[str]:
        return [n.name for n in self.infra] + [p.netns.name for p in self.pods if not p.host_network]

    def pod(self, key: str) -> PodPlan | None:
        return next((p for p in self.pods if p.key == key), None)


def restore_text(tables: Iterable[IptablesTable]) -> str:
    """iptables-restore input: each table declares its chains, appends its rules and commits."""
    out = []
    for t in tables:
        out.append(f"*{t.name}")
        out.extend(f":{chain} - [0:0]" for chain in t.chains)
        out.extend(t.rules)
        out.append("COMMIT")
    return "\n".join(out) + "\n"
