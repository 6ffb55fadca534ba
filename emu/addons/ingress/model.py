"""Ingress, IngressClass and TLS Secret objects as the model holds them (parsed by emu.addons.ingress.parse)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

LAYER = "model"

ANN_PREFIX = "nginx.ingress.kubernetes.io/"
REWRITE_TARGET = ANN_PREFIX + "rewrite-target"
USE_REGEX = ANN_PREFIX + "use-regex"
SSL_REDIRECT = ANN_PREFIX + "ssl-redirect"
FORCE_SSL_REDIRECT = ANN_PREFIX + "force-ssl-redirect"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
NGINX_CONTROLLER = "k8s.io/ingress-nginx"  # IngressClass spec.controller ingress-nginx watches for
SELF_SIGNED = "emu.dev/self-signed"  # on a Secret: "true" (with no data) asks emu to make a self-signed certificate
TLS_SECRET_TYPE = "kubernetes.io/tls"
# strconv.ParseBool's spellings (ingress-nginx reads boolean annotations with it: parser.GetBoolAnnotation)
TRUE_WORDS = ("1", "t", "T", "TRUE", "true", "True")
FALSE_WORDS = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True, slots=True)
class Backend:
    """spec.rules[].http.paths[].backend.service (or spec.defaultBackend): a Service port by number or name."""

    service: str
    port_number: int | None = None
    port_name: str | None = None

    @property
    def port_text(self) -> str:
        return str(self.port_number) if self.port_number is not None else str(self.port_name)


@dataclass(frozen=True, slots=True)
class Path:
    path: str
    path_type: str  # Exact | Prefix | ImplementationSpecific
    backend: Backend


@dataclass(frozen=True, slots=True)
class Rule:
    host: str  # "" : every host (ingress-nginx's default server "_")
    paths: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class TLS:
    hosts: tuple[str, ...]
    secret_name: str | None


@dataclass(frozen=True, slots=True)
class Ingress:
    namespace: str
    name: str
    class_name: str | None  # spec.ingressClassName (or the legacy kubernetes.io/ingress.class annotation)
    rules: tuple[Rule, ...]
    tls: tuple[TLS, ...] = ()
    default_backend: Backend | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    document: int | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def annotation(self, name: str) -> str | None:
        return self.annotations.get(name)

    def flag(self, name: str, default: bool) -> bool:
        """A boolean annotation as ingress-nginx reads it (strconv.ParseBool); absent or empty: the default.
        Values are validated first (emu.addons.ingress.annotations)."""
        v = self.annotations.get(name)
        return default if not v else v in TRUE_WORDS


@dataclass(frozen=True, slots=True)
class IngressClass:
    name: str
    controller: str
    default: bool = False


@dataclass(frozen=True, slots=True)
class Secret:
    """A kubernetes.io/tls Secret: PEM text as given, or a request for a self-signed certificate."""

    namespace: str
    name: str
    type: str
    cert_pem: str | None = None
    key_pem: str | None = None
    self_signed: bool = False
    document: int | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
