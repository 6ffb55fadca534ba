"""From the cluster model to each node's proxier input: the service ports kube-proxy would see (headless and
ExternalName Services have none) with their endpoints."""
from __future__ import annotations

from emu.alloc.endpoints import all_services
from emu.alloc.ipam import Allocations, node_ips
from emu.model.types import Service, Topology
from emu.alloc.services import ServiceAlloc
from emu.addons.kubeproxy.model import NodeProxyState, ServicePort

LAYER = "alloc"


def service_port(svc: Service, alloc: ServiceAlloc, index: int) -> ServicePort | None:
    spec = svc.ports[index]
    if alloc.cluster_ip is None:
        return None
    return ServicePort(
        svc.namespace, svc.name, spec.name, spec.protocol.value, alloc.cluster_ip, spec.port,
        node_port=alloc.node_ports.get(f"{spec.port}/{spec.protocol.value}", 0),
        external_ips=svc.external_ips,
        load_balancer_ips=(alloc.load_balancer_ip,) if alloc.load_balancer_ip else (),
        load_balancer_source_ranges=svc.load_balancer_source_ranges if alloc.load_balancer_ip else (),
        session_affinity=svc.session_affinity, affinity_timeout=svc.affinity_timeout,
        external_policy_local=svc.external_policy_local, internal_policy_local=svc.internal_policy_local,
        health_check_node_port=alloc.health_check_node_port or 0)


def node_states(topo: Topology, alloc: Allocations) -> dict[str, NodeProxyState]:
    c = topo.cluster
    eps = all_services(topo, alloc)
    ports = []
    for svc in topo.services:
        a = alloc.services.get(svc.key)
        if a is None or svc.type == "ExternalName":
            continue
        for i, pe in enumerate(eps[svc.key]):
            sp = service_port(svc, a, i)
            if sp is not None:
                ports.append((sp, pe.endpoints))
    ips = node_ips(c)
    return {n: NodeProxyState(n, (ips[n],), c.pod_cidr, (c.service_cidr,), tuple(ports), c.proxy.masquerade_all)
            for n in c.nodes}
