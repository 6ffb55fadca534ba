"""What `emu up --dry-run` prints for the pods of a `plugin: cni` cluster: the plugin calls `up` would make, as
shell lines a person can replay (the same shape as `emu cni log`'s replay line).

Per pod, in order: ADD of cni-loopback (ifname lo), of the cluster network (eth0) and of each Multus network (net1,
...), one line per plugin of each list, run inside the node's namespace with CNI_COMMAND, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH set and the plugin's stdin as libcni builds it (runtimeConfig by
capability).  Two things are known only when `up` runs: the container ID (a new sha256 per pod, `$CONTAINER_ID`
here) and each chained plugin's prevResult (the previous plugin's result), which a comment names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emu.apply import netns
from emu.model.types import Topology
from emu.plan.objects import ClusterPlan
from emu.network.cni import pods
from emu.network.cni.runtime import RuntimeConf, find_plugin, k8s_args, plugin_env, plugin_stdin
from emu.network.cni.spec import settings

CONTAINER_ID = "$CONTAINER_ID"


@dataclass(frozen=True, slots=True)
class PluginCall:
    """One plugin invocation of a pod's ADD."""

    pod: str
    node_netns: str
    network: str
    plugin: str
    path: str  # the binary found in binDir ("" when there is none)
    env: tuple[tuple[str, str], ...]
    stdin: dict[str, Any]
    chained: bool  # gets the previous plugin's result as prevResult


def calls(topo: Topology, plan: ClusterPlan, state_dir: str) -> tuple[PluginCall, ...]:
    """Every plugin call of every pod's ADD, in the order `up` makes them on each node (pure: reads the conflist)."""
    c = topo.cluster
    bins = settings(c).bin_dir
    nets = {n: pods.node_network_list(c, state_dir, n) for n in c.nodes}
    by_key = {p.key: p for p in topo.pods}
    out = []
    for pp in plan.pods:
        if pp.host_network:  # no sandbox, no CNI call
            continue
        ns, name = pp.key.split("/", 1)
        args = tuple((k, "${CONTAINER_ID:0:8}-${CONTAINER_ID:8:4}" if k == "K8S_POD_UID" else v)
                     for k, v in k8s_args(ns, name, CONTAINER_ID))
        for net, ifname, caps, _ in pods.pod_networks(topo, state_dir, by_key.get(pp.key), pp.node, nets[pp.node]):
            rt = RuntimeConf(CONTAINER_ID, netns.path(pp.netns.name), ifname, args, caps)
            env = plugin_env("ADD", rt, bins)
            env.pop("PATH", None)
            for i, plugin in enumerate(net.plugins):
                out.append(PluginCall(pp.key, pp.node_netns, net.name, plugin["type"],
                                      find_plugin(plugin["type"], bins) or "", tuple(env.items()),
                                      plugin_stdin(net, plugin, None, rt), i > 0))
    return tuple(out)


def render(cs: tuple[PluginCall, ...]) -> list[str]:
    """Shell lines: per pod a fresh $CONTAINER_ID, then one `echo STDIN | ip netns exec NODE env CNI_... PLUGIN`
    per call."""
    lines: list[str] = []
    pod = None
    for call in cs:
        if call.pod != pod:
            pod = call.pod
            lines.append(f"# pod {pod}: CNI plugins, run inside {call.node_netns}")
            lines.append("CONTAINER_ID=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)")
        env = " ".join(f"{k}={_quote(v)}" for k, v in call.env)
        if call.chained:
            lines.append(f"# {call.plugin} also gets \"prevResult\": the result of the plugin before it")
        if not call.path:
            lines.append(f"# {call.plugin} is not in binDir: up fails here")
        lines.append(f"echo {_shq(json.dumps(call.stdin))} | ip netns exec {call.node_netns} env {env} "
                     f"{call.path or call.plugin}")
    return lines


def _quote(v: str) -> str:
    """$CONTAINER_ID must expand: double quotes for values holding it (names and paths have no other $)."""
    return f'"{v}"' if "$" in v else _shq(v)


def _shq(s: str) -> str:
    return "'" + str(s).replace("'", "'\"'\"'") + "'"
