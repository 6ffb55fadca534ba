"""Pod bandwidth annotations: Kubernetes quantities parsed as resource.ParseQuantity + Quantity.Value() do, the
kubelet's 1k..1P range check, and the runtimeConfig `bandwidth` containerd's toCNIBandWidth builds from them."""
from __future__ import annotations

import textwrap
from fractions import Fraction

import pytest

from emu.cluster import planner
from emu.model import quantity
from emu.network.cni.pods import capability_args
from emu.network.cni.runtime import NetConfList, RuntimeConf, plugin_stdin
from emu.errors import ValidationError
from emu.model.types import ContainerPort, Pod, Protocol

MAXU32 = 4294967295


@pytest.mark.parametrize("text,bps", [
    ("20M", 20_000_000), ("10M", 10_000_000), ("1G", 10 ** 9), ("500k", 500_000), ("1Mi", 1_048_576),
    ("1Gi", 2 ** 30), ("1.5M", 1_500_000), ("2.5k", 2500), ("100000", 100_000), ("1e6", 10 ** 6), ("5E3", 5000),
    ("+3M", 3_000_000), ("1000.1", 1001), ("1.0001k", 1001), ("1P", 10 ** 15),
])
def test_bandwidth_quantities_become_bits_per_second(text, bps):
    assert quantity.bandwidth_bps(text) == bps


def test_quantity_value_rounds_up_and_suffixes_are_case_sensitive():
    assert quantity.parse_quantity("10m") == Fraction(1, 100) and quantity.value("10m") == 1  # m is milli
    assert quantity.value("-1.5") == -2 and quantity.value(".5") == 1
    for bad in ("10K", "10 M", "M", "", "1.2.3", "10Mb", "10mbit", "1e", "0x10", 10):
        with pytest.raises(ValueError):
            quantity.parse_quantity(bad)


@pytest.mark.parametrize("text,msg", [("999", "small"), ("10m", "small"), ("-5M", "small"), ("2P", "large"),
                                      ("1Ei", "large")])
def test_unreasonable_bandwidth_is_refused_as_the_kubelet_refuses_it(text, msg):
    with pytest.raises(ValueError, match=f"unreasonably {msg}"):
        quantity.bandwidth_bps(text)


def _pod(annotations: dict[str, str], host_port: int | None = None) -> Pod:
    ports = (ContainerPort(80, Protocol.TCP, "http", host_port),) if host_port else ()
    return Pod("default", "p", {}, ports, annotations=annotations)


def test_runtime_config_bandwidth_as_containerd_sends_it():
    both = {quantity.INGRESS_BANDWIDTH: "10M", quantity.EGRESS_BANDWIDTH: "1Gi"}
    assert capability_args(_pod(both)) == {"bandwidth": {"ingressRate": 10_000_000, "ingressBurst": MAXU32,
                                                         "egressRate": 2 ** 30, "egressBurst": MAXU32}}
    assert capability_args(_pod({quantity.EGRESS_BANDWIDTH: "20M"})) == {
        "bandwidth": {"egressRate": 20_000_000, "egressBurst": MAXU32}}
    assert capability_args(_pod({"other": "x"})) == {} and capability_args(None) == {}


def test_only_a_plugin_declaring_bandwidth_gets_it():
    net = NetConfList.from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "ptp"}, {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})
    caps = capability_args(_pod({quantity.INGRESS_BANDWIDTH: "5M"}, host_port=8080))
    assert set(caps) == {"portMappings", "bandwidth"}
    rt = RuntimeConf("c", "/p", capability_args=caps)
    assert "runtimeConfig" not in plugin_stdin(net, net.plugins[0], None, rt)
    assert plugin_stdin(net, net.plugins[1], {}, rt)["runtimeConfig"] == {
        "bandwidth": {"ingressRate": 5_000_000, "ingressBurst": MAXU32}}
    assert plugin_stdin(net, net.plugins[2], {}, rt)["runtimeConfig"] == {"portMappings": caps["portMappings"]}


DOC = textwrap.dedent('''\
    apiVersion: emu.dev/v1alpha1
    kind: Cluster
    metadata: {{name: bw}}
    spec: {{nodes: 1}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web}}
    spec:
      replicas: 2
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata:
          labels: {{app: web}}
          annotations: {{kubernetes.io/egress-bandwidth: "{bw}"}}
        spec: {{containers: [{{name: c}}]}}
''')


def test_topology_keeps_annotations_and_checks_bandwidth(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(DOC.format(bw="20M"))
    pods = planner.load(str(f)).pods
    assert len(pods) == 2 and all(p.annotations == {quantity.EGRESS_BANDWIDTH: "20M"} for p in pods)
    assert capability_args(pods[0])["bandwidth"]["egressRate"] == 20_000_000
    f.write_text(DOC.format(bw="20Mbps"))
    with pytest.raises(ValidationError, match=r"metadata.annotations\[kubernetes.io/egress-bandwidth\]"):
        planner.load(str(f))
