"""Untouched pods keep working while others are deleted: cni0 keeps its MAC.

A Linux bridge whose address was never set takes the lowest MAC of its ports (net/bridge/br_stp_if.c
br_stp_recalculate_bridge_id) and changes it when that port leaves.  The node's other pods still hold a neighbour
entry mapping their gateway to the old MAC, so their frames to it are flooded to the ports and never reach the node
until the entry goes stale and is probed again (seconds).  The bridge plugin pins the address in ensureAddr
(containernetworking/plugins plugins/main/bridge/bridge.go), and so does emu's built-in wiring (emu.network.bridge).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from emu.apply import netns
from tests.waiting import GENEROUS, wait_until

BUILTIN = "{plugin: flannel, backend: vxlan}"
# The real bridge binary (Debian's containernetworking-plugins), as flannel's CNI plugin delegates to it.
REAL_PLUGIN = "{plugin: cni, nodeConfig: flannel, binDir: [/usr/lib/cni], backend: vxlan}"
LOCAL = ["a-0", "a-1", "a-2", "a-3"]  # on node-1
REMOTE = "b-0"  # on node-2
NET_ADDR_SET = 3  # include/uapi/linux/netdevice.h


def pod(name: str, node: str) -> str:
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: 80, protocol: TCP}}]}}]}}\n")


def topology(cni: str) -> str:
    text = ("apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: bridge-mac}\n"
            f"spec: {{nodes: 2, cni: {cni}}}\n")
    return text + "".join(pod(p, "node-1") for p in LOCAL) + pod(REMOTE, "node-2")


def links(ns: str) -> list[dict]:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cni0_mac(node_ns: str) -> str:
    return next(link["address"] for link in links(node_ns) if link["ifname"] == "cni0")


def addr_assign_type(node_ns: str) -> int:
    """NET_ADDR_SET (3) once the address was given explicitly; a bridge that follows its ports shows 1 or 0."""
    out = subprocess.run(["ip", "netns", "exec", node_ns, "cat", "/sys/class/net/cni0/addr_assign_type"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def host_veths(c, node_ns: str) -> dict[str, dict]:
    """Pod -> its host veth in the node's namespace (found by the pod eth0's peer index, whoever named it)."""
    by_index = {link["ifindex"]: link for link in links(node_ns)}
    out = {}
    for name in LOCAL:
        eth0 = next(link for link in links(c.netns(f"default/{name}")) if link["ifname"] == "eth0")
        out[name] = by_index[eth0["link_index"]]
    return out


def wait_gone(node_ns: str, ifname: str, timeout: float = GENEROUS) -> None:
    """A namespace's devices are torn down by the kernel after its last reference goes (net/core/net_namespace.c
    cleanup_net runs from a workqueue), so the deleted pod's port may leave cni0 a moment after delete returns."""
    wait_until(lambda: not any(link["ifname"] == ifname for link in links(node_ns)), timeout=timeout,
               interval=0.01, what=f"{ifname} to leave {node_ns} after its pod was deleted")


@pytest.mark.parametrize("cni", [BUILTIN, REAL_PLUGIN], ids=["builtin", "bridge-plugin"])
def test_deleting_the_lowest_mac_pod_leaves_the_others_reachable_at_once(cni, emu_cluster, tmp_path):
    if cni == REAL_PLUGIN and not all(os.path.exists(f"/usr/lib/cni/{b}") for b in ("bridge", "host-local",
                                                                                    "portmap")):
        pytest.skip("needs Debian's containernetworking-plugins in /usr/lib/cni")
    path = tmp_path / "cluster.yaml"
    path.write_text(topology(cni))
    with emu_cluster(str(path)) as c:
        node_ns = c.netns("node/node-1")
        veths = host_veths(c, node_ns)
        lowest = min(veths, key=lambda p: veths[p]["address"])  # the port a MAC-following bridge would copy
        prober, neighbour = [p for p in LOCAL if p != lowest][:2]
        for dst in (REMOTE, neighbour):  # the prober now holds a neighbour entry for its gateway
            r = c.probe(f"default/{prober}", f"default/{dst}", port=80)
            assert r["ok"], f"before the delete: {prober} -> {dst} = {r['verdict']}"
        before = cni0_mac(node_ns)

        gone = tmp_path / "gone.yaml"
        gone.write_text(pod(lowest, "node-1").lstrip("-\n"))
        change = c.delete(str(gone))
        assert change.removed == (f"default/{lowest}",)
        wait_gone(node_ns, veths[lowest]["ifname"])

        # at once: no time for the prober's neighbour entry to expire
        remote = c.probe(f"default/{prober}", f"default/{REMOTE}", port=80)
        local = c.probe(f"default/{prober}", f"default/{neighbour}", port=80)
        after = cni0_mac(node_ns)
        assert (remote["ok"], local["ok"]) == (True, True), (
            f"{prober} -> {REMOTE} (other node) = {remote['verdict']}, {prober} -> {neighbour} (same node) = "
            f"{local['verdict']}; cni0 {before} -> {after}")
        assert after == before, f"cni0 changed its MAC from {before} to {after} when {lowest} left"
        assert addr_assign_type(node_ns) == NET_ADDR_SET
        if cni == BUILTIN:  # the address the plan gives it (emu up --dry-run shows it)
            node = next(n for n in c.plan.infra if n.role == "node" and n.owner == "node-1")
            assert before == next(link.mac for link in node.links if link.name == "cni0")
    assert not [n for n in netns.list_names() if n.startswith(c.name + ".")]


def test_cni0_made_live_on_a_nodes_first_pod_has_its_planned_address(emu_cluster, tmp_path):
    """`emu apply` of a node's first pod creates cni0 (emu.apply.links.ensure_node) with the plan's MAC, pinned; a later
    pod on the node (ensure_node meets the existing cni0) leaves it as it was."""
    path = tmp_path / "cluster.yaml"
    path.write_text("apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: bridge-mac-live}\n"
                    f"spec: {{nodes: 2, cni: {BUILTIN}}}\n" + pod("a-0", "node-1"))
    with emu_cluster(str(path)) as c:
        node_ns = c.netns("node/node-2")
        assert "cni0" not in {link["ifname"] for link in links(node_ns)}  # no pod there yet
        node = next(n for n in c.plan.infra if n.role == "node" and n.owner == "node-2")
        assert not any(link.name == "cni0" for link in node.links)
        for i, name in enumerate(("b-0", "b-1")):
            more = tmp_path / f"{name}.yaml"
            more.write_text(pod(name, "node-2").lstrip("-\n"))
            assert c.apply(str(more)).added == (f"default/{name}",)
            node = next(n for n in c.plan.infra if n.role == "node" and n.owner == "node-2")
            planned = next(link.mac for link in node.links if link.name == "cni0")
            assert (cni0_mac(node_ns), addr_assign_type(node_ns)) == (planned, NET_ADDR_SET), f"after {name}"
            r = c.probe(f"default/{name}", "default/a-0", port=80)
            assert r["ok"], f"{name} -> a-0 = {r['verdict']}"
