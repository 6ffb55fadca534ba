"""`kubectl describe pod` and `kubectl describe node` (kubectl/pkg/describe/describe.go: describePod,
describeNode) from the model, the plan and the manifests the cluster record keeps.  Pure.

A pod's containers, images and ports come from its manifest (its Pod, or its Deployment's template); what only a
container runtime knows (container and image IDs) stays empty.  Where emu's dataplane shows in a real cluster's
objects it is shown the same way: Multus' network-status annotation on pods, flannel's annotations on nodes."""
from __future__ import annotations

import ipaddress
import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from emu.alloc import ipam
from emu.addons.multus import allocate as multus
from emu.addons.kubeproxy import systempods
from emu.cluster import planner
from emu.model import pods as model_pods
from emu.cluster.lifecycle import Cluster
from emu.network import table as networks
from emu.report.describe_text import Context, rfc1123z, write_annotations, write_events, write_labels
from emu.report.output import human_duration
from emu.model.documents import Document
from emu.model.types import Pod
from emu.report.tabwriter import Writer

# --- Pod -------------------------------------------------------------------------------------------------------------

# DefaultTolerationSeconds admission gives every pod these two (describe sorts tolerations by key)
DEFAULT_TOLERATIONS = ("node.kubernetes.io/not-ready:NoExecute op=Exists for 300s",
                       "node.kubernetes.io/unreachable:NoExecute op=Exists for 300s")
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"  # what Multus writes on every pod it attaches
DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")
PRIORITIES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


def _documents(cl: Cluster) -> list[Document]:
    """The manifests the cluster was made from (its record), plus the addon objects emu adds to them (CoreDNS,
    ingress-nginx) exactly as the loader adds them."""
    docs = [Document(d["file"], d["index"], d["body"]) for d in cl.record.documents]
    return docs + planner.added_documents(cl.topology.file, docs, cl.topology.cluster)


def _pod_spec(docs: Sequence[Document], pod: Pod) -> dict[str, Any]:
    """The pod's spec as written: its Pod, or the template of the Deployment whose ReplicaSet made it."""
    for d in docs:
        if (d.meta.get("namespace") or "default") != pod.namespace or not isinstance(d.body.get("spec"), dict):
            continue
        if d.kind == "Pod" and d.meta.get("name") == pod.name:
            return d.body["spec"]
        if d.kind == "Deployment" and pod.owner:
            tmpl = d.body["spec"].get("template")
            if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict) and \
                    pod.owner == f"ReplicaSet/{d.meta.get('name')}-{model_pods.pod_template_hash(tmpl)}":
                return tmpl["spec"]
    return {}


def _containers(spec: Mapping[str, Any], pod: Pod) -> list[dict[str, Any]]:
    ctrs = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    if ctrs:
        return ctrs
    # no manifest on record: one container with the ports the model holds
    return [{"name": pod.name, "ports": [{"containerPort": p.container_port, "protocol": p.protocol.value,
                                          **({"name": p.name} if p.name else {})} for p in pod.ports]}]


def _ports(ports: Sequence[Mapping[str, Any]], field: str) -> str:
    """describeContainerPorts / describeContainerHostPorts: `80/TCP (name)`, joined with ", "."""
    out = []
    for p in ports:
        text = f"{p.get(field) or 0}/{p.get('protocol') or 'TCP'}"
        out.append(f"{text} ({p['name']})" if p.get("name") else text)
    return ", ".join(out)


def _container(w: Writer, c: Mapping[str, Any], ready: bool, started: float) -> None:
    """describeContainerBasicInfo, Command/Args, State, Environment, Mounts.  There is no container runtime:
    Container ID and Image ID stay empty."""
    w.write(1, f"{c.get('name', '')}:\n")
    w.write(2, "Container ID:\t\n")
    w.write(2, f"Image:\t{c.get('image', '')}\n")
    w.write(2, "Image ID:\t\n")
    ports = [p for p in c.get("ports") or [] if isinstance(p, dict)]
    for label, field in (("Port", "containerPort"), ("Host Port", "hostPort")):
        text = _ports(ports, field)
        if "," in text:
            w.write(2, f"{label}s:\t{text}\n")
        else:
            w.write(2, f"{label}:\t{text or '<none>'}\n")
    for title, key in (("Command", "command"), ("Args", "args")):
        if c.get(key):
            w.write(2, f"{title}:\n")
            for arg in c[key]:
                for line in str(arg).split("\n"):
                    w.write(3, f"{line}\n")
    w.write(2, "State:\tRunning\n")
    w.write(3, f"Started:\t{rfc1123z(started)}\n")
    w.write(2, f"Ready:\t{'True' if ready else 'False'}\n")
    w.write(2, "Restart Count:\t0\n")
    env = [e for e in c.get("env") or [] if isinstance(e, dict) and "value" in e]
    w.write(2, "Environment:" + ("" if env else "\t<none>") + "\n")
    for e in env:
        for i, line in enumerate(str(e["value"]).split("\n")):
            w.write(3, f"{e.get('name', '')}:\t{line}\n" if i == 0 else f"\t{line}\n")
    w.write(2, "Mounts:\t<none>\n")


def _default_network(cl: Cluster) -> str:
    """The name of the cluster network Multus delegates to, as the pod network names it: flannel's conflist is
    "cbr0"; a `plugin: cni` cluster's own conflist (the file its topology names) names itself."""
    return networks.for_cluster(cl.topology.cluster).network_name(cl.topology.cluster)


def network_status(cl: Cluster, pod: Pod) -> str | None:
    """The k8s.v1.cni.cncf.io/network-status annotation Multus writes once it has attached a pod: each network's
    status as json.MarshalIndent(s, "", "    "), joined into "[...]" (Multus' own framing).  emu's cluster runs
    Multus when it has NetworkAttachmentDefinitions; hostNetwork pods never meet a CNI plugin.  Interface MACs
    emu does not plan (the kernel picks the pod's eth0) are left out, as Multus leaves out an empty one."""
    pp = cl.plan.pod(pod.key)
    if pp is None or pod.host_network or not cl.topology.attachments:
        return None
    node = next(n for n in cl.plan.nodes if n.name == pp.node)
    statuses: list[dict[str, Any]] = [{"name": _default_network(cl), "interface": "eth0", "ips": [str(pp.ip)],
                                       "default": True, "dns": {}, "gateway": [str(ipam.gateway(node.subnet))]}]
    nads = {n.key: n for n in cl.topology.attachments}
    for a in multus.attachments(cl.allocations.secondary, pod.key):
        s: dict[str, Any] = {"name": a.nad, "interface": a.ifname, "ips": [str(a.ip)]}
        if a.mac:
            s["mac"] = a.mac
        s["dns"] = {}
        nad = nads.get(a.nad)  # Gateway: the next hops of the result's default routes
        gws = [str(gw or a.gateway) for dst, gw in (nad.routes if nad else ())
               if dst == DEFAULT_ROUTE and (gw or a.gateway)]
        if gws:
            s["gateway"] = gws
        statuses.append(s)
    return "[" + ",".join(json.dumps(s, indent=4) for s in statuses) + "]"


def describe_pod(ctx: Context, namespace: str, name: str) -> str:
    """describePod: the pod as the API server holds it once the kubelet runs it (Running, or Terminating)."""
    cl = ctx.cl
    pod = next((p for p in cl.topology.pods if p.namespace == namespace and p.name == name), None)
    if pod is None:  # a kube-proxy pod: its DaemonSet's template, on its node's address
        sp = next(p for p in systempods.kube_proxy(cl) if p.namespace == namespace and p.name == name)
        pod, node_name, ip, spec = sp.as_pod(), sp.node, sp.ip, systempods.KUBE_PROXY_SPEC
    else:
        pp = cl.plan.pod(pod.key)
        assert pp is not None
        node_name, ip = pp.node, str(pp.ip)
        spec = _pod_spec(ctx.memo("documents", lambda: _documents(cl)), pod)
    node = next(n for n in cl.plan.nodes if n.name == node_name)
    started = ctx.created("Pod", namespace, name)
    annotations = dict(pod.annotations)
    status = network_status(cl, pod)
    if status is not None:
        annotations[NETWORK_STATUS] = status
    w = Writer()
    w.write(0, f"Name:\t{pod.name}\n")
    w.write(0, f"Namespace:\t{pod.namespace}\n")
    pclass = spec.get("priorityClassName")
    w.write(0, f"Priority:\t{PRIORITIES.get(str(pclass), 0) if pclass else 0}\n")
    if pclass:
        w.write(0, f"Priority Class Name:\t{pclass}\n")
    w.write(0, f"Service Account:\t{spec.get('serviceAccountName') or 'default'}\n")
    w.write(0, f"Node:\t{node.name}/{node.ip}\n")
    w.write(0, f"Start Time:\t{rfc1123z(started)}\n")
    write_labels(w, "Labels", pod.labels)
    write_annotations(w, annotations)
    if pod.terminating:  # deletionTimestamp set; emu does not record when
        w.write(0, "Status:\tTerminating (lasts <unknown>)\n")
        w.write(0, f"Termination Grace Period:\t{spec.get('terminationGracePeriodSeconds', 30)}s\n")
    else:
        w.write(0, "Status:\tRunning\n")
    w.write(0, f"IP:\t{ip}\n")
    w.write(0, "IPs:\n")
    w.write(1, f"IP:\t{ip}\n")
    if pod.owner:
        w.write(0, f"Controlled By:\t{pod.owner}\n")
    w.write(0, "Containers:\n")
    for c in _containers(spec, pod):
        _container(w, c, pod.ready, started)
    w.write(0, "Conditions:\n  Type\tStatus\n")
    ready = "True" if pod.ready else "False"
    for cond, st in (("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", ready),
                     ("ContainersReady", ready), ("PodScheduled", "True")):
        w.write(1, f"{cond} \t{st} \n")
    w.write(0, "Volumes:\t<none>\n")
    w.write(0, "QoS Class:\tBestEffort\n")
    write_labels(w, "Node-Selectors", {str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()})
    tolerations = spec.get("tolerations") if pod.owner == "DaemonSet/kube-proxy" else DEFAULT_TOLERATIONS
    for i, t in enumerate(tolerations or DEFAULT_TOLERATIONS):
        w.write(0, f"{'Tolerations:' if i == 0 else ''}\t{t}\n")
    write_events(w, ctx.shown("Pod", namespace, name), ctx.now)
    return w.text()


# --- Node ------------------------------------------------------------------------------------------------------------

CONTROL_PLANE_LABELS = {"node-role.kubernetes.io/control-plane": "",
                        "node.kubernetes.io/exclude-from-external-load-balancers": ""}  # kubeadm's first node


def _arch() -> str:
    """The kubernetes.io/arch label: GOARCH of the machine (the nodes share its kernel)."""
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def describe_node(ctx: Context, _ns: str, name: str) -> str:
    """describeNode without what emu does not model (kubelet conditions, capacity, system info, lease): labels and
    annotations as kubeadm, the kubelet and flanneld set them, addresses, PodCIDR, the pods on the node."""
    cl = ctx.cl
    c = cl.topology.cluster
    n = next(x for x in cl.plan.nodes if x.name == name)
    control = name == c.nodes[0]
    arch = _arch()
    labels = {"beta.kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
              "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              **(CONTROL_PLANE_LABELS if control else {})}
    annotations = {"node.alpha.kubernetes.io/ttl": "0",
                   "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
    annotations.update(networks.for_cluster(c).node_annotations(c, n))  # flanneld's kube subnet manager writes some
    pods = sorted([p for p in cl.topology.pods if (pp := cl.plan.pod(p.key)) is not None and pp.node == name] +
                  [sp.as_pod() for sp in systempods.kube_proxy(cl) if sp.node == name],
                  key=lambda p: (p.namespace, p.name))
    w = Writer()
    w.write(0, f"Name:\t{name}\n")
    w.write(0, f"Roles:\t{'control-plane' if control else '<none>'}\n")
    write_labels(w, "Labels", labels)
    write_annotations(w, annotations)
    w.write(0, f"CreationTimestamp:\t{rfc1123z(ctx.created('Node', '', name))}\n")
    w.write(0, "Taints:\t<none>\n")
    w.write(0, "Unschedulable:\tfalse\n")
    w.write(0, "Addresses:\n")
    w.write(1, f"InternalIP:\t{n.ip}\n")
    w.write(1, f"Hostname:\t{name}\n")
    w.write(0, f"PodCIDR:\t{n.subnet}\n")
    w.write(0, f"PodCIDRs:\t{n.subnet}\n")
    w.write(0, f"Non-terminated Pods:\t({len(pods)} in total)\n")
    w.write(1, "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\tMemory Limits\tAge\n")
    w.write(1, "---------\t----\t\t------------\t----------\t---------------\t-------------\t---\n")
    for p in pods:
        age = human_duration(ctx.now - ctx.created("Pod", p.namespace, p.name))
        w.write(1, f"{p.namespace}\t{p.name}\t\t0 (0%)\t0 (0%)\t0 (0%)\t0 (0%)\t{age}\n")
    w.write(0, "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n")
    w.write(1, "Resource\tRequests\tLimits\n")
    w.write(1, "--------\t--------\t------\n")
    for res in ("cpu", "memory", "ephemeral-storage"):
        w.write(1, f"{res}\t0 (0%)\t0 (0%)\n")
    write_events(w, ctx.shown("Node", "", name), ctx.now)
    return w.text()
