"""The objects of a topology's manifests while they are read, each with the document it came from (for the checks
that name it), as the kinds' readers (emu.model.kinds) add them; then the Topology they make."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emu.model.documents import Document
from emu.model.pods import BUILTIN_NAMESPACES, NAMESPACE_NAME_LABEL
from emu.model.types import ClusterSpec, EndpointSlice, Namespace, Pod, Service, Topology

if TYPE_CHECKING:
    from emu.addons.ingress.model import Ingress, IngressClass, Secret
    from emu.addons.multus.nad import Nad
    from emu.addons.netpol.model import NetworkPolicy


def _builtin_namespaces() -> dict[str, Namespace]:
    return {n: Namespace(n, {NAMESPACE_NAME_LABEL: n}) for n in BUILTIN_NAMESPACES}


@dataclass
class Manifests:
    """What the documents read so far hold, field by field as the Topology holds it, in document order."""

    namespaces: dict[str, Namespace] = field(default_factory=_builtin_namespaces)  # the built-in ones first
    declared_namespaces: set[str] = field(default_factory=set)  # names of the Namespace documents
    pods: list[tuple[Pod, Document]] = field(default_factory=list)  # Pods, and the pods of Deployments
    generated: set[str] = field(default_factory=set)  # namespace/name of every generated pod name: no two collide
    services: list[tuple[Service, Document]] = field(default_factory=list)
    endpoint_slices: list[tuple[EndpointSlice, Document]] = field(default_factory=list)  # and Endpoints
    network_policies: list[tuple["NetworkPolicy", Document]] = field(default_factory=list)
    attachments: dict[str, "Nad"] = field(default_factory=dict)  # NetworkAttachmentDefinitions by namespace/name
    ingresses: list[tuple["Ingress", Document]] = field(default_factory=list)
    ingress_classes: list[tuple["IngressClass", Document]] = field(default_factory=list)
    secrets: list[tuple["Secret", Document]] = field(default_factory=list)

    def topology(self, path: str, cluster: ClusterSpec) -> Topology:
        return Topology(path, cluster, tuple(self.namespaces.values()), tuple(p for p, _ in self.pods),
                        tuple(s for s, _ in self.services), tuple(s for s, _ in self.endpoint_slices),
                        tuple(p for p, _ in self.network_policies), tuple(self.attachments.values()),
                        tuple(i for i, _ in self.ingresses), tuple(k for k, _ in self.ingress_classes),
                        tuple(s for s, _ in self.secrets))
