"""Ingress annotation values checked as ingress-nginx checks them before it renders anything.

Rules read from kubernetes/ingress-nginx (read for facts, not copied):
- internal/ingress/annotations/parser/validators.go: the character classes (`RegexPathWithCapture`, `ValidateBool`
  = Go's strconv.ParseBool), the risk levels Low < Medium < High < Critical and `CheckAnnotationRisk`
  ("annotation %s is too risky for environment"), `checkAnnotation` ("annotation %s contains invalid value"; empty
  values are not validated).
- internal/ingress/annotations/rewrite/main.go: the `AnnotationFields` (Validator, Scope, Risk) of rewrite-target,
  use-regex, ssl-redirect, force-ssl-redirect; {snippet,serversnippet,authreq,modsecurity,streamsnippet}/main.go:
  the five annotations with Risk Critical.
- internal/ingress/controller/config/config.go: the defaults emu runs with, `annotations-risk-level: High` (so only
  Critical annotations are refused), `allow-snippet-annotations: false` and `annotation-value-word-blocklist: ""`.
- internal/ingress/controller/controller.go (CheckIngress, the admission webhook): a `*-snippet` annotation is
  refused with "%s annotation cannot be used. Snippet directives are disabled by the Ingress administrator".

Where emu differs:
- ingress-nginx validates an annotation when its parser reads it; emu checks every annotation it reads (the four
  above) and refuses the risky ones at validation time, so `emu up --dry-run`, `up` and `apply` all refuse the file
  (the admission webhook refuses the Ingress the same way).  Other annotations are neither read nor checked.
- rewrite-target: besides RegexPathWithCapture's characters, a `$` must start a variable (`$1`, `$name`), because
  nginx rejects a bare `$` when it loads the configuration and emu refuses before building anything.
- The word blocklist is empty, as upstream's default: the allow-lists already exclude `;`, quotes, braces and
  whitespace from every value emu writes into nginx.conf.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from emu.addons.ingress.model import (ANN_PREFIX, FALSE_WORDS, FORCE_SSL_REDIRECT, REWRITE_TARGET, SSL_REDIRECT,
    TRUE_WORDS, USE_REGEX)

LAYER = "model"


class Risk(enum.IntEnum):
    """parser.AnnotationRisk: an annotation above the controller's annotations-risk-level is refused."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3


class Scope(enum.Enum):
    INGRESS = "ingress"
    LOCATION = "location"
    SERVER = "server"


RISK_LEVEL = Risk.HIGH  # config.go: AnnotationsRiskLevel default "High"
ALLOW_SNIPPET_ANNOTATIONS = False  # config.go: AllowSnippetAnnotations default false
SNIPPET_SUFFIX = "-snippet"

# validators.go: alphaNumericChars is `\-\.\_\~a-zA-Z0-9\/:`; RegexPathWithCapture adds `$` and an optional
# leading `/`.  The emu rule on `$` (see the module docstring) is the negative look-ahead.
REGEX_PATH_WITH_CAPTURE = re.compile(r"^/?[-._~a-zA-Z0-9/:$]*\Z")
BARE_DOLLAR = re.compile(r"\$(?![0-9A-Za-z_])")


def valid_bool(value: str) -> bool:
    """parser.ValidateBool: Go's strconv.ParseBool accepts exactly these spellings."""
    return value in TRUE_WORDS or value in FALSE_WORDS


def valid_path_with_capture(value: str) -> bool:
    return bool(REGEX_PATH_WITH_CAPTURE.match(value)) and not BARE_DOLLAR.search(value)


@dataclass(frozen=True, slots=True)
class Field:
    """parser.AnnotationFields' entry: how a value is checked, where it applies, how risky it is."""

    validator: Callable[[str], bool]
    scope: Scope
    risk: Risk


# The annotations emu reads (rewrite/main.go).
READ: Mapping[str, Field] = {
    REWRITE_TARGET: Field(valid_path_with_capture, Scope.INGRESS, Risk.MEDIUM),
    USE_REGEX: Field(valid_bool, Scope.LOCATION, Risk.LOW),
    SSL_REDIRECT: Field(valid_bool, Scope.LOCATION, Risk.LOW),
    FORCE_SSL_REDIRECT: Field(valid_bool, Scope.LOCATION, Risk.MEDIUM),
}
# Annotations emu does not implement whose risk is above the default level: refused, not ignored.
RISKY: Mapping[str, Risk] = {ANN_PREFIX + n: Risk.CRITICAL for n in (
    "configuration-snippet", "server-snippet", "auth-snippet", "modsecurity-snippet", "stream-snippet")}


def _shown(value: str, limit: int = 80) -> str:
    text = repr(value)  # one line whatever the value holds
    return text if len(text) <= limit else text[:limit] + "..."


def problems(annotations: Mapping[str, str], risk_level: Risk = RISK_LEVEL) -> list[tuple[str, str]]:
    """(annotation, message) for every annotation value ingress-nginx would refuse with annotations-risk-level
    `risk_level` (default: upstream's default) and snippet annotations disallowed."""
    out = []
    for key in sorted(annotations):
        value = annotations[key]
        if not key.startswith(ANN_PREFIX):
            continue
        if not ALLOW_SNIPPET_ANNOTATIONS and key.endswith(SNIPPET_SUFFIX):
            out.append((key, f"{key} annotation cannot be used. Snippet directives are disabled by the Ingress "
                             "administrator"))
            continue
        field = READ.get(key)
        risk = field.risk if field else RISKY.get(key, Risk.LOW)
        if risk > risk_level:
            out.append((key, f"annotation {key} is too risky for environment (risk {risk.name.capitalize()}, "
                             f"annotations-risk-level {risk_level.name.capitalize()})"))
            continue
        if field and value and not field.validator(value):
            out.append((key, f"annotation {key} contains invalid value {_shown(value)}"))
    return out
