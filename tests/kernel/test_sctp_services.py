"""SCTP Services (kernel lane: this host has no SCTP sockets): an SCTP containerPort is served, and a ClusterIP
Service reaches it through kube-proxy's rules in iptables and nftables mode."""
from __future__ import annotations

import pytest

from emu.testing import running

pytestmark = [pytest.mark.kernel("sctp"), pytest.mark.integration]

TOPOLOGY = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: sctp}
spec: {nodes: 2, proxy: {mode: MODE}}
---
kind: Pod
metadata: {name: srv, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{name: assoc, containerPort: 9000, protocol: SCTP}]}]}
---
kind: Pod
metadata: {name: client}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
kind: Service
metadata: {name: s}
spec:
  selector: {app: s}
  ports: [{name: assoc, port: 7000, targetPort: assoc, protocol: SCTP}]
"""


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_sctp_service_reaches_the_endpoint(tmp_path, mode):
    path = tmp_path / "sctp.yaml"
    path.write_text(TOPOLOGY.replace("MODE", mode))
    with running(str(path)) as c:
        direct = c.probe("default/client", "default/srv", proto="sctp", port=9000, timeout=5)
        assert direct["ok"] and direct["answered_by"] == "default/srv", direct
        r = c.probe("default/client", "svc/default/s:assoc", proto="sctp", timeout=5)
        assert r["ok"] and r["answered_by"] == "default/srv", r
        assert r["answer"]["protocol"] == "SCTP" and r["answer"]["port"] == 9000
        assert r["client_ip_seen"] == c.pod_ip("default/client")


POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sctp-from-clients}
spec:
  podSelector: {matchLabels: {app: s}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{protocol: SCTP, port: 9000}]
"""

CLIENTS = """kind: Pod
metadata: {name: allowed, labels: {role: client}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
kind: Pod
metadata: {name: other}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
"""


def test_sctp_network_policy_port(tmp_path):
    path = tmp_path / "sctp.yaml"
    path.write_text(TOPOLOGY.replace("MODE", "iptables"))
    (tmp_path / "clients.yaml").write_text(CLIENTS)
    (tmp_path / "policy.yaml").write_text(POLICY)
    with running(str(path)) as c:
        c.apply(str(tmp_path / "clients.yaml"))
        c.apply(str(tmp_path / "policy.yaml"))
        ok = c.probe("default/allowed", "default/srv", proto="sctp", port=9000, timeout=5)
        assert ok["ok"] and ok["answered_by"] == "default/srv", ok
        # the policy's REJECT answers the INIT with an ICMP port unreachable.  Linux SCTP (net/sctp/input.c
        # sctp_v4_err) turns it into ECONNREFUSED only when the socket is not owned by the user at that instant;
        # otherwise it is a soft error and the INIT is retransmitted until the connect times out (and the node's
        # ICMP rate limit may swallow the answer altogether).  Either way no ICMP detail reaches the socket's error
        # queue, so probing.denial names no kind: the verdict is asserted to be one of those two, beside the
        # positive control (srv answers itself on 9000: nothing but the policy refused it) and the engine's verdict.
        denied = c.probe("default/other", "default/srv", proto="sctp", port=9000, timeout=2)
        c.assert_reachable("default/srv", "default/srv", proto="sctp", port=9000)
        assert denied["verdict"] in ("refused", "timeout") and denied["icmp"] is None, denied
        assert c.explain("default/other", "default/srv", proto="sctp", port=9000)["allowed"] is False
