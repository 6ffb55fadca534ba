"""The PodNetwork seam: how a cluster's nodes and pods are wired, one value per dataplane (`spec.cni.plugin`).

A network is a table of verbs, the way a CNI plugin is a table of ADD/DEL/CHECK and felix registers one manager per
kind of state, and it keeps felix's split between what is pure and what touches the kernel:

- planning, pure (emu.cluster.planner): the pod MTU, each node's namespace (`node_plan`: its devices, peers'
  routes, neighbours, FDB, sysctls and rules), each pod's (`pod_plan`), and what the network keeps about a node
  (`node_info`: its tunnel MAC and its files, flannel's subnet.env);
- wiring (emu.cluster.lifecycle): `start` once the nodes' namespaces are built (node daemons such as Calico's BIRD,
  tc programs of an eBPF dataplane: each named in the record before it runs), `wire` for pods whose namespaces exist
  (flannel: netlink from the plan; cni: the plugin binaries, whose addresses replace the plan's), and `unwire`,
  driven by the record only (cni: DEL of every recorded ADD; flannel: the bridge delegate's DEL, each pod's veth
  deleted at once, not when its namespace is destroyed).  `emu down` knows only the record, so it calls every
  network's `unwire` with no keys;
- showing: `dry_run` (the pods' part of `emu up --dry-run`), `summary`, `node_view` (its columns of `emu get nodes`),
  `node_annotations` (`emu describe node`), `network_name` (the network Multus' network-status names), `host_veths`
  (when the plugins, not the plan, name a pod's host veth);
- doctor: `unplanned_pods` (why the kernel's pod wiring is not the plan's, when it is not: doctor then leaves pods
  out) and `mtu_path` (the devices and encapsulation between two pods on different nodes).

A network's own `spec.cni` fields are the model's: its folder's spec.py (`LAYER = "model"`) subclasses CNISpec with
them and parses them into it (a NetworkSpec, the PodNetwork's `spec`), so the loader validates a topology without
loading any kernel code.

emu.network.table lists the networks in one literal tuple, and the composition layer hands their NetworkSpecs to
the loader (emu.cluster.planner.PLUGINS); a new dataplane (Calico with BIRD and IPIP or VXLAN and routed pods, an eBPF
dataplane) is its folder under emu/network/ and one line there.  The hooks take plain data and the cluster's record, never the cluster layer
that calls them.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from emu.alloc.ipam import Allocations, Assignment
from emu.apply.links import Indexes, Sockets
from emu.apply.state import Record
from emu.model.types import ClusterSpec, NetworkSpec, Pod, Topology
from emu.plan.objects import ClusterPlan, NetnsPlan, NodeInfo, PodPlan

Progress = Callable[[str, int, int], None]  # (stage, done, total), as emu.cluster.lifecycle reports it
Subnets = dict[str, ipaddress.IPv4Network]  # node -> its pod subnet
NodeIPs = dict[str, ipaddress.IPv4Address]  # node -> its underlay address


@dataclass(frozen=True, slots=True)
class Wiring:
    """What `start` and `wire` get: the cluster's record, model, allocations and plan, and the sockets and interface
    indexes the nodes were just built with (`emu up`); None on a live change (`emu apply`), where the network opens
    its own and reads the nodes' links back."""

    record: Record
    topology: Topology
    allocations: Allocations
    plan: ClusterPlan
    sockets: Sockets | None = None
    indexes: Indexes | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node in `emu get nodes`: the CNI column of `-o wide` and the network's fields of `-o json` (in order)."""

    cni: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MtuPath:
    """The pod network's part of a pod-to-pod path across nodes, for doctor's MTU check: the devices on the sending
    node between the pod's host veth and eth0 (flannel.1), the encapsulation the underlay carries (VXLAN, 50 bytes;
    IPIP would be 20; none for routed traffic), and the devices on the receiving node between eth0 and the pod's host
    veth (cni0)."""

    pod_mtu: str  # what the pods' MTU is called in findings ("FLANNEL_MTU")
    tunnel: tuple[str, ...] = ()
    overhead: int = 0
    encap: str = ""
    receive: tuple[str, ...] = ()


def _nothing(*_: object) -> None:
    return None


def _no_errors(*_: object) -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class PodNetwork:
    spec: NetworkSpec  # its `spec.cni`: the plugin name that picks it, its fields and their parser (its spec.py)
    summary: Callable[[ClusterSpec], str]  # how `emu up` and `emu demo` name it ("flannel vxlan")
    pod_mtu: Callable[[ClusterSpec, str | None], int]  # a node's pod MTU (None: the cluster's spec.mtu)
    node_plan: Callable[[ClusterSpec, str, Subnets, NodeIPs, bool], NetnsPlan]  # bool: the node has pods
    pod_plan: Callable[[ClusterSpec, Pod, Assignment, ipaddress.IPv4Network], PodPlan]  # not hostNetwork pods
    node_info: Callable[[ClusterSpec, str, Subnets, NodeIPs], NodeInfo]
    wire: Callable[[Wiring, Sequence[PodPlan], Progress], Allocations]  # returns `allocations` itself unless the
    # wiring chose other addresses (the caller then builds the plan again from what it returns)
    dry_run: Callable[[Topology, ClusterPlan], list[str]]  # the pods' lines of `emu up --dry-run`
    node_view: Callable[[ClusterSpec, NodeInfo], NodeView]
    node_annotations: Callable[[ClusterSpec, NodeInfo], dict[str, str]]
    network_name: Callable[[ClusterSpec], str]
    mtu_path: Callable[[ClusterSpec], MtuPath]
    start: Callable[[Wiring], None] = _nothing
    unwire: Callable[[Record, Sequence[str] | None], list[str]] = _no_errors  # None: everything the record names
    host_veths: Callable[[Record], dict[str, str]] | None = None  # pod key -> host veth, when the plan only guesses
    unplanned_pods: str | None = None

    @property
    def name(self) -> str:
        """The `spec.cni.plugin` that picks it."""
        return self.spec.name
