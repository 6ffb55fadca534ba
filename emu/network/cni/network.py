"""The cni PodNetwork (`spec.cni.plugin: cni`): real plugin binaries wire the pods, the way containerd's CRI plugin
calls them (emu.network.cni.pods), on nodes that emu prepares as flanneld would (nodeConfig flannel) or leaves
bare (nodeConfig none, emu.network.cni.nodes).

The plan still holds each pod as the bridge delegate would wire it: that is the prediction `up` starts from, and
after the plugins ran, the plan is built again from the addresses their results gave.  What the plugins chose
(interfaces, host veth names, MTUs) is theirs, so doctor does not hold the pods to the plan.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from emu.alloc.ipam import Allocations
from emu.apply import state
from emu.apply.state import Record
from emu.model.types import ClusterSpec, Topology
from emu.network.base import MtuPath, NodeIPs, PodNetwork, Progress, Subnets, Wiring
from emu.network.cni import dryrun, nodes, pods
from emu.network.cni.config import FLANNEL_DELEGATE_NAME
from emu.network.cni.spec import SPEC, settings
from emu.network.flannel import network as flannel
from emu.plan.objects import ClusterPlan, NetnsPlan, NodeInfo, PodPlan


def node_plan(c: ClusterSpec, node: str, subnets: Subnets, ips: NodeIPs, has_pods: bool) -> NetnsPlan:
    """The node before any plugin runs: no cni0 even with pods (the bridge plugin makes it on the first ADD)."""
    return nodes.node_plan(c, node, subnets, ips)


def wire(w: Wiring, pp: Sequence[PodPlan], progress: Progress) -> Allocations:
    """ADD every pod (nodes in parallel, each ADD recorded before it runs); the plugins' addresses come back."""
    alloc, _ = pods.attach(w.record.dir, w.topology, w.allocations, w.plan, [p.key for p in pp], progress)
    return alloc


def unwire(rec: Record, keys: Sequence[str] | None) -> list[str]:
    """DEL for every recorded ADD of these pods (all of them: None), while their namespaces still exist."""
    return pods.detach(rec.dir, None if keys is None else list(keys))


def dry_run(topo: Topology, plan: ClusterPlan) -> list[str]:
    """The plugin calls `up` would make, with the state directory it would use (emu.network.cni.dryrun)."""
    return dryrun.render(dryrun.calls(topo, plan, state.cluster_dir(topo.cluster.name)))


def node_annotations(c: ClusterSpec, n: NodeInfo) -> dict[str, str]:
    """flanneld's annotations where emu plays flanneld (nodeConfig flannel); none on a bare node."""
    return flannel.node_annotations(c, n) if settings(c).node_config == "flannel" else {}


def network_name(c: ClusterSpec) -> str:
    """The cluster's own conflist names itself; flannel's delegate (no conflist) is "cbr0"."""
    path = settings(c).conflist
    if path:
        try:
            with open(path) as f:
                return str(json.load(f).get("name") or FLANNEL_DELEGATE_NAME)
        except (OSError, ValueError):
            pass
    return FLANNEL_DELEGATE_NAME


def host_veths(rec: Record) -> dict[str, str]:
    return pods.host_veths(rec.dir)


def mtu_path(c: ClusterSpec) -> MtuPath:
    return flannel.mtu_path(c) if settings(c).node_config == "flannel" else MtuPath("the pod MTU")


CNI = PodNetwork(
    spec=SPEC, summary=flannel.summary,
    # shown and predicted as flannel's FLANNEL_MTU, also under nodeConfig none (where the conflist's ${MTU} is the
    # node's MTU, nodes.pod_mtu): what `emu get nodes`, `emu up` and `emu demo` printed before this seam
    pod_mtu=flannel.FLANNEL.pod_mtu, pod_plan=flannel.pod_plan, node_info=flannel.node_info,
    node_plan=node_plan, wire=wire, unwire=unwire, dry_run=dry_run, node_view=flannel.node_view,
    node_annotations=node_annotations, network_name=network_name, mtu_path=mtu_path, host_veths=host_veths,
    unplanned_pods="pods are wired by the CNI plugins (cni.plugin: cni)",
)
