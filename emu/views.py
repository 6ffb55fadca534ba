"""kubectl-shaped views of a running cluster (`emu get`): the same columns kubectl prints, plus the dataplane
facts a reader of this tool wants (node subnet, netns, host-side veth)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import netns, report
from .cluster import Cluster
from .flannel import mtu as flannel_mtu

VERSION = "v1.33.0-emu"


@dataclass
class View:
    headers: list[str]
    wide_headers: list[str]
    rows: list[list[Any]]
    wide_rows: list[list[Any]]
    items: list[dict[str, Any]]
    empty: str

    def table(self, wide: bool = False) -> str:
        if not self.rows:
            return self.empty
        if wide:
            return report.table(self.headers + self.wide_headers, [r + w for r, w in zip(self.rows, self.wide_rows)])
        return report.table(self.headers, self.rows)


def get(cl: Cluster, kind: str, namespace: str | None) -> View:
    if kind in ("nodes", "node", "no"):
        return nodes(cl)
    if kind in ("namespaces", "namespace", "ns"):
        return namespaces(cl)
    return pods(cl, namespace)


def _age(cl: Cluster) -> str:
    return report.age(cl.record.created)


def nodes(cl: Cluster) -> View:
    c = cl.topology.cluster
    rows, wide, items = [], [], []
    for n in cl.plan.nodes:
        ready = "Ready" if netns.exists(n.netns) else "NotReady"
        role = "control-plane" if n.name == c.nodes[0] else "<none>"
        npods = sum(p.node == n.name for p in cl.plan.pods)
        rows.append([n.name, ready, role, _age(cl), VERSION])
        wide.append([n.ip, n.subnet, c.mtu, flannel_mtu(c), f"flannel/{c.cni.backend.value}", npods, n.netns])
        items.append({"name": n.name, "status": ready, "roles": role, "internalIP": str(n.ip),
                      "podCIDR": str(n.subnet), "mtu": c.mtu, "podMTU": flannel_mtu(c),
                      "backend": c.cni.backend.value, "vtepMAC": n.vtep_mac, "pods": npods, "netns": n.netns})
    return View(["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
                ["INTERNAL-IP", "POD-CIDR", "MTU", "POD-MTU", "CNI", "PODS", "NETNS"], rows, wide, items,
                "No resources found")


def pods(cl: Cluster, namespace: str | None) -> View:
    rows, wide, items = [], [], []
    for pod in cl.topology.pods:
        if namespace is not None and pod.namespace != namespace:
            continue
        pp = cl.plan.pod(pod.key)
        assert pp is not None
        st = "Running" if netns.exists(pp.netns.name) else "Unknown"
        first = [pod.namespace] if namespace is None else []
        rows.append(first + [pod.name, "1/1" if st == "Running" else "0/1", st, 0, _age(cl)])
        wide.append([pp.ip, pp.node, pp.host_link.name, pp.netns.name])
        items.append({"namespace": pod.namespace, "name": pod.name, "status": st, "ip": str(pp.ip), "node": pp.node,
                      "labels": dict(pod.labels), "owner": pod.owner, "hostVeth": pp.host_link.name,
                      "netns": pp.netns.name,
                      "ports": [{"name": p.name, "containerPort": p.container_port, "protocol": p.protocol.value}
                                for p in pod.ports]})
    headers = (["NAMESPACE"] if namespace is None else []) + ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    empty = "No resources found" + (f" in {namespace} namespace." if namespace else ".")
    return View(headers, ["IP", "NODE", "HOST-VETH", "NETNS"], rows, wide, items, empty)


def namespaces(cl: Cluster) -> View:
    rows, wide, items = [], [], []
    for ns in cl.topology.namespaces:
        npods = sum(p.namespace == ns.name for p in cl.topology.pods)
        labels = ",".join(f"{k}={v}" for k, v in sorted(ns.labels.items()))
        rows.append([ns.name, "Active", _age(cl)])
        wide.append([npods, labels])
        items.append({"name": ns.name, "status": "Active", "labels": dict(ns.labels), "pods": npods})
    return View(["NAME", "STATUS", "AGE"], ["PODS", "LABELS"], rows, wide, items, "No resources found")
