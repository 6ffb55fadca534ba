"""YAML documents with their position in the file, and the collector every parser reports problems to."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem, ValidationError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: 8x faster


@dataclass
class Document:
    """One YAML document with its position in the file."""

    file: str
    index: int  # 1-based
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def meta(self) -> dict[str, Any]:
        m = self.body.get("metadata")
        return m if isinstance(m, dict) else {}

    def label(self) -> str:
        ns = self.meta.get("namespace")
        name = self.meta.get("name", "<unnamed>")
        return f"{self.kind or '<no kind>'} {ns + '/' if ns else ''}{name}"


@dataclass
class Collector:
    """Problems found so far; every parser adds to one and the caller raises them together."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, doc: Document | None, file: str, obj: str, fld: str, msg: str) -> None:
        self.problems.append(Problem(file, doc.index if doc else None, obj, fld, msg))


def read_documents(path: str, text: str | None = None) -> list[Document]:
    """Parse a multi-document YAML file; empty documents are skipped but keep their numbering."""
    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValidationError([Problem(path, None, "", "", f"cannot read: {e.strerror}")]) from None
    try:
        raw = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ValidationError([Problem(path, None, "", "", f"{where}invalid YAML: {getattr(e, 'problem', e)}")]) from None
    docs = []
    for i, body in enumerate(raw, start=1):
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ValidationError([Problem(path, i, "", "", "a document must be a mapping (an object with kind)")])
        docs.append(Document(path, i, body))
    return docs


def parse_labels(v: Any, doc: Document, c: Collector, fld: str) -> dict[str, str]:
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
