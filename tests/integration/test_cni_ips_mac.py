"""runtimeConfig `ips` and `mac` with Debian's reference plugins (topologies/cni-ips-mac.yaml): emu.dev/ips and
emu.dev/mac reach bridge's host-local and tuning for eth0, a network selection element's ips and mac reach macvlan
and static for net1, and a plugin that does not declare the capability never sees the key (as libcni filters)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from emu.apply import state
from emu.report import views
from emu.network.cni import pods as cni_pods
from emu.network.cni import runtime as cni_runtime
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "cni-ips-mac.yaml")
PLUGINS = ("bridge", "host-local", "tuning", "portmap", "macvlan", "static")

pytestmark = pytest.mark.skipif(not all(os.path.exists(f"/usr/lib/cni/{p}") for p in PLUGINS),
                                reason="needs Debian's containernetworking-plugins (/usr/lib/cni)")


@pytest.fixture(scope="module")
def c(emu_cluster):
    with emu_cluster(TOPO) as cl:
        yield cl


def iface(c, pod: str, name: str) -> dict:
    (link,) = json.loads(subprocess.run(["ip", "-j", "-d", "-n", c.netns(pod), "addr", "show", name],
                                        capture_output=True, text=True, check=True).stdout)
    return {"mac": link["address"], "kind": link.get("linkinfo", {}).get("info_kind"),
            "inet": [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]}


def log(c, pod: str) -> list[dict]:
    return cni_runtime.read_log(cni_pods.log_path(state.load(c.name).dir), pod)


def runtime_configs(entries: list[dict], command: str = "ADD") -> list[tuple[str, str, dict | None]]:
    return [(e["plugin"], e["env"]["CNI_IFNAME"], e["stdin"].get("runtimeConfig")) for e in entries
            if e["command"] == command]


def test_eth0_has_exactly_the_requested_address_and_mac(c):
    assert iface(c, "default/db-0", "eth0") == {"mac": "c2:b0:57:49:47:01", "kind": "veth",
                                                "inet": ["10.244.0.50/24"]}
    assert c.pod_ip("default/db-0") == "10.244.0.50"  # the model took the plugin's address
    r = c.probe("default/app", "default/db-0", port=80)
    assert r["ok"] and r["answered_by"] == "default/db-0" and r["client_ip_seen"] == c.pod_ip("default/app"), r
    assert iface(c, "default/app", "eth0")["inet"] == ["10.244.1.2/24"]  # no request: host-local's next address


def test_net1_has_exactly_the_requested_address_and_mac_and_pods_talk_over_it(c):
    assert iface(c, "default/db-0", "net1") == {"mac": "c2:b0:57:49:47:f1", "kind": "macvlan",
                                                "inet": ["192.168.1.205/24"]}
    app = iface(c, "default/app", "net1")
    assert app["inet"] == ["192.168.1.206/24"] and app["mac"] != "c2:b0:57:49:47:f1"
    r = c.exec("default/db-0", "ping", "-c", "1", "-W", "2", "-I", "net1", "192.168.1.206", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    items = {i["name"]: i for i in views.get(c._cl, "pods", "default").items}
    assert items["db-0"]["networks"] == [{"name": "default/macvlan-static", "interface": "net1",
                                          "ips": ["192.168.1.205"]}]


def test_each_plugin_got_only_the_runtime_config_it_declares(c):
    assert runtime_configs(log(c, "default/db-0")) == [
        ("loopback", "lo", None),
        ("bridge", "eth0", {"ips": ["10.244.0.50/24"]}),  # declares ips; host-local reads it from bridge's stdin
        ("tuning", "eth0", {"mac": "c2:b0:57:49:47:01"}),  # declares mac only
        ("portmap", "eth0", None),  # declares portMappings; the pod has no hostPort
        ("macvlan", "net1", {"ips": ["192.168.1.205/24"], "mac": "c2:b0:57:49:47:f1"}),
    ]
    assert runtime_configs(log(c, "default/app")) == [
        ("loopback", "lo", None), ("bridge", "eth0", None), ("tuning", "eth0", None), ("portmap", "eth0", None),
        ("macvlan", "net1", {"ips": ["192.168.1.206/24"]})]
    out = subprocess.run([sys.executable, "-m", "emu", "cni", "log", "default/db-0", "-o", "wide",
                          "--cluster", c.name], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '"runtimeConfig": {"ips": ["10.244.0.50/24"]}' in out.stdout
    assert '"runtimeConfig": {"ips": ["192.168.1.205/24"], "mac": "c2:b0:57:49:47:f1"}' in out.stdout
    # tuning keeps the MAC it restores on DEL in the node's directory, never in the machine's /run/cni/tuning
    tuning = [e for e in log(c, "default/db-0") if e["plugin"] == "tuning"][0]
    backup = os.path.join(tuning["stdin"]["dataDir"], f"{tuning['env']['CNI_CONTAINERID']}_eth0.json")
    assert backup.startswith(state.load(c.name).dir) and os.path.exists(backup)


EXTRA = """apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: macvlan-plain}
spec:
  config: '{"cniVersion": "0.3.1", "type": "macvlan", "master": "eth0", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "192.168.2.0/24", "rangeStart": "192.168.2.10",
                     "rangeEnd": "192.168.2.20"}}'
---
apiVersion: v1
kind: Pod
metadata:
  name: db-1
  annotations:
    emu.dev/ips: 10.244.0.60/24
    emu.dev/mac: c2:b0:57:49:47:02
    k8s.v1.cni.cncf.io/networks: '[{"name": "macvlan-plain", "ips": ["192.168.2.15/24"], "mac": "c2:b0:57:49:47:f2"}]'
spec:
  nodeName: node-1
  containers: [{name: db, ports: [{containerPort: 80}]}]
"""


def test_without_the_capability_the_plugin_never_sees_the_key_and_del_gets_the_same(c, tmp_path):
    extra = tmp_path / "db-1.yaml"
    extra.write_text(EXTRA)
    c.apply(str(extra))
    try:
        # macvlan-plain declares no capabilities: libcni drops ips and mac, host-local hands out its first address
        net1 = iface(c, "default/db-1", "net1")
        assert net1["inet"] == ["192.168.2.10/24"] and net1["mac"] != "c2:b0:57:49:47:f2"
        assert ("macvlan", "net1", None) in runtime_configs(log(c, "default/db-1"))
        assert iface(c, "default/db-1", "eth0")["inet"] == ["10.244.0.60/24"]
    finally:
        c.delete(str(extra))
    dels = runtime_configs(log(c, "default/db-1"), "DEL")
    # libcni hands DEL the same runtimeConfig as ADD, in reverse order, exactly once per plugin
    assert dels == [("macvlan", "net1", None), ("portmap", "eth0", None),
                    ("tuning", "eth0", {"mac": "c2:b0:57:49:47:02"}), ("bridge", "eth0", {"ips": ["10.244.0.60/24"]}),
                    ("loopback", "lo", None)]
    leases = os.path.join(state.load(c.name).dir, "cni/nodes/node-1/ipam/ips-mac-net")
    assert not os.path.exists(os.path.join(leases, "10.244.0.60"))  # host-local released the requested address


def test_get_pods_wide_shows_the_veth_the_plugin_made(c):
    """The HOST-VETH column is the kernel's peer of the pod's eth0 (bridge names it), not the model's guess."""
    for pod, node in (("default/db-0", "node/node-1"), ("default/app", "node/node-2")):
        (eth0,) = json.loads(subprocess.run(["ip", "-j", "-n", c.netns(pod), "link", "show", "eth0"],
                                            capture_output=True, text=True, check=True).stdout)
        peers = json.loads(subprocess.run(["ip", "-j", "-n", c.netns(node), "link"], capture_output=True, text=True,
                                          check=True).stdout)
        (peer,) = [link["ifname"] for link in peers if link["ifindex"] == eth0["link_index"]]
        items = {f"{i['namespace']}/{i['name']}": i for i in views.get(c._cl, "pods", None).items}
        assert items[pod]["hostVeth"] == peer
    out = subprocess.run([sys.executable, "-m", "emu", "get", "pods", "-o", "wide", "--cluster", c.name],
                         capture_output=True, text=True)
    assert out.returncode == 0 and peer in out.stdout, out.stdout + out.stderr
