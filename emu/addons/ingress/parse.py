"""Ingress, IngressClass and Secret documents into the model, with the API server's validation
(k8s.io/kubernetes pkg/apis/networking/validation: ValidateIngressSpec, and core validation for tls Secrets) and
the checks ingress-nginx's admission webhook adds (its annotation validation, emu.addons.ingress.annotations; its path
checks, internal/ingress/inspector: strict-validate-path-type, default true, and the deep inspection of paths)."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from emu.model.documents import DNS_SUBDOMAIN, IANA_SVC_NAME, Collector, Document, check_namespaced
from emu.addons.ingress import annotations as ann
from emu.addons.ingress.model import (DEFAULT_CLASS_ANNOTATION, SELF_SIGNED, TLS_SECRET_TYPE, Backend, Ingress,
    IngressClass, Path, Rule, Secret, TLS)

LAYER = "model"

PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
WILDCARD_HOST = re.compile(r"^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
PEM_CERT = "-----BEGIN CERTIFICATE-----"
PEM_KEY = re.compile(r"-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----")
# ValidateServiceName (apimachinery NameIsDNS1035Label): a backend's service name.
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
# inspector/rules.go validPathType: an Exact or Prefix path when strict-validate-path-type is on (the default).
STRICT_PATH = re.compile(r"^/[A-Za-z0-9._\-/]*\Z")
# inspector/rules.go: what the deep inspection refuses anywhere in a path (ImplementationSpecific paths may be
# regexes, so they are not held to STRICT_PATH).  Control characters are refused as well (emu's addition).
FORBIDDEN_IN_PATH = (re.compile(r"(?s)\s*alias\s*.*;"), re.compile(r"(?s)\s*root\s*.*;"),
                     re.compile(r"/etc/(passwd|shadow|group|nginx|ingress-controller)"),
                     re.compile(r"/var/run/secrets"), re.compile(r".*_by_lua.*"), re.compile(r"[\x00-\x1f\x7f]"))


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _host_problem(host: Any) -> str | None:
    """A rule or TLS host: a DNS subdomain, optionally `*.` wildcard in its first label, never an IP address."""
    if not isinstance(host, str) or not host:
        return "must be a non-empty string"
    try:
        ipaddress.ip_address(host)
        return "must be a DNS name, not an IP address"
    except ValueError:
        pass
    if host.startswith("*"):
        return None if WILDCARD_HOST.match(host) and len(host) <= 253 else \
            "a wildcard host must be '*.' followed by a DNS subdomain"
    if not DNS_SUBDOMAIN.match(host) or len(host) > 253:
        return "must be a lowercase DNS subdomain (RFC 1123)"
    return None


def _backend(raw: Any, doc: Document, c: Collector, where: str) -> Backend | None:
    if not isinstance(raw, dict):
        c.add(doc, doc.file, doc.label(), where, "must be a mapping with service")
        return None
    if "resource" in raw:
        c.add(doc, doc.file, doc.label(), f"{where}.resource",
              "resource backends are not supported by the nginx ingress controller emulation; use service")
        return None
    svc = raw.get("service")
    if not isinstance(svc, dict) or not isinstance(svc.get("name"), str) or not svc.get("name"):
        c.add(doc, doc.file, doc.label(), f"{where}.service.name", "required")
        return None
    if not DNS_1035_LABEL.match(svc["name"]) or len(svc["name"]) > 63:
        c.add(doc, doc.file, doc.label(), f"{where}.service.name", f"{svc['name']!r}: a DNS-1035 label must "
              "consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end "
              "with an alphanumeric character")
        return None
    port = svc.get("port")
    if not isinstance(port, dict) or ("number" in port) == ("name" in port):
        c.add(doc, doc.file, doc.label(), f"{where}.service.port", "exactly one of number or name is required")
        return None
    if "number" in port:
        n = port["number"]
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n < 65536:
            c.add(doc, doc.file, doc.label(), f"{where}.service.port.number", f"{n!r} is not a port (1-65535)")
            return None
        return Backend(svc["name"], port_number=n)
    name = port["name"]
    if not isinstance(name, str) or not IANA_SVC_NAME.match(name):
        c.add(doc, doc.file, doc.label(), f"{where}.service.port.name", f"{name!r} is not a port name")
        return None
    return Backend(svc["name"], port_name=name)


def _paths(raw: Any, doc: Document, c: Collector, where: str) -> tuple[Path, ...]:
    if not isinstance(raw, list) or not raw:
        c.add(doc, doc.file, doc.label(), where, "at least one path is required")
        return ()
    out = []
    for j, p in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(p, dict):
            c.add(doc, doc.file, doc.label(), at, "must be a mapping")
            continue
        ptype = p.get("pathType")
        if ptype not in PATH_TYPES:
            c.add(doc, doc.file, doc.label(), f"{at}.pathType",
                  f"{ptype!r}: required, one of {', '.join(PATH_TYPES)}")
            continue
        path = p.get("path", "/" if ptype == "ImplementationSpecific" else None)
        if not isinstance(path, str) or not path.startswith("/"):
            c.add(doc, doc.file, doc.label(), f"{at}.path", f"{path!r} must be an absolute path (start with '/')")
            continue
        if ptype != "ImplementationSpecific" and ("//" in path or any(s in path for s in ("/./", "/../", "%2f",
                                                                                            "%2F"))):
            c.add(doc, doc.file, doc.label(), f"{at}.path", f"{path!r} must not contain '//', '/./', '/../' or "
                  "'%2f'")
            continue
        if ptype != "ImplementationSpecific" and not STRICT_PATH.match(path):
            c.add(doc, doc.file, doc.label(), f"{at}.path", f"path {path!r} cannot be used with pathType {ptype}")
            continue
        if any(r.search(path) for r in FORBIDDEN_IN_PATH):
            c.add(doc, doc.file, doc.label(), f"{at}.path", f"invalid http path: invalid value found: {path!r}")
            continue
        backend = _backend(p.get("backend"), doc, c, f"{at}.backend")
        if backend:
            out.append(Path(path, ptype, backend))
    return tuple(out)


def parse_ingress(doc: Document, c: Collector) -> Ingress | None:
    meta, spec = doc.meta, doc.body.get("spec")
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        c.add(doc, doc.file, doc.label(), "metadata.name", f"{name!r} must be a DNS subdomain")
        return None
    if not isinstance(spec, dict):
        c.add(doc, doc.file, doc.label(), "spec", "missing spec")
        return None
    annotations = _strings(meta.get("annotations"))
    before = len(c.problems)
    for key, message in ann.problems(annotations):
        c.add(doc, doc.file, doc.label(), f"metadata.annotations[{key}]", message)
    cls = spec.get("ingressClassName")
    if cls is not None and (not isinstance(cls, str) or not DNS_SUBDOMAIN.match(cls)):
        c.add(doc, doc.file, doc.label(), "spec.ingressClassName", f"{cls!r} must be a DNS subdomain")
        cls = None
    cls = cls or annotations.get(LEGACY_CLASS_ANNOTATION)
    rules = []
    raw_rules = spec.get("rules") or []
    if not isinstance(raw_rules, list):
        c.add(doc, doc.file, doc.label(), "spec.rules", "must be a list")
        raw_rules = []
    for i, r in enumerate(raw_rules):
        at = f"spec.rules[{i}]"
        if not isinstance(r, dict):
            c.add(doc, doc.file, doc.label(), at, "must be a mapping")
            continue
        host = r.get("host", "")
        if host:
            problem = _host_problem(host)
            if problem:
                c.add(doc, doc.file, doc.label(), f"{at}.host", f"{host!r} {problem}")
                continue
        http = r.get("http")
        if http is None:
            rules.append(Rule(host, ()))
            continue
        if not isinstance(http, dict):
            c.add(doc, doc.file, doc.label(), f"{at}.http", "must be a mapping with paths")
            continue
        rules.append(Rule(host, _paths(http.get("paths"), doc, c, f"{at}.http.paths")))
    default = None
    if spec.get("defaultBackend") is not None:
        default = _backend(spec["defaultBackend"], doc, c, "spec.defaultBackend")
    if not raw_rules and spec.get("defaultBackend") is None:
        c.add(doc, doc.file, doc.label(), "spec", "either defaultBackend or rules must be specified")
    tls = []
    raw_tls = spec.get("tls") or []
    if not isinstance(raw_tls, list):
        c.add(doc, doc.file, doc.label(), "spec.tls", "must be a list")
        raw_tls = []
    for i, t in enumerate(raw_tls):
        at = f"spec.tls[{i}]"
        if not isinstance(t, dict):
            c.add(doc, doc.file, doc.label(), at, "must be a mapping")
            continue
        hosts = t.get("hosts") or []
        if not isinstance(hosts, list):
            c.add(doc, doc.file, doc.label(), f"{at}.hosts", "must be a list of host names")
            continue
        for j, h in enumerate(hosts):
            problem = _host_problem(h)
            if problem:
                c.add(doc, doc.file, doc.label(), f"{at}.hosts[{j}]", f"{h!r} {problem}")
        secret = t.get("secretName")
        if secret is not None and (not isinstance(secret, str) or not DNS_SUBDOMAIN.match(secret)):
            c.add(doc, doc.file, doc.label(), f"{at}.secretName", f"{secret!r} must be a Secret name")
            secret = None
        tls.append(TLS(tuple(str(h) for h in hosts), secret))
    if len(c.problems) > before:
        return None
    return Ingress(ns, name, cls, tuple(rules), tuple(tls), default, annotations, doc.index)


def parse_ingress_class(doc: Document, c: Collector) -> IngressClass | None:
    meta, spec = doc.meta, doc.body.get("spec") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        c.add(doc, doc.file, doc.label(), "metadata.name", f"{name!r} must be a DNS subdomain")
        return None
    controller = spec.get("controller") if isinstance(spec, dict) else None
    if not isinstance(controller, str) or "/" not in controller:
        c.add(doc, doc.file, doc.label(), "spec.controller", f"{controller!r}: required, a domain-prefixed path "
              "such as k8s.io/ingress-nginx")
        return None
    default = _strings(meta.get("annotations")).get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true"
    return IngressClass(name, controller, default)


def _data_value(raw: dict[str, Any], key: str, doc: Document, c: Collector, field_: str) -> str | None:
    """data values are base64 (the API's []byte); stringData values are plain text."""
    value = raw.get(key)
    if value is None:
        return None
    if field_ == "stringData":
        return str(value)
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        c.add(doc, doc.file, doc.label(), f"data.{key}", "is not base64 of PEM text")
        return None


def parse_secret(doc: Document, c: Collector) -> Secret | None:
    meta = doc.meta
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        c.add(doc, doc.file, doc.label(), "metadata.name", f"{name!r} must be a DNS subdomain")
        return None
    stype = doc.body.get("type") or "Opaque"
    self_signed = _strings(meta.get("annotations")).get(SELF_SIGNED, "").lower() == "true"
    fields: dict[str, str | None] = {"tls.crt": None, "tls.key": None}
    for field_ in ("data", "stringData"):
        raw = doc.body.get(field_)
        if raw is None:
            continue
        if not isinstance(raw, dict):
            c.add(doc, doc.file, doc.label(), field_, "must be a mapping of keys to values")
            return None
        for key in fields:
            v = _data_value(raw, key, doc, c, field_)
            if v is not None:
                fields[key] = v
    cert, key = fields["tls.crt"], fields["tls.key"]
    if stype != TLS_SECRET_TYPE:
        return Secret(ns, name, str(stype), cert, key, False, doc.index)
    if self_signed and cert is None and key is None:
        return Secret(ns, name, stype, None, None, True, doc.index)
    for k, v, marker in (("tls.crt", cert, PEM_CERT), ("tls.key", key, None)):
        if v is None:
            c.add(doc, doc.file, doc.label(), f"data.{k}",
                  f"required for type {TLS_SECRET_TYPE} (or annotate the Secret {SELF_SIGNED}: \"true\" with no "
                  "data for a self-signed certificate)")
            return None
        if (marker and marker not in v) or (marker is None and not PEM_KEY.search(v)):
            c.add(doc, doc.file, doc.label(), f"data.{k}", "is not a PEM " +
                  ("certificate" if marker else "private key"))
            return None
    return Secret(ns, name, stype, cert, key, False, doc.index)


def check(ingresses: list[tuple[Ingress, Document]], classes: list[tuple[IngressClass, Document]],
          secrets: list[tuple[Secret, Document]], namespaces: Any, c: Collector) -> None:
    """Namespaces exist and names are unique; at most one default IngressClass.  References to Services and
    Secrets are not checked: the API server accepts dangling ones and the controller answers 503 / serves its
    default certificate, as ingress-nginx does."""
    check_namespaced(ingresses, namespaces, "Ingress", c)
    check_namespaced(secrets, namespaces, "Secret", c)
    seen: dict[str, Document] = {}
    for cls, doc in classes:
        if cls.name in seen:
            c.add(doc, doc.file, doc.label(), "metadata.name", f"duplicate IngressClass {cls.name!r}")
        seen[cls.name] = doc
    defaults = [(cls, doc) for cls, doc in classes if cls.default]
    for cls, doc in defaults[1:]:
        c.add(doc, doc.file, doc.label(), f"metadata.annotations[{DEFAULT_CLASS_ANNOTATION}]",
              f"IngressClass {defaults[0][0].name!r} is already the default class")
