"""The seed guide's NetworkPolicies (k8s-networking-guide.md, section 4 and the default policies), each applied live
to a running cluster and checked on the real dataplane: hand-written expectations for the connections the policy is
about, and the full matrix against the policy engine.

The pod CIDR is 172.17.0.0/16 so that the guide's ipBlock (172.17.0.0/16 except 172.17.1.0/24) is tested with real
sources: node-2's pods (172.17.1.0/24) fall in the except, the others do not."""
from __future__ import annotations

import textwrap

import pytest

from emu.testing import NETWORK_POLICY_DENIAL as POLICY

CLUSTER = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: seed}
spec: {nodes: 3, podCIDR: 172.17.0.0/16, nodeNetwork: 172.18.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: myproject, labels: {project: myproject}}
---
apiVersion: v1
kind: Namespace
metadata: {name: elsewhere}
"""
PODS = [("default", "frontend", "frontend", "node-1"), ("default", "backend", "backend", "node-2"),
        ("default", "db", "db", "node-3"), ("default", "web", "web", "node-1"), ("default", "other", "other", "node-2"),
        ("myproject", "client", "client", "node-3"), ("elsewhere", "client", "client", "node-1")]
PORTS = "[{containerPort: 80}, {containerPort: 81}, {containerPort: 80, protocol: UDP}]"

# The guide's policies, as written there (no namespace: they go to "default").
DEFAULT_DENY_INGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes:
  - Ingress
"""
ALLOW_FRONTEND = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-frontend
spec:
  podSelector:
    matchLabels:
      app: backend
  policyTypes:
  - Ingress
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: frontend
    ports:
    - protocol: TCP
      port: 80
"""
ALLOW_NS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-ns-policy
spec:
  podSelector:
    matchLabels:
      app: db
  policyTypes:
  - Ingress
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          project: myproject
"""
ALLOW_EXTERNAL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-external
spec:
  podSelector:
    matchLabels:
      app: web
  policyTypes:
  - Ingress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
"""
DEFAULT_ALLOW_ALL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-allow-all
spec:
  podSelector: {}
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - {}
  egress:
  - {}
"""
DEFAULT_DENY_ALL = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-all
spec:
  podSelector: {}
  policyTypes:
  - Ingress
  - Egress
"""


def topology() -> str:
    pods = "".join(f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: {ns}, labels: {{app: {app}}}}}\n"
                   f"spec: {{nodeName: {node}, containers: [{{name: c, ports: {PORTS}}}]}}\n"
                   for ns, n, app, node in PODS)
    return CLUSTER + pods


@pytest.fixture(scope="module")
def seed(emu_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("seed")
    (d / "seed.yaml").write_text(topology())
    with emu_cluster(str(d / "seed.yaml")) as c:
        c.dir = d
        yield c


@pytest.fixture
def applied(seed, request):
    """Apply the test's policy (its `policy` parameter), yield the cluster, delete the policy afterwards."""
    path = seed.dir / f"{request.node.name}.yaml"
    path.write_text(textwrap.dedent(request.param))
    seed.apply(str(path))
    try:
        yield seed
    finally:
        seed.delete(str(path))
        assert seed.model.network_policies == ()


def ok(c, src: str, dst: str, port: int = 80, proto: str = "tcp") -> bool:
    """An allowed connection (an answer comes at once; the bound is generous so a cold path never fails it)."""
    return c.probe(src, dst, proto=proto, port=port, timeout=3.0)["ok"]


def blocked(c, src: str, dst: str, port: int = 80, proto: str = "tcp") -> None:
    """SRC -> DST meets a policy's REJECT while DST answers itself on the same port (the positive control)."""
    c.assert_blocked(src, dst, proto=proto, port=port, by=POLICY)


def agrees(c, proto: str = "tcp", port: int = 80) -> dict:
    """The matrix agrees with the engine, and every pair it denies was rejected, beside a live destination."""
    return c.assert_matrix(c.matrix(proto, port, timeout=0.5), by=POLICY)


@pytest.mark.parametrize("applied", [DEFAULT_DENY_INGRESS], indirect=True)
def test_default_deny_ingress(applied):
    m = agrees(applied)
    default = [k for k in m["pods"] if k.startswith("default/")]
    for src in m["pods"]:
        for dst in default:
            assert m["observed"][src][dst] is (src == dst)  # nothing reaches a default pod but itself
    assert ok(applied, "default/frontend", "myproject/client")  # egress and other namespaces are untouched
    agrees(applied, "udp", 80)


@pytest.mark.parametrize("applied", [ALLOW_FRONTEND], indirect=True)
def test_allow_frontend(applied):
    assert ok(applied, "default/frontend", "default/backend", 80)
    blocked(applied, "default/frontend", "default/backend", 81)  # only TCP/80 is opened
    blocked(applied, "default/frontend", "default/backend", 80, "udp")
    blocked(applied, "default/other", "default/backend", 80)
    blocked(applied, "myproject/client", "default/backend", 80)
    assert ok(applied, "default/backend", "default/frontend", 80)  # the frontend is not selected
    for port in (80, 81):
        agrees(applied, "tcp", port)


@pytest.mark.parametrize("applied", [ALLOW_NS], indirect=True)
def test_namespace_policy(applied):
    assert ok(applied, "myproject/client", "default/db", 80) and ok(applied, "myproject/client", "default/db", 81)
    blocked(applied, "elsewhere/client", "default/db")
    blocked(applied, "default/frontend", "default/db")  # the db's own namespace is not project=myproject
    agrees(applied)


@pytest.mark.parametrize("applied", [ALLOW_EXTERNAL], indirect=True)
def test_ip_block_with_except(applied):
    ips = {k: applied.pod_ip(k) for k in ("default/frontend", "default/backend", "default/other", "default/db")}
    assert ips["default/backend"].startswith("172.17.1.") and ips["default/frontend"].startswith("172.17.0.")
    assert ok(applied, "default/frontend", "default/web")  # 172.17.0.0/24: in the block
    assert ok(applied, "default/db", "default/web")  # 172.17.2.0/24: in the block
    blocked(applied, "default/backend", "default/web")  # 172.17.1.0/24: the except
    blocked(applied, "default/other", "default/web")
    agrees(applied)


@pytest.mark.parametrize("applied", [DEFAULT_DENY_ALL], indirect=True)
def test_default_deny_all(applied):
    blocked(applied, "default/frontend", "default/backend")
    blocked(applied, "default/frontend", "myproject/client")  # egress from default is denied
    blocked(applied, "myproject/client", "default/frontend")  # ingress to default is denied
    assert ok(applied, "myproject/client", "elsewhere/client")
    agrees(applied)


@pytest.mark.parametrize("applied", [DEFAULT_ALLOW_ALL], indirect=True)
def test_default_allow_all(applied):
    m = agrees(applied)
    assert m["failures"] == 0
    m = agrees(applied, "udp", 80)
    assert m["failures"] == 0


def test_policies_add_up_and_are_removed_live(seed):
    """deny-ingress plus allow-frontend: the backend opens to the frontend only; deleting them restores all."""
    path = seed.dir / "stack.yaml"
    path.write_text(textwrap.dedent(DEFAULT_DENY_INGRESS) + "---" + textwrap.dedent(ALLOW_FRONTEND))
    seed.apply(str(path))
    try:
        assert ok(seed, "default/frontend", "default/backend")
        blocked(seed, "default/frontend", "default/db")
        agrees(seed)
    finally:
        seed.delete(str(path))
    assert seed.matrix("tcp", 80, timeout=0.5)["failures"] == 0
