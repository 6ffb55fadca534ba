"""The PodNetwork seam: emu.network.table lists exactly the plugins the loader accepts, every entry fills the
protocol (emu.network.base.PodNetwork) with functions that give the plan's own types, and the planner and the dry
run go through the table (no root needed)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from emu.alloc import ipam
from emu.cluster import lifecycle as clusters
from emu.cluster import dryrun
from emu.cluster import planner
from emu.errors import ValidationError
from emu.network import table
from emu.network.base import MtuPath, NodeView, PodNetwork
from emu.plan.objects import NetnsPlan, NodeInfo, PodPlan
from tests.conftest import TOPOLOGIES

HEAD = "apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  nodes: 2\n"
PODS = "".join(f"---\nkind: Pod\nmetadata: {{name: web-{i}}}\nspec: {{containers: [{{name: c}}]}}\n"
               for i in range(3))


def _load(plugin: str):
    return planner.load("t.yaml", text=HEAD + f"  cni: {{plugin: {plugin}}}\n" + PODS)


def test_the_table_names_every_plugin_the_loader_accepts():
    with pytest.raises(ValidationError) as e:
        _load("no-such-network")
    (known,) = re.findall(r"\(known: ([^)]*)\)", str(e.value))
    assert [n.name for n in table.NETWORKS] == known.split(", ")
    for net in table.NETWORKS:
        assert table.for_cluster(_load(net.name).cluster) is net


@pytest.mark.parametrize("net", table.NETWORKS, ids=lambda n: n.name)
def test_each_network_fills_the_protocol(net):
    assert isinstance(net, PodNetwork) and isinstance(net.name, str) and net.name
    for f in dataclasses.fields(PodNetwork):
        value, kind = getattr(net, f.name), str(f.type)
        if kind.startswith("Callable") and kind.endswith("| None"):
            assert value is None or callable(value), f.name
        elif kind.startswith("Callable"):
            assert callable(value), f.name
    assert net.unplanned_pods is None or isinstance(net.unplanned_pods, str)


@pytest.mark.parametrize("net", table.NETWORKS, ids=lambda n: n.name)
def test_each_network_plans_with_the_plan_types(net):
    topo = _load(net.name)
    c = topo.cluster
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    subnets, ips = ipam.node_subnets(c), ipam.node_ips(c)
    assert isinstance(net.summary(c), str) and isinstance(net.pod_mtu(c, "node-1"), int)
    assert isinstance(net.node_plan(c, "node-1", subnets, ips, True), NetnsPlan)
    pod = topo.pods[0]
    assert isinstance(net.pod_plan(c, pod, alloc.pods[pod.key], subnets[alloc.pods[pod.key].node]), PodPlan)
    info = net.node_info(c, "node-1", subnets, ips)
    assert isinstance(info, NodeInfo) and info.name == "node-1" and info.subnet == subnets["node-1"]
    assert all(isinstance(p, str) and not p.startswith("/") and isinstance(t, str) for p, t in info.files)
    assert isinstance(net.node_view(c, info), NodeView)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in net.node_annotations(c, info).items())
    assert isinstance(net.network_name(c), str) and isinstance(net.mtu_path(c), MtuPath)
    plan = planner.build(topo, alloc)
    assert all(isinstance(line, str) for line in net.dry_run(topo, plan))


def test_the_planner_asks_the_clusters_network():
    flannel, cni = (planner.build(t, ipam.allocate(t, ipam.Allocations.empty()))
                    for t in (_load("flannel"), _load("cni")))
    # flannel's node holds cni0 once it has a pod; under plugin cni the bridge plugin makes it on the first ADD
    assert "cni0" in {link.name for link in next(ns for ns in flannel.infra if ns.owner == "node-1").links}
    assert "cni0" not in {link.name for link in next(ns for ns in cni.infra if ns.owner == "node-1").links}
    assert [i.files for i in flannel.nodes] == [i.files for i in cni.nodes]  # subnet.env either way (nodeConfig)


@pytest.mark.parametrize("path", sorted(TOPOLOGIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_dry_run_is_the_plan_then_the_networks_pod_part(path: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    topo, _, plan = clusters.plan_file(str(path))
    text = dryrun.network_part(dryrun.planned(str(path)))
    pods = table.for_cluster(topo.cluster).dry_run(topo, plan)
    assert text.endswith("\n".join(pods) + "\n") if pods else text.endswith("\n")
    assert text.startswith(f"# cluster {plan.cluster}: {len(plan.nodes)} nodes, {len(plan.pods)} pods\n")
