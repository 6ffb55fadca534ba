"""The `emu` command line on a live cluster: kubectl-shaped tables, `-o json` contracts, exec, probe, matrix."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TOPOLOGIES

VXLAN = str(TOPOLOGIES / "flannel-vxlan.yaml")


def emu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def cli_cluster(emu_cluster):
    with emu_cluster(VXLAN, "clitest") as c:
        yield c


def test_get_pods_wide_shows_ip_and_node(cli_cluster):
    r = emu("get", "pods", "-o", "wide", "--cluster", "clitest")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "HOST-VETH", "NETNS"]
    row = next(line.split() for line in lines if line.startswith("web-1 "))
    assert row[1:3] == ["1/1", "Running"] and row[5:7] == ["10.244.1.2", "node-2"]


def test_get_pods_json_and_namespaces(cli_cluster):
    every = json.loads(emu("get", "pods", "-A", "-o", "json", "--cluster", "clitest").stdout)
    pods = [p for p in every if p["namespace"] != "kube-system"]
    assert {p["namespace"] for p in pods} == {"default", "shop"} and len(pods) == 6
    proxies = [p for p in every if p["namespace"] == "kube-system"]  # kube-proxy's DaemonSet, one per node
    assert sorted(p["node"] for p in proxies) == ["node-1", "node-2", "node-3"]
    assert all(p["name"].startswith("kube-proxy-") and p["hostNetwork"] and p["labels"]["k8s-app"] == "kube-proxy"
               for p in proxies)
    web0 = next(p for p in pods if p["name"] == "web-0")
    assert web0["ip"] == "10.244.0.2" and web0["node"] == "node-1"
    nss = json.loads(emu("get", "ns", "-o", "json", "--cluster", "clitest").stdout)
    shop = next(n for n in nss if n["name"] == "shop")
    assert shop["labels"] == {"team": "shop", "kubernetes.io/metadata.name": "shop"}
    nodes = emu("get", "nodes", "-o", "wide", "--cluster", "clitest").stdout
    assert "172.18.0.3" in nodes and "10.244.1.0/24" in nodes


def test_probe_json_fields(cli_cluster):
    r = emu("probe", "default/web-0", "default/web-1", "--port", "80", "-o", "json", "--cluster", "clitest")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] is True and d["verdict"] == "connected"
    assert d["answered_by"] == "default/web-1" and d["client_ip_seen"] == "10.244.0.2"
    assert isinstance(d["rtt_ms"], float)


def test_probe_mtu_edge_json(cli_cluster):
    r = emu("probe", "default/web-0", "default/web-1", "--proto", "icmp", "--size", "1423", "--df", "-o", "json",
            "--cluster", "clitest")
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["verdict"] == "frag-needed" and d["icmp"]["mtu"] == 1450
    r = emu("probe", "default/web-0", "default/web-1", "--proto", "icmp", "--size", "1422", "--df", "--count", "3",
            "-o", "json", "--cluster", "clitest")
    d = json.loads(r.stdout)
    assert r.returncode == 0 and d["ok"] and len(d["results"]) == 3


def test_probe_pmtu_text(cli_cluster):
    r = emu("probe", "--pmtu", "default/web-0", "default/web-2", "--cluster", "clitest")
    assert r.returncode == 0 and "path MTU" in r.stdout and "1450" in r.stdout


def test_exec_runs_inside_the_pod(cli_cluster):
    r = emu("exec", "default/web-2", "--cluster", "clitest", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert r.returncode == 0 and "10.244.2.2/24" in r.stdout
    r = emu("exec", "node/node-1", "--cluster", "clitest", "--", "cat", "/proc/sys/net/ipv4/ip_forward")
    assert r.stdout.strip() == "1"


def test_matrix_json_has_observed_booleans(cli_cluster):
    r = emu("matrix", "--port", "81", "--proto", "udp", "-o", "json", "--cluster", "clitest")
    d = json.loads(r.stdout)
    assert r.returncode == 0 and d["failures"] == 0
    assert d["observed"]["default/web-0"]["default/web-2"] is True


def test_status_and_unknown_targets(cli_cluster):
    d = json.loads(emu("status", "clitest", "-o", "json").stdout)
    assert d[0]["name"] == "clitest" and d[0]["pods"] == 6 and d[0]["status"] == "up"
    r = emu("probe", "default/nope", "default/web-1", "--cluster", "clitest")
    assert r.returncode == 2 and "no pod default/nope" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_needs_no_cluster(tmp_path):
    r = emu("up", "--dry-run", VXLAN, env={"EMU_STATE_DIR": str(tmp_path)})
    assert r.returncode == 0 and "type vxlan id 1" in r.stdout
    assert os.listdir(tmp_path) == []


def test_down_all_and_unknown(tmp_path):
    env = {"EMU_STATE_DIR": str(tmp_path)}
    assert emu("up", VXLAN, "--name", "downall", env=env).returncode == 0
    r = emu("down", "--all", "-o", "json", env=env)
    assert json.loads(r.stdout) == {"removed": ["downall"], "absent": []}
    r = emu("down", "nosuch", env=env)
    assert r.returncode == 0 and "not found" in r.stdout
