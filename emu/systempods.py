"""The kube-system pods of the node components emu plays itself: kube-proxy, one pod per node as kubeadm's
`kube-proxy` DaemonSet runs it (hostNetwork, labelled k8s-app=kube-proxy).  They have no namespace of their own and
are not in the topology: `emu get pods` lists them and `emu logs` reads what each one printed."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .kubeproxy.sync import LOG_FILE
from .topology import random_suffix

NAMESPACE = "kube-system"
KUBE_PROXY_LABELS = {"k8s-app": "kube-proxy", "pod-template-generation": "1"}


@dataclass(frozen=True, slots=True)
class SystemPod:
    namespace: str
    name: str
    node: str
    ip: str  # hostNetwork: its node's address
    netns: str  # its node's namespace
    owner: str
    container: str
    log: str  # the file holding what it printed
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def kube_proxy(cl: Any) -> list[SystemPod]:
    """One per node; the name carries the DaemonSet controller's 5-character suffix, stable per node."""
    return [SystemPod(NAMESPACE, f"kube-proxy-{random_suffix(NAMESPACE, 'kube-proxy', i)}", n.name, str(n.ip),
                      n.netns, "DaemonSet/kube-proxy", "kube-proxy",
                      os.path.join(cl.record.dir, "nodes", n.name, LOG_FILE), dict(KUBE_PROXY_LABELS))
            for i, n in enumerate(cl.plan.nodes)]
