"""Cluster DNS on the real dataplane: queries from pods reach the DNS server at the kube-dns ClusterIP through
kube-proxy's rules, answers follow CoreDNS, names outside the cluster go to the external host's resolver, and
`emu exec ... nslookup` / getent use the pod's resolv.conf."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from emu.cluster import lifecycle as clusters
from emu.apply import state
from emu.addons.dns import addon
from emu.addons.dns import probe as dns_probe
from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def dns(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "dns.yaml")) as c:
        yield c


def cl(c):
    return clusters.open_cluster(c.name)


def test_server_runs_in_coredns_pods(dns):
    rec = state.load(dns.name)
    assert rec.pid("dns") and addon.pids(rec) == {rec.pid("dns")}
    assert all(os.path.exists(f) for f in rec.files("dns")) and len(rec.files("dns")) == 11  # 8 pods, 2 nodes, external


def test_service_name_through_clusterip(dns):
    r = dns_probe.probe_dns(cl(dns), "ns1/client", "web.default")
    assert r["ok"] and r["addresses"] == [dns.cluster_ip("default/web")]
    # ndots:5: the search path first; web.default.ns1.svc... fails, web.default.svc.cluster.local answers
    assert [q["name"] for q in r["queries"]] == ["web.default.ns1.svc.cluster.local.",
                                                 "web.default.svc.cluster.local."]
    assert [q["rcode"] for q in r["queries"]] == ["NXDOMAIN", "NOERROR"]
    assert r["queries"][0]["authority"][0]["data"][:2] == ["ns.dns.cluster.local.", "hostmaster.cluster.local."]
    fq = dns_probe.probe_dns(cl(dns), "ns1/client", "web.default.svc.cluster.local.")
    assert fq["ok"] and len(fq["queries"]) == 1


def test_headless_srv_ptr_pod_over_the_wire(dns):
    c = cl(dns)
    web_ips = sorted(str(c.allocations.pods[p.key].ip) for p in c.topology.pods if p.labels.get("app") == "web")
    r = dns_probe.probe_dns(c, "default/nginx", "web-headless")
    assert r["ok"] and sorted(r["addresses"]) == web_ips
    r = dns_probe.probe_dns(c, "default/nginx", "_http._tcp.web", "SRV")
    assert r["ok"] and [a["data"] for a in r["queries"][-1]["answers"]] == [
        [0, 100, 80, "web.default.svc.cluster.local."]]
    r = dns_probe.probe_dns(c, "default/nginx", "10.0.96.10.in-addr.arpa.", "PTR")
    assert r["addresses"] == ["kube-dns.kube-system.svc.cluster.local."]
    dashed = web_ips[0].replace(".", "-")
    r = dns_probe.probe_dns(c, "default/nginx", f"{dashed}.default.pod.cluster.local")
    assert r["ok"] and r["addresses"] == [web_ips[0]]


def test_forward_to_external_resolver(dns):
    c = cl(dns)
    r = dns_probe.probe_dns(c, "ns1/client", "example.com")
    assert r["ok"] and r["addresses"] == ["203.0.113.10"] and r["queries"][-1]["name"] == "example.com."
    r = dns_probe.probe_dns(c, "ns1/client", "ext.ns1.svc.cluster.local.")  # ExternalName: CNAME, then upstream A
    assert r["ok"] and [a["type"] for a in r["queries"][0]["answers"]] == ["CNAME", "A"]
    r = dns_probe.probe_dns(c, "ns1/client", "no-such-name.example.")
    assert not r["ok"] and r["queries"][-1]["rcode"] == "NXDOMAIN"
    # dnsPolicy Default: the node's resolver, i.e. the external host directly
    r = dns_probe.probe_dns(c, "ns1/default-policy", "example.com")
    assert r["ok"] and r["nameservers"] == ["172.18.0.1"] and len(r["queries"]) == 1


def test_resolv_conf_in_exec(dns):
    out = dns.exec("default/nginx", "cat", "/etc/resolv.conf").stdout
    assert out == ("search default.svc.cluster.local svc.cluster.local cluster.local ns1.svc.cluster.local\n"
                   "nameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n")
    assert dns.exec("ns1/none-policy", "cat", "/etc/resolv.conf").stdout == (
        "search ns1.svc.cluster.local my.dns.search.suffix\nnameserver 10.96.0.10\nnameserver 1.1.1.1\n"
        "options ndots:2 edns0\n")
    got = dns.exec("ns1/client", "getent", "hosts", "web.default").stdout.split()
    assert got[:2] == [dns.cluster_ip("default/web"), "web.default.svc.cluster.local"]


def test_host_network_pods_get_their_own_resolv_conf(dns):
    """Same namespace as node-2, three different files: ClusterFirstWithHostNet is the cluster's DNS, a hostNetwork
    pod's ClusterFirst is the node's, and the node itself keeps its own."""
    node = dns.exec("node/node-2", "cat", "/etc/resolv.conf").stdout
    agent = dns.exec("ns1/host-agent", "cat", "/etc/resolv.conf").stdout
    assert agent == ("search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n"
                     "options ndots:5\n")
    assert dns.exec("ns1/host-plain", "cat", "/etc/resolv.conf").stdout == node and "10.96.0.10" not in node
    got = dns.exec("ns1/host-agent", "getent", "hosts", "web.default").stdout.split()
    assert got[:2] == [dns.cluster_ip("default/web"), "web.default.svc.cluster.local"]
    assert dns.exec("ns1/host-plain", "getent", "hosts", "web.default", check=False).returncode != 0
    emu = os.path.join(os.path.dirname(sys.executable), "emu")
    p = subprocess.run([emu, "exec", "--cluster", dns.name, "ns1/host-agent", "--", "cat", "/etc/resolv.conf"],
                       capture_output=True, text=True, timeout=20)
    assert p.stdout == agent
    assert dns.exec("node/node-2", "cat", "/etc/resolv.conf").stdout == node  # the mount stayed in that process


@pytest.mark.skipif(shutil.which("nslookup") is None, reason="nslookup (dnsutils) is not installed")
def test_nslookup_via_emu_exec(dns):
    emu = os.path.join(os.path.dirname(sys.executable), "emu")
    p = subprocess.run([emu, "exec", "--cluster", dns.name, "ns1/client", "--", "nslookup", "web.default"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Server:\t\t10.96.0.10" in p.stdout and f"Address: {dns.cluster_ip('default/web')}" in p.stdout


def test_cli_probe_dns(dns):
    emu = os.path.join(os.path.dirname(sys.executable), "emu")
    p = subprocess.run([emu, "probe", "--cluster", dns.name, "ns1/client", "--dns", "web-headless.default"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "web-headless.default.ns1.svc.cluster.local." in p.stdout and "NXDOMAIN" in p.stdout
    assert " ms " in p.stdout


def test_records_follow_apply(dns, tmp_path):
    f = tmp_path / "new.yaml"
    f.write_text("""apiVersion: v1
kind: Service
metadata: {name: late, namespace: ns1}
spec:
  selector: {app: none}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: late-pod, namespace: ns1}
spec:
  dnsPolicy: None
  dnsConfig: {nameservers: [10.96.0.10]}
  containers: [{name: c, image: x, ports: [{containerPort: 80}]}]
""")
    dns.apply(str(f))
    # The server polls its zone file's mtime (the idea of CoreDNS's reload plugin), so the new name appears within
    # a poll interval of apply: wait for the answer rather than for a guessed time.
    r = wait_until(lambda: _answered(dns_probe.probe_dns(cl(dns), "ns1/client", "late")),
                   what="the DNS server to serve the applied Service ns1/late")
    assert r["ok"] and r["addresses"] == [dns.cluster_ip("ns1/late")]
    assert dns.exec("ns1/late-pod", "cat", "/etc/resolv.conf").stdout == "nameserver 10.96.0.10\n"
    dns.delete(str(f))
    # Gone means the cluster's server answers NXDOMAIN for it (a timeout or a dead server would also be "not
    # resolved"), while a name that still exists resolves in the same step.
    r = wait_until(lambda: _nxdomain(dns_probe.probe_dns(cl(dns), "ns1/client", "late.ns1.svc.cluster.local.")),
                   what="the DNS server to answer NXDOMAIN for the deleted Service ns1/late")
    assert [(q["server"], q["rcode"]) for q in r["queries"]] == [("10.96.0.10", "NXDOMAIN")]
    assert dns_probe.probe_dns(cl(dns), "ns1/client", "web.default.svc.cluster.local.")["ok"]


def _answered(r: dict) -> dict | None:
    return r if r["ok"] else None


def _nxdomain(r: dict) -> dict | None:
    """The probe when the cluster's server said the name does not exist (not a timeout or an error)."""
    return r if r["queries"] and r["queries"][-1]["rcode"] == "NXDOMAIN" else None


def test_down_removes_everything(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "dns.yaml"), "dns-down") as c:
        rec = state.load(c.name)
        files, pid, d = list(rec.files("dns")), rec.pid("dns"), addon.dns_dir(rec)
        assert addon._is_ours(pid, d)
    assert files and not any(os.path.exists(f) for f in files)
    assert not any(os.path.exists(os.path.dirname(f)) for f in files)
    assert not addon._is_ours(pid, d)
