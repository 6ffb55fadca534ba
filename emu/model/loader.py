"""Topology files: multi-document YAML (a Cluster, then Kubernetes manifests) parsed into the typed model.

Each manifest is read by its kind's entry in emu.model.kinds (the API server's decoding and validation of that
kind), then the kinds' cross-object checks run.  Validation collects every problem, one line each naming the file,
the document, the object and the field, and raises them together: nothing is built from a file with a problem in it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from emu.errors import Problem, ValidationError
from emu.model import kinds
from emu.model.clusterspec import CLUSTER_API, cluster_spec
from emu.model.documents import Collector, Document, read_documents
from emu.model.kinds import Plugins
from emu.model.manifests import Manifests
from emu.model.types import ClusterSpec, Topology
from emu.model.pods import pod_template_hash, random_suffix  # noqa: F401 (for importers, from before emu.model.pods)


def load(path: str, name: str | None = None, text: str | None = None, *, plugins: Plugins) -> Topology:
    """Read and validate a topology file: the first document is the Cluster, the rest manifests."""
    return load_documents(path, read_documents(path, text), name, plugins=plugins)


def load_documents(path: str, docs: list[Document], name: str | None = None, *, plugins: Plugins) -> Topology:
    if not docs or docs[0].kind != "Cluster":
        raise ValidationError([Problem(path, docs[0].index if docs else None, "", "kind",
                                       f"the first document must be a Cluster ({CLUSTER_API}), "
                                       f"found {docs[0].kind if docs else 'nothing'!r}")])
    return build(path, cluster_spec(docs[0], name, plugins), docs[1:], plugins=plugins)


def added_documents(path: str, docs: Sequence[Document], cluster: ClusterSpec, *, plugins: Plugins) -> list[Document]:
    """The objects the addons add to the manifests `docs` (CoreDNS's, ingress-nginx's), each source seeing the
    manifests and what the sources before it added."""
    out: list[Document] = []
    for source in plugins.sources:
        out += source(path, [*docs, *out], cluster)
    return out


def build(path: str, cluster: ClusterSpec, docs: Iterable[Document], *, plugins: Plugins) -> Topology:
    """Turn manifests into a validated Topology for `cluster` (also used by `emu apply` on the merged set)."""
    c = Collector()
    m = Manifests()
    docs = list(docs)
    for doc in docs + added_documents(path, docs, cluster, plugins=plugins):
        doc.strict_problems(c)  # unknown fields, as the API server's strict decoding reports them
        kind = kinds.BY_KIND.get(doc.kind)
        if kind is not None and kind.read is not None:
            kind.read(doc, c, m)
        elif not doc.kind:
            c.add(doc, doc.file, doc.label(), "kind", "missing kind")
        else:
            c.add(doc, doc.file, doc.label(), "kind", f"kind {doc.kind} is not implemented")
    for kind in kinds.TABLE:
        if kind.check is not None:
            kind.check(m, cluster, c)
    if c.problems:
        raise ValidationError(c.problems)
    return m.topology(path, cluster)
