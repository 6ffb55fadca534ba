"""hostNetwork pods (`spec.hostNetwork: true`): no namespace and no CNI call of their own; the pod shares its
node's namespace, so its IP is the node's IP and the server daemon answers its containerPorts in the node's
namespace (listeners are keyed by namespace, protocol and port).  Services selecting it get the node IP as
endpoint, as the EndpointSlice controller gives them a hostNetwork pod's status.podIP."""
from __future__ import annotations

from emu.model import names
from emu.alloc.ipam import Assignment
from emu.model.types import ClusterSpec, Pod
from emu.plan.objects import Link, NetnsPlan, PodPlan

NO_LINK = Link("", "none")  # no host-side veth: `emu get pods -o wide` shows <none>


def pod_plan(c: ClusterSpec, pod: Pod, a: Assignment) -> PodPlan:
    node_ns = names.node_netns(c.name, a.node)
    return PodPlan(pod.key, a.node, node_ns, a.ip, NO_LINK, NetnsPlan(node_ns, "node", pod.key))
