"""Kubernetes Events as the components record them (emu.cluster.events), and reading them back as `kubectl get events
--field-selector` does.

Where the expectations come from: emu's own.  Reasons and messages are the strings the components emit in their
sources (kube-scheduler "Successfully assigned <ns>/<pod> to <node>", the service controller's
"Ensuring load balancer", ingress-nginx's "Scheduled for sync", kube-proxy's "Starting"), written beside the code;
none was captured from a real cluster.
"""
from __future__ import annotations

import dataclasses

import pytest

from emu.cluster import lifecycle as clusters
from emu.cluster import events
from emu.apply import state
from emu.addons.kubeproxy import systempods
from tests.conftest import TOPOLOGIES


def seed_guide() -> clusters.Cluster:
    path = str(TOPOLOGIES / "seed-guide.yaml")
    topo, alloc, plan = clusters.plan_file(path)
    return clusters.Cluster(state.Record(topo.cluster.name, path), topo, alloc, plan)


def test_up_records_kube_proxy_start_scheduling_load_balancers_and_ingress_syncs():
    cl = seed_guide()
    evs = events.between(None, cl, now=1000.0)
    starting = [e for e in evs if e.reason == "Starting"]
    assert [(e.kind, e.name, e.source, e.message) for e in starting] == [
        ("Node", n.name, "kube-proxy", "") for n in cl.plan.nodes]
    assert all(e.event_namespace == "default" for e in starting)  # a Node's events live in default
    scheduled = {e.name: e.message for e in evs if e.reason == "Scheduled"}
    placed = {p.key: cl.allocations.pods[p.key].node for p in cl.topology.pods if p.node_name is None}
    placed.update({p.key: p.node for p in systempods.kube_proxy(cl)})  # the DaemonSet's pods meet the scheduler
    assert len(scheduled) == len(placed)
    for key, node in placed.items():
        ns, name = key.split("/")
        assert scheduled[name] == f"Successfully assigned {key} to {node}"
    lb = [(e.namespace, e.name, e.reason) for e in evs if e.source == "service-controller"]
    assert ("lb-demo", "my-service", "EnsuringLoadBalancer") in lb and ("lb-demo", "my-service",
                                                                         "EnsuredLoadBalancer") in lb
    assert not any(e.namespace == "default" and e.name == "my-service" for e in evs if e.kind == "Service")
    syncs = {e.name for e in evs if e.reason == "Sync"}
    assert syncs == {"minimal-ingress", "tls-example-ingress"}
    assert sum(e.reason == "RELOAD" for e in evs) == 1


def test_an_unchanged_cluster_records_nothing():
    cl = seed_guide()
    assert events.between(cl, cl) == []


def test_a_service_that_turns_into_a_load_balancer_without_a_pool_warns():
    cl = seed_guide()
    spec = dataclasses.replace(cl.topology.cluster, load_balancer_pool=None)
    topo = dataclasses.replace(cl.topology, cluster=spec)
    svc = next(s for s in topo.services if s.key == "default/my-service")
    lb = dataclasses.replace(svc, type="LoadBalancer")
    new = dataclasses.replace(cl, topology=dataclasses.replace(
        topo, services=tuple(lb if s is svc else s for s in topo.services)))
    evs = [(e.type, e.reason, e.message) for e in events.between(cl, new) if e.name == "my-service"
           and e.namespace == "default"]
    assert evs[0] == ("Normal", "Type", "ClusterIP -> LoadBalancer")
    assert evs[1] == ("Normal", "EnsuringLoadBalancer", "Ensuring load balancer")
    assert evs[2][0:2] == ("Warning", "SyncLoadBalancerFailed")
    assert evs[2][2].startswith("Error syncing load balancer: failed to ensure load balancer: ")


def ev(kind: str, name: str, reason: str = "Scheduled", t: float = 1.0, ns: str = "default") -> events.Event:
    return events.Event("Normal", reason, kind, ns, name, f"{reason} {name}", "default-scheduler", t)


@pytest.mark.parametrize("selector,want", [
    ("involvedObject.kind=Service", ["svc"]),
    ("involvedObject.kind==Pod,reason=Scheduled", ["pod"]),
    ("involvedObject.kind!=Pod", ["svc", "node-1"]),
    ("involvedObject.name=node-1", ["node-1"]),
    ("metadata.namespace=default,type=Normal", ["pod", "svc", "node-1"]),
    ("", ["pod", "svc", "node-1"]),
])
def test_field_selectors_as_the_api_server_filters_events(selector, want):
    evs = [ev("Pod", "pod"), ev("Service", "svc", "EnsuredLoadBalancer"), ev("Node", "node-1", "Starting", ns="")]
    assert [e.name for e in events.select(evs, events.parse_field_selector(selector))] == want


@pytest.mark.parametrize("selector,message", [
    ("spec.nodeName=x", "field label not supported: spec.nodeName"),
    ("involvedObject.kind", "can't understand 'involvedObject.kind'"),
])
def test_unsupported_field_selectors_are_refused(selector, message):
    with pytest.raises(events.SelectorError, match=message):
        events.parse_field_selector(selector)


def test_identical_events_are_one_object_with_a_count_and_names_carry_the_time():
    a, b, c = ev("Pod", "p", t=1.0), ev("Pod", "p", t=5.0), ev("Pod", "q", t=2.0)
    seen = events.aggregate([a, c, b])
    assert [(s.event.name, s.count, s.first, s.last) for s in seen] == [("p", 2, 1.0, 5.0), ("q", 1, 2.0, 2.0)]
    assert a.event_name == f"p.{int(1e9):x}" and a.object == "pod/p"


def test_record_and_load_round_trip_skipping_a_torn_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    rec = state.Record("c1", "t.yaml")
    events.record(rec, [ev("Pod", "p")])
    with open(tmp_path / "c1" / events.FILE, "a") as f:
        f.write('{"type": "Norm')
    assert events.load(rec) == [ev("Pod", "p")]
