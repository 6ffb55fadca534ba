"""`emu doctor` on real clusters: a healthy one has no failure; each fault a person could make by hand (a deleted
route, a wrong MTU, a deleted kube-proxy rule) is found and named.  Every fault gets a fresh cluster of its own,
so the tests do not depend on each other."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from emu.cluster import lifecycle as clusters
from emu.apply import netns
from emu.observe.doctor import run as doctor
from emu.observe.doctor.findings import Report, Status
from tests.conftest import TOPOLOGIES

pytestmark = pytest.mark.integration

TIMEOUT = 0.5  # per probe: failed pairs cost two of them
SERVICES = (TOPOLOGIES / "services.yaml").read_text()


def run(c, *only: str) -> Report:
    return doctor.run(clusters.open_cluster(c.name), only, timeout=TIMEOUT)


def by(rep: Report, check: str, status: Status) -> dict[str, object]:
    return {f.subject: f for f in rep.findings if f.check == check and f.status is status}


def cli(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", "doctor", name, "--timeout", str(TIMEOUT), *args],
                          capture_output=True, text=True, env=os.environ.copy())


def ip(c, node: str, *args: str) -> None:
    subprocess.run(["ip", "-n", c.netns(f"node/{node}"), *args], check=True)


def subnet(c, node: str) -> str:
    return str(next(n.subnet for n in c.plan.nodes if n.name == node))


def test_a_healthy_cluster_has_no_failure(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "dns.yaml")) as c:
        r = cli(c.name, "-o", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["ok"] and doc["summary"]["fail"] == 0, [f for f in doc["findings"] if f["status"] == "fail"]
        assert doc["checks"] == list(doctor.CHECKS)
        ok = {(f["check"], f["subject"]) for f in doc["findings"] if f["status"] == "ok"}
        assert {("dns", "node/node-1"), ("dns", "node/node-2"), ("kube-proxy", "node/node-1"),
                ("kube-proxy", "node/node-2"), ("pod-to-pod", "node-1 -> node-2"), ("pod-to-pod", "node-2 -> node-1"),
                ("mtu", "node-1 -> node-2"), ("routes", "node/node-1"), ("conntrack", "node/node-2")} <= ok
        dns = next(f for f in doc["findings"] if f["check"] == "dns")
        assert "resolved kube-dns.kube-system.svc.cluster.local. -> 10.96.0.10" in dns["message"]
    assert not [n for n in netns.list_names() if n.startswith(f"emu-doctor-{os.getpid()}-")]  # scratch removed


def test_a_deleted_route_is_named_and_breaks_exactly_its_node_pair(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "flannel-vxlan.yaml")) as c:
        dst = subnet(c, "node-2")
        gw = dst.split("/")[0]
        ip(c, "node-1", "route", "del", dst)
        rep = run(c, "routes", "pod-to-pod")
        assert not rep.ok
        bad = by(rep, "routes", Status.FAIL)
        assert set(bad) == {"node/node-1"}
        assert bad["node/node-1"].evidence == (f"missing route: {dst} via {gw} dev flannel.1 onlink",)
        assert c.netns("node/node-1") in bad["node/node-1"].message
        broken = by(rep, "pod-to-pod", Status.FAIL)
        assert set(broken) == {"node-1 -> node-2", "node-2 -> node-1"}  # the replies need the route too
        assert len(by(rep, "pod-to-pod", Status.OK)) == 4
        ev = "\n".join(broken["node-1 -> node-2"].evidence)
        assert f"(differs from the plan: {dst} via {gw} dev flannel.1 onlink)" in ev
        r = cli(c.name, "--check", "routes")
        assert r.returncode == 1 and f"missing route: {dst} via {gw} dev flannel.1 onlink" in r.stdout


def test_a_wrong_mtu_is_named_with_expected_and_observed(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "flannel-vxlan.yaml")) as c:
        ip(c, "node-2", "link", "set", "flannel.1", "mtu", "1400")
        rep = run(c, "mtu")
        bad = by(rep, "mtu", Status.FAIL)
        assert bad["node/node-2"].message == f"flannel.1 in netns {c.netns('node/node-2')}: MTU 1400, planned 1450"
        out = {f.subject: f for f in rep.findings if f.subject == "node-2 -> node-1"}["node-2 -> node-1"]
        assert out.status in (Status.FAIL, Status.WARN) and out.message.endswith("limited by node/node-2 flannel.1"
                                                                                 " (path MTU discovery works: "
                                                                                 "frag-needed came back)")
        assert "frag-needed" in out.evidence[-1] and "mtu 1400" in out.evidence[-1]
        assert by(rep, "mtu", Status.OK)["node-1 -> node-2"]

        ip(c, "node-2", "link", "set", "flannel.1", "mtu", "1450")  # restored: nothing left to report
        assert run(c, "mtu").ok
        pod = next(p for p in c.plan.pods if p.node == "node-1")
        subprocess.run(["ip", "-n", pod.netns.name, "link", "set", "eth0", "mtu", "1500"], check=True)
        rep = run(c, "mtu")
        bad = by(rep, "mtu", Status.FAIL)
        assert bad[pod.key].message == f"eth0 in netns {pod.netns.name}: MTU 1500, planned 1450"
        hole = bad["node-1 -> node-2"]  # the host end of its veth drops what does not fit (the sender's kernel
        assert hole.message.startswith(f"{pod.key} sends up to 1500 bytes but the path to node-2 carries 1450")
        probe = next(e for e in hole.evidence if e.startswith("probe icmp 1472 bytes DF"))  # says ENOBUFS)
        # no denial and no frag-needed: veth_xmit (drivers/net/veth.c) drops the frame the peer cannot take and
        # returns NET_XMIT_DROP, which the sending socket gets as ENOBUFS (net_xmit_errno, linux/netdevice.h)
        assert probe.endswith(": error (No buffer space available)"), probe


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_deleted_kube_proxy_rule_is_found_with_its_text(emu_cluster, tmp_path, mode):
    path = tmp_path / f"services-{mode}.yaml"
    path.write_text(SERVICES.replace("mode: iptables", f"mode: {mode}"))
    with emu_cluster(str(path)) as c:
        assert run(c, "kube-proxy").ok
        if mode == "iptables":
            save = c.exec("node/node-1", "iptables-nft-save", "-t", "nat").stdout
            rule = next(line for line in save.splitlines()
                        if line.startswith("-A KUBE-SERVICES") and '"default/web:http cluster IP"' in line)
            c.exec("node/node-1", "iptables-nft", "-t", "nat", "-D", *shlex.split(rule)[1:])
            want = f"missing rule nat: {rule}"
        else:
            cip = c.cluster_ip("default/web")
            c.exec("node/node-1", "nft", "delete", "element", "ip", "kube-proxy", "service-ips",
                   f"{{ {cip} . tcp . 80 }}")
            want = f"missing element in map service-ips: {cip} . tcp . 80 : goto service-"
        rep = run(c, "kube-proxy")
        bad = by(rep, "kube-proxy", Status.FAIL)
        assert set(bad) == {"node/node-1"} and len(by(rep, "kube-proxy", Status.OK)) == 2
        assert bad["node/node-1"].message.startswith(f"1 missing, 0 unexpected ({mode} mode)")
        assert [e for e in bad["node/node-1"].evidence if e.startswith(want)], bad["node/node-1"].evidence
