"""runtimeConfig capability arguments: what the runtime offers each attachment of a pod (libcni's
RuntimeConf.CapabilityArgs); `runtime.plugin_stdin` hands a plugin only the keys its config declares in
`capabilities`, as libcni's injectRuntimeConfig does, so a plugin that does not declare a key never sees it.

eth0 gets what containerd's CRI plugin offers: `portMappings` from the containers' hostPorts and `bandwidth` from
the kubernetes.io/ingress-bandwidth and egress-bandwidth annotations.  Kubernetes has no field for a pod's address
or MAC on its primary network: containerd never offers `ips` or `mac`, and Multus drops the `ips`/`mac` of a
v1.multus-cni.io/default-network selection element (mergeCNIRuntimeConfig skips them for the "MasterPlugin").  So
emu, playing the runtime, offers the CNI conventions' `ips` and `mac` keys (CONVENTIONS.md: what Multus sends its
delegates) from the pod annotations `emu.dev/ips` and `emu.dev/mac`, for eth0 only.  (podman passes one address and
a MAC as the CNI_ARGS IP= and MAC= instead, and `ips` only for several addresses; runtimeConfig is the form a
plugin must declare, so the one a plugin developer tests.)

net1, net2, ... get what Multus offers (pkg/types/conf.go mergeCNIRuntimeConfig and newCNIRuntimeConf): the
runtimeConfig the runtime gave Multus, that is the keys Multus' generated config declares (the union of the
cluster network's plugins' capabilities), with the network selection element's `ips` and `mac` on top.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Iterable

from emu.model import quantity
from emu.model.documents import Collector, Document
from emu.errors import Problem
from emu.network.cni.netconf import NetConfList

LAYER = "model"

IPS_ANNOTATION = "emu.dev/ips"  # runtimeConfig.ips for eth0: "10.244.0.50/24" or a JSON list / comma list
MAC_ANNOTATION = "emu.dev/mac"  # runtimeConfig.mac for eth0: "c2:b0:57:49:47:01"
RUNTIME_KEYS = ("portMappings", "bandwidth")  # what containerd offers, and so what reaches Multus' delegates

_MAC_COLON = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2})*")
_MAC_DOT = re.compile(r"[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4})*")


def parse_mac(text: str) -> bytes | None:
    """The address Go's net.ParseMAC (what Multus and the plugins call) reads from `text`, or None: 6, 8 or 20
    octets written `xx:xx:..`, `xx-xx-..` or `xxxx.xxxx.xxxx`."""
    if not isinstance(text, str):
        return None
    if _MAC_COLON.fullmatch(text):
        raw = bytes(int(x, 16) for x in re.split("[:-]", text))
    elif _MAC_DOT.fullmatch(text):
        raw = bytes.fromhex(text.replace(".", ""))
    else:
        return None
    return raw if len(raw) in (6, 8, 20) else None


def mac_problem(text: object) -> str | None:
    if not isinstance(text, str) or parse_mac(text) is None:
        return f"{text!r} is not a MAC address (xx:xx:xx:xx:xx:xx)"
    return None


def ip_problem(text: object) -> str | None:
    """Multus' check of a requested address (parsePodNetworkAnnotation): a CIDR when it has a "/", else an IP."""
    if not isinstance(text, str):
        return f"{text!r} must be a string"
    try:
        if "/" in text:
            ipaddress.ip_interface(text)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not an IP address or CIDR"
    return None


def split_ips(value: str) -> list[str]:
    """`emu.dev/ips` as written: a JSON list of strings or a comma list; raises ValueError when malformed."""
    value = value.strip()
    if value.startswith("["):
        items = json.loads(value)
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError("the JSON form must be a list of strings")
        return [x.strip() for x in items]
    return [x.strip() for x in value.split(",") if x.strip()]


def requested(annotations: Any) -> dict[str, Any]:
    """`ips` and `mac` from the emu.dev annotations of a pod (only what is set; assumes check_pod passed)."""
    out: dict[str, Any] = {}
    ips = annotations.get(IPS_ANNOTATION)
    if ips is not None:
        vals = split_ips(str(ips))
        if vals:
            out["ips"] = vals
    mac = annotations.get(MAC_ANNOTATION)
    if mac:
        out["mac"] = str(mac).strip()
    return out


def capability_args(pod: Any | None) -> dict[str, Any]:
    """What the runtime offers the pod's eth0: portMappings from the containers' hostPorts, bandwidth from the
    kubernetes.io/ingress-bandwidth and egress-bandwidth annotations (bits per second, bursts math.MaxUint32, as
    containerd's toCNIBandWidth), ips and mac from emu.dev/ips and emu.dev/mac; each only when there is something
    to send, as containerd does."""
    if pod is None:
        return {}
    out: dict[str, Any] = {}
    pm = [{"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.value.lower()}
          for p in pod.ports if p.host_port]
    if pm:
        out["portMappings"] = pm
    bw = quantity.bandwidth_capability(pod.annotations)
    if bw:
        out["bandwidth"] = bw
    out.update(requested(pod.annotations))
    return out


def declared(net: NetConfList) -> set[str]:
    """The capabilities a network list's plugins declare (Multus' generated config declares their union)."""
    out: set[str] = set()
    for p in net.plugins:
        caps = p.get("capabilities")
        if isinstance(caps, dict):
            out.update(k for k, on in caps.items() if on is True)
    return out


def multus_args(primary: NetConfList | None, pod_args: dict[str, Any], ips: Iterable[str] = (),
                mac: str | None = None) -> dict[str, Any]:
    """What Multus offers a delegate (a secondary network): the runtime's offers that reached Multus (the keys the
    cluster network `primary` declares; containerd offers only portMappings and bandwidth), then the selection
    element's `ips` and `mac` (mergeCNIRuntimeConfig: each only when set)."""
    caps = declared(primary) if primary is not None else set()
    out = {k: v for k, v in pod_args.items() if k in RUNTIME_KEYS and k in caps}
    ips = list(ips)
    if ips:
        out["ips"] = ips
    if mac:
        out["mac"] = mac
    return out


def check_pod(p: Any, doc: Document, c: Collector) -> None:
    """The emu.dev/ips and emu.dev/mac annotations of a pod, checked when the topology is loaded."""
    prefix = "spec.template." if p.owner else ""
    ann = p.annotations
    for key in (IPS_ANNOTATION, MAC_ANNOTATION):
        if key in ann and p.host_network:
            c.add(doc, doc.file, doc.label(), f"{prefix}metadata.annotations[{key}]",
                  "a hostNetwork pod has no network of its own: no CNI plugin is called for it")
    if IPS_ANNOTATION in ann:
        fld = f"{prefix}metadata.annotations[{IPS_ANNOTATION}]"
        try:
            ips = split_ips(str(ann[IPS_ANNOTATION]))
        except ValueError as e:
            c.add(doc, doc.file, doc.label(), fld, f"is malformed ({e})")
        else:
            if not ips:
                c.add(doc, doc.file, doc.label(), fld, "is empty (give one or more addresses, e.g. 10.244.0.50/24)")
            for i, ip in enumerate(ips):
                problem = ip_problem(ip)
                if problem:
                    c.add(doc, doc.file, doc.label(), fld, f"entry {i}: {problem}")
    if MAC_ANNOTATION in ann:
        problem = mac_problem(str(ann[MAC_ANNOTATION]).strip())
        if problem:
            c.add(doc, doc.file, doc.label(), f"{prefix}metadata.annotations[{MAC_ANNOTATION}]", problem)


def builtin_problems(topo: Any) -> list[Problem]:
    """emu.dev/ips and emu.dev/mac are runtimeConfig for CNI plugins: a built-in cluster has none to give them to."""
    if topo.cluster.cni.plugin == "cni":
        return []
    out = []
    for p in topo.pods:
        for key in (IPS_ANNOTATION, MAC_ANNOTATION):
            if key in p.annotations and not p.host_network:
                fld = ("spec.template." if p.owner else "") + f"metadata.annotations[{key}]"
                out.append(Problem(topo.file, p.document, f"Pod {p.key}", fld,
                                   f"is handed to CNI plugins as runtimeConfig.{key.split('/')[1]}: it needs "
                                   f"spec.cni.plugin: cni (the built-in wiring runs no plugin)"))
    return out
