"""The upstream Kubernetes e2e NetworkPolicy cases (kubernetes/kubernetes test/e2e/network/netpol/
network_policy.go) on the 9-pod model of topologies/netpol-model.yaml, each a policy set and its full expected 9x9
truth table per protocol and port, checked here against the pure policy engine (no root).
tests/integration/test_netpol_e2e.py checks the real dataplane against the same tables.

Tables read like upstream's truth tables: one row per source, one column per destination, in the order x/a x/b x/c
y/a y/b y/c z/a z/b z/c; '.' allowed, 'X' denied.  A pod reaching itself is allowed (upstream ignores loopback,
kubernetes#95879; the engine and the dataplane both allow it).  Cases that need a pod or a namespace relabelled, or a
policy updated, are sequences of steps, each the complete set of manifests in force at that point.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from emu.cluster import planner
from emu.alloc import ipam
from emu.model import loader as topology
from emu.model.types import Protocol
from emu.addons.netpol.engine import Engine
from tests.conftest import TOPOLOGIES

MODEL = TOPOLOGIES / "netpol-model.yaml"
PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
XB_IP, YB_IP = "10.244.1.2", "10.244.1.3"  # host-local's first addresses on node-2 (x/b, then y/b)


def policy(ns: str, name: str, spec: str) -> str:
    """A NetworkPolicy manifest; `spec` is the YAML under spec:."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n")


def pod(ns: str, name: str, **labels: str) -> str:
    """The model's pod with extra labels (the model's ports, so only the labels change)."""
    ports = "\n".join(f"    - {{name: serve-{n}-{p.lower()}, containerPort: {n}, protocol: {p}}}"
                      for n in (80, 81) for p in ("TCP", "UDP", "SCTP"))
    extra = "".join(f", {k}: {v}" for k, v in labels.items())
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"  labels: {{pod: {name}{extra}}}\nspec:\n  containers:\n  - name: server\n    ports:\n{ports}\n")


def namespace(name: str, **labels: str) -> str:
    body = "".join(f"\n    {k}: {v}" for k, v in labels.items())
    return f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:{body}\n"


@dataclass(frozen=True)
class Step:
    manifests: str  # every policy (and relabelled pod or namespace) in force at this step
    checks: tuple[tuple[str, int, str], ...]  # (protocol, port, TABLES key)


@dataclass(frozen=True)
class Case:
    title: str  # upstream's It(...) text
    steps: tuple[Step, ...]


def case(title: str, manifests: str, *checks: tuple[str, int, str]) -> Case:
    return Case(title, (Step(manifests, checks),))


DENY_INGRESS_X = policy("x", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]")
DENY_ALL_X = policy("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]")
FROM_Y_81 = policy("x", "allow-client-a-via-ns-selector", """
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
      ports: [{port: 81, protocol: TCP}]
""")
FROM_Y_80 = policy("x", "allow-client-a-via-ns-selector-80", """
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
      ports: [{port: 80, protocol: TCP}]
""")
FROM_NS2_UPDATED = policy("x", "allow-client-a-via-ns-selector", """
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]
""")
FROM_POD2_UPDATED = policy("x", "allow-client-a-via-pod-selector", """
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]
""")
DENY_ISOLATED = policy("x", "deny-ingress-via-label-selector", """
    podSelector: {matchLabels: {target: isolated}}
    policyTypes: [Ingress]
""")
CIDR_EXCEPT_XB = policy("x", "allow-client-a-via-cidr-egress-rule", f"""
    podSelector: {{matchLabels: {{pod: a}}}}
    policyTypes: [Egress]
    egress:
    - to: [{{ipBlock: {{cidr: 10.244.0.0/16, except: [{XB_IP}/32]}}}}]
""")
CIDR_XB = policy("x", "allow-client-a-via-cidr-egress-rule", f"""
    podSelector: {{matchLabels: {{pod: a}}}}
    policyTypes: [Egress]
    egress:
    - to: [{{ipBlock: {{cidr: {XB_IP}/32}}}}]
""")
ALLOW_EGRESS_A = policy("x", "allow-egress-for-target", """
    podSelector: {matchLabels: {pod: a}}
    policyTypes: [Egress]
    egress: [{}]
""")
DENY_INGRESS_A = policy("x", "deny-ingress-via-label-selector", """
    podSelector: {matchLabels: {pod: a}}
    policyTypes: [Ingress]
""")

TABLES = {
    "deny-ingress-x": """
        x/a  . X X . . . . . .
        x/b  X . X . . . . . .
        x/c  X X . . . . . . .
        y/a  X X X . . . . . .
        y/b  X X X . . . . . .
        y/c  X X X . . . . . .
        z/a  X X X . . . . . .
        z/b  X X X . . . . . .
        z/c  X X X . . . . . .
    """,
    "deny-all-x": """
        x/a  . X X X X X X X X
        x/b  X . X X X X X X X
        x/c  X X . X X X X X X
        y/a  X X X . . . . . .
        y/b  X X X . . . . . .
        y/c  X X X . . . . . .
        z/a  X X X . . . . . .
        z/b  X X X . . . . . .
        z/c  X X X . . . . . .
    """,
    "xa-from-xb": """
        x/a  . . . . . . . . .
        x/b  . . . . . . . . .
        x/c  X . . . . . . . .
        y/a  X . . . . . . . .
        y/b  X . . . . . . . .
        y/c  X . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "xa-only": """
        x/a  . X X . . . . . .
        x/b  . . X . . . . . .
        x/c  . X . . . . . . .
        y/a  . X X . . . . . .
        y/b  . X X . . . . . .
        y/c  . X X . . . . . .
        z/a  . X X . . . . . .
        z/b  . X X . . . . . .
        z/c  . X X . . . . . .
    """,
    "all": """
        x/a  . . . . . . . . .
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-from-y": """
        x/a  . . . . . . . . .
        x/b  X . . . . . . . .
        x/c  X . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "xa-notx-or-b": """
        x/a  . . . . . . . . .
        x/b  . . . . . . . . .
        x/c  X . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-from-yb-zb": """
        x/a  . . . . . . . . .
        x/b  X . . . . . . . .
        x/c  X . . . . . . . .
        y/a  X . . . . . . . .
        y/b  . . . . . . . . .
        y/c  X . . . . . . . .
        z/a  X . . . . . . . .
        z/b  . . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "xa-from-notx-bc": """
        x/a  . . . . . . . . .
        x/b  X . . . . . . . .
        x/c  X . . . . . . . .
        y/a  X . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  X . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-from-xb-xc": """
        x/a  . . . . . . . . .
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  X . . . . . . . .
        y/b  X . . . . . . . .
        y/c  X . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "xa-from-ya": """
        x/a  . . . . . . . . .
        x/b  X . . . . . . . .
        x/c  X . . . . . . . .
        y/a  . . . . . . . . .
        y/b  X . . . . . . . .
        y/c  X . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "xa-denied": """
        x/a  . . . . . . . . .
        x/b  X . . . . . . . .
        x/c  X . . . . . . . .
        y/a  X . . . . . . . .
        y/b  X . . . . . . . .
        y/c  X . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "x-from-y-z-denied": """
        x/a  . . . . . . . . .
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  X X X . . . . . .
        y/b  X X X . . . . . .
        y/c  X X X . . . . . .
        z/a  X X X . . . . . .
        z/b  X X X . . . . . .
        z/c  X X X . . . . . .
    """,
    "x-egress-denied": """
        x/a  . X X X X X X X X
        x/b  X . X X X X X X X
        x/c  X X . X X X X X X
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-egress-denied": """
        x/a  . X X X X X X X X
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "and-81": """
        x/a  . X X X X X X X X
        x/b  . . . . . . . . .
        x/c  X . . . . . . . .
        y/a  X . . . . . . . .
        y/b  X . . . . . . . .
        y/c  X . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "client-side": """
        x/a  . X X . X X X X X
        x/b  . . . X X . . . .
        x/c  . . . X X . . . .
        y/a  . . . . X . . . .
        y/b  . . . X . . . . .
        y/c  . . . X X . . . .
        z/a  . . . X X . . . .
        z/b  . . . X X . . . .
        z/c  . . . X X . . . .
    """,
    "xa-to-ya": """
        x/a  . X X . X X X X X
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-to-yb": """
        x/a  . X X X . X X X X
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-not-xb": """
        x/a  . X . . . . . . .
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-to-xb": """
        x/a  . . X X X X X X X
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "xa-not-to-y": """
        x/a  . . . X X X . . .
        x/b  . . . . . . . . .
        x/c  . . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  . . . . . . . . .
        z/b  . . . . . . . . .
        z/c  . . . . . . . . .
    """,
    "y-to-xa": """
        x/a  . . . . . . . . .
        x/b  X . . . . . . . .
        x/c  X . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "xa-from-y-or-xb": """
        x/a  . . . . . . . . .
        x/b  . . . . . . . . .
        x/c  X . . . . . . . .
        y/a  . . . . . . . . .
        y/b  . . . . . . . . .
        y/c  . . . . . . . . .
        z/a  X . . . . . . . .
        z/b  X . . . . . . . .
        z/c  X . . . . . . . .
    """,
    "": """

    """,
}

CASES = [
    case("should support a 'default-deny-ingress' policy", DENY_INGRESS_X, ("tcp", 80, "deny-ingress-x")),
    case("should support a 'default-deny-all' policy", DENY_ALL_X, ("tcp", 80, "deny-all-x")),
    case("should enforce policy to allow traffic from pods within server namespace based on PodSelector",
         policy("x", "x-a-allows-x-b", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
         """), ("tcp", 80, "xa-from-xb")),
    case("should enforce policy to allow ingress traffic for a target",
         DENY_INGRESS_X.replace("deny-ingress", "deny-all") + policy("x", "allow-all-to-a", """
             podSelector: {matchLabels: {pod: a}}
             policyTypes: [Ingress]
             ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]
         """), ("tcp", 80, "xa-only")),
    case("should enforce policy to allow ingress traffic from pods in all namespaces",
         policy("x", "allow-from-another-ns", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{namespaceSelector: {matchLabels: {}}}]}]
         """), ("tcp", 80, "all")),
    case("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
         policy("x", "allow-client-a-via-ns-selector", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]
         """), ("tcp", 80, "xa-from-y")),
    case("should enforce policy based on PodSelector with MatchExpressions",
         policy("x", "x-a-allows-x-b", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]
         """), ("tcp", 80, "xa-from-xb")),
    case("should enforce policy based on NamespaceSelector with MatchExpressions",
         policy("x", "allow-ns-y-match-selector", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from:
               - namespaceSelector:
                   matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [y]}]
         """), ("tcp", 80, "xa-from-y")),
    case("should enforce policy based on PodSelector or NamespaceSelector",
         policy("x", "allow-ns-y-match-selector", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from:
               - namespaceSelector:
                   matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
               - podSelector: {matchLabels: {pod: b}}
         """), ("tcp", 80, "xa-notx-or-b")),
    case("should enforce policy based on PodSelector and NamespaceSelector",
         policy("x", "allow-ns-y-podselector-and-nsselector", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from:
               - namespaceSelector:
                   matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
                 podSelector: {matchLabels: {pod: b}}
         """), ("tcp", 80, "xa-from-yb-zb")),
    case("should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
         policy("x", "allow-ns-y-z-pod-b-c", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from:
               - namespaceSelector:
                   matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
                 podSelector:
                   matchExpressions: [{key: pod, operator: In, values: [b, c]}]
         """), ("tcp", 80, "xa-from-notx-bc")),
    case("should enforce policy based on any PodSelectors",
         policy("x", "allow-ns-x-pod-b-c", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]
         """), ("tcp", 80, "xa-from-xb-xc")),
    case("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and "
         "NamespaceSelector",
         policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from:
               - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}
                 podSelector: {matchLabels: {pod: a}}
         """), ("tcp", 80, "xa-from-ya")),
    case("should enforce policy based on Ports", FROM_Y_81, ("tcp", 81, "y-to-xa"), ("tcp", 80, "xa-denied")),
    Case("should enforce multiple, stacked policies with overlapping podSelectors", (
        Step(FROM_Y_81, (("tcp", 81, "y-to-xa"), ("tcp", 80, "xa-denied"))),
        Step(FROM_Y_81 + FROM_Y_80, (("tcp", 80, "y-to-xa"), ("tcp", 81, "y-to-xa"))))),
    case("should support allow-all policy",
         policy("x", "allow-all", "podSelector: {matchLabels: {}}\ningress: [{}]"),
         ("tcp", 80, "all"), ("tcp", 81, "all")),
    case("should allow ingress access on one named port",
         policy("x", "allow-all", "podSelector: {matchLabels: {}}\ningress: [{ports: [{port: serve-81-tcp}]}]"),
         ("tcp", 81, "all"), ("tcp", 80, "deny-ingress-x")),
    case("should allow ingress access from namespace on one named port",
         policy("x", "allow-client-a-via-ns-selector-80", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
               ports: [{port: serve-80-tcp, protocol: TCP}]
         """), ("tcp", 80, "y-to-xa"), ("tcp", 81, "xa-denied")),
    case("should allow egress access on one named port",
         policy("x", "allow-egress", """
             podSelector: {matchLabels: {}}
             policyTypes: [Egress]
             egress: [{ports: [{port: serve-80-tcp}]}]
         """), ("tcp", 80, "all"), ("tcp", 81, "x-egress-denied")),
    Case("should enforce updated policy", (
        Step(policy("x", "allow-all-mutate-to-deny-all", "podSelector: {matchLabels: {}}\ningress: [{}]"),
             (("tcp", 81, "all"),)),
        Step(policy("x", "allow-all-mutate-to-deny-all", "podSelector: {matchLabels: {}}\ningress: []"),
             (("tcp", 81, "deny-ingress-x"),)))),
    Case("should allow ingress access from updated namespace", (
        Step(FROM_NS2_UPDATED, (("tcp", 80, "xa-denied"),)),
        Step(FROM_NS2_UPDATED + namespace("y", ns2="updated"), (("tcp", 80, "y-to-xa"),)))),
    Case("should allow ingress access from updated pod", (
        Step(FROM_POD2_UPDATED, (("tcp", 80, "xa-denied"),)),
        Step(FROM_POD2_UPDATED + pod("x", "b", pod2="updated"), (("tcp", 80, "xa-from-xb"),)))),
    case("should deny ingress from pods on other namespaces",
         policy("x", "deny-empty-policy", "podSelector: {}\ningress: [{from: [{podSelector: {matchLabels: {}}}]}]"),
         ("tcp", 80, "x-from-y-z-denied")),
    Case("should deny ingress access to updated pod", (
        Step(DENY_ISOLATED, (("tcp", 80, "all"),)),
        Step(DENY_ISOLATED + pod("x", "a", target="isolated"), (("tcp", 80, "xa-denied"),)))),
    case("should deny egress from pods based on PodSelector",
         policy("x", "deny-egress-pod-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]"),
         ("tcp", 80, "xa-egress-denied")),
    case("should deny egress from all pods in a namespace",
         policy("x", "deny-egress-ns-x", "podSelector: {}\npolicyTypes: [Egress]"), ("tcp", 80, "x-egress-denied")),
    case("should work with Ingress, Egress specified together",
         policy("x", "allow-client-a-via-pod-selector", """
             podSelector: {matchLabels: {pod: a}}
             policyTypes: [Egress, Ingress]
             ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
             egress: [{ports: [{port: 80}]}]
         """), ("tcp", 80, "xa-from-xb"), ("tcp", 81, "and-81")),
    case("should support denying of egress traffic on the client side (even if the server explicitly allows this "
         "traffic)",
         policy("x", "allow-to-ns-y-pod-a", """
             podSelector: {matchLabels: {pod: a}}
             policyTypes: [Egress]
             egress:
             - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}},
                     podSelector: {matchLabels: {pod: a}}}]
         """) + "".join(policy("y", f"allow-from-xa-on-y{p}-match-selector", f"""
             podSelector: {{matchLabels: {{pod: {p}}}}}
             ingress:
             - from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: x}}}},
                        podSelector: {{matchLabels: {{pod: a}}}}}}]
         """) for p in "ab"), ("tcp", 80, "client-side")),
    case("should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector "
         "and NamespaceSelector",
         policy("x", "allow-to-ns-y-pod-a", """
             podSelector: {matchLabels: {pod: a}}
             policyTypes: [Egress]
             egress:
             - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}},
                     podSelector: {matchLabels: {pod: a}}}]
         """), ("tcp", 80, "xa-to-ya")),
    case("should enforce ingress policy allowing any port traffic to a server on a specific protocol",
         policy("x", "allow-ingress-by-proto", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{ports: [{protocol: TCP}]}]
         """), ("tcp", 80, "all"), ("udp", 80, "xa-denied")),
    Case("should enforce multiple ingress policies with ingress allow-all policy taking precedence", (
        Step(policy("x", "allow-ingress-port-80", "podSelector: {matchLabels: {}}\ningress: [{ports: [{port: 80}]}]"),
             (("tcp", 81, "deny-ingress-x"),)),
        Step(policy("x", "allow-ingress-port-80", "podSelector: {matchLabels: {}}\ningress: [{ports: [{port: 80}]}]")
             + policy("x", "allow-ingress", "podSelector: {matchLabels: {}}\ningress: [{}]"),
             (("tcp", 81, "all"),)))),
    Case("should enforce multiple egress policies with egress allow-all policy taking precedence", (
        Step(policy("x", "allow-egress-port-80", """
                 podSelector: {matchLabels: {}}
                 policyTypes: [Egress]
                 egress: [{ports: [{port: 80}]}]
             """), (("tcp", 81, "x-egress-denied"),)),
        Step(policy("x", "allow-egress-port-80", """
                 podSelector: {matchLabels: {}}
                 policyTypes: [Egress]
                 egress: [{ports: [{port: 80}]}]
             """) + policy("x", "allow-egress", "podSelector: {matchLabels: {}}\npolicyTypes: [Egress]\negress: [{}]"),
             (("tcp", 81, "all"),)))),
    Case("should stop enforcing policies after they are deleted", (
        Step(DENY_ALL_X, (("tcp", 80, "deny-all-x"),)),
        Step("", (("tcp", 80, "all"),)))),
    case("should allow egress access to server in CIDR block",
         policy("x", "allow-client-a-via-cidr-egress-rule", f"""
             podSelector: {{matchLabels: {{pod: a}}}}
             policyTypes: [Egress]
             egress: [{{to: [{{ipBlock: {{cidr: {YB_IP}/32}}}}]}}]
         """), ("tcp", 80, "xa-to-yb")),
    case("should enforce except clause while egress access to server in CIDR block", CIDR_EXCEPT_XB,
         ("tcp", 80, "xa-not-xb")),
    Case("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", (
        Step(CIDR_EXCEPT_XB, (("tcp", 80, "xa-not-xb"),)),
        Step(CIDR_XB, (("tcp", 80, "xa-to-xb"),)))),
    Case("should enforce policies to check ingress and egress policies can be controlled independently based on "
         "PodSelector", (
             Step(ALLOW_EGRESS_A, (("tcp", 80, "all"),)),
             Step(ALLOW_EGRESS_A + DENY_INGRESS_A, (("tcp", 80, "xa-denied"),)))),
    case("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
         DENY_INGRESS_X + policy("x", "allow-only-sctp-ingress-on-port-81", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{ports: [{port: 81, protocol: SCTP}]}]
         """), ("tcp", 81, "deny-ingress-x")),
    case("should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't "
         "support SCTP",
         policy("x", "allow-only-sctp-ingress-on-port-80", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{ports: [{port: 80, protocol: SCTP}]}]
         """), ("tcp", 81, "xa-denied")),
    case("should not allow access by TCP when a policy specifies only UDP",
         policy("x", "allow-only-udp-ingress-on-port-81", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{ports: [{port: 81, protocol: UDP}]}]
         """), ("tcp", 81, "xa-denied"), ("udp", 81, "all")),
    case("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
         policy("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]
         """), ("tcp", 80, "xa-from-y")),
    case("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
         policy("x", "allow-ns-y-match-selector-for-immutable-ns-label", """
             podSelector: {matchLabels: {pod: a}}
             policyTypes: [Egress]
             egress:
             - to:
               - namespaceSelector:
                   matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]
         """), ("tcp", 80, "xa-not-to-y")),
    # UDP ("NetworkPolicy between server and client using UDP")
    case("UDP: should support a 'default-deny-ingress' policy", DENY_INGRESS_X.replace("deny-ingress", "deny-all"),
         ("udp", 80, "deny-ingress-x")),
    case("UDP: should enforce policy based on Ports",
         policy("x", "allow-ingress-on-port-81-ns-x", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
               ports: [{port: 81, protocol: UDP}]
         """), ("udp", 81, "y-to-xa"), ("udp", 80, "xa-denied")),
    case("UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector "
         "and NamespaceSelector",
         policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from:
               - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}
                 podSelector: {matchLabels: {pod: a}}
         """), ("udp", 80, "xa-from-ya")),
    # endPort ([Feature:NetworkPolicyEndPort] in older releases): a range, and a range that leaves a port out
    case("should enforce policy with endPort: a port range",
         policy("x", "allow-range-from-y", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
               ports: [{port: 80, endPort: 81, protocol: TCP}]
         """), ("tcp", 80, "y-to-xa"), ("tcp", 81, "y-to-xa"), ("udp", 80, "xa-denied")),
    case("should enforce policy with endPort: a range that leaves the port out",
         policy("x", "allow-range-from-y", """
             podSelector: {matchLabels: {pod: a}}
             ingress:
             - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
               ports: [{port: 81, endPort: 90}]
         """), ("tcp", 81, "y-to-xa"), ("tcp", 80, "xa-denied")),
    case("several policies add up: one allows x/b, another namespace y, on the same pod",
         policy("x", "allow-xb", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
         """) + policy("x", "allow-y", """
             podSelector: {matchLabels: {pod: a}}
             ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]
         """), ("tcp", 80, "xa-from-y-or-xb")),
]


def table(key: str) -> dict[str, dict[str, bool]]:
    """A truth table by name: rows are sources, columns destinations, in PODS order."""
    rows = [line.split() for line in TABLES[key].strip().splitlines()]
    assert [r[0] for r in rows] == PODS and all(len(r) == 10 for r in rows), key
    return {r[0]: {b: v == "." for b, v in zip(PODS, r[1:])} for r in rows}


def render(m: dict[str, dict[str, bool]]) -> str:
    return "\n".join(f"{a}  " + " ".join("." if m[a][b] else "X" for b in PODS) for a in PODS)


def model_documents() -> list[topology.Document]:
    return topology.read_documents(str(MODEL))


def manifests_over_model(manifests: str) -> list[topology.Document]:
    """The model's documents with the step's manifests applied as `emu apply` applies them: an object with the
    same kind, namespace and name replaces the model's, others are added."""
    docs = model_documents()
    extra = topology.read_documents("step.yaml", manifests) if manifests.strip() else []

    def ident(d: topology.Document) -> tuple[str, str, str]:
        return (d.kind, "" if d.kind == "Namespace" else d.meta.get("namespace", "default"), d.meta.get("name"))

    new = {ident(d): d for d in extra}
    merged = [new.pop(ident(d), d) for d in docs]
    return merged + list(new.values())


def engine_for(manifests: str) -> Engine:
    docs = manifests_over_model(manifests)
    topo = planner.load_documents(str(MODEL), docs)
    return Engine.for_cluster(topo, ipam.allocate(topo, ipam.Allocations.empty()))


def case_id(c: Case) -> str:
    return c.title.replace(" ", "-").replace("'", "")[:80]


def test_the_model_is_upstreams():
    topo = planner.load(str(MODEL))
    assert [p.key for p in topo.pods] == PODS
    for p in topo.pods:
        assert p.labels == {"pod": p.name}
        assert {(cp.name, cp.container_port, cp.protocol) for cp in p.ports} == {
            (f"serve-{n}-{proto.value.lower()}", n, proto) for n in (80, 81) for proto in Protocol}
    for ns in "xyz":
        assert topo.namespace(ns).labels == {"kubernetes.io/metadata.name": ns}  # set by emu, as the API server does
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    assert str(alloc.pods["x/b"].ip) == XB_IP and str(alloc.pods["y/b"].ip) == YB_IP
    assert len({a.node for a in alloc.pods.values()}) == 3  # same-node and cross-node pairs


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_engine_matches_the_upstream_truth_table(case: Case):
    for i, step in enumerate(case.steps):
        engine = engine_for(step.manifests)
        for proto, port, key in step.checks:
            got = engine.matrix(PODS, port, Protocol(proto.upper()))
            assert got == table(key), f"step {i} {proto}/{port}: expected\n{render(table(key))}\ngot\n{render(got)}"
