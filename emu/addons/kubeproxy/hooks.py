"""kube-proxy as an Addon: one proxier per node (emu.addons.kubeproxy.proxiers, the mode's row), synced from the
Services and EndpointSlices the node sees.

Its preflight is its proxier's (the kernel features and tools the mode needs); up runs a first full sync on every
node; a change re-syncs the nodes whose input changed (each node's log under <record>/nodes/<node>/kube-proxy.log).
Its state lives in the nodes' namespaces, which `down` removes: there is nothing of it to stop.
"""
from __future__ import annotations

import os

from emu.addons.base import Addon, Emit, Running
from emu.addons.kubeproxy import desired, inputs, proxiers, systempods
from emu.addons.kubeproxy import sync as kpsync
from emu.model.types import Topology
from emu.plan.content import Section, by_owner


def sync_services(cl: Running, old: Running | None) -> list[kpsync.SyncResult]:
    """Every node's kube-proxy: a full sync where its input changed (all nodes on the first sync)."""
    new_states = inputs.node_states(cl.topology, cl.allocations)
    old_states = inputs.node_states(old.topology, old.allocations) if old else {}
    mode = cl.topology.cluster.proxy.mode
    return kpsync.sync_all([(n.netns, new_states[n.name], old_states.get(n.name)) for n in cl.plan.nodes], mode,
                           first=old is None, backend=cl.topology.cluster.iptables_backend,
                           log_dir=os.path.join(cl.record.dir, "nodes"))  # <node>/kube-proxy.log


def _preflight(topo: Topology) -> None:
    proxiers.for_mode(topo.cluster.proxy.mode).preflight()  # the kernel features and tools its proxier needs


def _start(cl: Running) -> None:
    sync_services(cl, None)


def _events(old: Running | None, new: Running, emit: Emit) -> None:
    """On up: the scheduler places the kube-proxy DaemonSet's pods (node affinity), and each kube-proxy records
    `Starting` on its Node (cmd/kube-proxy/app/server.go, birthCry), once per node."""
    if old is not None:
        return
    for sp in systempods.kube_proxy(new):
        emit("Normal", "Scheduled", "Pod", sp.namespace, sp.name, f"Successfully assigned {sp.key} to {sp.node}",
             "default-scheduler")
    for n in new.plan.nodes:
        emit("Normal", "Starting", "Node", "", n.name, "", "kube-proxy")


def _dry_run(cl: Running) -> list[Section]:
    mode = cl.topology.cluster.proxy.mode.value
    return [(f"kube-proxy ({mode}) on {node}", objs)
            for node, objs in by_owner(desired.desired(cl.topology, cl.allocations, cl.plan)).items()]


KUBE_PROXY = Addon("kube-proxy", kinds=("Service", "EndpointSlice"), preflight=_preflight, start=_start,
                   sync=sync_services, events=_events, per_node=True, dry_run=_dry_run)
