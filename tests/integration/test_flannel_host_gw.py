"""Flannel host-gw on real namespaces: no encapsulation, routes via node IPs, the full underlay MTU."""
from __future__ import annotations

import json
import subprocess

import pytest


def ipj(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


def test_routes_via_node_ips_and_no_vxlan_device(hostgw):
    ns = hostgw.netns("node/node-3")
    routes = {r["dst"]: r for r in ipj("-n", ns, "route")}
    assert routes["10.244.0.0/24"]["gateway"] == "172.18.0.2" and routes["10.244.0.0/24"]["dev"] == "eth0"
    assert routes["10.244.1.0/24"]["gateway"] == "172.18.0.3" and routes["10.244.1.0/24"]["dev"] == "eth0"
    assert not [link for link in ipj("-n", ns, "link") if link["ifname"] == "flannel.1"]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_cross_node_pod_to_pod(hostgw, proto):
    r = hostgw.probe("default/web-2", "default/web-0", proto=proto, port=81)
    assert r["ok"] and r["answered_by"] == "default/web-0"
    assert r["client_ip_seen"] == hostgw.pod_ip("default/web-2")


def test_host_gw_mtu_edge_1472_passes_1473_is_refused(hostgw):
    assert hostgw.probe("default/web-0", "default/web-1", proto="icmp", size=1472, df=True)["ok"]
    r = hostgw.probe("default/web-0", "default/web-1", proto="icmp", size=1473, df=True)
    assert r["verdict"] == "frag-needed" and r["icmp"]["mtu"] == 1500


def test_4000_byte_udp_crosses_fragmented(hostgw):
    r = hostgw.probe("default/web-1", "default/web-2", proto="udp", port=80, size=4000)
    assert r["ok"] and r["bytes_answered"] == 4000
