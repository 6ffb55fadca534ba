"""NetworkPolicy objects as typed, immutable data: what a manifest says after the API server's defaulting
(a port's protocol defaults to TCP; policyTypes defaults to Ingress, plus Egress when spec.egress has rules)."""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from emu.model.types import Protocol

LAYER = "model"

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network


class Operator(str, Enum):
    """metav1.LabelSelectorOperator."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class Direction(str, Enum):
    """networkingv1.PolicyType."""

    INGRESS = "Ingress"
    EGRESS = "Egress"

    @property
    def lower(self) -> str:
        return self.value.lower()


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """labels.Requirement.Matches: NotIn and DoesNotExist also match when the key is absent."""
        has = self.key in labels
        if self.operator is Operator.IN:
            return has and labels[self.key] in self.values
        if self.operator is Operator.NOT_IN:
            return not has or labels[self.key] not in self.values
        if self.operator is Operator.EXISTS:
            return has
        return not has

    def __str__(self) -> str:
        """As labels.Selector.String() prints it: `k in (a,b)`, `k notin (a)`, `k`, `!k`."""
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        op = "in" if self.operator is Operator.IN else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """metav1.LabelSelector: every matchLabels pair and every expression must hold (AND); empty selects all."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and \
            all(r.matches(labels) for r in self.match_expressions)

    def __str__(self) -> str:
        if self.empty:
            return "{} (all)"
        parts = [f"{k}={v}" for k, v in self.match_labels] + [str(r) for r in self.match_expressions]
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class IPBlock:
    """A CIDR minus its `except` CIDRs (each a strict subset of it, as validation requires)."""

    cidr: IPv4Network
    except_: tuple[IPv4Network, ...] = ()

    def contains(self, ip: IPv4Address) -> bool:
        return ip in self.cidr and not any(ip in e for e in self.except_)

    def __str__(self) -> str:
        return str(self.cidr) + (f" except {', '.join(map(str, self.except_))}" if self.except_ else "")


@dataclass(frozen=True, slots=True)
class Peer:
    """NetworkPolicyPeer: podSelector and/or namespaceSelector, or an ipBlock alone."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def describe(self, policy_namespace: str) -> str:
        if self.ip_block is not None:
            return f"ipBlock {self.ip_block}"
        nss = self.namespace_selector
        ns = f"namespace {policy_namespace}" if nss is None else \
            "every namespace" if nss.empty else f"namespaces {nss}"
        pods = "all pods" if self.pod_selector is None or self.pod_selector.empty else f"pods {self.pod_selector}"
        return f"{pods} in {ns}"


@dataclass(frozen=True, slots=True)
class PolicyPort:
    """NetworkPolicyPort: no port means every port of the protocol; a name is resolved per destination pod."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"{self.protocol.value}/any"
        if self.end_port is not None:
            return f"{self.protocol.value}/{self.port}-{self.end_port}"
        return f"{self.protocol.value}/{self.port}"


@dataclass(frozen=True, slots=True)
class Rule:
    """An ingress rule (`from`) or an egress rule (`to`): no peers means every peer, no ports every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: tuple[Direction, ...]  # after defaulting
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    document: int | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def applies(self, direction: Direction) -> bool:
        """Whether the policy isolates its pods in this direction (it is in policyTypes)."""
        return direction in self.policy_types

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress
