"""Policies on Service traffic, in iptables, nftables and IPVS proxy mode.  kube-proxy DNATs a ClusterIP at the
client's node (nat PREROUTING, or OUTPUT for the node itself) before the filter FORWARD hook, so the backend's policy
sees the backend's pod IP as the destination and the client's address as the source: the client pod's own IP, unless
kube-proxy masqueraded it (a node's own traffic to a ClusterIP leaves with the node's flannel address).

IPVS mode gets there another way: the ClusterIP is a local address (kube-ipvs0), IPVS rewrites the packet at
LOCAL_IN and sends it on through LOCAL_OUT (ip_vs_xmit.c ip_vs_nat_send_or_cont), so it meets filter OUTPUT, not
FORWARD, on the client's node.  The policy chains are jumped to from OUTPUT too (`-d POD`, as kube-router does for
the node's own traffic), so the same verdicts hold.  IPVS mode needs IP_VS and dummy: on a kernel without them its
parameter skips with the kernel-feature reason and tools/kernel-lane/run-tests runs it."""
from __future__ import annotations

import collections

import pytest

from emu.testing import NETWORK_POLICY_DENIAL as POLICY
from emu.testing import expect_denial

TOPOLOGY = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: svcpol}
spec: {nodes: 2, proxy: {mode: MODE}}
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 80}, {name: dns, port: 53, targetPort: 80, protocol: UDP}]
"""
PODS = [("frontend", "frontend", "node-1"), ("other", "other", "node-1"), ("other-2", "other", "node-2"),
        ("backend-0", "backend", "node-2"), ("backend-1", "backend", "node-1")]
BACKENDS = {"default/backend-0", "default/backend-1"}
ALLOW_FRONTEND = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-frontend}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
"""
ALLOW_NODE_1 = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-node-1-flannel-address}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{ipBlock: {cidr: 10.244.0.0/32}}]
"""


@pytest.fixture(scope="module", params=["iptables", "nftables",
                                       pytest.param("ipvs", marks=pytest.mark.kernel("ip_vs", "dummy"))])
def svc(request, emu_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("svcpol")
    pods = "".join(f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, labels: {{app: {app}}}}}\n"
                   f"spec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: 80}}, "
                   f"{{containerPort: 80, protocol: UDP}}]}}]}}\n" for n, app, node in PODS)
    (d / "t.yaml").write_text(TOPOLOGY.replace("MODE", request.param) + pods)
    (d / "allow-frontend.yaml").write_text(ALLOW_FRONTEND)
    (d / "allow-node.yaml").write_text(ALLOW_NODE_1)
    with emu_cluster(str(d / "t.yaml")) as c:
        c.dir = d
        c.apply(str(d / "allow-frontend.yaml"))
        yield c


def probes(c, src: str, n: int = 24, proto: str = "tcp", port: str = "http", timeout: float = 0.5) -> list[dict]:
    return [c.probe(src, f"svc/default/backend:{port}", proto=proto, timeout=timeout) for _ in range(n)]


def test_an_allowed_client_reaches_every_backend_through_the_cluster_ip_with_its_own_address(svc):
    for proto, port in (("tcp", "http"), ("udp", "dns")):
        rs = probes(svc, "default/frontend", proto=proto, port=port)
        assert all(r["ok"] for r in rs), [r["verdict"] for r in rs]
        assert {r["answered_by"] for r in rs} == BACKENDS  # same node (backend-1) and across nodes (backend-0)
        assert {r["client_ip_seen"] for r in rs} == {svc.pod_ip("default/frontend")}  # not masqueraded


def test_the_backend_policy_denies_other_clients_through_the_cluster_ip(svc):
    # each probe is DNATed to either backend and rejected there; the allowed frontend, through the same ClusterIP,
    # is the positive control of each (a REJECT the node's ICMP rate limit swallowed is sent again)
    for src in ("default/other", "default/other-2"):
        for _ in range(8):
            svc.assert_blocked(src, "svc/default/backend:http", by=POLICY,
                               control=("default/frontend", "svc/default/backend:http"))
    # the same clients straight to the pod IPs: the same answer (the policy sees the pod as destination)
    svc.assert_blocked("default/other", "default/backend-0", by=POLICY)
    assert svc.probe("default/frontend", "default/backend-0", timeout=0.5)["ok"]


def test_masqueraded_node_traffic_is_judged_by_the_node_address(svc):
    """node-1 -> ClusterIP: kube-proxy masquerades it.  backend-1 (on node-1) sees node-1 itself, which a policy
    cannot block; backend-0 (on node-2) sees node-1's flannel.1 address 10.244.0.0, which no podSelector matches,
    until an ipBlock allows it."""
    # timeout 2 s: ~15 REJECTs to one address outrun node-2's ICMP rate limit (a burst of 6, then 1/s), and a
    # swallowed one is answered when TCP retransmits the SYN after 1 s
    rs = probes(svc, "node/node-1", n=30, timeout=2.0)
    ctl = svc.probe("default/backend-0", "default/backend-0")  # the positive control: backend-0 serves
    by = collections.defaultdict(set)
    for r in rs:
        by[r["ok"]].add(r["answered_by"])
    assert by[True] == {"default/backend-1"}, rs
    assert by.get(False) == {None}  # the probes DNATed to backend-0 were rejected on node-2
    for r in rs:
        if not r["ok"]:
            expect_denial(svc, r, ctl, by=POLICY)
    svc.apply(str(svc.dir / "allow-node.yaml"))
    try:
        rs = probes(svc, "node/node-1", n=30)
        assert all(r["ok"] for r in rs)
        seen = {r["answered_by"]: r["client_ip_seen"] for r in rs}
        assert seen.get("default/backend-0") == "10.244.0.0"
    finally:
        svc.delete(str(svc.dir / "allow-node.yaml"))
