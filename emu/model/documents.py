"""YAML documents with their position in the file, and the collector every parser reports problems to."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from emu.model import schema, yamlsafe
from emu.model.yamlsafe import printable
from emu.errors import Problem, ValidationError

# Anchored with \Z, not $: `$` also matches before a final newline, and "web\n" would pass as a name.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")


@dataclass
class Document:
    """One YAML document with its position in the file."""

    file: str
    index: int  # 1-based
    body: dict[str, Any]
    unknown: tuple[tuple[str, str], ...] = ()  # (field, message): fields its kind does not have (emu.model.schema)

    def strict_problems(self, c: "Collector") -> None:
        """Report the unknown fields found when the document was read, with the kind's other problems."""
        for fld, msg in self.unknown:
            c.add(self, self.file, self.label(), fld, msg)

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def meta(self) -> dict[str, Any]:
        return metadata(self.body)

    def label(self) -> str:
        ns = self.meta.get("namespace")
        name = self.meta.get("name", "<unnamed>")
        return f"{self.kind or '<no kind>'} {ns + '/' if isinstance(ns, str) and ns else ''}{name}"


@dataclass
class Collector:
    """Problems found so far; every parser adds to one and the caller raises them together."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, doc: Document | None, file: str, obj: str, fld: str, msg: str) -> None:
        """One problem; a control character in the object, field or message (a name or key from the manifest) is
        shown escaped, so every problem stays one line."""
        self.problems.append(Problem(file, doc.index if doc else None, printable(obj), printable(fld), printable(msg)))


def metadata(body: dict[str, Any]) -> dict[str, Any]:
    """An object's metadata, {} when it has none (or one that is not a mapping: read_documents refuses those)."""
    m = body.get("metadata")
    return m if isinstance(m, dict) else {}


def check_envelope(doc: Document, c: Collector) -> None:
    """What the API server's decoder refuses before any kind's validation runs: a `metadata` that is not an
    ObjectMeta (a mapping), or a `metadata.namespace` that is not a string (`json: cannot unmarshal ... of type
    string`).  Whatever finds an object by namespace and name (the addons' documents, `emu apply`'s merge) relies on
    both."""
    m = doc.body.get("metadata")
    if m is not None and not isinstance(m, dict):
        c.add(doc, doc.file, doc.label(), "metadata", "must be a mapping")
        return
    ns = doc.meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        c.add(doc, doc.file, doc.label(), "metadata.namespace", f"must be a string, got {ns!r}")


def read_documents(path: str, text: str | None = None) -> list[Document]:
    """Parse a multi-document YAML file; empty documents are skipped but keep their numbering.

    The file is read as kubectl reads a manifest, with the limits of the API server's decoder: a regular file of at
    most MAX_FILE_BYTES (emu.model.yamlsafe.read_text), UTF-8, no document expanding its aliases past goyaml's budget
    and no mapping with a key twice (emu.model.yamlsafe.load_all); then every object is checked against its kind's
    fields (emu.model.schema), as `kubectl apply`'s default strict field validation does.  Every problem is one line
    naming the file (and the document, object and field where there is one); raises ValidationError, except for
    unknown fields: each Document carries its own, and the kind's parser reports them with its other problems.  A
    document whose metadata the decoder would refuse (check_envelope) fails the read, every such one named."""
    if text is None:
        text = yamlsafe.read_text(path)
    raw = yamlsafe.load_all(path, text)
    docs = []
    c = Collector()
    for i, body in enumerate(raw, start=1):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ValidationError([Problem(path, i, "", "", "a document must be a mapping (an object with kind)")])
        doc = Document(path, i, body, tuple(schema.unknown_fields(body)))
        check_envelope(doc, c)
        docs.append(doc)
    if c.problems:
        raise ValidationError(c.problems)
    return docs


def qualified_name_error(key: str) -> str | None:
    """IsQualifiedName (k8s.io/apimachinery pkg/util/validation): `[prefix/]name`, the prefix a DNS subdomain of at
    most 253 characters, the name at most 63 alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
    Label and annotation keys are qualified names."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"key {key!r}: the prefix must be a DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        return (f"key {key!r}: the name part must be at most 63 characters, alphanumerics, '-', '_' or '.', "
                f"starting and ending with an alphanumeric")
    return None


def label_value_error(value: str) -> str | None:
    """IsValidLabelValue: empty, or at most 63 characters like a qualified name's name part."""
    if value and (len(value) > 63 or not LABEL_NAME.match(value)):
        return (f"value {value!r} must be at most 63 characters, alphanumerics, '-', '_' or '.', starting and "
                f"ending with an alphanumeric")
    return None


def parse_labels(v: Any, doc: Document, c: Collector, fld: str) -> dict[str, str]:
    """metadata.labels (or a selector's matchLabels) as the API server validates them (ValidateLabels)."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        c.add(doc, doc.file, doc.label(), fld, "labels must be a mapping")
        return {}
    out = {}
    for k, val in v.items():
        if not isinstance(k, str) or not isinstance(val, (str, int, float, bool)) or isinstance(val, bool):
            c.add(doc, doc.file, doc.label(), f"{fld}.{k}", "label values must be strings")
            continue
        problem = qualified_name_error(k) or label_value_error(str(val))
        if problem:
            c.add(doc, doc.file, doc.label(), f"{fld}[{k}]", problem)
            continue
        out[k] = str(val)
    return out


def check_namespaced(items: list[tuple[Any, Document]], namespaces: Any, kind: str, c: Collector) -> None:
    """The API server's rules for namespaced objects: the namespace exists, and `namespace/name` (the item's `key`)
    is defined once."""
    seen: dict[str, Document] = {}
    for item, doc in items:
        if item.namespace not in namespaces:
            c.add(doc, doc.file, doc.label(), "metadata.namespace", f"namespace {item.namespace!r} does not exist")
        if item.key in seen:
            c.add(doc, doc.file, doc.label(), "metadata.name",
                  f"duplicate {kind} {item.key} (first defined in document {seen[item.key].index})")
        seen[item.key] = doc
