"""The kube-system pods of the node components emu plays itself: kube-proxy, one pod per node as kubeadm's
`kube-proxy` DaemonSet runs it (hostNetwork, labelled k8s-app=kube-proxy).  They have no namespace of their own and
are not in the topology: `emu get pods` lists them and `emu logs` reads what each one printed."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emu.addons.kubeproxy.sync import LOG_FILE
from emu.model.types import Pod
from emu.model.loader import random_suffix

NAMESPACE = "kube-system"
KUBE_PROXY_LABELS = {"k8s-app": "kube-proxy", "pod-template-generation": "1"}
# the pod template of kubeadm's kube-proxy DaemonSet (cmd/kubeadm/app/phases/addons/proxy/manifests.go), with the
# tolerations the DaemonSet controller adds to every daemon pod (util.AddOrUpdateDaemonPodTolerations)
KUBE_PROXY_SPEC: dict[str, Any] = {
    "priorityClassName": "system-node-critical", "serviceAccountName": "kube-proxy", "hostNetwork": True,
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": ["op=Exists"] + [f"node.kubernetes.io/{t} op=Exists" for t in (
        "disk-pressure:NoSchedule", "memory-pressure:NoSchedule", "network-unavailable:NoSchedule",
        "not-ready:NoExecute", "pid-pressure:NoSchedule", "unreachable:NoExecute", "unschedulable:NoSchedule")],
    "containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.33.0",
                    "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                "--hostname-override=$(NODE_NAME)"]}],
}


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

    def as_pod(self) -> Pod:
        """The pod as the model holds pods (placed on its node by the DaemonSet's node affinity)."""
        return Pod(self.namespace, self.name, dict(self.labels), (), self.node, self.owner, host_network=True)


def kube_proxy(cl: Any) -> list[SystemPod]:
    """One per node; the name carries the DaemonSet controller's 5-character suffix, stable per node."""
    return [SystemPod(NAMESPACE, f"kube-proxy-{random_suffix(NAMESPACE, 'kube-proxy', i)}", n.name, str(n.ip),
                      n.netns, "DaemonSet/kube-proxy", "kube-proxy",
                      os.path.join(cl.record.dir, "nodes", n.name, LOG_FILE), dict(KUBE_PROXY_LABELS))
            for i, n in enumerate(cl.plan.nodes)]
