"""Multus in CNI mode: the reference macvlan plugin (and host-local, per node) run each secondary network."""
from __future__ import annotations

import os

import pytest

from emu.apply import state
from emu.report import views
from emu.network.cni import pods as cni_pods
from emu.network.cni import runtime as cni_runtime
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "multus-macvlan-cni.yaml")


@pytest.fixture(scope="module")
def mc(emu_cluster):
    if not os.path.exists("/usr/lib/cni/macvlan"):
        pytest.skip("the reference CNI plugins (containernetworking-plugins) are not installed")
    with emu_cluster(TOPO) as c:
        yield c


def test_macvlan_plugin_adds_net1_after_eth0(mc):
    rec = state.load(mc.name)
    log = cni_runtime.read_log(cni_pods.log_path(rec.dir), "default/samplepod-1")
    assert [(e["command"], e["plugin"], e["env"]["CNI_IFNAME"]) for e in log] == [
        ("ADD", "loopback", "lo"), ("ADD", "bridge", "eth0"), ("ADD", "portmap", "eth0"), ("ADD", "macvlan", "net1")]
    mv = log[-1]
    assert mv["stdin"]["name"] == "macvlan-conf" and mv["stdin"]["master"] == "eth0"
    assert mv["stdin"]["ipam"]["dataDir"] == os.path.join(rec.dir, "cni/nodes/node-1/ipam")
    assert mv["node_netns"] == mc.netns("node/node-1")


def test_secondary_addresses_are_the_plugins_and_pods_talk_over_net1(mc):
    items = {i["name"]: i for i in views.get(mc._cl, "pods", "default").items}
    ips = [items[p]["networks"][0]["ips"][0] for p in ("samplepod-1", "samplepod-2")]
    assert ips == ["192.168.1.200", "192.168.1.201"]
    out = mc.exec("default/samplepod-2", "ip", "-d", "-4", "addr", "show", "net1").stdout
    assert "macvlan mode bridge" in out and "192.168.1.201/24" in out
    r = mc.exec("default/samplepod-1", "ping", "-c", "1", "-W", "2", "-I", "net1", ips[1], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert items["samplepod-1"]["ip"].startswith("10.244.")


def test_removal_dels_net1_and_releases_the_lease(mc, tmp_path):
    p = tmp_path / "p3.yaml"
    p.write_text("""apiVersion: v1
kind: Pod
metadata:
  name: samplepod-3
  annotations: {k8s.v1.cni.cncf.io/networks: macvlan-conf}
spec:
  nodeName: node-1
  containers: [{name: app, ports: [{containerPort: 80}]}]
""")
    rec = state.load(mc.name)
    leases = os.path.join(rec.dir, "cni/nodes/node-1/ipam/macvlan-conf")
    mc.apply(str(p))
    assert os.path.exists(os.path.join(leases, "192.168.1.202"))
    mc.delete(str(p))
    log = cni_runtime.read_log(cni_pods.log_path(rec.dir), "default/samplepod-3")
    dels = [(e["plugin"], e["env"]["CNI_IFNAME"]) for e in log if e["command"] == "DEL"]
    assert dels[0] == ("macvlan", "net1") and ("bridge", "eth0") in dels  # reverse order, exactly once
    assert len([d for d in dels if d[0] == "macvlan"]) == 1
    assert not os.path.exists(os.path.join(leases, "192.168.1.202"))
