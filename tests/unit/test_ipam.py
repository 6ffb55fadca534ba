"""IPAM: node subnets as the range allocator hands them out, pod IPs as host-local does, placement."""
from __future__ import annotations

import ipaddress

import pytest

from emu.cluster import planner
from emu.alloc import ipam
from emu.errors import ValidationError
from emu.model.types import Topology


def topo(npods: int, nodes: str = "2", mask: int = 24, extra: str = "") -> Topology:
    text = (f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\n"
            f"spec: {{nodes: {nodes}, nodeCIDRMaskSize: {mask}}}\n")
    for i in range(npods):
        text += f"---\nkind: Pod\nmetadata: {{name: p{i}}}\nspec: {{containers: [{{name: c}}]}}\n"
    return planner.load("t.yaml", text=text + extra)


def test_node_subnets_are_consecutive_from_the_first_and_node_ips_start_at_2():
    c = topo(0, nodes="3").cluster
    assert {n: str(s) for n, s in ipam.node_subnets(c).items()} == {
        "node-1": "10.244.0.0/24", "node-2": "10.244.1.0/24", "node-3": "10.244.2.0/24"}
    assert {n: str(ip) for n, ip in ipam.node_ips(c).items()} == {
        "node-1": "172.18.0.2", "node-2": "172.18.0.3", "node-3": "172.18.0.4"}
    assert str(ipam.external_ip(c)) == "172.18.0.1"


def test_pods_spread_over_nodes_and_get_host_local_addresses_from_2():
    a = ipam.allocate(topo(4), ipam.Allocations.empty())
    assert [(k, v.node, str(v.ip)) for k, v in a.pods.items()] == [
        ("default/p0", "node-1", "10.244.0.2"), ("default/p1", "node-2", "10.244.1.2"),
        ("default/p2", "node-1", "10.244.0.3"), ("default/p3", "node-2", "10.244.1.3")]


def test_host_local_is_round_robin_after_a_release_and_existing_pods_keep_their_address():
    first = ipam.allocate(topo(2, nodes="1"), ipam.Allocations.empty())  # .2 .3
    fewer = ipam.allocate(topo(1, nodes="1"), first)  # p1 goes; .3 stays last_reserved
    assert str(fewer.pods["default/p0"].ip) == "10.244.0.2"
    again = ipam.allocate(topo(2, nodes="1"), fewer)  # p1 comes back: .4, not .3 (round robin)
    assert str(again.pods["default/p0"].ip) == "10.244.0.2"
    assert str(again.pods["default/p1"].ip) == "10.244.0.4"


def test_wraps_around_and_skips_the_gateway():
    a = ipam.Allocations({}, {"node-1": ipaddress.IPv4Address("10.244.0.6")})
    out = ipam.allocate(topo(1, nodes="1", mask=29), a)  # /29: .1 gateway, .2-.6 usable
    assert str(out.pods["default/p0"].ip) == "10.244.0.2"


def test_a_full_node_is_a_clear_error():
    with pytest.raises(ValidationError) as e:
        ipam.allocate(topo(6, nodes="1", mask=29), ipam.Allocations.empty())
    assert "node node-1 is full: its subnet 10.244.0.0/29 holds 5 pods" in str(e.value)
    assert "t.yaml (document 7): Pod default/p5" in str(e.value)


def test_allocations_round_trip_through_json():
    a = ipam.allocate(topo(3), ipam.Allocations.empty())
    assert ipam.Allocations.from_json(a.to_json()) == a
