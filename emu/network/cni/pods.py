"""Pods of a `plugin: cni` cluster: ADD on creation, DEL on removal and on `down`, driven by the cluster record.

Per pod and network an *attachment* file (`<state>/cni/attachments/<ns>_<pod>.json`) is written before the first
plugin runs and removed after its DEL: it holds everything DEL needs (the rendered network lists, the container
ID, CNI_ARGS, capability args, the node's namespace), so `emu down` calls DEL exactly once for every ADD that
started, also after `emu up` or `emu apply` was killed with SIGKILL.  As containerd's CRI plugin does, the pod gets
the `cni-loopback` network (the loopback plugin, ifname lo) and then the cluster's network (ifname eth0), then, as
Multus delegates them, its secondary networks (net1, ...); each with the runtimeConfig `capabilities` offers it.

Pods of one node are wired one after the other (host-local hands out addresses in order, as on a real node);
nodes run in parallel.  The pod IP is the one the plugins' result gives eth0: it replaces the model's prediction in
the cluster's allocations, so Services, NetworkPolicy, probes and the server daemon use the real address.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from emu.alloc import ipam
from emu.addons.multus import wire as multus
from emu.model import names
from emu.apply import netns
from emu.alloc.ipam import Allocations, Assignment
from emu.model.types import ClusterSpec, Pod, Topology
from emu.plan.objects import ClusterPlan, PodPlan
from emu.network.cni import config
from emu.network.cni.capabilities import capability_args
from emu.network.cni.nodes import pod_mtu
from emu.network.cni.spec import settings
from emu.network.cni.runtime import (CNIError, NetConfList, Runtime, RuntimeConf, k8s_args, sandbox_ips, sandbox_mac,
    host_interfaces)

POD_IFNAME = "eth0"
MAX_NODE_WORKERS = 8


def cni_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "cni")


def log_path(state_dir: str) -> str:
    return os.path.join(cni_dir(state_dir), "log.jsonl")


def node_dir(state_dir: str, node: str) -> str:
    return os.path.join(cni_dir(state_dir), "nodes", node)


def attachments_dir(state_dir: str) -> str:
    return os.path.join(cni_dir(state_dir), "attachments")


def _attachment_path(state_dir: str, key: str) -> str:
    return os.path.join(attachments_dir(state_dir), key.replace("/", "_") + ".json")


def template_values(c: ClusterSpec, state_dir: str, node: str) -> dict[str, str]:
    subnet = ipam.node_subnets(c)[node]
    nd = node_dir(state_dir, node)
    return {"NODE_NAME": node, "NODE_IP": str(ipam.node_ips(c)[node]), "NODE_SUBNET": str(subnet),
            "NODE_GATEWAY": str(ipam.gateway(subnet)), "POD_CIDR": str(c.pod_cidr), "SERVICE_CIDR": str(c.service_cidr),
            "MTU": str(pod_mtu(c, node)), "DATA_DIR": os.path.join(nd, "ipam"), "STATE_DIR": nd, "CLUSTER": c.name}


def node_network_list(c: ClusterSpec, state_dir: str, node: str) -> NetConfList:
    """The node's network list: the conflist with this node's values, or flannel's delegate (nodeConfig flannel
    without a conflist)."""
    values = template_values(c, state_dir, node)
    data_dir = values["DATA_DIR"]
    conflist = settings(c).conflist
    if conflist is None:
        return config.flannel_delegate(ipam.node_subnets(c)[node], c.pod_cidr, pod_mtu(c, node), data_dir)
    with open(conflist) as f:
        return config.load_text(f.read(), values, data_dir, values["STATE_DIR"])


def node_network(c: ClusterSpec, state_dir: str, node: str) -> NetConfList:
    """node_network_list, as written into `<state>/cni/nodes/<node>/net.d/`."""
    net = node_network_list(c, state_dir, node)
    d = os.path.join(node_dir(state_dir, node), "net.d")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"10-{net.name}.conflist"), "w") as f:
        json.dump(net.to_dict(), f, indent=2)
    return net


@dataclass
class Attached:
    key: str
    node: str
    ip: ipaddress.IPv4Address
    host_ifaces: list[str]
    plugin_ms: float  # time spent in plugin processes for this pod (all calls)
    secondary: tuple[tuple[str, str, str, str], ...] = ()  # Multus networks: (NAD, ifname, address/prefix, MAC)


def _container_id(cluster: str, key: str) -> str:
    return hashlib.sha256(f"{cluster}/{key}/{time.time_ns()}/{os.getpid()}/{threading.get_native_id()}"
                          .encode()).hexdigest()


def _write_json(path: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{threading.get_native_id()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _runtime(c_bins: tuple[str, ...] | list[str], state_dir: str, node: str, node_ns: str, key: str) -> Runtime:
    return Runtime(c_bins, os.path.join(node_dir(state_dir, node), "cache"), log_path(state_dir), node_ns,
                   {"pod": key, "node": node})


def pod_networks(topo: Topology, state_dir: str, pod: Pod | None, node: str, net: NetConfList
                 ) -> list[tuple[NetConfList, str, dict[str, Any], str | None]]:
    """What a pod's ADD runs, in order, as (network list, ifname, capability args, NAD key or None): cni-loopback on
    lo, the cluster network on eth0 with what the runtime offers it, then each Multus network (net1, ...) with what
    Multus offers it (host-local and tuning keeping their files in the node's directories)."""
    values = template_values(topo.cluster, state_dir, node)
    offers = capability_args(pod)
    extra = multus.cni_networks(topo, pod, values["DATA_DIR"], values["STATE_DIR"], net, offers)
    return [(NetConfList.from_dict(config.LOOPBACK), "lo", {}, None), (net, POD_IFNAME, offers, None),
            *((n, ifn, o, nad) for n, ifn, nad, o in extra)]


def _add_one(c: ClusterSpec, state_dir: str, pp: PodPlan,
             nets: list[tuple[NetConfList, str, dict[str, Any], str | None]]) -> Attached:
    """ADD every network of `pod_networks` in order, recorded as one attachment."""
    ns, name = pp.key.split("/", 1)
    cid = _container_id(c.name, pp.key)
    netns_path = netns.path(pp.netns.name)
    args = k8s_args(ns, name, cid)
    att = {"pod": pp.key, "node": pp.node, "nodeNetns": pp.node_netns, "netns": pp.netns.name,
           "binDir": list(settings(c).bin_dir), "status": "adding",
           "networks": [{"conf": n.to_dict(), "rt": RuntimeConf(cid, netns_path, ifn, args, caps).to_json()}
                        for n, ifn, caps, _ in nets]}
    path = _attachment_path(state_dir, pp.key)
    _write_json(path, att)  # ownership first: from here on, DEL will be called for this pod
    rt = _runtime(settings(c).bin_dir, state_dir, pp.node, pp.node_netns, pp.key)
    try:
        results: dict[str, dict[str, Any]] = {}
        for n, ifn, caps, _ in nets:
            results[ifn] = rt.add(n, RuntimeConf(cid, netns_path, ifn, args, caps))
        result = results[POD_IFNAME]
        secondary = []
        for _, ifn, _, nad in nets:
            if nad is None:
                continue
            v4s = [a for a in sandbox_ips(results[ifn], ifn) if "." in a]
            if not v4s:
                raise CNIError(f"network {nad} gave pod {pp.key} no IPv4 address on {ifn}: {json.dumps(results[ifn])}")
            secondary.append((nad, ifn, v4s[0], sandbox_mac(results[ifn], ifn)))
        ips = [ipaddress.ip_interface(a) for a in sandbox_ips(result, POD_IFNAME)]
        v4 = [i.ip for i in ips if isinstance(i.ip, ipaddress.IPv4Address)]
        if not v4:
            raise CNIError(f"network {nets[1][0].name!r} gave pod {pp.key} no IPv4 address on {POD_IFNAME}: "
                           f"{json.dumps(result)}")
    except BaseException:
        _del_attachment(state_dir, path, att)  # the runtime tears down a failed ADD (nothing is left behind)
        raise
    att.update(status="added", ip=str(v4[0]), result=result)
    _write_json(path, att)
    return Attached(pp.key, pp.node, v4[0], host_interfaces(result), sum(x.ms for x in rt.calls), tuple(secondary))


def attach(state_dir: str, topo: Topology, alloc: Allocations, plan: ClusterPlan, keys: list[str],
           progress: Callable[[str, int, int], None] = lambda *a: None
           ) -> tuple[Allocations, list[Attached]]:
    """ADD every pod in `keys`; returns the allocations with the plugins' addresses (the caller builds the plan
    again from them) and per pod what was attached.  On a failure the failed pod is torn down and CNIError raised
    (the pods added before it stay recorded, so `down` or the caller's rollback removes them)."""
    c = topo.cluster
    nets = {n: node_network(c, state_dir, n) for n in c.nodes}
    by_node: dict[str, list[PodPlan]] = {}
    for k in keys:
        pp = plan.pod(k)
        assert pp is not None
        if pp.host_network:  # no sandbox: the kubelet runs no CNI plugin for hostNetwork pods
            continue
        by_node.setdefault(pp.node, []).append(pp)
    pods_by_key = {p.key: p for p in topo.pods}
    done: list[Attached] = []
    lock = threading.Lock()
    total = len(keys)

    def node_work(pods: list[PodPlan]) -> None:
        for pp in pods:
            pod_nets = pod_networks(topo, state_dir, pods_by_key.get(pp.key), pp.node, nets[pp.node])
            a = _add_one(c, state_dir, pp, pod_nets)
            with lock:
                done.append(a)
                progress("pods", len(done), total)

    if by_node:
        with ThreadPoolExecutor(max_workers=min(MAX_NODE_WORKERS, len(by_node))) as ex:
            futures = [ex.submit(node_work, pods) for pods in by_node.values()]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    new_pods = dict(alloc.pods)
    secondary = alloc.secondary
    for a in done:
        new_pods[a.key] = Assignment(a.node, a.ip)
        if a.secondary:  # the plugins' addresses replace the prediction
            secondary = multus.record_cni(secondary, a.key, list(a.secondary))
    alloc = Allocations(new_pods, dict(alloc.last_reserved), alloc.services, secondary)
    return alloc, done


def _del_attachment(state_dir: str, path: str, att: dict[str, Any]) -> list[str]:
    """DEL every network of an attachment in reverse order; errors are returned, the file is removed."""
    errors: list[str] = []
    node_ns = att.get("nodeNetns")
    if node_ns and netns.exists(node_ns):  # plugins only ever run inside the node, never in the root namespace
        rt = _runtime(att.get("binDir") or [], state_dir, att.get("node", ""), node_ns, att.get("pod", ""))
        pod_alive = netns.exists(att.get("netns", ""))
        for n in reversed(att.get("networks", [])):
            r = RuntimeConf.from_json(n["rt"])
            if not pod_alive:
                r = RuntimeConf(r.container_id, "", r.ifname, r.args, r.capability_args)  # spec: netns may be gone
            try:
                rt.delete(NetConfList.from_dict(n["conf"]), r)
            except CNIError as e:
                errors.append(str(e))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return errors


def recorded(state_dir: str) -> list[dict[str, Any]]:
    out = []
    try:
        files = sorted(os.listdir(attachments_dir(state_dir)))
    except FileNotFoundError:
        return []
    for f in files:
        if not f.endswith(".json"):
            continue
        try:
            with open(os.path.join(attachments_dir(state_dir), f)) as fh:
                out.append(json.load(fh))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def host_veths(state_dir: str) -> dict[str, str]:
    """Per pod, the host-side interface the plugins made for its eth0, from the cached result recorded with the
    attachment (libcni's cache holds the same): the last interface outside the sandbox, since bridge lists the
    bridge and then the veth, ptp only the veth.  "" when the result names none (a plugin that reports no
    interfaces, or a pod whose ADD has not finished)."""
    out = {}
    for a in recorded(state_dir):
        hosts = host_interfaces(a.get("result") or {})
        out[a.get("pod", "")] = hosts[-1] if hosts else ""
    return out


def detach(state_dir: str, keys: list[str] | None = None) -> list[str]:
    """DEL the pods in `keys` (every recorded attachment when None), nodes in parallel; returns the errors
    (teardown goes on past a failing plugin, as kubelet's does)."""
    atts = [a for a in recorded(state_dir) if keys is None or a.get("pod") in set(keys)]
    by_node: dict[str, list[dict[str, Any]]] = {}
    for a in atts:
        by_node.setdefault(a.get("node", ""), []).append(a)
    errors: list[str] = []

    def node_work(group: list[dict[str, Any]]) -> list[str]:
        out = []
        for a in group:
            out.extend(_del_attachment(state_dir, _attachment_path(state_dir, a["pod"]), a))
        return out

    if by_node:
        with ThreadPoolExecutor(max_workers=min(MAX_NODE_WORKERS, len(by_node))) as ex:
            for errs in ex.map(node_work, by_node.values()):
                errors.extend(errs)
    return errors


def pod_netns_name(c: ClusterSpec, key: str) -> str:
    ns, name = key.split("/", 1)
    return names.pod_netns(c.name, ns, name)
