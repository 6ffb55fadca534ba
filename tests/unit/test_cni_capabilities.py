"""runtimeConfig `ips` and `mac`: what the runtime offers each attachment (emu.dev/ips and emu.dev/mac for eth0, a
network selection element's ips and mac for net1, ... as Multus merges them), what libcni then hands each plugin
of a list (only the capabilities it declares), and the checks made when the topology is loaded."""
from __future__ import annotations

import json

import pytest

from emu.cluster import planner
from emu.alloc import ipam
from emu.addons.multus import wire as multus
from emu.network.cni import capabilities, config
from emu.network.cni.runtime import NetConfList, RuntimeConf, plugin_stdin
from emu.errors import ValidationError
from emu.model.types import ContainerPort, Pod, Protocol

OFFERS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
          "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 4294967295},
          "ips": ["10.244.0.50/24"], "mac": "c2:b0:57:49:47:01"}

CHAIN = NetConfList.from_dict({"cniVersion": "1.0.0", "name": "ips-mac-net", "plugins": [
    {"type": "bridge", "capabilities": {"ips": True}, "ipam": {"type": "host-local"}},
    {"type": "tuning", "capabilities": {"mac": True}},
    {"type": "static-ish", "capabilities": {"ips": False, "mac": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}},
    {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    {"type": "recorder"},
]})


@pytest.mark.parametrize("index, runtime_config", [
    (0, {"ips": ["10.244.0.50/24"]}),
    (1, {"mac": "c2:b0:57:49:47:01"}),
    (2, {"mac": "c2:b0:57:49:47:01"}),  # "ips": false is not a declaration
    (3, {"portMappings": OFFERS["portMappings"]}),
    (4, {"bandwidth": OFFERS["bandwidth"]}),
    (5, None),  # declares nothing: no runtimeConfig key at all
], ids=["bridge-ips", "tuning-mac", "ips-false", "portmap", "bandwidth", "no-capabilities"])
def test_each_plugin_gets_only_the_keys_it_declares(index, runtime_config):
    conf = plugin_stdin(CHAIN, CHAIN.plugins[index], None, RuntimeConf("c", "/p", capability_args=OFFERS))
    assert conf.get("runtimeConfig") == runtime_config
    assert "capabilities" in conf or index == 5  # the plugin's own config goes through unchanged


def test_nothing_offered_means_no_runtime_config_even_when_declared():
    conf = plugin_stdin(CHAIN, CHAIN.plugins[0], None, RuntimeConf("c", "/p", capability_args={}))
    assert "runtimeConfig" not in conf


def _pod(annotations: dict[str, str], host_port: int | None = None) -> Pod:
    ports = (ContainerPort(80, Protocol.TCP, "http", host_port),) if host_port else ()
    return Pod("default", "p", {}, ports, annotations=annotations)


@pytest.mark.parametrize("annotations, expected", [
    ({"emu.dev/ips": "10.244.0.50/24"}, {"ips": ["10.244.0.50/24"]}),
    ({"emu.dev/ips": '["10.244.0.50/24", "fd00::50/64"]'}, {"ips": ["10.244.0.50/24", "fd00::50/64"]}),
    ({"emu.dev/ips": "10.244.0.50/24, 10.244.0.51/24"}, {"ips": ["10.244.0.50/24", "10.244.0.51/24"]}),
    ({"emu.dev/mac": " c2:b0:57:49:47:01 "}, {"mac": "c2:b0:57:49:47:01"}),
    ({"other": "x"}, {}),
])
def test_eth0_offers_ips_and_mac_from_the_emu_annotations(annotations, expected):
    assert capabilities.capability_args(_pod(annotations)) == expected


def test_multus_offers_what_the_runtime_gave_it_then_the_element():
    pod_args = capabilities.capability_args(_pod({"kubernetes.io/ingress-bandwidth": "10M",
                                                  "emu.dev/ips": "10.244.0.50/24"}, host_port=8080))
    assert set(pod_args) == {"portMappings", "bandwidth", "ips"}
    flannel = config.flannel_delegate(*_flannel_args())  # declares portMappings only (portmap)
    # Multus' generated config declares the cluster network's capabilities: the runtime gives it just those,
    # and mergeCNIRuntimeConfig puts the element's ips and mac on top; emu.dev/ips is for eth0 only
    assert capabilities.multus_args(flannel, pod_args, ["192.168.1.205/24"], "c2:b0:57:49:47:f1") == {
        "portMappings": pod_args["portMappings"], "ips": ["192.168.1.205/24"], "mac": "c2:b0:57:49:47:f1"}
    assert capabilities.multus_args(CHAIN, pod_args) == {"portMappings": pod_args["portMappings"],
                                                         "bandwidth": pod_args["bandwidth"]}
    assert capabilities.multus_args(None, pod_args, (), None) == {}


def _flannel_args():
    import ipaddress
    return ipaddress.IPv4Network("10.244.0.0/24"), ipaddress.IPv4Network("10.244.0.0/16"), 1450, "/d"


@pytest.mark.parametrize("text, octets", [
    ("c2:b0:57:49:47:f1", 6), ("C2-B0-57-49-47-F1", 6), ("c2b0.5749.47f1", 6), ("02:00:5e:10:00:00:00:01", 8),
    ("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", 20),
    ("c2:b0:57:49:47", None), ("c2:b0-57:49:47:f1", None), ("c2:b0:57:49:47:g1", None), ("c2b0.5749", None),
    ("c2b057.4947f1", None), ("", None), ("c2:b0:57:49:47:f1\n", None),
])
def test_mac_forms_are_go_net_parse_macs(text, octets):
    raw = capabilities.parse_mac(text)
    assert (len(raw) if raw else None) == octets


# --- the pod's annotations, checked when the topology is loaded ------------------------------------------------------

CNI = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {nodes: 1, cni: {plugin: cni}}
"""


def pod(annotations: dict[str, str], host_network: bool = False) -> str:
    return ("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: " + json.dumps(annotations) +
            "\nspec:\n  containers: [{name: c}]\n" + ("  hostNetwork: true\n" if host_network else ""))


@pytest.mark.parametrize("annotations, field, words", [
    ({"emu.dev/ips": "10.244.0.300/24"}, "metadata.annotations[emu.dev/ips]",
     "entry 0: '10.244.0.300/24' is not an IP address or CIDR"),
    ({"emu.dev/ips": '["10.244.0.5/24", 7]'}, "metadata.annotations[emu.dev/ips]",
     "is malformed (the JSON form must be a list of strings)"),
    ({"emu.dev/ips": " , "}, "metadata.annotations[emu.dev/ips]", "is empty"),
    ({"emu.dev/mac": "c2:b0:57"}, "metadata.annotations[emu.dev/mac]", "'c2:b0:57' is not a MAC address"),
])
def test_bad_annotations_name_file_document_object_and_field(annotations, field, words):
    with pytest.raises(ValidationError) as e:
        planner.load("t.yaml", text=CNI + pod(annotations))
    (msg,) = [str(p) for p in e.value.problems]
    assert msg.startswith(f"t.yaml (document 2): Pod p: {field}: ") and words in msg


def test_host_network_pods_and_built_in_clusters_have_no_plugin_to_hand_them_to():
    with pytest.raises(ValidationError, match=r"Pod p: metadata.annotations\[emu.dev/mac\]: a hostNetwork pod"):
        planner.load("t.yaml", text=CNI + pod({"emu.dev/mac": "c2:b0:57:49:47:01"}, host_network=True))
    built_in = CNI.replace(", cni: {plugin: cni}", "")
    t = planner.load("t.yaml", text=built_in + pod({"emu.dev/ips": "10.244.0.50/24"}))
    with pytest.raises(ValidationError) as e:
        ipam.allocate(t, ipam.Allocations.empty())
    (msg,) = [str(p) for p in e.value.problems]
    assert msg == ("t.yaml (document 2): Pod default/p: metadata.annotations[emu.dev/ips]: is handed to CNI plugins "
                   "as runtimeConfig.ips: it needs spec.cni.plugin: cni (the built-in wiring runs no plugin)")
    t = planner.load("t.yaml", text=CNI + pod({"emu.dev/ips": "10.244.0.50/24"}))
    ipam.allocate(t, ipam.Allocations.empty())  # a CNI cluster takes it


# --- what Multus delegates: the NAD's config, node-local directories, the offers -----------------------------------

NAD = """---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: mv}
spec:
  config: '{"cniVersion": "0.3.1", "type": "macvlan", "capabilities": {"ips": true, "mac": true},
            "ipam": {"type": "static"}}'
"""


def test_cni_networks_carry_the_selection_elements_ips_and_mac():
    element = json.dumps([{"name": "mv", "interface": "net1", "ips": ["192.168.1.205/24"],
                           "mac": "c2:b0:57:49:47:f1"}])
    t = planner.load("t.yaml", text=CNI + NAD + pod({"k8s.v1.cni.cncf.io/networks": element}))
    (net, ifname, key, offers), = multus.cni_networks(t, t.pods[0], "/d/ipam", "/d", None, {})
    assert (ifname, key, net.name) == ("net1", "default/mv", "mv")
    assert offers == {"ips": ["192.168.1.205/24"], "mac": "c2:b0:57:49:47:f1"}
    stdin = plugin_stdin(net, net.plugins[0], None, RuntimeConf("c", "/p", "net1", capability_args=offers))
    assert stdin["runtimeConfig"] == offers and stdin["ipam"] == {"type": "static"}


def test_host_local_and_tuning_keep_their_files_in_the_node_directories():
    text = json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "${NODE_SUBNET}"}]]}},
        {"type": "tuning", "capabilities": {"mac": True}},
        {"type": "tuning", "dataDir": "/mine"}]})
    net = config.load_text(text, config.sample_values(), "/s/node-1/ipam", "/s/node-1")
    assert net.plugins[0]["ipam"]["dataDir"] == "/s/node-1/ipam"
    assert net.plugins[1]["dataDir"] == "/s/node-1/tuning"  # not the machine's /run/cni/tuning
    assert net.plugins[2]["dataDir"] == "/mine"
    assert "dataDir" not in config.load_text(text, config.sample_values()).plugins[1]
