"""Multus-style secondary networks (built-in mode): macvlan NetworkAttachmentDefinitions on real namespaces."""
from __future__ import annotations

import ipaddress
import json

import pytest

from emu.report import views
from emu.errors import ValidationError
from emu.testing import running
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "multus-macvlan.yaml")
RANGE = (ipaddress.IPv4Address("192.168.1.200"), ipaddress.IPv4Address("192.168.1.216"))


@pytest.fixture(scope="module")
def mc(emu_cluster):
    with emu_cluster(TOPO) as c:
        yield c


def _addr(c, pod: str, ifname: str) -> list[dict]:
    out = c.exec(pod, "ip", "-j", "addr", "show", "dev", ifname).stdout
    return json.loads(out)


def test_pods_get_net1_from_the_range(mc):
    ips = []
    for pod in ("default/samplepod-1", "default/samplepod-2"):
        link = _addr(mc, pod, "net1")[0]
        inet = [a for a in link["addr_info"] if a["family"] == "inet"]
        ip = ipaddress.IPv4Address(inet[0]["local"])
        assert RANGE[0] <= ip <= RANGE[1] and inet[0]["prefixlen"] == 24
        ips.append(ip)
        assert mc.exec(pod, "cat", "/proc/sys/net/ipv4/conf/net1/arp_notify").stdout.strip() == "1"
        eth0 = [a for a in _addr(mc, pod, "eth0")[0]["addr_info"] if a["family"] == "inet"]
        assert eth0[0]["local"].startswith("10.244.")  # the primary network is untouched
    assert len(set(ips)) == 2


def test_macvlan_is_on_node_eth0_and_not_in_node_namespace(mc):
    out = mc.exec("default/samplepod-1", "ip", "-d", "link", "show", "net1").stdout
    assert "macvlan mode bridge" in out
    nodes = mc.exec("node/node-1", "ip", "-o", "link").stdout
    assert "net1" not in nodes


def test_pods_on_different_nodes_reach_each_other_over_net1(mc):
    items = {f"{i['namespace']}/{i['name']}": i for i in views.get(mc._cl, "pods", None).items}
    assert items["default/samplepod-1"]["node"] != items["default/samplepod-2"]["node"]
    ip2 = items["default/samplepod-2"]["networks"][0]["ips"][0]
    net = items["default/samplepod-1"]["networks"][0]
    assert net == {"name": "default/macvlan-conf", "interface": "net1", "ips": [net["ips"][0]]}
    r = mc.exec("default/samplepod-1", "ping", "-c", "1", "-W", "2", "-I", "net1", ip2, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = mc.probe("default/samplepod-1", ip2, port=80)
    assert r["ok"], r


def test_exhausted_range_is_a_validation_error(tmp_path):
    text = open(TOPO).read().replace('"rangeEnd": "192.168.1.216"', '"rangeEnd": "192.168.1.200"')
    p = tmp_path / "small.yaml"
    p.write_text(text)
    from emu.cluster import lifecycle as cluster
    with pytest.raises(ValidationError) as e:
        cluster.plan_file(str(p))
    msg = str(e.value)
    assert "default/samplepod-2" in msg and "default/macvlan-conf" in msg and "exhausted" in msg


def test_apply_adds_a_pod_with_a_named_interface(mc, tmp_path):
    p = tmp_path / "more.yaml"
    p.write_text("""apiVersion: v1
kind: Pod
metadata:
  name: samplepod-3
  annotations:
    k8s.v1.cni.cncf.io/networks: default/macvlan-conf@mv0
spec:
  nodeName: node-1
  containers: [{name: app, ports: [{containerPort: 80}]}]
""")
    mc.apply(str(p))
    try:
        link = _addr(mc, "default/samplepod-3", "mv0")[0]
        ip = [a["local"] for a in link["addr_info"] if a["family"] == "inet"][0]
        assert ip == "192.168.1.202"  # round robin after .200 and .201
        items = {i["name"]: i for i in views.get(mc._cl, "pods", "default").items}
        ip2 = items["samplepod-2"]["networks"][0]["ips"][0]
        r = mc.exec("default/samplepod-3", "ping", "-c", "1", "-W", "2", ip2, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        mc.delete(str(p))
    # the others keep their addresses
    items = {i["name"]: i for i in views.get(mc._cl, "pods", "default").items}
    assert items["samplepod-1"]["networks"][0]["ips"] == ["192.168.1.200"]


def _net1(c, pod: str) -> tuple[str, list[str]]:
    link = _addr(c, pod, "net1")[0]
    return link["address"], [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]


def test_selection_element_ips_and_mac_with_static_ipam(mc):
    assert _net1(mc, "default/samplepod-static") == ("c2:b0:57:49:47:f1", ["192.168.1.230/24"])
    items = {i["name"]: i for i in views.get(mc._cl, "pods", "default").items}
    r = mc.exec("default/samplepod-static", "ping", "-c", "1", "-W", "2", "-I", "net1",
                items["samplepod-2"]["networks"][0]["ips"][0], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_requested_address_from_host_local_only_with_the_capability(mc, tmp_path):
    p = tmp_path / "pick.yaml"
    nad = ('{"cniVersion": "0.3.1", "type": "macvlan", "master": "eth0", %s"ipam": {"type": "host-local", '
           '"subnet": "192.168.3.0/24", "rangeStart": "192.168.3.10", "rangeEnd": "192.168.3.20"}}')
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations:
    k8s.v1.cni.cncf.io/networks: '[{{"name": "{net}", "ips": ["192.168.3.15/24"], "mac": "c2:b0:57:49:47:a{i}"}}]'
spec:
  nodeName: node-2
  containers: [{{name: app, ports: [{{containerPort: 80}}]}}]
""" for i, (name, net) in enumerate((("pick", "mv-caps"), ("nopick", "mv-nocaps"))))
    p.write_text(f"""apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {{name: mv-caps}}
spec: {{config: '{nad % '"capabilities": {"ips": true}, '}'}}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {{name: mv-nocaps}}
spec: {{config: '{nad % ''}'}}
{pods}""")
    mc.apply(str(p))
    try:
        mac, inet = _net1(mc, "default/pick")
        assert inet == ["192.168.3.15/24"] and mac != "c2:b0:57:49:47:a0"  # ips declared, mac not
        mac, inet = _net1(mc, "default/nopick")
        assert inet == ["192.168.3.10/24"] and mac != "c2:b0:57:49:47:a1"  # nothing declared: host-local's first
    finally:
        mc.delete(str(p))
