"""The pure policy engine on its own (no root): semantics the upstream cases leave out, and its explanations."""
from __future__ import annotations

import pytest

from emu.cluster import planner
from emu.alloc import ipam
from emu.model import loader as topology
from emu.model.types import Protocol
from emu.addons.netpol.engine import Engine
from emu.addons.netpol.model import LabelSelector, Operator, Requirement

TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP
BASE = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {nodes: 2}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
"""


def pod(ns: str, name: str, labels: str, node: str, ports: str = "[{name: http, containerPort: 80}]") -> str:
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\n"
            f"spec: {{nodeName: {node}, containers: [{{name: c, ports: {ports}}}]}}\n")


PODS = (pod("prod", "web", "{app: web}", "node-1", "[{name: http, containerPort: 8080}, {name: dns, containerPort: 53, "
                                                   "protocol: UDP}]")
        + pod("prod", "db", "{app: db}", "node-2", "[{name: http, containerPort: 80}, {containerPort: 5432}]")
        + pod("dev", "tool", "{app: tool}", "node-1") + pod("dev", "web", "{app: web}", "node-2"))


def policy(ns: str, name: str, spec: str) -> str:
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n")


def engine(*policies: str) -> Engine:
    topo = planner.load("t.yaml", text=BASE + PODS + "".join(policies))
    return Engine.for_cluster(topo, ipam.allocate(topo, ipam.Allocations.empty()))


def test_no_policy_means_every_pod_is_open():
    e = engine()
    v = e.check(e.endpoint("dev/tool"), e.endpoint("prod/db"), 5432, TCP)
    assert v.allowed and v.egress.policies == () and "no policy selects it" in v.ingress.reason


def test_a_pod_cannot_block_itself_and_its_node_always_reaches_it():
    e = engine(policy("prod", "deny", "{podSelector: {}, policyTypes: [Ingress, Egress]}"))
    assert e.allowed("prod/web", "prod/web", 8080, TCP)
    assert e.allowed("node/node-1", "prod/web", 8080, TCP)  # the pod's own node
    assert not e.allowed("node/node-2", "prod/web", 8080, TCP)  # another node is just an address
    assert e.allowed("prod/web", "node/node-1", 10250, TCP)  # to its own node
    assert not e.allowed("prod/web", "external", 443, TCP)
    cni0 = str(ipam.gateway(ipam.node_subnets(e.topology.cluster)["node-1"]))
    assert e.endpoint(cni0).node == "node-1" and e.allowed(cni0, "prod/web", 8080, TCP)


def test_named_ports_resolve_per_destination_pod():
    e = engine(policy("prod", "http-only", "{podSelector: {}, ingress: [{ports: [{port: http}]}]}"))
    assert e.allowed("dev/tool", "prod/web", 8080, TCP) and not e.allowed("dev/tool", "prod/web", 80, TCP)
    assert e.allowed("dev/tool", "prod/db", 80, TCP) and not e.allowed("dev/tool", "prod/db", 8080, TCP)
    assert not e.allowed("dev/tool", "prod/web", 8080, UDP)  # the name is TCP's (the rule's protocol is TCP)


def test_named_egress_ports_resolve_against_the_destination_in_any_namespace():
    e = engine(policy("dev", "egress-http",
                      "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: http}]}]}"))
    assert e.allowed("dev/tool", "prod/web", 8080, TCP) and e.allowed("dev/tool", "prod/db", 80, TCP)
    assert not e.allowed("dev/tool", "prod/db", 8080, TCP)
    assert not e.allowed("dev/tool", "external", 80, TCP)  # an address names no port


def test_end_port_protocols_and_sctp():
    e = engine(policy("prod", "ranges", "{podSelector: {matchLabels: {app: db}}, ingress: [{ports: ["
                      "{port: 5000, endPort: 5500}, {protocol: UDP}, {port: 9, protocol: SCTP}]}]}"))
    assert e.allowed("dev/tool", "prod/db", 5432, TCP) and not e.allowed("dev/tool", "prod/db", 5501, TCP)
    assert e.allowed("dev/tool", "prod/db", 1, UDP)
    assert e.allowed("dev/tool", "prod/db", 9, SCTP) and not e.allowed("dev/tool", "prod/db", 9, TCP)


def test_ip_block_with_except_applies_to_pods_and_outside_addresses():
    ip = {k: str(a.ip) for k, a in ipam.allocate(engine().topology, ipam.Allocations.empty()).pods.items()}
    e = engine(policy("prod", "cidr", f"{{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{from: [{{ipBlock: "
                                      f"{{cidr: 10.244.0.0/16, except: [{ip['dev/tool']}/32]}}}}]}}]}}"))
    assert e.allowed("prod/web", "prod/db", 80, TCP)
    assert not e.allowed("dev/tool", "prod/db", 80, TCP)
    assert e.allowed("10.244.9.9", "prod/db", 80, TCP) and not e.allowed("external", "prod/db", 80, TCP)


def test_policies_add_up_and_explain_every_rule():
    e = engine(policy("prod", "a-from-web", "{podSelector: {matchLabels: {app: db}}, ingress: [{from: ["
                      "{podSelector: {matchLabels: {app: web}}}]}]}"),
               policy("prod", "b-from-prod-ns", "{podSelector: {matchLabels: {app: db}}, ingress: [{from: ["
                      "{namespaceSelector: {matchLabels: {env: prod}}}], ports: [{port: 5432}]}]}"))
    v = e.check(e.endpoint("dev/web"), e.endpoint("prod/db"), 5432, TCP)
    assert not v.allowed  # dev/web matches app=web but lives in dev: a bare podSelector means the policy's namespace
    assert v.ingress.policies == ("prod/a-from-web", "prod/b-from-prod-ns")
    assert "prod/a-from-web ingress[0]: dev/web is not among its `from` peers (pods app=web in namespace prod)" \
        in v.ingress.misses
    assert v.reason.startswith("denied: ingress of prod/db is isolated by prod/a-from-web, prod/b-from-prod-ns")
    v = e.check(e.endpoint("prod/web"), e.endpoint("prod/db"), 5432, TCP)
    assert v.allowed and [str(m) for m in v.ingress.matches] == [
        "prod/a-from-web ingress[0]: from pods app=web in namespace prod, port every port",
        "prod/b-from-prod-ns ingress[0]: from all pods in namespaces env=prod, port TCP/5432"]
    v = e.check(e.endpoint("prod/web"), e.endpoint("prod/db"), 80, UDP)
    assert v.allowed  # a-from-web allows every port and protocol


def test_deny_policy_explains_that_it_has_no_rules():
    e = engine(policy("prod", "deny-egress", "{podSelector: {}, policyTypes: [Egress]}"))
    v = e.check(e.endpoint("prod/web"), e.endpoint("dev/tool"), 80, TCP)
    assert not v.allowed and v.egress.misses == ("prod/deny-egress has no egress rules: it allows no egress traffic",)
    assert v.ingress.allowed


@pytest.mark.parametrize("req,labels,want", [
    (Requirement("a", Operator.IN, ("1", "2")), {"a": "2"}, True),
    (Requirement("a", Operator.IN, ("1",)), {}, False),
    (Requirement("a", Operator.NOT_IN, ("1",)), {}, True),  # NotIn matches a missing key
    (Requirement("a", Operator.NOT_IN, ("1",)), {"a": "1"}, False),
    (Requirement("a", Operator.EXISTS), {"a": ""}, True),
    (Requirement("a", Operator.DOES_NOT_EXIST), {"a": "x"}, False),
])
def test_label_selector_requirements(req, labels, want):
    assert LabelSelector((), (req,)).matches(labels) is want


def test_selector_strings_read_like_kubectl():
    s = LabelSelector((("app", "db"),), (Requirement("tier", Operator.NOT_IN, ("b", "a")),
                                         Requirement("x", Operator.DOES_NOT_EXIST)))
    assert str(s) == "app=db,tier notin (a,b),!x" and str(LabelSelector()) == "{} (all)"
