"""`emu logs`: what a pod's containers printed, as `kubectl logs` shows it.  Pods whose programs emu runs or plays
have a log: the coredns pods (the DNS server writes what each CoreDNS would print: emu.addons.dns.corelog), the kube-proxy
pods (every sync, emu.addons.kubeproxy.sync) and the ingress-nginx controller (its warnings, nginx's error log and access
log, which ingress-nginx sends to stderr and stdout).  Application pods are answered by emu's agent, which prints
nothing: their log is empty, as an idle nginx's would be."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from emu.addons.kubeproxy import systempods
from emu.addons.dns import addon as dns_addon
from emu.errors import EmuError, NotFound
from emu.addons.ingress import controller as ingress


class BadSelector(EmuError):
    exit_code = 2


@dataclass(frozen=True, slots=True)
class PodLog:
    pod: str  # namespace/name
    container: str
    lines: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "container": self.container, "lines": list(self.lines)}


def _read(path: str) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _pods(cl: Any) -> dict[str, tuple[Mapping[str, str], str]]:
    """Every pod with its labels and its (first) container's name."""
    out: dict[str, tuple[Mapping[str, str], str]] = {p.key: (p.labels, _container(p.key, p.owner))
                                                      for p in cl.topology.pods}
    out.update({p.key: (p.labels, p.container) for p in systempods.kube_proxy(cl)})
    return out


def _container(key: str, owner: str | None) -> str:
    """The container name as the manifest (or the addon) has it; pods of a Deployment are named after it."""
    name = key.split("/", 1)[1]
    if owner and owner.startswith("ReplicaSet/"):
        return owner.split("/", 1)[1].rsplit("-", 1)[0]
    return name


def sections(cl: Any, key: str) -> list[list[str]]:
    """What the pod printed, oldest first, per file it comes from (each only grows while the cluster runs)."""
    for sp in systempods.kube_proxy(cl):
        if sp.key == key:
            return [_read(sp.log)]
    if key in dns_addon.server_pods(cl):
        return [_read(dns_addon.pod_log(cl.record, key))]
    if key == ingress.controller_pod(cl):
        d = os.path.join(cl.record.dir, "ingress")
        return [[f"W {w}" for w in ingress.warnings(cl.record)], _read(os.path.join(d, "error.log")),
                _read(os.path.join(d, "access.log"))]
    return []


def lines(cl: Any, key: str) -> list[str]:
    """What the pod printed, oldest first."""
    return [line for sec in sections(cl, key) for line in sec]


def follow(cl: Any, found: list[PodLog], alive: Any, sleep: Any = time.sleep) -> Iterator[tuple[str, str]]:
    """kubectl logs -f: after what `logs` returned, each (pod, line) as it is printed, until alive() is false (the
    cluster went down, or the caller stopped)."""
    seen = {p.pod: [len(sec) for sec in sections(cl, p.pod)] for p in found}
    while alive():
        for pod, counts in seen.items():
            now = sections(cl, pod)
            for i, sec in enumerate(now):
                if i >= len(counts):
                    counts.append(0)
                for line in sec[counts[i]:]:
                    yield pod, line
                counts[i] = max(counts[i], len(sec))
        sleep(0.2)


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """kubectl's -l equality selectors: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k` (does not exist), comma = AND."""
    out: list[tuple[str, str, str | None]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if " in " in part or " notin " in part or "(" in part:
            raise BadSelector(f"label selector {text!r}: set-based terms ({part!r}) are not supported by emu logs; "
                              "use k=v, k!=v, k or !k")
        for op in ("!=", "==", "="):
            if op in part:
                k, v = part.split(op, 1)
                out.append((k.strip(), "!=" if op == "!=" else "=", v.strip()))
                break
        else:
            out.append((part[1:], "!", None) if part.startswith("!") else (part, "exists", None))
    return out


def _matches(labels: Mapping[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    for k, op, v in terms:
        if (op == "=" and labels.get(k) != v) or (op == "!=" and labels.get(k) == v) or \
                (op == "exists" and k not in labels) or (op == "!" and k in labels):
            return False
    return True


def logs(cl: Any, namespace: str, name: str | None = None, selector: str | None = None,
         tail: int = -1) -> list[PodLog]:
    """`kubectl logs [-n NS] POD` or `-l SELECTOR` (every pod it selects, in name order: none is no error, as
    kubectl's); `tail` keeps the last lines of each (-1: all)."""
    pods = _pods(cl)
    if name is not None:
        name = name.removeprefix("pod/").removeprefix("pods/")
        key = f"{namespace}/{name}"
        if key not in pods:
            raise NotFound("pods", name)
        keys = [key]
    else:
        terms = parse_selector(selector or "")
        keys = sorted(k for k, (labels, _) in pods.items()
                      if k.split("/", 1)[0] == namespace and _matches(labels, terms))
    out = []
    for key in keys:
        text = lines(cl, key)
        kept = text if tail < 0 else text[len(text) - tail:] if tail else []
        out.append(PodLog(key, pods[key][1], tuple(kept)))
    return out
