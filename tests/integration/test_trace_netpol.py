"""`emu trace` names the NetworkPolicy rule that dropped a packet (kube-router's per-pod REJECT)."""
from __future__ import annotations

import json

from emu.cluster import lifecycle as clusters
from emu.observe.trace.run import trace
from tests.conftest import TOPOLOGIES

DENY_X = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def test_trace_names_the_policy_rule_that_rejected_the_packet(emu_cluster, tmp_path):
    (tmp_path / "deny.yaml").write_text(DENY_X)
    with emu_cluster(str(TOPOLOGIES / "netpol-model.yaml")) as c:
        c.apply(str(tmp_path / "deny.yaml"))
        res = trace(clusters.open_cluster(c.name), "y/a", "x/b", "tcp", 80)
        assert res["drop"], res.get("notes")
        text = json.dumps(res["drop"])
        assert "KUBE-POD-FW-" in text and "x/b reject" in text, text
