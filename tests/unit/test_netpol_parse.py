"""NetworkPolicy manifests: defaulting as the API server does it, and every validation problem reported at once,
naming the file, the document, the object and the field."""
from __future__ import annotations

import ipaddress

import pytest

from emu.cluster import planner
from emu.errors import ValidationError
from emu.model.types import Protocol
from emu.addons.netpol.model import Direction, Operator

CLUSTER = "apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\n"
NS_X = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {team: blue}}\n"


def np(spec: str, name: str = "p", ns: str = "x", api: str = "networking.k8s.io/v1") -> str:
    return f"---\napiVersion: {api}\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"


def load(*docs: str):
    return planner.load("t.yaml", text=CLUSTER + NS_X + "".join(docs))


def problems(*docs: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        load(*docs)
    return [str(p) for p in e.value.problems]


def test_policy_types_default_to_ingress_and_egress_when_there_are_egress_rules():
    t = load(np("{podSelector: {}}", "a"), np("{podSelector: {}, egress: [{}]}", "b"),
             np("{podSelector: {}, egress: []}", "c"), np("{podSelector: {}, policyTypes: [Egress]}", "d"))
    types = {p.name: p.policy_types for p in t.network_policies}
    assert types == {"a": (Direction.INGRESS,), "b": (Direction.INGRESS, Direction.EGRESS),
                     "c": (Direction.INGRESS,), "d": (Direction.EGRESS,)}


def test_a_full_policy_is_parsed_with_defaults():
    t = load(np("""
      podSelector: {matchLabels: {app: db}, matchExpressions: [{key: tier, operator: NotIn, values: [a, b]}]}
      ingress:
      - from:
        - podSelector: {matchLabels: {role: api}}
          namespaceSelector: {matchLabels: {team: blue}}
        - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
        ports: [{port: 5432}, {port: metrics, protocol: UDP}, {port: 8000, endPort: 8080, protocol: SCTP}]
    """.replace("\n", "\n  ")))
    (p,) = t.network_policies
    assert p.key == "x/p" and p.document == 3
    assert p.pod_selector.match_labels == (("app", "db"),)
    assert p.pod_selector.match_expressions[0].operator is Operator.NOT_IN
    (rule,) = p.ingress
    assert rule.peers[0].pod_selector is not None and rule.peers[0].namespace_selector is not None
    assert rule.peers[1].ip_block.cidr == ipaddress.IPv4Network("10.0.0.0/8")
    assert rule.peers[1].ip_block.except_ == (ipaddress.IPv4Network("10.1.0.0/16"),)
    assert [(pp.protocol, pp.port, pp.end_port) for pp in rule.ports] == [
        (Protocol.TCP, 5432, None), (Protocol.UDP, "metrics", None), (Protocol.SCTP, 8000, 8080)]


def test_absent_and_empty_selectors_differ():
    t = load(np("{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"))
    peer = t.network_policies[0].ingress[0].peers[0]
    assert peer.pod_selector is None and peer.namespace_selector is not None and peer.namespace_selector.empty


def test_every_problem_names_file_document_object_and_field():
    got = problems(np("""
      podSelector: {matchExpressions: [{key: a, operator: In}]}
      policyTypes: [Ingress, Sideways]
      ingress:
      - from: [{}, {ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}},
               {ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]
        ports: [{port: 0}, {port: http, endPort: 90}, {port: 80, endPort: 79}, {protocol: ICMP}]
      ingres: []
    """.replace("\n", "\n  ")))
    where = "t.yaml (document 3): NetworkPolicy x/p: "
    assert where + 'spec.ingres: unknown field "spec.ingres"' in got
    assert where + "spec.podSelector.matchExpressions[0].values: must be specified when `operator` is In" in got
    assert where + "spec.policyTypes[1]: 'Sideways' is not one of Ingress, Egress" in got
    assert where + "spec.ingress[0].from[0]: must specify a peer (podSelector, namespaceSelector or ipBlock)" in got
    assert any(p.startswith(where + "spec.ingress[0].from[1]: may not specify more than 1 peer type") for p in got)
    assert where + ("spec.ingress[0].from[2].ipBlock.except[0]: must be a strict subset of `cidr` 10.0.0.0/16, "
                    "got 10.1.0.0/24") in got
    assert any(p.startswith(where + "spec.ingress[0].ports[0].port: 0 is neither") for p in got)
    assert where + "spec.ingress[0].ports[1].endPort: may only be set with a numeric `port`" in got
    assert where + "spec.ingress[0].ports[2].endPort: must be a port number from `port` (80) to 65535, got 79" in got
    assert where + "spec.ingress[0].ports[3].protocol: 'ICMP' is not one of TCP, UDP, SCTP" in got


def test_api_version_namespace_and_duplicates():
    got = problems(np("{podSelector: {}}", api="extensions/v1beta1"), np("{podSelector: {}}", ns="nope"),
                   np("{podSelector: {}}", "dup"), np("{podSelector: {}}", "dup"))
    assert "t.yaml (document 3): NetworkPolicy x/p: apiVersion: must be networking.k8s.io/v1, got " \
           "'extensions/v1beta1'" in got
    assert "t.yaml (document 4): NetworkPolicy nope/p: metadata.namespace: namespace 'nope' does not exist" in got
    assert "t.yaml (document 6): NetworkPolicy x/dup: metadata.name: duplicate NetworkPolicy x/dup " \
           "(first defined in document 5)" in got


def test_label_keys_values_and_ipv6_are_checked():
    got = problems(np("{podSelector: {matchLabels: {'bad key!': v, ok: 'bad value!'}}, "
                      "ingress: [{from: [{ipBlock: {cidr: 'fd00::/64'}}]}]}"))
    assert any("spec.podSelector.matchLabels.bad key!: 'bad key!' is not a valid label key" in p for p in got)
    assert any("spec.podSelector.matchLabels.ok: 'bad value!' is not a valid label value" in p for p in got)
    assert any("spec.ingress[0].from[0].ipBlock.cidr: fd00::/64 is IPv6" in p for p in got)


def test_the_default_namespace_and_numeric_string_ports():
    t = load("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n"
             "spec: {podSelector: {}, ingress: [{ports: [{port: '8080'}]}]}\n")
    (p,) = t.network_policies
    assert p.namespace == "default" and p.ingress[0].ports[0].port == 8080
