"""Multus NetworkAttachmentDefinitions and the networks annotation: parsing, validation, host-local and static
allocation, and the network selection elements' ips and mac (runtimeConfig, honoured by capability)."""
from __future__ import annotations

import json

import pytest

from emu.cluster import planner
from emu.alloc import ipam
from emu.addons.multus import allocate as multus_alloc, nad as multus_nad
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
    return planner.load("t.yaml", text=text)


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
    assert [(r.nad, r.ifname) for r in multus_nad.resolve("default", value)] == expected


def test_unknown_nad_is_a_problem():
    (msg,) = problems(CLUSTER + nad(GOOD) + pod("p", "nope"))
    assert "default/nope does not exist" in msg and "metadata.annotations[k8s.v1.cni.cncf.io/networks]" in msg


def test_host_local_round_robin_skips_the_gateway_and_exhaustion_names_pod_and_nad():
    t = load(CLUSTER + nad(GOOD) + pod("p1", "macvlan-conf") + pod("p2", "macvlan-conf"))
    a = ipam.allocate(t, ipam.Allocations.empty())
    assert [multus_alloc.attachments(a.secondary, k)[0].ip.compressed for k in ("default/p1", "default/p2")] == \
        ["192.168.1.200", "192.168.1.202"]
    again = ipam.Allocations.from_json(json.loads(json.dumps(a.to_json())))
    assert again.secondary == a.secondary
    t3 = load(CLUSTER + nad(GOOD) + pod("p1", "macvlan-conf") + pod("p2", "macvlan-conf") + pod("p3", "macvlan-conf"))
    with pytest.raises(ValidationError) as e:
        ipam.allocate(t3, again)
    (msg,) = [str(p) for p in e.value.problems]
    assert "Pod default/p3" in msg and "default/macvlan-conf is exhausted" in msg


# --- network selection elements: ips and mac (runtimeConfig for the delegate) ---------------------------------------

CNI_CLUSTER = CLUSTER.replace("spec: {nodes: 2}", "spec: {nodes: 2, cni: {plugin: cni}}")


def nad_caps(ipam: dict, caps: dict | None = None, name: str = "mv") -> str:
    conf = {"cniVersion": "0.3.1", "type": "macvlan", "master": "eth0", "ipam": ipam}
    if caps is not None:
        conf["capabilities"] = caps
    return nad(json.dumps(conf), name)


HOST_LOCAL = {"type": "host-local", "subnet": "192.168.1.0/24", "rangeStart": "192.168.1.200",
              "rangeEnd": "192.168.1.216"}
STATIC = {"type": "static", "routes": [{"dst": "10.10.0.0/16"}]}


def refused(text: str) -> list[str]:
    """Problems `emu up` reports before anything is made: the topology's, then the allocation's."""
    with pytest.raises(ValidationError) as e:
        ipam.allocate(load(text), ipam.Allocations.empty())
    return [str(p) for p in e.value.problems]


def element(**kw) -> str:
    return json.dumps([{"name": "mv", **kw}])


def secondary(text: str, key: str = "default/p") -> list[multus_alloc.Attachment]:
    t = load(text)
    return multus_alloc.attachments(ipam.allocate(t, ipam.Allocations.empty()).secondary, key)


def test_selection_element_carries_ips_and_mac_and_interface():
    (r,) = multus_nad.resolve("default", '[{"name": "macvlan-conf", "namespace": "x", "interface": "net1", '
                                     '"ips": ["192.168.1.205/24"], "mac": "c2:b0:57:49:47:f1"}]')
    assert (r.nad, r.ifname, r.ips, r.mac) == ("x/macvlan-conf", "net1", ("192.168.1.205/24",), "c2:b0:57:49:47:f1")
    # Multus reads the JSON form whenever the value holds any of [ { " (strings.ContainsAny), not only a leading [
    assert multus_nad.parse_requests("default", '{"name": "a"}')[1] == [
        ("", 'the JSON form must be a list of network selection elements ([{"name": ..., "interface": ..., '
             '"ips": [...], "mac": ...}])')]


@pytest.mark.parametrize("value, where, words", [
    ('[{"name": "mv", "ips": "192.168.1.5/24"}]', "[0].ips", "must be a list of addresses"),
    ('[{"name": "mv"}, {"name": "mv", "interface": "n2", "ips": ["192.168.1.5/24", "192.168.1.300"]}]',
     "[1].ips[1]", "'192.168.1.300' is not an IP address or CIDR"),
    ('[{"name": "mv", "mac": "c2:b0:57:49:47"}]', "[0].mac", "'c2:b0:57:49:47' is not a MAC address"),
    ('[{"name": "mv", "mac": 5}]', "[0].mac", "5 is not a MAC address"),
    ('[{"namespace": "default"}]', "[0].name", "must be the NetworkAttachmentDefinition's name"),
    ('[{"name": "mv", "interface": 1}]', "[0].interface", "must be a string"),
    ('["mv"]', "[0]", "is not a network selection element"),
    ('[{"name": "mv",}]', "", "is not valid JSON"),
])
def test_selection_element_problems_name_the_field(value, where, words):
    (msg,) = problems(CLUSTER + nad_caps(HOST_LOCAL) + pod("p", value))
    assert msg.startswith("t.yaml (document 3): Pod p: ")
    assert f"metadata.annotations[k8s.v1.cni.cncf.io/networks]{where}: " in msg and words in msg


def test_bare_ips_and_all_go_mac_forms_are_accepted_as_multus_accepts_them():
    for mac in ("c2:b0:57:49:47:f1", "C2-B0-57-49-47-F1", "c2b0.5749.47f1", "02:00:5e:10:00:00:00:01"):
        t = load(CNI_CLUSTER + nad_caps(HOST_LOCAL) + pod("p", element(ips=["192.168.1.205", "fd00::5/64"], mac=mac)))
        (p,) = [p for p in t.pods if p.key == "default/p"]
        (r,) = multus_nad.resolve("default", p.annotations["k8s.v1.cni.cncf.io/networks"])
        assert (r.nad, r.ifname, r.ips, r.mac) == ("default/mv", "net1", ("192.168.1.205", "fd00::5/64"), mac)


def test_host_local_gives_the_requested_address_only_with_the_ips_capability():
    asked = pod("p", element(ips=["192.168.1.210/24"])) + pod("q", "mv")
    (a,) = secondary(CLUSTER + nad_caps(HOST_LOCAL, {"ips": True}) + asked)
    assert (str(a.ip), a.prefixlen, str(a.gateway)) == ("192.168.1.210", 24, "192.168.1.1")
    # host-local's Reserve writes last_reserved_ip for a requested address too: the next pod gets .211
    assert [str(x.ip) for x in secondary(CLUSTER + nad_caps(HOST_LOCAL, {"ips": True}) + asked, "default/q")] == \
        ["192.168.1.211"]
    # no capability: libcni never hands the plugin runtimeConfig.ips, so host-local allocates as usual
    (b,) = secondary(CLUSTER + nad_caps(HOST_LOCAL, {"ips": False}) + asked)
    assert str(b.ip) == "192.168.1.200"


@pytest.mark.parametrize("ips, words", [
    (["192.168.1.100/24"], "host-local: failed to allocate all requested IPs: 192.168.1.100 "
                           "(range 192.168.1.200-192.168.1.216)"),
    (["192.168.1.201", "192.168.1.202"], "failed to allocate all requested IPs: 192.168.1.202"),
    (["192.168.1.203"], "host-local: requested IP address 192.168.1.203 is not available in range set "
                        "192.168.1.200-192.168.1.216 (pod default/first holds it)"),
])
def test_host_local_refusals_are_validation_errors_naming_pod_and_nad(ips, words):
    first = pod("first", element(ips=["192.168.1.203/24"]))
    (msg,) = refused(CLUSTER + nad_caps(HOST_LOCAL, {"ips": True}) + first + pod("p", element(ips=ips)))
    assert msg.startswith("t.yaml (document 4): Pod default/p: metadata.annotations[k8s.v1.cni.cncf.io/networks]: "
                          "NetworkAttachmentDefinition default/mv refuses net1: ")
    assert words in msg


def test_host_local_gateway_defaults_to_the_first_address_and_cannot_be_asked_for():
    conf = {**HOST_LOCAL, "rangeStart": "192.168.1.1", "rangeEnd": "192.168.1.3"}
    t = load(CLUSTER + nad_caps(conf) + pod("p", "mv"))
    assert str(t.attachments[0].gateway) == "192.168.1.1"  # host-local: "If the gateway is nil, claim .1"
    assert str(multus_alloc.attachments(ipam.allocate(t, ipam.Allocations.empty()).secondary, "default/p")[0].ip) == \
        "192.168.1.2"
    (msg,) = refused(CLUSTER + nad_caps(conf, {"ips": True}) + pod("p", element(ips=["192.168.1.1"])))
    assert "host-local: requested ip 192.168.1.1 is subnet's gateway" in msg


def test_static_takes_the_requested_address_or_its_own_and_the_mac_with_its_capability():
    caps = {"ips": True, "mac": True}
    (a,) = secondary(CLUSTER + nad_caps(STATIC, caps) + pod("p", element(ips=["192.168.1.205/24"],
                                                                          mac="C2:B0:57:49:47:F1")))
    assert (str(a.ip), a.prefixlen, a.mac, a.gateway) == ("192.168.1.205", 24, "c2:b0:57:49:47:f1", None)
    own = {**STATIC, "addresses": [{"address": "10.10.1.5/16", "gateway": "10.10.0.1"}]}
    (b,) = secondary(CLUSTER + nad_caps(own) + pod("p", element(ips=["192.168.1.205/24"], mac="c2:b0:57:49:47:f1")))
    assert (str(b.ip), b.prefixlen, b.mac, str(b.gateway)) == ("10.10.1.5", 16, None, "10.10.0.1")  # no capability


@pytest.mark.parametrize("ipam_conf, kw, words", [
    (STATIC, {}, "static has no address to give"),
    (STATIC, {"ips": ["192.168.1.205"]}, "static: an entry in the 'ips' field is NOT in CIDR notation, got: "
                                         "'192.168.1.205'"),
    (STATIC, {"ips": ["fd00::5/64"]}, "fd00::5/64 is not IPv4"),
    (HOST_LOCAL, {"mac": "01:00:5e:00:00:01"}, "mac 01:00:5e:00:00:01 is a multicast address"),
    (HOST_LOCAL, {"mac": "02:00:5e:10:00:00:00:01"}, "is not a 48-bit Ethernet address"),
])
def test_built_in_refusals(ipam_conf, kw, words):
    (msg,) = refused(CLUSTER + nad_caps(ipam_conf, {"ips": True, "mac": True}) + pod("p", element(**kw)))
    assert "NetworkAttachmentDefinition default/mv refuses net1: " in msg and words in msg


def test_cni_mode_predicts_and_leaves_refusals_to_the_plugin():
    text = nad_caps(STATIC, {"ips": True}) + pod("p", element(ips=["192.168.1.205"]))
    assert secondary(CNI_CLUSTER + text) == []  # static would refuse a bare IP: the plugin says so, not emu
    hl = nad_caps(HOST_LOCAL, {"ips": True}) + pod("p", element(ips=["192.168.1.100/24"]))
    assert [str(a.ip) for a in secondary(CNI_CLUSTER + hl)] == ["192.168.1.200"]


@pytest.mark.parametrize("config, field, words", [
    ('{"type": "macvlan", "capabilities": {"ips": "yes"}, "ipam": {"type": "static"}}', "spec.config.capabilities",
     "must be an object of booleans"),
    ('{"type": "macvlan", "ipam": {"type": "static", "addresses": [{"address": "10.1.0.5"}]}}',
     "spec.config.ipam.addresses[0]", "needs an address in CIDR notation"),
    ('{"type": "macvlan", "ipam": {"type": "dhcp"}}', "spec.config.ipam.type", "one of host-local, static"),
])
def test_static_and_capabilities_problems(config, field, words):
    (msg,) = problems(CLUSTER + nad(config))
    assert f": {field}: " in msg and words in msg
