"""The EndpointSlice controller, as data: which pod addresses back each Service port, with the ready, serving and
terminating conditions the controller sets (pkg/controller/endpointslice: podToEndpoint), or the user's own
EndpointSlices/Endpoints for a selector-less Service."""
from __future__ import annotations

from dataclasses import dataclass

from emu.alloc.ipam import Allocations
from emu.addons.kubeproxy.model import Endpoint
from emu.model.types import Pod, Service, ServicePortSpec, Topology


@dataclass(frozen=True, slots=True)
class PortEndpoints:
    spec: ServicePortSpec
    endpoints: tuple[Endpoint, ...]


def _selects(selector: dict[str, str], pod: Pod) -> bool:
    return all(pod.labels.get(k) == v for k, v in selector.items())


def _target(spec: ServicePortSpec, pod: Pod) -> int | None:
    """targetPort by number (used as is), by name (the pod's containerPort of that name and protocol), or the
    Service port itself when unset.  A pod without the named port is left out of that port's endpoints."""
    t = spec.target_port
    if t is None:
        return spec.port
    if isinstance(t, int):
        return t
    return next((p.container_port for p in pod.ports if p.name == t and p.protocol is spec.protocol), None)


def _pod_endpoint(svc: Service, pod: Pod, port: int, alloc: Allocations) -> Endpoint:
    a = alloc.pods[pod.key]
    serving = pod.ready
    return Endpoint(a.ip, port, a.node, ready=svc.publish_not_ready or (serving and not pod.terminating),
                    serving=serving, terminating=pod.terminating, pod=pod.key)


def for_service(topo: Topology, alloc: Allocations, svc: Service) -> tuple[PortEndpoints, ...]:
    if svc.selector is None:
        return _explicit(topo, svc)
    pods = [p for p in topo.pods if p.namespace == svc.namespace and _selects(dict(svc.selector), p)]
    out = []
    for spec in svc.ports:
        eps = []
        for pod in pods:
            port = _target(spec, pod)
            if port is not None:
                eps.append(_pod_endpoint(svc, pod, port, alloc))
        out.append(PortEndpoints(spec, tuple(eps)))
    return tuple(out)


def _explicit(topo: Topology, svc: Service) -> tuple[PortEndpoints, ...]:
    slices = [s for s in topo.endpoint_slices if s.namespace == svc.namespace and s.service == svc.name]
    out = []
    for spec in svc.ports:
        eps = []
        for sl in slices:
            port = next((p.port for p in sl.ports if p.name == spec.name and p.protocol is spec.protocol), None)
            if port is None:
                continue
            for e in sl.endpoints:
                eps.append(Endpoint(e.address, port, e.node_name, e.ready, e.serving, e.terminating, e.target))
        out.append(PortEndpoints(spec, tuple(eps)))
    return tuple(out)


def all_services(topo: Topology, alloc: Allocations) -> dict[str, tuple[PortEndpoints, ...]]:
    return {s.key: for_service(topo, alloc, s) for s in topo.services}
