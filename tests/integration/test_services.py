"""Services on the real dataplane, in iptables, nftables and IPVS mode: the packet flows kube-proxy's own proxier
tests check (pkg/proxy/iptables and nftables: packetFlowTest), proved with real packets and the answering pod's view.

IPVS mode needs IP_VS and the dummy link type (kube-ipvs0): on a kernel without them its parameter skips with the
kernel-feature reason and tools/kernel-lane/run-tests runs it.  Where IPVS mode answers differently, the test says
why, from kube-proxy's pkg/proxy/ipvs/proxier.go and the kernel's net/netfilter/ipvs:
* every ClusterIP, external and LB IP is bound to kube-ipvs0, so it is a local address of each node, and an unknown
  port of it meets the node's own stack: KUBE-IPVS-FILTER (kubernetes#72236) REJECTs it, an ICMP port unreachable;
* a traffic policy Local with no local endpoint falls back to the cluster endpoints (syncEndpoint,
  kubernetes#97081): a NodePort with externalTrafficPolicy Local answers on a node without one (flannel's ip-masq
  SNATs it on the way), while a ClusterIP Service with internalTrafficPolicy Local has no cluster endpoints to fall
  back to, and IPVS answers ICMP port unreachable;
* a virtual server without real servers answers ICMP port unreachable itself (ip_vs_core.c ip_vs_leave);
* the scheduler is round robin (defaultScheduler "rr"): connections go to the endpoints strictly in turn.
"""
from __future__ import annotations

import collections
import math
import socket

import numpy as np
import pytest

from emu.apply import netns
from tests.conftest import TOPOLOGIES

SERVICES = (TOPOLOGIES / "services.yaml").read_text()
WEB = {"default/web-0", "default/web-1", "default/web-2"}
NEEDS_IPVS = pytest.mark.kernel("ip_vs", "dummy")
MODES = ["iptables", "nftables", pytest.param("ipvs", marks=NEEDS_IPVS)]


def topology_file(tmp_path_factory, mode: str) -> str:
    p = tmp_path_factory.mktemp("svc") / f"services-{mode}.yaml"
    p.write_text(SERVICES.replace("mode: iptables", f"mode: {mode}"))
    return str(p)


@pytest.fixture(scope="module", params=MODES)
def svc(request, emu_cluster, tmp_path_factory):
    with emu_cluster(topology_file(tmp_path_factory, request.param)) as c:
        c.mode = request.param
        yield c


def answers(c, src, dst, n, proto="tcp", port=None):
    return collections.Counter(c.probe(src, dst, proto=proto, port=port)["answered_by"] for _ in range(n))


def test_pod_to_cluster_ip_reaches_exactly_the_endpoints(svc):
    seen = answers(svc, "default/client-0", "svc/default/web:http", 60)
    assert set(seen) == WEB
    r = svc.probe("default/client-0", "svc/default/web:http")
    assert r["client_ip_seen"] == svc.pod_ip("default/client-0")  # pod traffic keeps its source


def test_udp_port_and_target_port_by_name(svc):
    r = svc.probe("default/client-0", "svc/default/web:dns", proto="udp")
    assert r["ok"] and r["answered_by"] in WEB and r["answer"]["port"] == 80
    r = svc.probe("default/client-0", "svc/default/web:alt")  # port 8081 -> targetPort "alt" = 81
    assert r["ok"] and r["answer"]["port"] == 81


def test_tcp_only_port_gets_nothing_over_udp(svc):
    # nftables mode rejects unknown ports of an allocated ClusterIP (ICMP port unreachable from the client's node);
    # iptables mode has no rule and it is lost.  IPVS mode: the ClusterIP is a local address of node-1 (kube-ipvs0)
    # and udp:80 is not in KUBE-CLUSTER-IP, so KUBE-IPVS-FILTER's REJECT answers.  The UDP port answers beside it.
    svc.assert_blocked("default/client-0", "svc/default/web:http", proto="udp", port=80, timeout=0.5,
                       by="drop" if svc.mode == "iptables" else "icmp-unreachable",
                       control=("default/client-0", "svc/default/web:dns"))


def test_hairpin_to_own_service_is_masqueraded(svc):
    for _ in range(60):
        r = svc.probe("default/web-0", "svc/default/web:http")
        if r["answered_by"] == "default/web-0":
            break
    assert r["answered_by"] == "default/web-0"
    assert r["client_ip_seen"] == "10.244.0.1"  # KUBE-SEP -s <ep> -j KUBE-MARK-MASQ: the bridge address


def test_node_to_cluster_ip_and_node_port_are_masqueraded(svc):
    for dst in ("svc/default/web:http", "nodeport/node-2:30080"):
        r = svc.probe("node/node-1", dst)
        assert r["ok"], r
        assert r["client_ip_seen"] != "172.18.0.2"
        assert r["client_ip_seen"].startswith("10.244.")  # masqueraded to the node's pod-network address


def test_external_to_node_port_cluster_policy_is_masqueraded_and_reaches_every_endpoint(svc):
    seen = collections.Counter()
    for _ in range(60):
        r = svc.probe("external", "nodeport/node-1:30080")
        assert r["ok"] and r["client_ip_seen"] != "172.18.0.1"
        seen[r["answered_by"]] += 1
    assert set(seen) == WEB


def test_external_traffic_policy_local(svc):
    r = svc.probe("external", "nodeport/node-2:30081")
    assert r["ok"] and r["answered_by"] == "default/local-0"
    assert r["client_ip_seen"] == "172.18.0.1"  # no SNAT with Local
    if svc.mode == "ipvs":
        # no local endpoint on node-1: IPVS mode gives the NodePort's virtual server the cluster endpoints instead
        # (syncEndpoint, kubernetes#97081).  kube-proxy leaves it unmasqueraded (KUBE-NODE-PORT-LOCAL-TCP RETURNs
        # first) and expects the reply, with the pod's address, to be discarded; but the packet leaves node-1 for
        # the pod network over flannel.1, and flanneld's ip-masq rule for "the host reaching flannel"
        # (! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE) SNATs it to node-1's flannel.1 address, so the reply
        # comes back through node-1 and the client is answered
        r = svc.assert_reachable("external", "nodeport/node-1:30081")
        assert r["answered_by"] == "default/local-0" and r["client_ip_seen"] == "10.244.0.0"
        snat = [w for w in svc.trace("external", "nodeport/node-1:30081")["rewrites"] if w["kind"] == "snat"]
        assert [w["where"] for w in snat] == ["node/node-1"], snat
        rule = snat[0]["rule"]["iptables"]
        assert rule.startswith("-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 ") and "-j MASQUERADE" in rule
        return
    # no local endpoint on node-1: kube-proxy drops it ("has no local endpoints" -j DROP)
    svc.assert_blocked("external", "nodeport/node-1:30081", by="drop", timeout=0.5,
                       control=("external", "nodeport/node-2:30081"))


def test_internal_traffic_policy_local(svc):
    r = svc.probe("default/web-1", "svc/default/local-internal")  # web-1 is on node-2 with local-0
    assert r["ok"] and r["answered_by"] == "default/local-0"
    # no local endpoint on node-1: kube-proxy drops it.  IPVS mode's fallback to the cluster endpoints (syncEndpoint,
    # kubernetes#97081) gives nothing here: a ClusterIP-only Service with internalTrafficPolicy Local has no cluster
    # endpoints (CategorizeEndpoints: UsesClusterEndpoints is false), so its virtual server on node-1 has no real
    # server and IPVS answers ICMP port unreachable (ip_vs_core.c ip_vs_leave)
    svc.assert_blocked("default/client-0", "svc/default/local-internal", timeout=0.5,  # node-1: none local
                       by="icmp-unreachable" if svc.mode == "ipvs" else "drop",
                       control=("default/web-1", "svc/default/local-internal"))


def test_load_balancer_from_external_and_source_ranges(svc):
    r = svc.probe("external", "lb/default/web-lb")
    assert r["ok"] and r["answered_by"] in WEB
    # 172.18.0.1 is not in 10.0.0.0/8: the node's firewall chain drops it; a pod (10.244.0.0/16) gets through.
    # IPVS mode: filter INPUT's KUBE-PROXY-FIREWALL sends KUBE-LOAD-BALANCER-FW members to
    # KUBE-SOURCE-RANGES-FIREWALL, which RETURNs sources in KUBE-LOAD-BALANCER-SOURCE-CIDR and DROPs the rest, before
    # IPVS's LOCAL_IN hook (priority NF_IP_PRI_NAT_SRC - 2, after filter's 0) schedules it
    svc.assert_blocked("external", "lb/default/web-lb-restricted", by="drop", timeout=0.5,
                       control=("default/client-0", "lb/default/web-lb-restricted"))


def test_service_without_endpoints_is_rejected(svc):
    # kube-proxy's "has no endpoints" -j REJECT (nftables: the no-endpoint-services map's reject): ICMP port
    # unreachable from the client's node, while a Service with endpoints answers beside it.  IPVS mode has a
    # virtual server without real servers: the scheduler finds no destination and ip_vs_leave sends ICMP port
    # unreachable "no matter it is TCP/UDP" (net/netfilter/ipvs/ip_vs_core.c)
    svc.assert_blocked("default/client-0", "svc/default/empty", by="icmp-unreachable",
                       control=("default/client-0", "svc/default/web:http"))


def test_session_affinity_sticks(svc):
    seen = answers(svc, "default/client-0", "svc/default/sticky", 20)
    assert len(seen) == 1


def test_selectorless_service_with_explicit_endpoint_slice(svc):
    r = svc.probe("default/client-0", "svc/default/manual:http")
    assert r["ok"] and r["answered_by"] == "default/web-1" and r["answer"]["port"] == 81


def test_nftables_only_differences(svc):
    cip = svc.cluster_ip("default/web")
    # allocated ClusterIP, unknown port: nftables rejects it, iptables has no rule.  IPVS: the ClusterIP is bound to
    # kube-ipvs0, so without a filter the node's own stack would answer (kubernetes#72236); KUBE-IPVS-FILTER
    # REJECTs a NEW connection to a KUBE-IPVS-IPS address that no service set RETURNed: ICMP port unreachable
    svc.assert_blocked("default/client-0", f"{cip}:9999", timeout=0.5,
                       by="drop" if svc.mode == "iptables" else "icmp-unreachable",
                       control=("default/client-0", "svc/default/web:http"))
    if svc.mode == "iptables":  # localhost NodePort: iptables mode's route_localnet rule, which nftables has not
        svc.assert_reachable("node/node-1", "127.0.0.1:30080", timeout=0.5)
    else:  # nothing listens on the node's 127.0.0.1:30080, so its own kernel resets it (IPVS mode: NodePort
        # virtual servers listen on the node's addresses but loopback's, and KUBE-SERVICES RETURNs 127.0.0.0/8)
        svc.assert_blocked("node/node-1", "127.0.0.1:30080", by="reset", timeout=0.5,
                           control=("node/node-1", "nodeport/node-1:30080"))


def test_load_balancing_passes_a_chi_square_test(svc):
    """>= 1000 connections over 3 endpoints: the split is uniform (df=2, p = exp(-chi2/2)) at p > 0.001.  IPVS
    mode's rr scheduler is not random: 12 connections from one client go to the 3 endpoints strictly in turn."""
    if svc.mode == "ipvs":
        seen = [svc.probe("default/client-0", "svc/default/web:http")["answered_by"] for _ in range(12)]
        assert set(seen[:3]) == WEB and seen == seen[:3] * 4, seen
        return
    n = 1050
    seen = answers(svc, "default/client-0", "svc/default/web:http", n)
    counts = np.array([seen[k] for k in sorted(WEB)], dtype=float)
    assert counts.sum() == n
    chi2 = float(((counts - n / 3) ** 2 / (n / 3)).sum())
    p = math.exp(-chi2 / 2)
    assert p > 0.001, (counts, chi2, p)


def test_rules_and_conntrack_commands(svc):
    r = svc.exec("node/node-1", *(["nft", "list", "table", "ip", "kube-proxy"] if svc.mode == "nftables"
                                  else ["iptables-save", "-t", "nat"]))
    assert ("service-ips" in r.stdout) if svc.mode == "nftables" else ("KUBE-SERVICES" in r.stdout)
    if svc.mode == "ipvs":  # acceptIPVSTraffic: the ClusterIPs are matched by ipset, not one rule per Service
        assert "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT" in r.stdout.splitlines()


CHURN = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: churn}
spec: {nodes: 2, proxy: {mode: MODE}}
---
kind: Pod
metadata: {name: a, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]}
---
kind: Pod
metadata: {name: b, labels: {app: s}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]}
---
kind: Pod
metadata: {name: client}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
kind: Service
metadata: {name: s}
spec:
  selector: {app: s}
  ports: [{name: tcp, port: 80}, {name: udp, port: 80, protocol: UDP}]
"""


@pytest.mark.parametrize("mode", MODES)
def test_endpoint_churn(emu_cluster, tmp_path, mode):
    path = tmp_path / "churn.yaml"
    path.write_text(CHURN.replace("MODE", mode))
    with emu_cluster(str(path)) as c:
        cip = c.cluster_ip("default/s")
        # An established TCP connection survives an unrelated endpoint change.
        tcp = netns.socket_in(c.netns("default/client"), socket.AF_INET, socket.SOCK_STREAM)
        tcp.settimeout(3)
        tcp.connect((cip, 80))
        c.mark("default/b", "not-ready")  # an endpoint change (maybe of the very endpoint: it still serves)
        tcp.sendall(b"hello\n")
        data = tcp.recv(4096)
        tcp.close()
        assert b'"owner"' in data
        c.mark("default/b", "ready")
        # A UDP flow to a removed endpoint moves on after the conntrack cleanup.
        udp = netns.socket_in(c.netns("default/client"), socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(2)
        udp.bind(("0.0.0.0", 40000))
        udp.sendto(b"hello", (cip, 80))
        first = udp.recv(4096).decode()
        owner = "default/a" if '"default/a"' in first else "default/b"
        other = "default/b" if owner == "default/a" else "default/a"
        for _ in range(3):  # the flow is pinned by conntrack
            udp.sendto(b"hello", (cip, 80))
            assert f'"{owner}"' in udp.recv(4096).decode()
        c.mark(owner, "not-ready")  # returns once every node's kube-proxy has synced and cleaned up conntrack
        udp.sendto(b"hello", (cip, 80))
        assert f'"{other}"' in udp.recv(4096).decode()
        udp.close()


@pytest.mark.parametrize("mode", MODES)
def test_terminating_endpoint_fallback(emu_cluster, tmp_path, mode):
    path = tmp_path / "term.yaml"
    path.write_text(CHURN.replace("MODE", mode))
    with emu_cluster(str(path)) as c:
        c.mark("default/a", "terminating")
        seen = answers(c, "default/client", "svc/default/s:tcp", 20)
        assert set(seen) == {"default/b"}  # ready endpoints are preferred
        c.mark("default/b", "not-ready")
        seen = answers(c, "default/client", "svc/default/s:tcp", 10)
        assert set(seen) == {"default/a"}  # none ready: serving-and-terminating is used
