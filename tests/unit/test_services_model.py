"""Services in the model: validation, allocation as the API server does it, EndpointSlice conditions, the
proxier's per-node input."""
from __future__ import annotations

import ipaddress

import pytest

from emu.alloc import endpoints, ipam
from emu.cluster import planner
from emu.errors import ValidationError
from emu.addons.kubeproxy import inputs
from emu.addons.kubeproxy.model import Endpoint, ServicePort, categorize
from tests.conftest import TOPOLOGIES

HEAD = ("apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: s}\n"
        "spec: {nodes: 2, loadBalancerPool: 192.168.240.0/29}\n")
POD = ("---\nkind: Pod\nmetadata: {name: NAME, labels: {app: APP}, annotations: ANN}\n"
       "spec: {nodeName: NODE, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n")


def pod(name, app="web", node="node-1", ann="{}"):
    return POD.replace("NAME", name).replace("APP", app).replace("NODE", node).replace("ANN", ann)


def svc(body: str) -> str:
    return "---\nkind: Service\n" + body + "\n"


def load(text):
    t = planner.load("t.yaml", text=HEAD + text)
    return t, ipam.allocate(t, ipam.Allocations.empty())


def problems(text):
    with pytest.raises(ValidationError) as e:
        load(text)
    return str(e.value)


@pytest.mark.parametrize("body, expected", [
    ("metadata: {name: a}\nspec: {ports: [{port: 80}, {port: 81}]}", "spec.ports[0].name: a Service with several"),
    ("metadata: {name: a}\nspec: {ports: [{port: 70000}]}", "spec.ports[0].port: must be a port number"),
    ("metadata: {name: a}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 80}]}",
     "spec.ports[0].nodePort: 80 is not in the node port range 30000-32767"),
    ("metadata: {name: a}\nspec: {ports: [{port: 80, nodePort: 30001}]}", "may not be set for type ClusterIP"),
    ("metadata: {name: a}\nspec: {clusterIP: 10.0.0.5, ports: [{port: 80}]}", "is not in the service CIDR"),
    ("metadata: {name: a}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}", "is reserved for kube-dns"),
    ("metadata: {name: a}\nspec: {externalTrafficPolicy: Local, ports: [{port: 80}]}",
     "Local is only valid for NodePort and LoadBalancer"),
    ("metadata: {name: a}\nspec: {type: Magic, ports: [{port: 80}]}", "spec.type: 'Magic' is not one of"),
    ("metadata: {name: a, namespace: nope}\nspec: {ports: [{port: 80}]}", "namespace 'nope' does not exist"),
])
def test_service_validation(body, expected):
    assert expected in problems(svc(body))


def test_duplicate_node_ports_and_cluster_ips_are_rejected():
    text = svc("metadata: {name: a}\nspec: {type: NodePort, clusterIP: 10.96.0.20, ports: [{port: 80, nodePort: 30001}]}")
    text += svc("metadata: {name: b}\nspec: {type: NodePort, clusterIP: 10.96.0.20, ports: [{port: 80, nodePort: 30001}]}")
    p = problems(text)
    assert "10.96.0.20 is already allocated to default/a" in p and "30001/TCP is already allocated to default/a" in p


def test_allocation_is_in_range_stable_and_honours_explicit_values():
    text = svc("metadata: {name: a}\nspec: {type: LoadBalancer, ports: [{port: 80}]}")
    text += svc("metadata: {name: b}\nspec: {clusterIP: 10.96.0.20, type: NodePort, ports: [{port: 80, nodePort: 30001}]}")
    text += svc("metadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}")
    t, a = load(text)
    sa, sb, sh = a.services["default/a"], a.services["default/b"], a.services["default/h"]
    assert sa.cluster_ip in t.cluster.service_cidr and sa.cluster_ip not in (
        ipaddress.IPv4Address("10.96.0.1"), ipaddress.IPv4Address("10.96.0.10"))
    assert 30000 <= sa.node_ports["80/TCP"] <= 32767 and str(sa.load_balancer_ip) == "192.168.240.1"
    assert str(sb.cluster_ip) == "10.96.0.20" and sb.node_ports == {"80/TCP": 30001}
    assert sh.cluster_ip is None
    assert ipam.allocate(t, a).services == a.services  # stable across syncs
    again = ipam.Allocations.from_json(a.to_json())
    assert again.services == a.services


def test_endpoint_conditions_follow_the_endpointslice_controller():
    text = pod("ready") + pod("notready", ann='{"emu.dev/ready": "false"}') + \
        pod("term", ann='{"emu.dev/terminating": "true"}') + pod("other", app="x")
    text += svc("metadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}")
    text += svc("metadata: {name: pub}\nspec: {publishNotReadyAddresses: true, selector: {app: web}, "
                "ports: [{port: 80, targetPort: 9999}]}")
    t, a = load(text)
    (web,) = endpoints.for_service(t, a, t.services[0])
    conds = {e.pod: (e.ready, e.serving, e.terminating, e.port) for e in web.endpoints}
    assert conds == {"default/ready": (True, True, False, 8080), "default/notready": (False, False, False, 8080),
                     "default/term": (False, True, True, 8080)}
    (pub,) = endpoints.for_service(t, a, t.services[1])
    assert {e.pod: e.ready for e in pub.endpoints} == {"default/ready": True, "default/notready": True,
                                                       "default/term": True}
    assert {e.port for e in pub.endpoints} == {9999}


def test_named_target_port_missing_on_a_pod_leaves_it_out():
    text = pod("a") + "---\nkind: Pod\nmetadata: {name: b, labels: {app: web}}\nspec: {containers: [{name: c}]}\n"
    text += svc("metadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}")
    t, a = load(text)
    (pe,) = endpoints.for_service(t, a, t.services[0])
    assert [e.pod for e in pe.endpoints] == ["default/a"]


def test_categorize_prefers_ready_then_serving_terminating_and_local():
    sp = ServicePort("ns", "s", "", "TCP", ipaddress.IPv4Address("10.96.0.5"), 80)
    ip = ipaddress.IPv4Address
    ready = Endpoint(ip("10.244.0.2"), 80, "node-1")
    term = Endpoint(ip("10.244.1.2"), 80, "node-2", ready=False, serving=True, terminating=True)
    assert categorize((ready, term), sp, "node-1").cluster == (ready,)
    assert categorize((term,), sp, "node-1").cluster == (term,)
    local = ServicePort("ns", "s", "", "TCP", ip("10.96.0.5"), 80, internal_policy_local=True)
    c = categorize((ready, term), local, "node-2")
    assert c.local == (term,) and c.all_reachable == (term,) and c.has_any


def test_proxier_input_and_load_balancer_routes_for_the_shipped_topology():
    t = planner.load(str(TOPOLOGIES / "services.yaml"))
    a = ipam.allocate(t, ipam.Allocations.empty())
    states = inputs.node_states(t, a)
    names = {sp.port_string for sp, _ in states["node-1"].services}
    assert "default/web:http" in names and "default/headless" not in {n.split(":")[0] for n in names}
    routes = {str(r.dst): r.nexthops for r in planner.lb_routes(t, a)}
    assert set(routes) == {"192.168.240.1/32", "192.168.240.2/32"}
    assert len(routes["192.168.240.1/32"]) == 3
