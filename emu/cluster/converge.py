"""Live changes: `emu apply -f`, `emu delete -f` and `emu mark`, as kubectl and the kubelet make them.  The whole
new object set is validated first; then pods are added and removed without touching the ones that stay, and the
pod network and every addon (emu.addons.table, in order) follow the change."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from emu.addons.table import ADDONS
from emu.alloc import ipam
from emu.apply import links as apply
from emu.apply import kernel, netns, state
from emu.cluster import events, planner, workload
from emu.cluster.agent import client as agent
from emu.cluster.lifecycle import Cluster, open_cluster, repair_daemons, stored, topology_from
from emu.cluster.workload import Progress, _quiet
from emu.errors import ClusterError, Problem, ValidationError
from emu.model import loader as topology
from emu.model.types import Topology
from emu.network import table as networks
from emu.network.base import Wiring
from emu.plan.objects import ClusterPlan


@dataclass(frozen=True)
class Change:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: int


def _ident(body: dict[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    ns = "" if body.get("kind") == "Namespace" else (meta.get("namespace") or "default")
    return (str(body.get("kind")), ns, str(meta.get("name")))


def _manifests(path: str) -> list[topology.Document]:
    docs = topology.read_documents(path)
    bad = [d for d in docs if d.kind == "Cluster"]
    if bad:
        raise ValidationError([Problem(path, bad[0].index, bad[0].label(), "kind",
                                       "a Cluster cannot be applied to a running cluster (emu up takes it)")])
    return docs


def apply_file(name: str, path: str, progress: Progress = _quiet) -> Change:
    """kubectl apply: objects in the file are created or replaced; the cluster converges live."""
    manifests = _manifests(os.path.abspath(path))  # read and checked before the lock: bad input waits for nothing
    with state.locked(name, "emu apply"):
        cl = open_cluster(name)
        repair_daemons(cl)
        new = {_ident(d.body): stored(d) for d in manifests}
        docs = [new.pop(_ident(d["body"]), d) for d in cl.record.documents]  # replace in place
        return _converge(cl, docs + list(new.values()), progress)


def delete_file(name: str, path: str, progress: Progress = _quiet) -> Change:
    """kubectl delete: the file's objects go; deleting a Namespace deletes what lives in it."""
    gone = {_ident(d.body) for d in _manifests(os.path.abspath(path))}
    gone_ns = {n for k, _, n in gone if k == "Namespace"}
    with state.locked(name, "emu delete"):
        cl = open_cluster(name)
        repair_daemons(cl)
        docs = [d for i, d in enumerate(cl.record.documents)
                if i == 0 or (_ident(d["body"]) not in gone and _ident(d["body"])[1] not in gone_ns)]
        return _converge(cl, docs, progress)


def _converge(cl: Cluster, docs: list[dict[str, Any]], progress: Progress) -> Change:
    """Validate the whole new object set, then add and remove pods without touching the ones that stay."""
    topo = topology_from(cl.record, docs)
    alloc = ipam.allocate(topo, cl.allocations)
    plan = planner.build(topo, alloc)
    old = {p.key: p for p in cl.plan.pods}
    now = {p.key: p for p in plan.pods}
    added = [p for k, p in now.items() if k not in old]
    removed = [p for k, p in old.items() if k not in now]
    rec = cl.record
    added_ns = [p.netns.name for p in added if not p.host_network]  # hostNetwork pods live in their node's
    removed_ns = [p.netns.name for p in removed if not p.host_network]
    rec.netns = list(dict.fromkeys(rec.netns + added_ns))
    rec.save()  # ownership first
    new = Cluster(rec, topo, alloc, plan)
    sctp = kernel.has("sctp")  # the agent serves SCTP ports only where the kernel has SCTP sockets
    staying = _only(cl.topology, set(old) - {p.key for p in removed})
    agent.AgentClient(rec.agent_dir).sync(workload.endpoints(staying, cl.plan, sctp))  # stop serving them first
    net = networks.for_cluster(topo.cluster)
    if removed:
        net.unwire(rec, [p.key for p in removed])  # a CNI DEL, before the pod's namespace goes
        for addon in ADDONS:
            addon.pods_leaving(cl, frozenset(p.key for p in removed))  # nginx leaves before its pod's namespace
    for n in removed_ns:
        netns.remove(n)  # the kernel deletes the veth pair with the namespace
    netns.create_many(added_ns)
    if added:
        try:
            wired = net.wire(Wiring(rec, topo, alloc, plan), added, progress)
        except BaseException:  # roll the new pods back: undo what was wired (DEL), remove their namespaces
            net.unwire(rec, [p.key for p in added])
            for n in added_ns:
                netns.remove(n)
            rec.netns = [n for n in rec.netns if n not in set(added_ns)]
            rec.save()
            raise
        if wired is not alloc:  # the plugins chose the addresses: they are the truth
            alloc, plan = wired, planner.build(topo, wired)
            new = Cluster(rec, topo, alloc, plan)
    rec.documents = docs
    rec.pod_conditions = {k: v for k, v in rec.pod_conditions.items() if k in now}
    rec.allocations = alloc.to_json()
    rec.netns = [n for n in rec.netns if n not in set(removed_ns)]
    rec.save()
    agent.AgentClient(rec.agent_dir).sync(workload.endpoints(topo, plan, sctp))
    workload.wait_ready(_only(topo, {p.key for p in added}), plan, progress)
    _update_external_routes(cl.plan, plan)
    for addon in ADDONS:
        addon.sync(new, cl)  # Services, policies, DNS records, Ingresses follow the new object set
    events.record(rec, events.between(cl, new))
    return Change(tuple(p.key for p in added), tuple(p.key for p in removed), len(now) - len(added))


def _update_external_routes(old: ClusterPlan, new: ClusterPlan) -> None:
    """LoadBalancer routes on the external router follow the Services (and, for Local policy, their endpoints)."""
    before, after = set(old.infra[1].routes), set(new.infra[1].routes)
    if before == after:
        return
    ns = new.infra[1]
    with apply.Sockets() as s:
        ix = apply.Indexes()
        ix.seed(ns.name, s)
        b = s.batch(ns.name)
        for r in sorted(before - after, key=str):
            b.route_del(str(r.dst.network_address), r.dst.prefixlen)
        b.commit()
        for r in sorted(after - before, key=str):
            b.route_del(str(r.dst.network_address), r.dst.prefixlen)
            try:
                b.commit()
            except OSError:
                pass  # there was no route for it yet
            b.route_add(str(r.dst.network_address), r.dst.prefixlen, ix.get(ns.name, r.dev),
                        nexthops=tuple(str(h) for h in r.nexthops))
        b.commit()


CONDITIONS = {"ready": {"ready": True, "terminating": False}, "not-ready": {"ready": False, "terminating": False},
              "terminating": {"ready": True, "terminating": True},
              "terminating-not-serving": {"ready": False, "terminating": True}}


def mark(name: str, pod: str, condition: str) -> Change:
    """Set a pod's readiness or termination, as the kubelet and the API server would, and let kube-proxy follow:
    its endpoints become not ready, or serving-and-terminating (still used when nothing else is ready)."""
    with state.locked(name, "emu mark"):
        cl = open_cluster(name)
        if cl.plan.pod(pod) is None:
            raise ClusterError(f"no pod {pod} in cluster {name}")
        repair_daemons(cl)
        cl.record.pod_conditions[pod] = CONDITIONS[condition]
        return _converge(cl, cl.record.documents, _quiet)


def _only(topo: Topology, keys: set[str]) -> Topology:
    return Topology(topo.file, topo.cluster, topo.namespaces, tuple(p for p in topo.pods if p.key in keys))
