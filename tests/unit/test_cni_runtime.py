"""The CNI runtime's pure side: environment, stdin (name, cniVersion, prevResult, runtimeConfig by capability),
.conf to list, templates, results, and the `plugin: cni` topology schema with its validation messages."""
from __future__ import annotations

import json

import pytest

from emu import topology
from emu.cni import config
from emu.cni.runtime import NetConfList, RuntimeConf, k8s_args, plugin_env, plugin_stdin, sandbox_ips, version_at_least
from emu.errors import ValidationError


def test_env_has_every_cni_variable():
    rt = RuntimeConf("abc", "/run/netns/x", "eth0", k8s_args("default", "web-0", "abc"))
    env = plugin_env("ADD", rt, ["/a", "/b"])
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "abc" and env["CNI_NETNS"] == "/run/netns/x"
    assert env["CNI_IFNAME"] == "eth0" and env["CNI_PATH"] == "/a:/b"
    assert env["CNI_ARGS"].startswith("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
                                      "K8S_POD_INFRA_CONTAINER_ID=abc")
    assert "CNI_CONTAINERID" not in plugin_env("VERSION", None, ["/a"])


def test_stdin_gets_list_name_version_prev_result_and_only_declared_capabilities():
    net = NetConfList.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}}]})
    rt = RuntimeConf("c", "/p", capability_args={"portMappings": [{"hostPort": 8080}], "bandwidth": {"x": 1}})
    first = plugin_stdin(net, net.plugins[0], None, rt)
    assert first == {"type": "bridge", "name": "n", "cniVersion": "1.0.0"}
    second = plugin_stdin(net, net.plugins[1], {"ips": []}, rt)
    assert second["prevResult"] == {"ips": []} and second["runtimeConfig"] == {"portMappings": [{"hostPort": 8080}]}


def test_a_single_conf_becomes_a_list():
    net = NetConfList.from_dict({"cniVersion": "0.3.1", "name": "x", "type": "ptp", "ipam": {"type": "host-local"}})
    assert net.plugins == ({"type": "ptp", "ipam": {"type": "host-local"}},) and net.name == "x"
    with pytest.raises(ValueError, match="type"):
        NetConfList.from_dict({"name": "x", "plugins": [{}]})


def test_templates_fill_node_values_and_host_local_gets_a_per_node_data_dir():
    text = json.dumps({"cniVersion": "0.4.0", "name": "t", "plugins": [
        {"type": "ptp", "mtu": "${MTU}", "ipam": {"type": "host-local", "ranges": [[{"subnet": "${NODE_SUBNET}"}]]}}]})
    net = config.load_text(text.replace('"${MTU}"', "${MTU}"), config.sample_values(), "/d/ipam")
    assert net.plugins[0]["mtu"] == 1450 and net.plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]
    assert net.plugins[0]["ipam"]["dataDir"] == "/d/ipam"
    with pytest.raises(ValueError, match=r"unknown template \$\{NOPE\}"):
        config.render("${NOPE}", {})
    assert config.render("$$x", {}) == "$x"


def test_sandbox_ips_pick_the_pod_interface():
    result = {"interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
              "ips": [{"address": "10.244.0.2/24", "interface": 2}]}
    assert sandbox_ips(result) == ["10.244.0.2/24"]
    assert version_at_least("1.0.0", "0.4.0") and not version_at_least("0.3.1", "0.4.0")


def _cluster(tmp_path, cni: str) -> str:
    p = tmp_path / "t.yaml"
    p.write_text(f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  cni: {cni}\n")
    return str(p)


def test_plugin_cni_schema(tmp_path):
    (tmp_path / "n.conflist").write_text('{"cniVersion": "0.4.0", "name": "n", "plugins": [{"type": "ptp"}]}')
    t = topology.load(_cluster(tmp_path, "{plugin: cni, conflist: n.conflist, binDir: bin, nodeConfig: none}"))
    assert t.cluster.cni.plugin == "cni" and t.cluster.cni.conflist == str(tmp_path / "n.conflist")
    assert t.cluster.cni.bin_dir == (str(tmp_path / "bin"),) and t.cluster.cni.node_config == "none"
    t = topology.load(_cluster(tmp_path, "{plugin: cni}"))
    assert t.cluster.cni.conflist is None and t.cluster.cni.node_config == "flannel"


def test_plugin_cni_validation_names_file_document_object_field(tmp_path):
    (tmp_path / "bad.conflist").write_text('{"name": "n", "plugins": [{"type": "ptp", "mtu": ${WHAT}}]}')
    path = _cluster(tmp_path, "{plugin: cni, conflist: bad.conflist, nodeConfig: calico, extra: 1}")
    with pytest.raises(ValidationError) as e:
        topology.load(path)
    text = str(e.value)
    assert f"{path} (document 1): Cluster t: spec.cni.extra: unknown field" in text
    assert "spec.cni.nodeConfig: 'calico' is not one of flannel, none" in text
    assert "spec.cni.conflist: " in text and "unknown template ${WHAT}" in text
    with pytest.raises(ValidationError, match="spec.cni.conflist: a conflist is required"):
        topology.load(_cluster(tmp_path, "{plugin: cni, nodeConfig: none}"))
    with pytest.raises(ValidationError, match="spec.cni.conflist: cannot read"):
        topology.load(_cluster(tmp_path, "{plugin: cni, conflist: missing.conflist}"))
