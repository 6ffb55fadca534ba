"""Kubernetes Events as data: what the real components would have recorded for the difference between two states of
a cluster (`between`), kept as JSON lines in <record>/events.jsonl (`record`, `load`).

Only what the components really emit, with their reasons, messages and source components:

* default-scheduler (pkg/scheduler/schedule_one.go, finishBinding): `Scheduled` "Successfully assigned NS/POD to
  NODE", for pods it places (the kube-proxy DaemonSet's too); a pod with spec.nodeName never meets the scheduler
  and gets none.
* kube-proxy (cmd/kube-proxy/app/server.go, birthCry): `Starting` on its Node, empty message, once per node.
* service-controller (k8s.io/cloud-provider controllers/service/controller.go): for Services that want a load
  balancer, `EnsuringLoadBalancer` "Ensuring load balancer" then `EnsuredLoadBalancer` "Ensured load balancer", or
  the Warning `SyncLoadBalancerFailed` "Error syncing load balancer: failed to ensure load balancer: ..." when no
  address could be had (the pool is full, or there is none: emu's pool is the cloud's load balancer here; a real
  cluster without any load-balancer implementation runs no service controller and records nothing); `Type`
  "OLD -> NEW", `ExternalTrafficPolicy`, `LoadBalancerSourceRanges`, `ExternalIP` on the updates it reacts to;
  `DeletingLoadBalancer` / `DeletedLoadBalancer` when a Service stops wanting one.
* nginx-ingress-controller (ingress-nginx internal/ingress/controller/store/store.go and controller.go): `Sync`
  "Scheduled for sync" for each Ingress of its class that is added or changed, and `RELOAD` "NGINX reload triggered
  due to a change in configuration" on the controller pod when its configuration changed.

The scheduler and the service controller are the core's (here); kube-proxy's and ingress-nginx's come from their
addons' `events` hooks (emu.addons.table, in order), called first.

Not events upstream, so not here: the EndpointSlice controller records only failures (FailedToUpdateEndpointSlices);
kube-router records none; ingress-nginx *logs* (klog W lines) a missing Service or Secret (`emu logs` shows those).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from emu.addons.table import ADDONS

if TYPE_CHECKING:
    from emu.cluster.lifecycle import Cluster
    from emu.model.types import Service
    from emu.apply.state import Record
    from emu.alloc.services import ServiceAlloc

FILE = "events.jsonl"
SCHEDULER, SERVICE_CONTROLLER = "default-scheduler", "service-controller"


@dataclass(frozen=True, slots=True)
class Event:
    """One core/v1 Event: `namespace` is the involved object's ("" for a Node; the Event itself then lives in
    `default`, as the recorder puts it)."""

    type: str  # Normal | Warning
    reason: str
    kind: str  # involvedObject.kind
    namespace: str
    name: str
    message: str
    source: str  # source.component
    timestamp: float

    @property
    def object(self) -> str:
        """kubectl's OBJECT column: lower-case kind / name."""
        return f"{self.kind.lower()}/{self.name}"

    @property
    def event_namespace(self) -> str:
        return self.namespace or "default"

    @property
    def event_name(self) -> str:
        """metadata.name as the recorder makes it: `<object name>.<creation time in ns, hex>`."""
        return f"{self.name}.{int(self.timestamp * 1e9):x}"


def between(old: Cluster | None, new: Cluster, now: float | None = None) -> list[Event]:
    """The events of one lifecycle step (`emu up`: old is None; apply, delete, mark: the states before and after)."""
    t = time.time() if now is None else now
    out: list[Event] = []

    def ev(type_: str, reason: str, kind: str, ns: str, name: str, message: str, source: str) -> None:
        out.append(Event(type_, reason, kind, ns, name, message, source, t))

    for addon in ADDONS:  # kube-proxy: its DaemonSet's pods and its start; ingress-nginx: syncs and reloads
        addon.events(old, new, ev)
    before = {p.key for p in old.topology.pods} if old else set()
    for p in new.topology.pods:
        a = new.allocations.pods.get(p.key)
        if p.key not in before and p.node_name is None and a is not None:
            ev("Normal", "Scheduled", "Pod", p.namespace, p.name,
               f"Successfully assigned {p.namespace}/{p.name} to {a.node}", SCHEDULER)
    _services(old, new, ev)
    return out


def _wants_lb(svc: Service | None) -> bool:
    return svc is not None and svc.type == "LoadBalancer"


def _go_list(items: tuple[Any, ...]) -> str:
    return "[" + " ".join(str(i) for i in items) + "]"  # Go's %v of a []string


def _lb_fields(svc: Service, a: ServiceAlloc | None) -> tuple[Any, ...]:
    """What the service controller's needsUpdate compares (ports with their nodePorts, affinity, the requested
    IP, externalIPs, the traffic policy, the health check port, the source ranges)."""
    ports = tuple((p.name, p.protocol, p.port, a.node_ports.get(f"{p.port}/{p.protocol.value}") if a else None,
                   p.target_port) for p in svc.ports)
    return (ports, svc.session_affinity, svc.affinity_timeout, svc.load_balancer_ip, svc.external_ips,
            svc.external_policy_local, a.health_check_node_port if a else None, svc.load_balancer_source_ranges)


def _services(old: Cluster | None, new: Cluster, ev: Any) -> None:
    prev = {s.key: s for s in old.topology.services} if old else {}
    for svc in new.topology.services:
        o = prev.pop(svc.key, None)
        a = new.allocations.services.get(svc.key)
        oa = old.allocations.services.get(svc.key) if old is not None and o is not None else None
        lb, had = (a.load_balancer_ip if a else None), (oa.load_balancer_ip if oa else None)

        def sc(type_: str, reason: str, message: str) -> None:
            ev(type_, reason, "Service", svc.namespace, svc.name, message, SERVICE_CONTROLLER)

        if not _wants_lb(svc):
            if o is not None and _wants_lb(o):  # needsUpdate: the type changed away, then the cleanup
                sc("Normal", "Type", f"{o.type} -> {svc.type}")
                if had:
                    sc("Normal", "DeletingLoadBalancer", "Deleting load balancer")
                sc("Normal", "DeletedLoadBalancer", "Deleted load balancer")
            continue
        if o is not None and not _wants_lb(o):
            sc("Normal", "Type", f"{o.type} -> {svc.type}")
        elif o is not None:
            if _lb_fields(o, oa) == _lb_fields(svc, a) and (had is not None or lb is None):
                continue  # nothing it reacts to (a pending one retries with the same Warning)
            if o.load_balancer_source_ranges != svc.load_balancer_source_ranges:
                sc("Normal", "LoadBalancerSourceRanges", f"{_go_list(o.load_balancer_source_ranges)} -> "
                                                         f"{_go_list(svc.load_balancer_source_ranges)}")
            if len(o.external_ips) != len(svc.external_ips):
                sc("Normal", "ExternalIP", f"Count: {len(o.external_ips)} -> {len(svc.external_ips)}")
            if o.external_policy_local != svc.external_policy_local:
                sc("Normal", "ExternalTrafficPolicy",
                   f"{_policy(o.external_policy_local)} -> {_policy(svc.external_policy_local)}")
        sc("Normal", "EnsuringLoadBalancer", "Ensuring load balancer")
        if lb is not None:
            sc("Normal", "EnsuredLoadBalancer", "Ensured load balancer")
            continue
        pool = new.topology.cluster.load_balancer_pool
        why = (f"no free address in loadBalancerPool {pool}" if pool is not None else
               "the cluster has no loadBalancerPool (spec.loadBalancerPool) to take an address from")
        sc("Warning", "SyncLoadBalancerFailed", f"Error syncing load balancer: failed to ensure load balancer: {why}")
    for o in prev.values():  # deleted Services: the finalizer path cleans their load balancer up
        if _wants_lb(o):
            oa = old.allocations.services.get(o.key) if old is not None else None
            if oa is not None and oa.load_balancer_ip is not None:
                ev("Normal", "DeletingLoadBalancer", "Service", o.namespace, o.name, "Deleting load balancer",
                   SERVICE_CONTROLLER)
            ev("Normal", "DeletedLoadBalancer", "Service", o.namespace, o.name, "Deleted load balancer",
               SERVICE_CONTROLLER)


def _policy(local: bool) -> str:
    return "Local" if local else "Cluster"


# --- reading them back as `kubectl get events` does ------------------------------------------------------------------

# The field labels the API server accepts for events (pkg/registry/core/event/strategy.go ToSelectableFields), each
# read from one Event.
FIELDS = {
    "involvedObject.kind": lambda e: e.kind,
    "involvedObject.namespace": lambda e: e.namespace,
    "involvedObject.name": lambda e: e.name,
    "involvedObject.apiVersion": lambda e: _API_VERSIONS.get(e.kind, "v1"),
    "involvedObject.fieldPath": lambda e: "",
    "involvedObject.uid": lambda e: "",
    "involvedObject.resourceVersion": lambda e: "",
    "metadata.name": lambda e: e.event_name,
    "metadata.namespace": lambda e: e.event_namespace,
    "reason": lambda e: e.reason,
    "reportingComponent": lambda e: "",  # core/v1 events from a legacy recorder leave it empty
    "source": lambda e: e.source,
    "type": lambda e: e.type,
}
_API_VERSIONS = {"Ingress": "networking.k8s.io/v1", "Deployment": "apps/v1", "ReplicaSet": "apps/v1"}


class SelectorError(ValueError):
    """A field selector the API server would refuse (kubectl prints it as a BadRequest)."""


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    """`a=b,c!=d` as fields.ParseSelector reads it: (field, wants_equal, value) terms, ANDed."""
    terms = []
    for part in (p for p in text.split(",") if p.strip()):
        for op, equal in (("!=", False), ("==", True), ("=", True)):
            if op in part:
                field_, value = part.split(op, 1)
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field_ = field_.strip()
        if field_ not in FIELDS:
            raise SelectorError(f'Unable to find "/v1, Resource=events" that match label selector "", field '
                                f'selector "{text}": field label not supported: {field_}')
        terms.append((field_, equal, value.strip()))
    return terms


def select(events: list[Event], terms: list[tuple[str, bool, str]]) -> list[Event]:
    return [e for e in events if all((FIELDS[f](e) == v) == eq for f, eq, v in terms)]


@dataclass(frozen=True, slots=True)
class Seen:
    """One Event object as the API server holds it after the recorder's correlator: identical events (same source,
    object, type, reason and message) are one object whose count grows (EventAggregator/eventLogger)."""

    event: Event
    count: int
    first: float
    last: float


def aggregate(events: list[Event]) -> list[Seen]:
    """Oldest first, by first occurrence."""
    by: dict[tuple[str, ...], list[Event]] = {}
    for e in events:
        by.setdefault((e.source, e.kind, e.namespace, e.name, e.type, e.reason, e.message), []).append(e)
    out = [Seen(es[0], len(es), es[0].timestamp, es[-1].timestamp) for es in by.values()]
    return sorted(out, key=lambda s: s.first)


def record(rec: Record, events: list[Event]) -> None:
    """Append to <record>/events.jsonl (one JSON object a line)."""
    if not events:
        return
    os.makedirs(rec.dir, exist_ok=True)
    with open(os.path.join(rec.dir, FILE), "a") as f:
        f.write("".join(json.dumps(asdict(e)) + "\n" for e in events))


def load(rec: Record) -> list[Event]:
    """Every recorded event, oldest first (a torn last line is skipped)."""
    out = []
    try:
        with open(os.path.join(rec.dir, FILE)) as f:
            for line in f:
                try:
                    out.append(Event(**json.loads(line)))
                except (ValueError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return out
