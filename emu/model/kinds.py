"""The resource types emu serves, as kubectl's RESTMapper resolves a KIND word: one table for `emu get` and
`emu describe`."""
from __future__ import annotations

from dataclasses import dataclass

from emu.errors import EmuError


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource type as kubectl's RESTMapper resolves it: plural resource, API group, scope, short names."""

    resource: str  # "services"
    kind: str  # "Service" (involvedObject.kind of its Events)
    group: str  # "" for the core group
    namespaced: bool
    aliases: tuple[str, ...]

    @property
    def qualified(self) -> str:
        """schema.GroupResource.String(), as the API server names the resource in a NotFound error."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


KINDS = (
    Kind("services", "Service", "", True, ("service", "svc")),
    Kind("pods", "Pod", "", True, ("pod", "po")),
    Kind("networkpolicies", "NetworkPolicy", "networking.k8s.io", True, ("networkpolicy", "netpol")),
    Kind("nodes", "Node", "", False, ("node", "no")),
    Kind("ingresses", "Ingress", "networking.k8s.io", True, ("ingress", "ing")),
    Kind("endpoints", "Endpoints", "", True, ("ep",)),
    Kind("namespaces", "Namespace", "", False, ("namespace", "ns")),
    Kind("events", "Event", "", True, ("event", "ev")),
)


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
