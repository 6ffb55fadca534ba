"""Cluster lifecycle: up and down, as loops over the cluster's pod network (emu.network.table) and its addons
(emu.addons.table), keeping the record first so that a failure at any point (or a SIGKILL) can be undone from it.

    up    model -> IPAM -> plan -> preflight (ours, then each addon's) -> record -> namespaces -> the infra plan
          (underlay, external router, nodes) -> the network's node start and pod wiring -> its files -> the agent
          -> every pod answers -> each addon's `start`, in ADDONS order
    down  the agent, each addon's `stop` in reverse order, each network's `unwire`, the namespaces, the record

Live changes (emu apply / delete / mark) are emu.cluster.converge."""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from shutil import which
from typing import Any

from emu.addons.table import ADDONS
from emu.alloc import ipam
from emu.alloc.ipam import Allocations
from emu.apply import links as apply
from emu.apply import netns, state
from emu.cluster import daemons, events, planner, workload
from emu.cluster.agent import client as agent
from emu.cluster.planner import plan_documents, plan_file  # noqa: F401 (plan_file: the dry run's, and tests')
from emu.cluster.workload import Progress, _quiet
from emu.errors import ClusterError
from emu.model import loader as topology
from emu.model import schema
from emu.model.types import Topology
from emu.network import table as networks
from emu.network.base import Wiring
from emu.plan.objects import ClusterPlan


@dataclass
class Cluster:
    """A running cluster as its record describes it: the model, the allocations and the plan."""

    record: state.Record
    topology: Topology
    allocations: Allocations
    plan: ClusterPlan

    @property
    def name(self) -> str:
        return self.record.name


def open_cluster(name: str) -> Cluster:
    rec = state.load(name)
    if rec is None or not rec.documents:
        raise ClusterError(f"cluster {name!r} not found (emu status lists clusters)")
    topo = topology_from(rec, rec.documents)
    alloc = Allocations.from_json(rec.allocations)
    return Cluster(rec, topo, alloc, planner.build(topo, alloc))


def topology_from(rec: state.Record, stored: list[dict[str, Any]]) -> Topology:
    docs = [topology.Document(d["file"], d["index"], d["body"], tuple(schema.unknown_fields(d["body"])))
            for d in stored]  # strict fields for manifests `emu apply` adds, as `up` read its own
    spec = planner.cluster_spec(docs[0], rec.name)
    topo = planner.build_topology(rec.topology_file, spec, docs[1:])
    if not rec.pod_conditions:
        return topo
    pods = tuple(dataclasses.replace(p, **rec.pod_conditions[p.key]) if p.key in rec.pod_conditions else p
                 for p in topo.pods)
    return dataclasses.replace(topo, pods=pods)


def stored(doc: topology.Document) -> dict[str, Any]:
    return {"file": doc.file, "index": doc.index, "body": doc.body}


def pick(name: str | None) -> str:
    """`--cluster NAME`; with exactly one cluster up it is implied."""
    if name:
        state.cluster_dir(name)  # refuses a name that is not a cluster name, before anything is built from it
        return name
    running = state.names()
    if len(running) == 1:
        return running[0]
    if not running:
        raise ClusterError("no cluster is up (emu up FILE)")
    raise ClusterError(f"several clusters are up ({', '.join(running)}): pick one with --cluster NAME")


# --- up -------------------------------------------------------------------------------------------------------------


def up(path: str, name: str | None = None, progress: Progress = _quiet) -> Cluster:
    topo, alloc, plan, docs = plan_documents(path, name)
    preflight(plan, topo)
    rec, lock = state.claim(topo.cluster.name, os.path.abspath(path))
    try:
        rec.documents = [stored(d) for d in docs]
        rec.allocations = alloc.to_json()
        rec.netns = plan.all_netns()
        rec.created = time.time()
        rec.save()  # ownership first: from here on, `down` can undo whatever happens
        cl = Cluster(rec, topo, alloc, plan)
        try:
            _build(cl, progress)
            rec.status = "up"
            rec.save()
            events.record(rec, events.between(None, cl))
        except BaseException:
            _remove(rec)
            raise
        return cl
    finally:
        lock.release()


UNIX_PATH_MAX = 108  # sizeof(sun_path), NUL included: an AF_UNIX socket's path holds at most 107 bytes


def preflight(plan: ClusterPlan, topo: Topology) -> None:
    sock = os.path.join(state.cluster_dir(topo.cluster.name), "agent", agent.SOCK_FILE)
    if len(sock.encode()) >= UNIX_PATH_MAX:  # else the agent fails to bind after the cluster is half built
        raise ClusterError(f"the agent's socket {sock} would be {len(sock.encode())} bytes, over the "
                           f"{UNIX_PATH_MAX - 1} an AF_UNIX path holds: choose a shorter EMU_STATE_DIR")
    for addon in ADDONS:
        addon.preflight(topo)  # kube-proxy: the kernel features and tools its proxier needs
    taken = [n for n in plan.all_netns() if netns.exists(n)]
    if taken:
        raise ClusterError(f"network namespace {taken[0]} already exists and is not this cluster's: "
                           f"choose another name with --name")
    if os.geteuid() != 0:
        raise ClusterError("emu up needs root (network namespaces, netlink and iptables)")
    if which(topo.cluster.iptables("restore")) is None:
        raise ClusterError(f"{topo.cluster.iptables('restore')} is not installed (run tools/setup)")


def _build(cl: Cluster, progress: Progress) -> None:
    plan = cl.plan
    names = plan.all_netns()
    progress("namespaces", 0, len(names))
    netns.create_many(names)
    progress("namespaces", len(names), len(names))
    net = networks.for_cluster(cl.topology.cluster)
    with apply.Sockets() as s:
        ix = apply.Indexes()
        apply.apply_infra(plan.infra, s, ix)
        wiring = Wiring(cl.record, cl.topology, cl.allocations, plan, s, ix)
        net.start(wiring)
        alloc = net.wire(wiring, plan.pods, progress)
    if alloc is not cl.allocations:  # the plugins chose the addresses: they are the truth
        cl.allocations, cl.plan = alloc, planner.build(cl.topology, alloc)
        plan = cl.plan
        cl.record.allocations = cl.allocations.to_json()
        cl.record.save()
    for n in plan.nodes:
        for path, text in n.files:  # flannel's subnet.env
            state.write_file(cl.record, f"nodes/{n.name}/{path}", text)
    workload.start_agent(cl)
    progress("agent", 1, 1)
    workload.wait_ready(cl.topology, plan, progress)
    for addon in ADDONS:
        addon.start(cl)
        if addon.per_node:
            progress(addon.name, len(plan.nodes), len(plan.nodes))


def _restarters() -> dict[str, Callable[[Cluster], None]]:
    """How each daemon of `daemons.expected` is started again (as `up` starts it)."""
    return {daemons.AGENT: workload.start_agent, **{a.name: a.daemon.restart for a in ADDONS if a.daemon}}


def repair_daemons(cl: Cluster) -> list[str]:
    """Start every daemon the record expects that is not running; the caller holds the cluster's lock."""
    dead = [d.name for d in daemons.down(cl.record)]
    restart = _restarters()
    for name in dead:
        restart[name](cl)
    return dead


def repair(name: str, on_wait: Callable[[str], None] | None = None) -> list[str]:
    """`emu up --repair NAME`: restart the cluster's daemons that died (the agent, the DNS server, nginx); returns
    the names of those it restarted.  Every command that changes the cluster does the same first."""
    with state.locked(name, "emu up --repair", on_wait):
        return repair_daemons(open_cluster(name))


# --- down -----------------------------------------------------------------------------------------------------------


def down(name: str, on_wait: Callable[[str], None] | None = None) -> bool:
    """Remove everything the record names, under the cluster's lock (a command still changing the cluster finishes
    first).  Idempotent; returns False if there was nothing to remove."""
    if not state.exists(name):
        return False
    try:
        lock = state.Lock.take(name, "emu down", on_wait)
    except ClusterError:  # removed by another `down` meanwhile, or not a cluster directory of ours
        if os.path.islink(state.cluster_dir(name)):
            state.forget(name)  # a symlink planted in the state directory: unlink it, never follow it
            return True
        return False
    try:
        rec = state.load(name)
        if rec is None:  # `up` was killed between making the directory and writing the record
            state.forget(name)
        else:
            _remove(rec)
        return True
    finally:
        lock.release()


def _remove(rec: state.Record) -> None:
    """Everything the record names, in reverse order of making it; the caller holds the cluster's lock."""
    workload.stop_agent(rec)
    for addon in reversed(ADDONS):
        addon.stop(rec)  # nginx before its pod's namespace goes; the DNS server and its /etc/netns files
    for net in networks.NETWORKS:
        net.unwire(rec, None)  # what the record says each network made (every CNI ADD's DEL), while namespaces exist
    for ns in rec.netns:
        netns.remove(ns)
    state.forget(rec.name)
