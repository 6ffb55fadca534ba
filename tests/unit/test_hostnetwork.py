"""hostNetwork pods in the model, IPAM and the plan (no kernel)."""
from __future__ import annotations

import pytest

from emu.cluster import lifecycle as cluster
from emu.cluster import dryrun
from emu.alloc import ipam
from emu.cluster import planner
from emu.errors import ValidationError
from tests.conftest import TOPOLOGIES

TOPO = str(TOPOLOGIES / "hostnetwork.yaml")


def test_hostnetwork_pod_gets_the_node_ip_and_no_namespace_or_veth():
    topo, alloc, plan = cluster.plan_file(TOPO)
    pp = plan.pod("default/node-exporter")
    assert pp.host_network and str(pp.ip) == "172.18.0.3" and pp.netns.name == "hostnetwork.node-2"
    assert "hostnetwork.default.node-exporter" not in plan.all_netns()
    assert plan.all_netns().count("hostnetwork.node-2") == 1
    assert str(alloc.pods["default/client"].ip) == "10.244.0.2"
    script = dryrun.network_part(dryrun.planned(TOPO))
    assert "node-exporter" not in script and "default/client" in script


def test_hostnetwork_pods_use_no_pod_subnet_address():
    topo, _, _ = cluster.plan_file(TOPO)
    a = ipam.allocate(topo, ipam.Allocations.empty())
    assert "node-2" not in a.last_reserved  # nothing handed out from node-2's subnet
    again = ipam.allocate(topo, a)
    assert again.pods == a.pods
    plan = planner.build(topo, again)
    assert not plan.pod("default/client").host_network


def test_hostnetwork_must_be_a_boolean():
    text = open(TOPO).read().replace("hostNetwork: true", "hostNetwork: yes-please")
    with pytest.raises(ValidationError) as e:
        planner.load("t.yaml", text=text)
    assert "spec.hostNetwork: must be true or false" in str(e.value)
