"""Builds the plan of a whole cluster from the model and the IPAM allocations (pure: no kernel access)."""
from __future__ import annotations

from . import cnibridge, flannel, names, underlay
from .ipam import Allocations, node_ips, node_subnets
from .model import Topology
from .plan import ClusterPlan, NodeInfo


def build(topo: Topology, alloc: Allocations) -> ClusterPlan:
    """The whole desired state of a cluster."""
    c = topo.cluster
    subnets, ips = node_subnets(c), node_ips(c)
    pods_by_node: dict[str, int] = {n: 0 for n in c.nodes}
    pods = []
    for p in topo.pods:
        a = alloc.pods[p.key]
        pods_by_node[a.node] += 1
        pods.append(cnibridge.pod_plan(c, p, a, subnets[a.node], flannel.mtu(c)))
    node_plans = [flannel.node_plan(c, n, subnets, ips, has_pods=pods_by_node[n] > 0) for n in c.nodes]
    infos = tuple(NodeInfo(n, names.node_netns(c.name, n), ips[n], subnets[n],
                           names.vtep_mac(c.name, n) if c.cni.backend.value == "vxlan" else None,
                           flannel.subnet_env(c, subnets[n])) for n in c.nodes)
    infra = (underlay.underlay_plan(c), underlay.external_plan(c), *node_plans)
    return ClusterPlan(c.name, infra, tuple(pods), infos)
