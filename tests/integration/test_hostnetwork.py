"""hostNetwork pods: no namespace of their own, the node's IP, ports answered in the node's namespace."""
from __future__ import annotations

import pytest

from emu.apply import netns
from emu.report import views
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "hostnetwork.yaml")
NODE2 = "172.18.0.3"


@pytest.fixture(scope="module")
def hn(emu_cluster):
    with emu_cluster(TOPO) as c:
        yield c


def test_the_pod_has_the_node_ip_and_no_namespace(hn):
    items = {i["name"]: i for i in views.get(hn._cl, "pods", "default").items}
    hp = items["node-exporter"]
    assert hp["ip"] == NODE2 and hp["node"] == "node-2" and hp["status"] == "Running"
    assert hp["netns"] == hn.netns("node/node-2")
    assert not netns.exists(f"{hn.name}.default.node-exporter")
    table = views.get(hn._cl, "pods", "default").table(wide=True)
    row = next(line for line in table.splitlines() if line.startswith("node-exporter"))
    assert NODE2 in row and "<none>" in row
    assert items["client"]["ip"].startswith("10.244.0.")  # the node's pod subnet is not used by it


def test_probe_to_the_pod_targets_the_node_ip_and_is_answered_in_the_node(hn):
    r = hn.probe("default/client", "default/node-exporter", port=9100)
    assert r["ok"] and r["answered_by"] == "default/node-exporter", r
    r = hn.probe("node/node-1", f"{NODE2}:9100")
    assert r["ok"] and r["answered_by"] == "default/node-exporter", r


def test_service_endpoint_is_the_node_ip(hn):
    eps = views.get(hn._cl, "endpoints", "default").items
    ep = next(e for e in eps if e["name"] == "node-exporter")
    assert [(a["ip"], a["port"], a["pod"]) for a in ep["ports"][0]["endpoints"]] == \
        [(NODE2, 9100, "default/node-exporter")], ep
    r = hn.probe("default/client", "svc/default/node-exporter:9100")
    assert r["ok"] and r["answered_by"] == "default/node-exporter", r


def test_delete_and_apply_leave_the_node_namespace(hn, tmp_path):
    p = tmp_path / "hp.yaml"
    p.write_text("""apiVersion: v1
kind: Pod
metadata: {name: hostpod-2}
spec:
  hostNetwork: true
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 9200}]}]
""")
    hn.apply(str(p))
    r = hn.probe("default/client", "default/hostpod-2", port=9200)
    assert r["ok"] and r["answered_by"] == "default/hostpod-2", r
    hn.delete(str(p))
    assert netns.exists(hn.netns("node/node-1"))
    r = hn.probe("default/client", "default/node-exporter", port=9100)
    assert r["ok"], r
    r = hn.probe("default/client", "node/node-1", proto="icmp")
    assert r["ok"], r
