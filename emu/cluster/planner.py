"""Builds the plan of a whole cluster from the model and the IPAM allocations: the underlay and the external host
(emu.plan.underlay), then the cluster's pod network (emu.network.table, picked by `spec.cni.plugin`) plans each node
and each pod; hostNetwork pods share their node's namespace (emu.plan.hostnet).  Pure: no kernel access."""
from __future__ import annotations

import ipaddress

from emu.alloc import endpoints, ipam
from emu.alloc.ipam import Allocations, node_ips, node_subnets
from emu.addons.table import ADDONS
from emu.model import loader
from emu.model.kinds import Plugins
from emu.model.documents import Document
from emu.model.types import ClusterSpec, Topology
from emu.network import table
from emu.plan import hostnet, underlay
from emu.plan.objects import ClusterPlan, Route


def build(topo: Topology, alloc: Allocations) -> ClusterPlan:
    """The whole desired state of a cluster."""
    c = topo.cluster
    net = table.for_cluster(c)
    subnets, ips = node_subnets(c), node_ips(c)
    pods_by_node: dict[str, int] = {n: 0 for n in c.nodes}
    pods = []
    for p in topo.pods:
        a = alloc.pods[p.key]
        if p.host_network:
            pods.append(hostnet.pod_plan(c, p, a))
            continue
        pods_by_node[a.node] += 1
        pods.append(net.pod_plan(c, p, a, subnets[a.node]))
    node_plans = [net.node_plan(c, n, subnets, ips, pods_by_node[n] > 0) for n in c.nodes]
    infos = tuple(net.node_info(c, n, subnets, ips) for n in c.nodes)
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


# What the seams plug into the model: each network's spec.cni parser, each addon's document source (in table order).
PLUGINS = Plugins(tuple(n.spec for n in table.NETWORKS), tuple(a.documents for a in ADDONS if a.documents))


def load(path: str, name: str | None = None, text: str | None = None) -> Topology:
    """A topology file read and validated with the cluster's networks and addons (emu.model.loader.load)."""
    return loader.load(path, name, text, plugins=PLUGINS)


def load_documents(path: str, docs: list[Document], name: str | None = None) -> Topology:
    return loader.load_documents(path, docs, name, plugins=PLUGINS)


def cluster_spec(doc: Document, name: str | None = None) -> ClusterSpec:
    return loader.cluster_spec(doc, name, PLUGINS)


def build_topology(path: str, cluster: ClusterSpec, docs: list[Document]) -> Topology:
    """The manifests `docs` validated for `cluster` (`emu apply` builds the merged set this way)."""
    return loader.build(path, cluster, docs, plugins=PLUGINS)


def added_documents(path: str, docs: list[Document], cluster: ClusterSpec) -> list[Document]:
    """The objects the addons add to the manifests (CoreDNS's, ingress-nginx's), as the loader adds them."""
    return loader.added_documents(path, docs, cluster, plugins=PLUGINS)


def plan_documents(path: str, name: str | None) -> tuple[Topology, Allocations, ClusterPlan, list[Document]]:
    """Model, IPAM and plan of a topology file, and the documents `up` records: pure, no root needed."""
    docs = loader.read_documents(path)
    topo = load_documents(path, docs, name)
    alloc = ipam.allocate(topo, Allocations.empty())
    return topo, alloc, build(topo, alloc), docs


def plan_file(path: str, name: str | None = None) -> tuple[Topology, Allocations, ClusterPlan]:
    """Model, IPAM and plan for a topology file (`emu up --dry-run`)."""
    topo, alloc, plan, _ = plan_documents(path, name)
    return topo, alloc, plan
