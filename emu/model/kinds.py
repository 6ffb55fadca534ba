"""Every kind emu knows, in one table: the resource type as kubectl's RESTMapper resolves a KIND word (`emu get`,
`emu describe`), how the loader reads a manifest of the kind into the model (`read`), and what it checks once every
document is read (`check`, in table order), as the API server and its admission would refuse an object.  Adding a
kind is one entry here: its parser lives in its own folder (emu/addons/<x>/), its view and describe, keyed by the
same kind, in the report layer.  Strict field validation reads the kind's schema (emu.model.schema) by the same name.

What the model reads beyond the kinds comes from the seams, handed in by the composition layer (emu.cluster.planner)
as `Plugins`: each pod network's `spec.cni` parser (its folder's spec.py, named by its PodNetwork in
emu.network.table) and each addon's document source (the objects its installer adds to a topology's manifests, as
kubeadm's CoreDNS and ingress-nginx's manifest: emu.addons.table).  The model never imports those tables: they hold
kernel code."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from emu.errors import EmuError
from emu.model import pods, services
from emu.model.documents import Collector, Document
from emu.model.manifests import Manifests
from emu.model.types import ClusterSpec, NetworkSpec
from emu.addons.dns import documents as dns_documents
from emu.addons.ingress import parse as ingress_parse
from emu.addons.multus import nad
from emu.addons.netpol import parse as netpol_parse

Reader = Callable[[Document, Collector, Manifests], None]  # one document of the kind into the manifests read so far
Check = Callable[[Manifests, ClusterSpec, Collector], None]  # once every document is read
DocumentSource = Callable[[str, Sequence[Document], ClusterSpec], list[Document]]  # (path, manifests, cluster)


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource type as kubectl's RESTMapper resolves it (plural resource, API group, scope, short names), and as
    a topology file holds it."""

    resource: str  # "services"
    kind: str  # "Service" (involvedObject.kind of its Events)
    group: str  # "" for the core group
    namespaced: bool
    aliases: tuple[str, ...]
    read: Reader | None = None  # None: a topology file cannot hold one ("kind X is not implemented")
    check: Check | None = None

    @property
    def qualified(self) -> str:
        """schema.GroupResource.String(), as the API server names the resource in a NotFound error."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


# --- how a document of each kind joins the manifests ---------------------------------------------------------------


def _append(items: list[tuple[Any, Document]], obj: Any, doc: Document) -> None:
    if obj:
        items.append((obj, doc))


def _namespace(doc: Document, c: Collector, m: Manifests) -> None:
    ns = pods.parse_namespace(doc, c)
    if ns:
        if ns.name in m.declared_namespaces:
            c.add(doc, doc.file, doc.label(), "metadata.name", f"duplicate Namespace {ns.name!r}")
        m.declared_namespaces.add(ns.name)
        m.namespaces[ns.name] = ns


def _pod(doc: Document, c: Collector, m: Manifests) -> None:
    namespace = doc.meta.get("namespace") or "default"
    _append(m.pods, pods.parse_pod(doc, c, namespace, doc.meta.get("name"), doc.body), doc)


def _deployment(doc: Document, c: Collector, m: Manifests) -> None:
    m.pods.extend((p, doc) for p in pods.expand_deployment(doc, c, m.generated))


def _slice(doc: Document, c: Collector, m: Manifests) -> None:
    """An EndpointSlice, or Endpoints converted to one."""
    _append(m.endpoint_slices, services.parse_slice(doc, c), doc)


def _attachment(doc: Document, c: Collector, m: Manifests) -> None:
    n = nad.parse_nad(doc, c)
    if n:
        if n.key in m.attachments:
            c.add(doc, doc.file, doc.label(), "metadata.name", f"duplicate NetworkAttachmentDefinition {n.key}")
        m.attachments[n.key] = n


def _second_cluster(doc: Document, c: Collector, m: Manifests) -> None:
    c.add(doc, doc.file, doc.label(), "kind", "only the first document may be the Cluster")


# --- the table ------------------------------------------------------------------------------------------------------

TABLE = (
    Kind("namespaces", "Namespace", "", False, ("namespace", "ns"), read=_namespace),
    Kind("pods", "Pod", "", True, ("pod", "po"), read=_pod,
         check=lambda m, cl, c: pods.check(m.pods, m.namespaces, cl, c)),
    Kind("deployments", "Deployment", "apps", True, ("deployment", "deploy"), read=_deployment),
    Kind("services", "Service", "", True, ("service", "svc"),
         read=lambda d, c, m: _append(m.services, services.parse_service(d, c), d),
         check=lambda m, cl, c: services.check(m.services, m.endpoint_slices, m.namespaces, cl, c)),
    Kind("endpointslices", "EndpointSlice", "discovery.k8s.io", True, ("endpointslice",), read=_slice),
    Kind("endpoints", "Endpoints", "", True, ("ep",), read=_slice),
    Kind("networkpolicies", "NetworkPolicy", "networking.k8s.io", True, ("networkpolicy", "netpol"),
         read=lambda d, c, m: _append(m.network_policies, netpol_parse.parse_policy(d, c), d),
         check=lambda m, cl, c: netpol_parse.check(m.network_policies, m.namespaces, c)),
    Kind("network-attachment-definitions", "NetworkAttachmentDefinition", "k8s.cni.cncf.io", True,
         ("network-attachment-definition", "net-attach-def"), read=_attachment,
         check=lambda m, cl, c: nad.check(m.pods, m.attachments, c)),  # and the pods' networks annotations
    Kind("configmaps", "ConfigMap", "", True, ("configmap", "cm"),
         read=lambda d, c, m: dns_documents.check_configmap(d, c)),  # recorded; the DNS addon reads coredns's
    Kind("ingresses", "Ingress", "networking.k8s.io", True, ("ingress", "ing"),
         read=lambda d, c, m: _append(m.ingresses, ingress_parse.parse_ingress(d, c), d),
         check=lambda m, cl, c: ingress_parse.check(m.ingresses, m.ingress_classes, m.secrets, m.namespaces, c)),
    Kind("ingressclasses", "IngressClass", "networking.k8s.io", False, ("ingressclass",),
         read=lambda d, c, m: _append(m.ingress_classes, ingress_parse.parse_ingress_class(d, c), d)),
    Kind("secrets", "Secret", "", True, ("secret",),
         read=lambda d, c, m: _append(m.secrets, ingress_parse.parse_secret(d, c), d)),
    Kind("nodes", "Node", "", False, ("node", "no")),
    Kind("events", "Event", "", True, ("event", "ev")),
    Kind("clusters", "Cluster", "emu.dev", False, ("cluster",), read=_second_cluster),  # the first document only
)
BY_KIND = {k.kind: k for k in TABLE}
# The resource types `emu get` and `emu describe` serve, in the order `emu get` lists its KIND words.
KINDS = tuple(BY_KIND[k] for k in ("Service", "Pod", "NetworkPolicy", "Node", "Ingress", "Endpoints", "Namespace",
                                   "Event"))


@dataclass(frozen=True, slots=True)
class Plugins:
    """What the seams plug into the model: the pod networks' `spec.cni` parsers, in the networks' table order (the
    first is the default network), and the addons' document sources, in the addons' table order."""

    networks: tuple[NetworkSpec, ...]
    sources: tuple[DocumentSource, ...] = ()

    def network(self, plugin: object) -> NetworkSpec | None:
        """The network `spec.cni.plugin` names, if emu has it."""
        return next((s for s in self.networks if s.name == plugin), None)


class UnknownKind(EmuError):
    def __init__(self, word: str):
        super().__init__(f'the server doesn\'t have a resource type "{word}"')


def kind_of(word: str) -> Kind:
    """KIND as kubectl accepts it: plural, singular, short name or group-qualified plural, any case."""
    w = word.lower()
    for k in KINDS:
        if w in (k.resource, k.kind.lower(), k.qualified, *k.aliases):
            return k
    raise UnknownKind(word)
