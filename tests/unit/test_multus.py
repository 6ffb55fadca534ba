"""Multus NetworkAttachmentDefinitions and the networks annotation: parsing, validation, host-local allocation."""
from __future__ import annotations

import json

import pytest

from emu import ipam, multus, topology
from emu.errors import ValidationError

CLUSTER = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {nodes: 2}
"""


def nad(config: str, name: str = "macvlan-conf") -> str:
    return f"""---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {{name: {name}}}
spec:
  config: '{config}'
"""


def pod(name: str, networks: str) -> str:
    return f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{k8s.v1.cni.cncf.io/networks: {json.dumps(networks)}}}
spec:
  containers: [{{name: c}}]
"""


GOOD = json.dumps({"type": "macvlan", "ipam": {"type": "host-local", "subnet": "192.168.1.0/24",
                                               "rangeStart": "192.168.1.200", "rangeEnd": "192.168.1.202",
                                               "gateway": "192.168.1.201"}})


def load(text: str):
    return topology.load("t.yaml", text=text)


def problems(text: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        load(text)
    return [str(p) for p in e.value.problems]


def test_nad_defaults():
    t = load(CLUSTER + nad(GOOD))
    (n,) = t.attachments
    assert (n.key, n.master, n.mode, n.mtu, str(n.range_start), str(n.range_end)) == \
        ("default/macvlan-conf", "eth0", "bridge", None, "192.168.1.200", "192.168.1.202")


@pytest.mark.parametrize("config, field, words", [
    ("{not json", "spec.config", "is not valid JSON"),
    ('{"type": "ipvlan", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}', "spec.config.type", "ipvlan"),
    ('{"type": "macvlan", "mode": "weird", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}',
     "spec.config.mode", "weird"),
    ('{"type": "macvlan", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.9",'
     ' "rangeEnd": "10.1.0.3"}}', "spec.config.ipam.rangeEnd", "before rangeStart"),
    ('{"type": "macvlan", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "rangeStart": "10.2.0.9"}}',
     "spec.config.ipam.rangeStart", "not a host address"),
])
def test_nad_problems_name_file_document_object_and_field(config, field, words):
    (msg,) = problems(CLUSTER + nad(config))
    assert msg.startswith("t.yaml (document 2): NetworkAttachmentDefinition")
    assert f": {field}: " in msg and words in msg


@pytest.mark.parametrize("value, expected", [
    ("a", [("default/a", "net1")]),
    ("ns2/a, b", [("ns2/a", "net1"), ("default/b", "net2")]),
    ('[{"name": "a", "namespace": "x", "interface": "mv0"}, {"name": "b"}]', [("x/a", "mv0"), ("default/b", "net2")]),
])
def test_annotation_forms(value, expected):
    assert [(r.nad, r.ifname) for r in multus.resolve("default", value)] == expected


def test_unknown_nad_is_a_problem():
    (msg,) = problems(CLUSTER + nad(GOOD) + pod("p", "nope"))
    assert "default/nope does not exist" in msg and "metadata.annotations[k8s.v1.cni.cncf.io/networks]" in msg


def test_host_local_round_robin_skips_the_gateway_and_exhaustion_names_pod_and_nad():
    t = load(CLUSTER + nad(GOOD) + pod("p1", "macvlan-conf") + pod("p2", "macvlan-conf"))
    a = ipam.allocate(t, ipam.Allocations.empty())
    assert [multus.attachments(a.secondary, k)[0].ip.compressed for k in ("default/p1", "default/p2")] == \
        ["192.168.1.200", "192.168.1.202"]
    again = ipam.Allocations.from_json(json.loads(json.dumps(a.to_json())))
    assert again.secondary == a.secondary
    t3 = load(CLUSTER + nad(GOOD) + pod("p1", "macvlan-conf") + pod("p2", "macvlan-conf") + pod("p3", "macvlan-conf"))
    with pytest.raises(ValidationError) as e:
        ipam.allocate(t3, again)
    (msg,) = [str(p) for p in e.value.problems]
    assert "Pod default/p3" in msg and "default/macvlan-conf is exhausted" in msg
