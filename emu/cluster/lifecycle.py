"""Cluster lifecycle: up, down, live apply/delete.  Orchestrates model -> ipam -> plan -> apply, keeping the record
first so that a failure at any point (or a SIGKILL) can be undone from it."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emu.observe import agent
from emu.apply import links as apply
from emu.cluster import daemons
from emu.alloc import ipam
from emu.apply import kernel
from emu.addons.multus import addon as multus
from emu.apply import netns
from emu.plan import planner
from emu.apply import processes, state
from emu.model import loader as topology
from emu.cluster import events
from emu.network.cni import pods as cni_pods
from emu.addons.dns import addon as dns_addon
from emu.addons.ingress import addon as ingress_addon
from emu.addons.ingress import controller as ingress
from emu.addons.kubeproxy import inputs
from emu.addons.kubeproxy import sync as kpsync
from emu.addons.netpol import sync as netpol_sync
from emu.errors import ClusterError, Problem, ValidationError
from emu.alloc.ipam import Allocations
from emu.model.types import Protocol, ProxyMode, Topology
from emu.plan.objects import ClusterPlan

Progress = Callable[[str, int, int], None]


def _quiet(stage: str, done: int, total: int) -> None:
    pass


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
    topo = _topology_from(rec, rec.documents)
    alloc = Allocations.from_json(rec.allocations)
    return Cluster(rec, topo, alloc, planner.build(topo, alloc))


def _topology_from(rec: state.Record, stored: list[dict[str, Any]]) -> Topology:
    docs = [topology.Document(d["file"], d["index"], d["body"]) for d in stored]
    spec = topology.cluster_spec(docs[0], rec.name)
    topo = topology.build(rec.topology_file, spec, docs[1:])
    if not rec.pod_conditions:
        return topo
    pods = tuple(dataclasses.replace(p, **rec.pod_conditions[p.key]) if p.key in rec.pod_conditions else p
                 for p in topo.pods)
    return dataclasses.replace(topo, pods=pods)


def _stored(doc: topology.Document) -> dict[str, Any]:
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


def plan_file(path: str, name: str | None = None) -> tuple[Topology, Allocations, ClusterPlan]:
    """Model, IPAM and plan for a topology file: pure, no root needed (`emu up --dry-run`); a `plugin: cni` plan
    carries the plugin calls `up` would make."""
    from emu.network.cni import dryrun
    topo, alloc, plan, _ = _plan_documents(path, name)
    return topo, alloc, dryrun.for_plan(topo, plan)


def _plan_documents(path: str, name: str | None
                    ) -> tuple[Topology, Allocations, ClusterPlan, list[topology.Document]]:
    docs = topology.read_documents(path)
    topo = topology.load_documents(path, docs, name)
    alloc = ipam.allocate(topo, Allocations.empty())
    return topo, alloc, planner.build(topo, alloc), docs


def up(path: str, name: str | None = None, progress: Progress = _quiet) -> Cluster:
    topo, alloc, plan, docs = _plan_documents(path, name)
    preflight(plan, topo)
    rec, lock = state.claim(topo.cluster.name, os.path.abspath(path))
    try:
        rec.documents = [_stored(d) for d in docs]
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


def sync_services(cl: Cluster, old: Cluster | None) -> list[kpsync.SyncResult]:
    """Every node's kube-proxy: a full sync where its input changed (all nodes on the first sync)."""
    new_states = inputs.node_states(cl.topology, cl.allocations)
    old_states = inputs.node_states(old.topology, old.allocations) if old else {}
    mode = cl.topology.cluster.proxy.mode
    return kpsync.sync_all([(n.netns, new_states[n.name], old_states.get(n.name)) for n in cl.plan.nodes], mode,
                           first=old is None, backend=cl.topology.cluster.iptables_backend,
                           log_dir=os.path.join(cl.record.dir, "nodes"))  # <node>/kube-proxy.log


UNIX_PATH_MAX = 108  # sizeof(sun_path), NUL included: an AF_UNIX socket's path holds at most 107 bytes


def preflight(plan: ClusterPlan, topo: Topology) -> None:
    sock = os.path.join(state.cluster_dir(topo.cluster.name), "agent", agent.SOCK_FILE)
    if len(sock.encode()) >= UNIX_PATH_MAX:  # else the agent fails to bind after the cluster is half built
        raise ClusterError(f"the agent's socket {sock} would be {len(sock.encode())} bytes, over the "
                           f"{UNIX_PATH_MAX - 1} an AF_UNIX path holds: choose a shorter EMU_STATE_DIR")
    mode = topo.cluster.proxy.mode
    if mode is ProxyMode.IPVS:
        kernel.require("ip_vs", "kube-proxy ipvs mode")
        kernel.require("dummy", "kube-proxy ipvs mode (kube-ipvs0)")
        if shutil.which("ipset") is None:
            raise ClusterError("kube-proxy ipvs mode needs the ipset tool (run tools/setup)")
    if mode is ProxyMode.NFTABLES:
        kernel.require("nftables", "kube-proxy nftables mode")
    taken = [n for n in plan.all_netns() if netns.exists(n)]
    if taken:
        raise ClusterError(f"network namespace {taken[0]} already exists and is not this cluster's: "
                           f"choose another name with --name")
    if os.geteuid() != 0:
        raise ClusterError("emu up needs root (network namespaces, netlink and iptables)")
    from shutil import which
    if which(topo.cluster.iptables("restore")) is None:
        raise ClusterError(f"{topo.cluster.iptables('restore')} is not installed (run tools/setup)")


def _build(cl: Cluster, progress: Progress) -> None:
    plan = cl.plan
    names = plan.all_netns()
    total = len(plan.pods)
    progress("namespaces", 0, len(names))
    netns.create_many(names)
    progress("namespaces", len(names), len(names))
    with apply.Sockets() as s:
        ix = apply.Indexes()
        apply.apply_infra(plan.infra, s, ix)
        if not cni_pods.is_cni(cl.topology.cluster):
            apply.apply_pods(plan.pods, s, ix, lambda i: progress("pods", i, total))
            multus.wire(cl.topology, cl.allocations.secondary, plan.pods)  # secondary networks (built-in mode)
    if cni_pods.is_cni(cl.topology.cluster):  # real plugin binaries wire the pods; their addresses are the truth
        cl.allocations, cl.plan, _ = cni_pods.attach(cl.record.dir, cl.topology, cl.allocations, plan,
                                                     [p.key for p in plan.pods], progress)
        plan = cl.plan
        cl.record.allocations = cl.allocations.to_json()
        cl.record.save()
    for n in plan.nodes:
        state.write_file(cl.record, f"nodes/{n.name}/run/flannel/subnet.env", n.subnet_env)
    _start_agent(cl)
    progress("agent", 1, 1)
    wait_ready(cl, progress)
    sync_services(cl, None)
    progress("kube-proxy", len(plan.nodes), len(plan.nodes))
    netpol_sync.sync_cluster(cl)  # kube-router's policy controller, once the cluster has a NetworkPolicy
    dns_addon.start(cl)  # pods' resolv.conf; with the coredns ConfigMap, the cluster DNS server
    ingress.start(cl)  # with an Ingress: nginx in the ingress-nginx controller pod


def endpoints(cl: Cluster) -> list[dict[str, Any]]:
    """What the per-cluster server daemon answers: every declared containerPort of every pod, in its namespace
    (not those of pods an addon process serves, like the ingress controller's nginx)."""
    sctp = kernel.has("sctp")
    out = []
    for pod in cl.topology.pods:
        pp = cl.plan.pod(pod.key)
        assert pp is not None
        ports = [{"port": p.container_port, "protocol": p.protocol.value} for p in pod.ports
                 if (p.protocol is not Protocol.SCTP or sctp)  # SCTP only where the kernel has SCTP sockets
                 and ingress_addon.SERVED_BY not in pod.annotations]
        out.append({"netns": pp.netns.name, "owner": pod.key, "node": pp.node, "ip": str(pp.ip), "ports": ports})
    return out


def _start_agent(cl: Cluster) -> None:
    d = cl.record.agent_dir
    os.makedirs(d, exist_ok=True)
    state.write_file(cl.record, "agent/agent.json", json.dumps({"cluster": cl.name, "endpoints": endpoints(cl)}))
    cl.record.agent_pid = agent.start(d)
    cl.record.save()
    agent.AgentClient(d).wait_ready(timeout=60)


def _restarters() -> dict[str, Callable[[Cluster], None]]:
    """How each daemon of `daemons.expected` is started again (as `up` starts it)."""
    return {"agent": _start_agent, "dns": dns_addon.start, "ingress-nginx": ingress.start}


def _repair(cl: Cluster) -> list[str]:
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
        return _repair(open_cluster(name))


def _answers_here(ip: str, port: int, proto: Protocol, pod_name: str) -> bool:
    """Inside the pod's namespace: does the server answer at the pod's own address, as that pod?"""
    kind = socket.SOCK_STREAM if proto is Protocol.TCP else socket.SOCK_DGRAM
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(0.5)
            if proto is Protocol.TCP:
                s.connect((ip, port))
                s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return data.endswith(pod_name.encode())
            s.sendto(b"hostname", (ip, port))
            return s.recv(4096) == pod_name.encode()
    except OSError:
        return False


def wait_ready(cl: Cluster, progress: Progress = _quiet, timeout: float = 30.0) -> None:
    """Every pod answers on its first port at its own address, from inside its namespace (this proves the address,
    the interface and the server without filling the shared neighbour table on large topologies)."""
    checks = {}
    for pod in cl.topology.pods:
        if ingress_addon.SERVED_BY in pod.annotations:
            continue  # its server (nginx) starts after the pods: ingress.start waits for it
        port = next((x for x in pod.ports if x.protocol is not Protocol.SCTP), None)
        pp = cl.plan.pod(pod.key)
        if port is not None and pp is not None and (not pp.host_network or pp.netns.name not in checks):
            checks[pp.netns.name] = (str(pp.ip), port.container_port, port.protocol, pod.name, pod.key)
    total, deadline = len(checks), time.monotonic() + timeout
    while checks:
        names = list(checks)
        ok = netns.each(names, lambda n: _answers_here(*checks[n][:4]))
        for n, good in zip(names, ok):
            if good:
                del checks[n]
        progress("ready", total - len(checks), total)
        if checks and time.monotonic() > deadline:
            slow = sorted(v[4] for v in checks.values())
            raise ClusterError(f"{len(slow)} pods do not answer after {timeout:.0f}s: {', '.join(slow[:5])}")
        if checks:
            time.sleep(0.2)


# --- down -----------------------------------------------------------------------------------------------------------


def _stop_agent(rec: state.Record) -> None:
    for pid in daemons.agent_pids(rec):
        processes.stop(pid, lambda p: daemons.is_our_agent(p, rec.agent_dir))


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
    _stop_agent(rec)
    ingress.stop(rec)  # nginx, before its pod's namespace goes
    dns_addon.stop(rec)  # the DNS server and the /etc/netns files the record names
    cni_pods.detach(rec.dir)  # DEL for every recorded CNI ADD, while the namespaces still exist
    for ns in rec.netns:
        netns.remove(ns)
    state.forget(rec.name)


# --- live changes: emu apply -f / emu delete -f --------------------------------------------------------------------


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
        _repair(cl)
        new = {_ident(d.body): _stored(d) for d in manifests}
        docs = [new.pop(_ident(d["body"]), d) for d in cl.record.documents]  # replace in place
        return _converge(cl, docs + list(new.values()), progress)


def delete_file(name: str, path: str, progress: Progress = _quiet) -> Change:
    """kubectl delete: the file's objects go; deleting a Namespace deletes what lives in it."""
    gone = {_ident(d.body) for d in _manifests(os.path.abspath(path))}
    gone_ns = {n for k, _, n in gone if k == "Namespace"}
    with state.locked(name, "emu delete"):
        cl = open_cluster(name)
        _repair(cl)
        docs = [d for i, d in enumerate(cl.record.documents)
                if i == 0 or (_ident(d["body"]) not in gone and _ident(d["body"])[1] not in gone_ns)]
        return _converge(cl, docs, progress)


def _converge(cl: Cluster, docs: list[dict[str, Any]], progress: Progress) -> Change:
    """Validate the whole new object set, then add and remove pods without touching the ones that stay."""
    topo = _topology_from(cl.record, docs)
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
    staying = Cluster(rec, _only(cl.topology, set(old) - {p.key for p in removed}), cl.allocations, cl.plan)
    agent.AgentClient(rec.agent_dir).sync(endpoints(staying))  # stop serving removed pods first
    cni = cni_pods.is_cni(topo.cluster)
    if cni and removed:
        cni_pods.detach(rec.dir, [p.key for p in removed])  # DEL before the pod's namespace goes
    if ingress.controller_pod(cl) in {p.key for p in removed}:
        ingress.stop(rec)  # nginx leaves before its pod's namespace does
    for n in removed_ns:
        netns.remove(n)  # the kernel deletes the veth pair with the namespace
    netns.create_many(added_ns)
    wire = added
    if cni and added:
        try:
            alloc, plan, _ = cni_pods.attach(rec.dir, topo, alloc, plan, [p.key for p in added], progress)
        except BaseException:  # roll the new pods back: DEL what was added, remove their namespaces
            cni_pods.detach(rec.dir, [p.key for p in added])
            for n in added_ns:
                netns.remove(n)
            rec.netns = [n for n in rec.netns if n not in set(added_ns)]
            rec.save()
            raise
        new = Cluster(rec, topo, alloc, plan)
        wire = []  # wired by the plugins
    with apply.Sockets() as s:
        ix = apply.Indexes()
        for ns in plan.infra:
            if ns.role == "node" and any(p.node == ns.owner for p in wire):
                ix.seed(ns.name, s)
                apply.ensure_node(ns, s, ix)  # cni0 and its address on a node's first pod
        apply.apply_pods(wire, s, ix, lambda i: progress("pods", i, len(wire)))
    multus.wire(topo, alloc.secondary, wire)
    rec.documents = docs
    rec.pod_conditions = {k: v for k, v in rec.pod_conditions.items() if k in now}
    rec.allocations = alloc.to_json()
    rec.netns = [n for n in rec.netns if n not in set(removed_ns)]
    rec.save()
    agent.AgentClient(rec.agent_dir).sync(endpoints(new))
    wait_ready(Cluster(rec, _only(topo, {p.key for p in added}), alloc, plan), progress)
    _update_external_routes(cl.plan, plan)
    sync_services(new, cl)
    netpol_sync.sync_cluster(new)  # pods, labels, namespaces or policies changed: regenerate where it matters
    dns_addon.sync(new)  # new records (the DNS server re-reads its zone), resolv.conf of new pods
    ingress.sync(new)  # Ingresses, their Services' endpoints or Secrets changed: new nginx.conf, reload
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
        _repair(cl)
        cl.record.pod_conditions[pod] = CONDITIONS[condition]
        return _converge(cl, cl.record.documents, _quiet)


def _only(topo: Topology, keys: set[str]) -> Topology:
    return Topology(topo.file, topo.cluster, topo.namespaces, tuple(p for p in topo.pods if p.key in keys))
