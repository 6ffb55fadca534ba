"""The CNI runtime's pure side: environment, stdin (name, cniVersion, prevResult, runtimeConfig by capability),
.conf to list, templates, results, and the `plugin: cni` topology schema with its validation messages."""
from __future__ import annotations

import json

import pytest

from emu.cluster import planner
from emu.network.cni import config
from emu.network.cni.runtime import (NetConfList, RuntimeConf, k8s_args, plugin_env, plugin_stdin, sandbox_ips,
    version_at_least)
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
    t = planner.load(_cluster(tmp_path, "{plugin: cni, conflist: n.conflist, binDir: bin, nodeConfig: none}"))
    assert t.cluster.cni.plugin == "cni" and t.cluster.cni.conflist == str(tmp_path / "n.conflist")
    assert t.cluster.cni.bin_dir == (str(tmp_path / "bin"),) and t.cluster.cni.node_config == "none"
    t = planner.load(_cluster(tmp_path, "{plugin: cni}"))
    assert t.cluster.cni.conflist is None and t.cluster.cni.node_config == "flannel"


def test_plugin_cni_validation_names_file_document_object_field(tmp_path):
    (tmp_path / "bad.conflist").write_text('{"name": "n", "plugins": [{"type": "ptp", "mtu": ${WHAT}}]}')
    path = _cluster(tmp_path, "{plugin: cni, conflist: bad.conflist, nodeConfig: calico, extra: 1}")
    with pytest.raises(ValidationError) as e:
        planner.load(path)
    text = str(e.value)
    assert f"{path} (document 1): Cluster t: spec.cni.extra: unknown field" in text
    assert "spec.cni.nodeConfig: 'calico' is not one of flannel, none" in text
    assert "spec.cni.conflist: " in text and "unknown template ${WHAT}" in text
    with pytest.raises(ValidationError, match="spec.cni.conflist: a conflist is required"):
        planner.load(_cluster(tmp_path, "{plugin: cni, nodeConfig: none}"))
    with pytest.raises(ValidationError, match="spec.cni.conflist: cannot read"):
        planner.load(_cluster(tmp_path, "{plugin: cni, conflist: missing.conflist}"))


# --- what the views and `up --dry-run` show for a plugin: cni cluster -------------------------------------------------


def test_host_veth_is_the_one_the_plugin_reported(tmp_path):
    from emu.network.cni import pods
    att = tmp_path / "cni" / "attachments"
    att.mkdir(parents=True)
    bridge = {"interfaces": [{"name": "cni0"}, {"name": "veth16425b17"}, {"name": "eth0", "sandbox": "/run/netns/p"}]}
    ptp = {"interfaces": [{"name": "veth0a1b2c3d"}, {"name": "eth0", "sandbox": "/run/netns/q"}]}
    for key, result in (("default/a", bridge), ("default/b", ptp), ("default/c", {"interfaces": []})):
        (att / f"{key.replace('/', '_')}.json").write_text(json.dumps({"pod": key, "result": result}))
    (att / "default_d.json").write_text(json.dumps({"pod": "default/d", "status": "adding"}))
    assert pods.host_veths(str(tmp_path)) == {"default/a": "veth16425b17", "default/b": "veth0a1b2c3d",
                                              "default/c": "", "default/d": ""}


def test_dry_run_prints_the_plugin_calls_instead_of_veth_commands(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from emu.apply import state
    from emu.cluster import dryrun as cluster_dryrun
    from emu.cluster import lifecycle as clusters
    from emu.network.cni import dryrun
    from tests.conftest import TOPOLOGIES
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    topo = str(TOPOLOGIES / "cni-ips-mac.yaml")
    model, _, plan = clusters.plan_file(topo, "dry")
    text = cluster_dryrun.script(topo, "dry")
    cni_calls = dryrun.calls(model, plan, state.cluster_dir("dry"))
    assert "ip netns add dry.default.db-0" in text  # emu makes the namespaces; the plugins everything in them
    assert not [line for line in text.splitlines() if "link add" in line and "netns dry.default." in line]
    assert "# pod default/db-0 on node-1" not in text and "# pod default/db-0: CNI plugins" in text
    calls = [(c.pod, c.plugin, dict(c.env)["CNI_IFNAME"], c.stdin.get("runtimeConfig")) for c in cni_calls]
    assert calls[:5] == [
        ("default/db-0", "loopback", "lo", None), ("default/db-0", "bridge", "eth0", {"ips": ["10.244.0.50/24"]}),
        ("default/db-0", "tuning", "eth0", {"mac": "c2:b0:57:49:47:01"}), ("default/db-0", "portmap", "eth0", None),
        ("default/db-0", "macvlan", "net1", {"ips": ["192.168.1.205/24"], "mac": "c2:b0:57:49:47:f1"})]
    bridge = cni_calls[1]
    assert dict(bridge.env)["CNI_NETNS"] == "/run/netns/dry.default.db-0" and bridge.node_netns == "dry.node-1"
    assert bridge.stdin["ipam"]["dataDir"] == str(tmp_path / "dry/cni/nodes/node-1/ipam")
    assert ("echo '" + json.dumps(bridge.stdin) + "' | ip netns exec dry.node-1 env CNI_COMMAND='ADD' ") in text
    assert "CNI_IFNAME='eth0'" in text and text.count("CONTAINER_ID=$(") == 2
    assert not (tmp_path / "dry").exists()  # a dry run writes nothing
    r = subprocess.run([sys.executable, "-m", "emu", "up", "--dry-run", topo, "--name", "dry"], capture_output=True,
                       text=True, env={**os.environ, "EMU_STATE_DIR": str(tmp_path)})
    assert r.returncode == 0 and r.stdout == text, r.stderr
