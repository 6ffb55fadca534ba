"""Builds the plan of a whole cluster from the model and the IPAM allocations (pure: no kernel access)."""
from __future__ import annotations

import ipaddress

from emu.network import bridge as cnibridge
from emu.alloc import endpoints
from emu.network.flannel import nodes as flannel
from emu.plan import hostnet
from emu.model import names
from emu.plan import underlay
from emu.alloc.ipam import Allocations, node_ips, node_subnets
from emu.model.types import Topology
from emu.plan.objects import ClusterPlan, NodeInfo, Route


def build(topo: Topology, alloc: Allocations) -> ClusterPlan:
    """The whole desired state of a cluster."""
    c = topo.cluster
    subnets, ips = node_subnets(c), node_ips(c)
    pods_by_node: dict[str, int] = {n: 0 for n in c.nodes}
    pods = []
    for p in topo.pods:
        a = alloc.pods[p.key]
        if p.host_network:
            pods.append(hostnet.pod_plan(c, p, a))
            continue
        pods_by_node[a.node] += 1
        pods.append(cnibridge.pod_plan(c, p, a, subnets[a.node], flannel.mtu(c, a.node)))
    if c.cni.plugin == "cni":  # real plugins wire the pods (emu.network.cni): the nodes hold no cni0 until they run
        from emu.network.cni import nodes as cni_nodes
        node_plans = [cni_nodes.node_plan(c, n, subnets, ips) for n in c.nodes]
    else:
        node_plans = [flannel.node_plan(c, n, subnets, ips, has_pods=pods_by_node[n] > 0) for n in c.nodes]
    infos = tuple(NodeInfo(n, names.node_netns(c.name, n), ips[n], subnets[n],
                           names.vtep_mac(c.name, n) if c.cni.backend.value == "vxlan" else None,
                           flannel.subnet_env(c, subnets[n], n)) for n in c.nodes)
    infra = (underlay.underlay_plan(c), underlay.external_plan(c, lb_routes(topo, alloc)), *node_plans)
    return ClusterPlan(c.name, infra, tuple(pods), infos)


def lb_routes(topo: Topology, alloc: Allocations) -> tuple[Route, ...]:
    """What the external router learns for each LoadBalancer IP: every node announces it, or with
    externalTrafficPolicy Local only the nodes that have a ready local endpoint (MetalLB's BGP behaviour)."""
    ips = node_ips(topo.cluster)
    eps = endpoints.all_services(topo, alloc)
    out = []
    for svc in topo.services:
        a = alloc.services.get(svc.key)
        if a is None or a.load_balancer_ip is None:
            continue
        nodes = list(topo.cluster.nodes)
        if svc.external_policy_local:
            local = {e.node for pe in eps[svc.key] for e in pe.endpoints if e.ready}
            nodes = [n for n in nodes if n in local]
        if nodes:
            out.append(Route(ipaddress.IPv4Network(f"{a.load_balancer_ip}/32"), "eth0",
                             nexthops=tuple(ips[n] for n in nodes)))
    return tuple(out)
