"""Flannel as a PodNetwork: emu plays flanneld on every node (emu.network.flannel.nodes: flannel.1 or host-gw routes,
FLANNEL-* rules, /run/flannel/subnet.env) and flannel's CNI plugin with its bridge delegate for every pod
(emu.network.bridge: cni0, a veth, host-local's address), wired by netlink straight from the plan."""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from emu.addons.multus import wire as multus
from emu.alloc.ipam import Allocations, Assignment
from emu.apply.state import Record
from emu.apply import links as apply
from emu.model import names
from emu.model.types import Backend, ClusterSpec, Pod, Topology
from emu.network import bridge
from emu.network.base import MtuPath, NodeIPs, NodeView, PodNetwork, Progress, Subnets, Wiring
from emu.network.cni.config import FLANNEL_DELEGATE_NAME
from emu.network.flannel import nodes
from emu.network.flannel.spec import SPEC, settings
from emu.plan import render
from emu.plan.objects import ClusterPlan, NodeInfo, PodPlan

SUBNET_ENV = "run/flannel/subnet.env"  # in the node's directory of the record, where flanneld writes it on a node


def summary(c: ClusterSpec) -> str:
    return f"flannel {settings(c).backend.value}"


def pod_plan(c: ClusterSpec, pod: Pod, a: Assignment, subnet: ipaddress.IPv4Network) -> PodPlan:
    """The bridge delegate's pod, with FLANNEL_MTU (flannel's CNI plugin passes it as the delegate's mtu)."""
    return bridge.pod_plan(c, pod, a, subnet, nodes.mtu(c, a.node))


def node_info(c: ClusterSpec, node: str, subnets: Subnets, ips: NodeIPs) -> NodeInfo:
    """flannel.1's MAC (vxlan) and subnet.env, as flanneld's lease and WriteSubnetFile have them."""
    return NodeInfo(node, names.node_netns(c.name, node), ips[node], subnets[node],
                    names.vtep_mac(c.name, node) if settings(c).backend is Backend.VXLAN else None,
                    ((SUBNET_ENV, nodes.subnet_env(c, subnets[node], node)),))


def wire(w: Wiring, pods: Sequence[PodPlan], progress: Progress) -> Allocations:
    """Every pod's veth and addresses by netlink (emu.apply.links), then its Multus networks (built-in mode).  On
    a live change the nodes' links are read back first, and cni0 is made on a node's first pod."""
    total = len(pods)

    def step(done: int) -> None:
        progress("pods", done, total)

    if w.sockets is not None and w.indexes is not None:
        apply.apply_pods(pods, w.sockets, w.indexes, step)
    else:
        with apply.Sockets() as s:
            ix = apply.Indexes()
            for ns in w.plan.infra:
                if ns.role == "node" and any(p.node == ns.owner for p in pods):
                    ix.seed(ns.name, s)
                    apply.ensure_node(ns, s, ix)  # cni0 and its address on a node's first pod
            apply.apply_pods(pods, s, ix, step)
    multus.wire(w.topology, w.allocations.secondary, pods)  # secondary networks (built-in mode)
    return w.allocations


def unwire(rec: Record, keys: Sequence[str] | None) -> list[str]:
    """The bridge delegate's DEL: each pod's veth is deleted now (its host end takes the pair), in its node's
    namespace.  Left to the pod's namespace going, the kernel would destroy it later, from a workqueue, and a pod of
    the same name made again at once would find its host veth's name still taken (EEXIST).  `emu down` (no keys):
    nothing, every namespace goes."""
    if not keys:
        return []
    alloc = Allocations.from_json(rec.allocations)
    links: dict[str, list[str]] = {}
    for key in keys:
        a = alloc.pods.get(key)
        if a is not None:  # a hostNetwork pod has no veth: link del says ENODEV, which is fine
            namespace, name = key.split("/", 1)
            links.setdefault(names.node_netns(rec.name, a.node), []).append(names.host_veth(rec.name, namespace, name))
    with apply.Sockets() as s:
        for node_ns, veths in links.items():
            b = s.batch(node_ns)
            for veth in veths:
                b.link_del(veth)
            b.commit()
    return []


def dry_run(topo: Topology, plan: ClusterPlan) -> list[str]:
    """The pods wired as `wire` wires them: each one's veth and namespace, as `ip` commands."""
    return [line for p in plan.pods for line in render.pod_commands(p)]


def node_view(c: ClusterSpec, n: NodeInfo) -> NodeView:
    backend = settings(c).backend.value
    return NodeView(f"flannel/{backend}", {"backend": backend, "vtepMAC": n.vtep_mac})


def node_annotations(c: ClusterSpec, n: NodeInfo) -> dict[str, str]:
    """What flanneld's kube subnet manager writes on its Node (pkg/subnet/kube: backend-data holds the VTEP)."""
    vtep = {"VNI": nodes.VXLAN_VNI, "VtepMAC": n.vtep_mac}
    data = json.dumps(vtep, separators=(",", ":")) if n.vtep_mac else "null"
    return {"flannel.alpha.coreos.com/backend-data": data,
            "flannel.alpha.coreos.com/backend-type": settings(c).backend.value,
            "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            "flannel.alpha.coreos.com/public-ip": str(n.ip)}


def network_name(c: ClusterSpec) -> str:
    """kube-flannel.yml's cni-conf.json names the network "cbr0"."""
    return FLANNEL_DELEGATE_NAME


def mtu_path(c: ClusterSpec) -> MtuPath:
    """vxlan: flannel.1 encapsulates (50 bytes: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14); host-gw routes
    the pods' packets as they are.  Either way they reach the far pod through cni0."""
    if settings(c).backend is Backend.VXLAN:
        return MtuPath("FLANNEL_MTU", (nodes.VXLAN_DEV,), nodes.VXLAN_OVERHEAD, "VXLAN", (bridge.BRIDGE,))
    return MtuPath("FLANNEL_MTU", receive=(bridge.BRIDGE,))


FLANNEL = PodNetwork(
    spec=SPEC, summary=summary, pod_mtu=nodes.mtu, node_plan=nodes.node_plan, pod_plan=pod_plan,
    node_info=node_info, wire=wire, unwire=unwire, dry_run=dry_run, node_view=node_view, node_annotations=node_annotations,
    network_name=network_name, mtu_path=mtu_path,
)
