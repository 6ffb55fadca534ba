"""NetworkPolicies as a running cluster lives with them: established connections keep flowing when a policy starts
denying (conntrack, as kube-router and Calico leave it), rules follow new pods, the last policy's removal leaves no
trace, the CLI (`emu matrix`, `emu explain`, `emu rules`) and the legacy iptables backend."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from emu.apply import netns
from emu.testing import NETWORK_POLICY_DENIAL as POLICY
from emu.testing import expect_matrix
from tests.conftest import TOPOLOGIES

MODEL = TOPOLOGIES / "netpol-model.yaml"
DENY_X = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
NEW_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: x, labels: {pod: d}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
"""


def emu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, env=dict(os.environ))


@pytest.fixture(scope="module")
def live(emu_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    (d / "deny.yaml").write_text(DENY_X)
    (d / "pod.yaml").write_text(NEW_POD)
    with emu_cluster(str(MODEL), "npl") as c:
        c.dir = d
        yield c


def _save(c, node: str) -> str:
    return c.exec(f"node/{node}", "iptables-nft-save", "-t", "filter").stdout


def _sets(c, node: str) -> str:
    return c.exec(f"node/{node}", "ipset", "list", "-n").stdout


def test_established_udp_and_tcp_flows_survive_a_new_deny(live):
    ns, dst = live.netns("y/a"), live.pod_ip("x/b")
    udp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    tcp = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    udp.settimeout(2)
    tcp.settimeout(2)
    try:
        udp.connect((dst, 80))
        udp.send(b"hostname")
        assert udp.recv(100) == b"b"  # the flow is now in conntrack, answered
        tcp.connect((dst, 80))  # handshake done; the request follows after the policy
        live.apply(str(live.dir / "deny.yaml"))
        udp.send(b"hostname")
        assert udp.recv(100) == b"b"  # ESTABLISHED is accepted before any policy
        tcp.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
        assert tcp.recv(4096).endswith(b"b")
        live.assert_blocked("y/a", "x/b", proto="udp", by=POLICY)  # a new flow meets the policy
        live.assert_blocked("y/a", "x/b", by=POLICY)
    finally:
        udp.close()
        tcp.close()
        live.delete(str(live.dir / "deny.yaml"))


def test_rules_follow_new_pods_and_the_last_policy_leaves_no_trace(live):
    assert "KUBE-ROUTER" not in _save(live, "node-1") and _sets(live, "node-1").strip() == ""
    live.apply(str(live.dir / "deny.yaml"))
    try:
        live.apply(str(live.dir / "pod.yaml"))  # x/d arrives after the policy: selected at once
        live.assert_blocked("y/a", "x/d", by=POLICY)
        assert live.probe("x/d", "y/a", timeout=3.0)["ok"]
        m = live.assert_matrix(live.matrix("tcp", 80, timeout=0.5), by=POLICY)
        assert "x/d" in m["pods"]
        save = _save(live, live.plan.pod("x/d").node)
        assert '--comment "x/d reject"' in save and "KUBE-POD-FW-" in save
        assert save.count("-j KUBE-ROUTER-FORWARD") == 1  # the jump is written once, not on every sync
    finally:
        live.delete(str(live.dir / "pod.yaml"))
        live.delete(str(live.dir / "deny.yaml"))
    for node in ("node-1", "node-2", "node-3"):
        save = _save(live, node)
        assert not any(k in save for k in ("KUBE-ROUTER", "KUBE-NWPLCY", "KUBE-POD-FW")), save
        assert _sets(live, node).strip() == ""
        assert "FLANNEL-FWD" in save and "KUBE-FORWARD" in save  # flannel's and kube-proxy's rules untouched
    assert live.matrix("tcp", 80, timeout=0.5)["failures"] == 0


def test_matrix_cli_json_text_and_exit_status(live):
    live.apply(str(live.dir / "deny.yaml"))
    try:
        r = emu("matrix", "--cluster", "npl", "--port", "81", "--proto", "udp", "--namespaces", "x,y", "-o", "json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["pods"] == ["x/a", "x/b", "x/c", "y/a", "y/b", "y/c"] and res["probes"] == 36
        assert res["observed"]["y/a"]["x/b"] is False and res["expected"]["y/a"]["x/b"] is False
        assert res["observed"]["x/a"]["y/b"] is True
        expect_matrix(live, res, by=POLICY)  # the JSON's denials: each denied pair rejected, x's pods alive
        assert res["failures"] == 6 * 3 - 3  # every pod into x's 3 pods, but a pod always reaches itself
        for key in ("proto", "port", "verdicts", "denials", "client_ip_seen", "seconds"):
            assert key in res
        r = emu("matrix", "--cluster", "npl")
        assert r.returncode == 0 and "EXPECTED" in r.stdout and "0 disagreements" in r.stdout
        # tamper with the dataplane: x/b's chain stops rejecting, so what the policy denies gets through
        node = live.plan.pod("x/b").node
        chain = next(line.split()[1] for line in _save(live, node).splitlines()
                     if '--comment "x/b reject"' in line)
        live.exec(f"node/{node}", "iptables-nft", "-D", chain, "-m", "comment", "--comment", "x/b reject",
                  "-m", "mark", "!", "--mark", "0x10000/0x10000", "-j", "REJECT")
        r = emu("matrix", "--cluster", "npl")
        assert r.returncode == 1
        assert "! y/a -> x/b: expected denied, observed connected" in r.stdout and "!" in r.stdout.splitlines()[6]
    finally:
        live.delete(str(live.dir / "deny.yaml"))


def test_explain_cli(live):
    live.apply(str(live.dir / "deny.yaml"))
    try:
        r = emu("explain", "y/a", "x/b", "--cluster", "npl")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "y/a -> x/b tcp/80: DENIED"
        assert "ingress of x/b is isolated by x/deny-ingress and no rule allows it" in r.stdout
        assert "x/deny-ingress has no ingress rules" in r.stdout and '"x/b reject"' in r.stdout
        d = json.loads(emu("explain", "x/b", "y/a", "--port", "81", "-o", "json", "--cluster", "npl").stdout)
        assert d["allowed"] is True and d["port"] == 81 and d["ingress"]["policies"] == []
        assert emu("explain", "nope/x", "y/a", "--cluster", "npl").returncode == 2
    finally:
        live.delete(str(live.dir / "deny.yaml"))


def test_the_legacy_iptables_backend(emu_cluster, tmp_path):
    path = tmp_path / "legacy.yaml"
    path.write_text(MODEL.read_text().replace("mode: iptables", "mode: iptables\n  iptablesBackend: legacy"))
    (tmp_path / "deny.yaml").write_text(textwrap.dedent(DENY_X))
    with emu_cluster(str(path)) as c:
        c.apply(str(tmp_path / "deny.yaml"))
        m = c.assert_matrix(c.matrix("tcp", 80, timeout=0.5), by=POLICY)
        assert m["failures"] == 24
        save = c.exec("node/node-1", "iptables-legacy-save", "-t", "filter").stdout
        assert "-j KUBE-ROUTER-FORWARD" in save
        assert "KUBE-ROUTER" not in c.exec("node/node-1", "iptables-nft-save", "-t", "filter").stdout
