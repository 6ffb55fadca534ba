"""kube-proxy iptables-mode rule text, checked against upstream's expectations (pkg/proxy/iptables/proxier_test.go).

Where the expectations come from: UPSTREAM_OVERALL is upstream's, TestOverallIPTablesRules `expected` from
pkg/proxy/iptables/proxier_test.go as stored for aroradaman/kubernetes (a fork of kubernetes/kubernetes kept in step
with its master, the 1.32 development line) at commit 4177b600d4b97a67b765a18ddeeb295ef757b212, compared with it
line by line and equal.  That version has the `-m nfacct` counters (`localhost_nps_accepted_pkts` on the localhost
NodePort rules, `ct_state_invalid_dropped_pkts` on the INVALID drop), so emu reproduces it with nfacct on
(UPSTREAM_FAKE); the only stored kubernetes/kubernetes versions of the file (2bb4b1042dfd3a7645d1812037074b5eeedfab78,
0153b96ab8ad969b340b869fa27d3ecc38348bdc) are older than TestOverallIPTablesRules and have nothing to compare.  The
packet-flow cases and chain-name hashes were restated from the same test file and not re-read at that commit.  The
JUMPS and ensure-command expectations are emu's own, read from pkg/proxy/iptables/proxier.go (iptablesJumpChains)
beside the code.

No root needed: everything here is pure text.  The integration test loads the same text into a real kernel.
"""
from __future__ import annotations

import shlex
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest

from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import iptables_text as ipt_text
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort

NODE = "test-node"  # testNodeName
NODE_IP = A("192.168.0.2")  # testNodeIP
POD_CIDR = N("10.0.0.0/8")  # NewFakeProxier's DetectLocalByCIDR


def sp(ns: str, name: str, cip: str, **kw) -> ServicePort:
    kw.setdefault("port_name", "p80")
    kw.setdefault("protocol", "TCP")
    kw.setdefault("port", 80)
    return ServicePort(namespace=ns, name=name, cluster_ip=A(cip), **kw)


def ep(ip: str, port: int = 80, **kw) -> Endpoint:
    return Endpoint(ip=A(ip), port=port, **kw)


def state(*services, masquerade_all: bool = False, node_ips=(NODE_IP,)) -> NodeProxyState:
    return NodeProxyState(node=NODE, node_ips=tuple(node_ips), cluster_cidr=POD_CIDR,
                          service_cidrs=(N("172.30.0.0/16"),), services=tuple(services),
                          masquerade_all=masquerade_all)


def chains(text: str) -> dict[str, dict[str, list[str]]]:
    return ipt_text.restore_chains(text)


# ----------------------------------------------------------------------------------------------- names, numbers


@pytest.mark.parametrize("svc_args, prefix_fn, expected", [
    (("ns1", "svc1", "172.30.0.41"), ipt.service_chain, "KUBE-SVC-XPGD46QRK7WJZT7O"),
    (("ns2", "svc2", "172.30.0.42"), ipt.service_chain, "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
    (("ns2", "svc2", "172.30.0.42"), ipt.local_chain, "KUBE-SVL-GNZBNJ2PO5MGZ6GT"),
    (("ns2", "svc2", "172.30.0.42"), ipt.external_chain, "KUBE-EXT-GNZBNJ2PO5MGZ6GT"),
    (("ns4", "svc4", "172.30.0.44"), ipt.service_chain, "KUBE-SVC-4SW47YFZTEDKD3PK"),
    (("ns5", "svc5", "172.30.0.45"), ipt.service_chain, "KUBE-SVC-NUKIZ6OKUXPJNT4C"),
    (("ns5", "svc5", "172.30.0.45"), ipt.firewall_chain, "KUBE-FW-NUKIZ6OKUXPJNT4C"),
    (("ns3", "svc3", "172.30.0.43"), ipt.external_chain, "KUBE-EXT-X27LE4BHSL4DOUIK"),
])
def test_chain_names(svc_args, prefix_fn, expected):
    assert prefix_fn(sp(*svc_args)) == expected


def test_chain_name_port_name_and_protocol():
    assert ipt.service_chain(sp("ns2", "svc2", "172.30.0.42", port_name="p8080", port=8080)) \
        == "KUBE-SVC-2VJB64SDSIJUP5T6"
    tcp, udp = sp("ns", "s", "172.30.0.1", port_name=""), sp("ns", "s", "172.30.0.1", port_name="", protocol="UDP")
    assert ipt.service_chain(tcp) == "KUBE-SVC-" + ipt.port_proto_hash("ns/s", "tcp")  # ":port" omitted
    assert ipt.service_chain(tcp) != ipt.service_chain(udp)


@pytest.mark.parametrize("svc, ip, expected", [
    (("ns1", "svc1", "172.30.0.41"), "10.180.0.1", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    (("ns2", "svc2", "172.30.0.42"), "10.180.0.2", "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
    (("ns3", "svc3", "172.30.0.43"), "10.180.0.3", "KUBE-SEP-OYPFS5VJICHGATKP"),
    (("ns4", "svc4", "172.30.0.44"), "10.180.0.4", "KUBE-SEP-UKSFD7AGPMPPLUHC"),
    (("ns4", "svc4", "172.30.0.44"), "10.180.0.5", "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
    (("ns5", "svc5", "172.30.0.45"), "10.180.0.3", "KUBE-SEP-I77PXRDZVX7PMWMN"),
])
def test_endpoint_chain_names(svc, ip, expected):
    assert ipt.endpoint_chain(sp(*svc), ep(ip)) == expected


def test_service_chain_prefixes():
    assert ipt.is_service_chain_name("KUBE-FW-NUKIZ6OKUXPJNT4C")
    assert not ipt.is_service_chain_name("KUBE-SERVICES")
    assert not ipt.is_service_chain_name("KUBE-MARK-MASQ")


@pytest.mark.parametrize("n, expected", [
    (1, "1.0000000000"), (2, "0.5000000000"), (3, "0.3333333333"), (4, "0.2500000000"),
    (7, "0.1428571429"), (100001, "0.0000099999"),  # TestComputeProbability
    (2048, "0.0004882812"),  # an exact tie: Go and Python both round half to even
])
def test_probability(n, expected):
    assert ipt.probability(n) == expected


def test_probability_rejects_zero():
    with pytest.raises(ValueError):
        ipt.probability(0)


def test_probability_cascade_three_endpoints():
    svc = sp("ns", "s", "172.30.0.9")
    text = ipt_text.restore_text(state((svc, (ep("10.1.0.1"), ep("10.1.0.2"), ep("10.1.0.3")))))
    rules = chains(text)["nat"][ipt.service_chain(svc)][1:]
    assert ["--probability 0.3333333333" in rules[0], "--probability 0.5000000000" in rules[1],
            "--probability" in rules[2]] == [True, True, False]


# ----------------------------------------------------------------------------------------------- jumps


def test_jumps_match_upstream_table():
    assert len(ipt.JUMPS) == 14
    lines = [(t, ipt.jump_rule(t, c, args)) for t, c, _, args in ipt.JUMPS]
    assert lines[0] == ("filter", '-A INPUT -m conntrack --ctstate NEW -m comment --comment '
                                  '"kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
    assert lines[2] == ("filter", '-A INPUT -m comment --comment "kubernetes health check service ports" '
                                  '-j KUBE-NODEPORTS')
    assert lines[9] == ("nat", '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    assert lines[11] == ("nat", '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
                                '-j KUBE-POSTROUTING')
    assert lines[12:] == [("filter", "-A INPUT -j KUBE-FIREWALL"), ("filter", "-A OUTPUT -j KUBE-FIREWALL")]
    assert {(t, c) for t, c, target, _ in ipt.JUMPS if target == "KUBE-PROXY-FIREWALL"} == \
        {("filter", "INPUT"), ("filter", "OUTPUT"), ("filter", "FORWARD")}


def test_ensure_commands_shape():
    cmds = ipt.ensure_commands()
    assert cmds[:3] == [["iptables", "-w", "-t", t, "-N", "KUBE-PROXY-CANARY"] for t in ("mangle", "nat", "filter")]
    news = [c for c in cmds if c[4] == "-N"]
    assert len(news) == len({tuple(c) for c in news})  # each chain created once
    checks = [i for i, c in enumerate(cmds) if c[4] == "-C"]
    assert len(checks) == len(ipt.JUMPS)
    for i, (table, chain, target, args) in zip(checks, ipt.JUMPS):
        assert cmds[i] == ["iptables", "-w", "-t", table, "-C", chain, *args]
        assert cmds[i + 1] == ["iptables", "-w", "-t", table, "-I", chain, "1", *args]
        assert ["iptables", "-w", "-t", table, "-N", target] in cmds[:i]


# ----------------------------------------------------------------------------------------------- golden


def overall_state() -> NodeProxyState:
    """TestOverallIPTablesRules' services and EndpointSlices, expressed in the model."""
    return state(
        (sp("ns1", "svc1", "172.30.0.41"), (ep("10.180.0.1"),)),
        # LoadBalancer, eTP=Local; its only endpoint has no NodeName, so it is not local.
        (sp("ns2", "svc2", "172.30.0.42", node_port=3001, load_balancer_ips=(A("1.2.3.4"),),
            external_ips=(A("192.168.99.22"),), health_check_node_port=30000, external_policy_local=True),
         (ep("10.180.0.2"),)),
        (sp("ns3", "svc3", "172.30.0.43", node_port=3003), (ep("10.180.0.3"),)),
        (sp("ns4", "svc4", "172.30.0.44", external_ips=(A("192.168.99.33"),)),
         (ep("10.180.0.4"), ep("10.180.0.5", node=NODE))),
        # LoadBalancer, eTP=Cluster, source ranges, ClientIP affinity (HealthCheckNodePort() is 0 for eTP=Cluster)
        (sp("ns5", "svc5", "172.30.0.45", node_port=3002, load_balancer_ips=(A("5.6.7.8"),),
            load_balancer_source_ranges=(N("203.0.113.0/25"),), session_affinity=True, affinity_timeout=10800),
         (ep("10.180.0.3"),)),
        (sp("ns6", "svc6", "172.30.0.46"), ()),
    )


# Source: kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go, TestOverallIPTablesRules `expected`, verbatim
# (fake proxier: nfacct counters present, no --random-fully), as in aroradaman/kubernetes@4177b600d4b9 (see the module
# docstring).  test_overall_rules_on_this_node lists emu's differences from it and why.
UPSTREAM_OVERALL = """\
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
COMMIT
"""


def _service_name(rule: str) -> str | None:
    """orderByCommentServiceName's key: the comment up to the first space or colon."""
    words = shlex.split(rule)
    if "--comment" not in words:
        return None
    value = words[words.index("--comment") + 1]
    for i, ch in enumerate(value):
        if ch in " :":
            return value[:i]
    return value


def sort_iptables_rules(text: str) -> str:
    """sortIPTablesRules: tables by name; chains KUBE-NODEPORTS, KUBE-SERVICES, then alphabetical; rules grouped
    per chain; KUBE-NODEPORTS / KUBE-SERVICES rules stably ordered by service name, the "must be the last rule"
    rule last.  Only meant for texts without -X lines."""
    out: list[str] = []
    for table, chain_map in sorted(chains(text).items()):
        names = sorted(chain_map, key=lambda c: (c != "KUBE-NODEPORTS", c != "KUBE-SERVICES", c))
        out.append("*" + table)
        out += [f":{c} - [0:0]" for c in names]
        for c in names:
            rules = chain_map[c]
            if c in ("KUBE-NODEPORTS", "KUBE-SERVICES"):
                rules = sorted(rules, key=lambda r: ("must be the last rule" in r, _service_name(r) or ""))
            out += rules
        out.append("COMMIT")
    return "\n".join(out) + "\n"


UPSTREAM_FAKE = ipt.Options(random_fully=False, nfacct=True)  # NewFakeProxier's environment


def test_overall_rules_match_upstream_exactly():
    text = ipt_text.restore_text(overall_state(), options=UPSTREAM_FAKE)
    got, want = sort_iptables_rules(text).splitlines(), UPSTREAM_OVERALL.splitlines()
    assert got == want


def test_overall_rules_default_options():
    """This emulator's node: iptables has --random-fully, no nfacct counters.  The differences from upstream's
    fake are exactly the nfacct matches/rules and --random-fully."""
    want = []
    for line in UPSTREAM_OVERALL.splitlines():
        if "localhost_nps_accepted_pkts" in line:
            continue
        line = line.replace(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts", "")
        if "kubernetes service traffic requiring SNAT" in line:
            line += " --random-fully"
        want.append(line)
    assert sort_iptables_rules(ipt_text.restore_text(overall_state())).splitlines() == want


def test_overall_rules_written_order():
    """Unsorted text: table framing, chain declarations and rule order as syncProxyRules writes them."""
    lines = ipt_text.restore_text(overall_state()).splitlines()
    assert lines[:7] == ["*filter", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
                         ":KUBE-FORWARD - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]",
                         ":KUBE-FIREWALL - [0:0]"]
    assert lines[7].startswith("-A KUBE-FIREWALL ")
    nat = lines.index("*nat")
    assert lines[nat - 1] == "COMMIT" and lines[nat - 2].startswith("-A KUBE-FORWARD ")
    assert lines[nat + 1:nat + 5] == [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]",
                                      ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    assert lines[-1] == "COMMIT"
    assert lines[-2].startswith('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE')
    # per-service block order for svc5: captures, internal masq, EXT, FW, SVC, SEP
    svc5 = [l for l in lines if "ns5/svc5" in l and l.startswith("-A") and not l.startswith("-A KUBE-PROXY-FIREWALL")]
    kinds = [l.split()[1][:8] for l in svc5]
    assert kinds == ["KUBE-SER", "KUBE-SER", "KUBE-NOD", "KUBE-SVC", "KUBE-EXT", "KUBE-FW-", "KUBE-FW-",
                     "KUBE-SVC", "KUBE-SVC", "KUBE-SEP", "KUBE-SEP"]
    assert ipt_text.restore_text(overall_state()).endswith("COMMIT\n")


# ----------------------------------------------------------------------------------------------- table-driven


def test_no_endpoints_rejects_everything_in_filter():
    """TestNoEndpointsReject: ClusterIP, external IP, LB IP and NodePort all REJECT; no nat chains."""
    svc = sp("ns1", "svc1", "172.30.0.41", node_port=3001, external_ips=(A("192.168.99.11"),),
             load_balancer_ips=(A("1.2.3.4"),))
    t = chains(ipt_text.restore_text(state((svc, ()))))
    c = '-m comment --comment "ns1/svc1:p80 has no endpoints"'
    assert t["filter"]["KUBE-SERVICES"] == [f"-A KUBE-SERVICES {c} -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT"]
    assert t["filter"]["KUBE-EXTERNAL-SERVICES"] == [
        f"-A KUBE-EXTERNAL-SERVICES {c} -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT",
        f"-A KUBE-EXTERNAL-SERVICES {c} -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT",
        f"-A KUBE-EXTERNAL-SERVICES {c} -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT",
    ]
    assert not [ch for ch in t["nat"] if ipt.is_service_chain_name(ch)]
    assert t["nat"]["KUBE-NODEPORTS"] == []
    assert len(t["nat"]["KUBE-SERVICES"]) == 1  # only the final nodeports jump


def test_internal_local_without_local_endpoints_drops():
    svc = sp("ns1", "svc1", "172.30.0.41", internal_policy_local=True)
    t = chains(ipt_text.restore_text(state((svc, (ep("10.180.0.1", node="other"),)))))
    assert t["filter"]["KUBE-SERVICES"] == [
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" '
        "-m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP"]
    assert not [ch for ch in t["nat"] if ipt.is_service_chain_name(ch)]  # iTP=Local alone uses no cluster chain


def test_internal_local_with_local_endpoint_uses_svl():
    svc = sp("ns1", "svc1", "172.30.0.41", internal_policy_local=True)
    eps = (ep("10.180.0.1", node="other"), ep("10.180.0.2", node=NODE))
    t = chains(ipt_text.restore_text(state((svc, eps))))
    svl, sep = ipt.local_chain(svc), ipt.endpoint_chain(svc, eps[1])
    assert t["nat"]["KUBE-SERVICES"][0].endswith(f"--dport 80 -j {svl}")
    assert t["nat"][svl] == [
        f'-A {svl} -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 '
        f"! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
        f'-A {svl} -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j {sep}']
    assert ipt.service_chain(svc) not in t["nat"]
    assert set(ch for ch in t["nat"] if ch.startswith("KUBE-SEP-")) == {sep}


def test_external_local_with_local_endpoint():
    """eTP=Local: three short-circuit rules then the SVL jump; SVC has all endpoints, SVL only the local one."""
    svc = sp("ns2", "svc2", "172.30.0.42", node_port=3001, load_balancer_ips=(A("1.2.3.4"),),
             external_policy_local=True, health_check_node_port=30000)
    eps = (ep("10.180.0.2", node="other"), ep("10.180.0.3", node=NODE))
    t = chains(ipt_text.restore_text(state((svc, eps))))
    ext, svc_c, svl = ipt.external_chain(svc), ipt.service_chain(svc), ipt.local_chain(svc)
    assert t["nat"][ext] == [
        f'-A {ext} -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j {svc_c}',
        f'-A {ext} -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" '
        f"-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
        f'-A {ext} -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" '
        f"-m addrtype --src-type LOCAL -j {svc_c}",
        f"-A {ext} -j {svl}",
    ]
    assert len(t["nat"][svc_c]) == 1 + 2 and len(t["nat"][svl]) == 1  # SVL has no masq rule (iTP=Cluster)
    assert t["nat"][svl] == [f'-A {svl} -m comment --comment "ns2/svc2:p80 -> 10.180.0.3:80" '
                             f"-j {ipt.endpoint_chain(svc, eps[1])}"]
    assert t["filter"]["KUBE-EXTERNAL-SERVICES"] == []
    assert t["filter"]["KUBE-NODEPORTS"] == [
        '-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" '
        "-m tcp -p tcp --dport 30000 -j ACCEPT"]


def test_terminating_fallback():
    """No ready endpoint anywhere: serving+terminating endpoints are used (KEP-1669); non-serving ones never."""
    svc = sp("ns1", "svc1", "172.30.0.41")
    eps = (ep("10.180.0.1", ready=False, serving=True, terminating=True),
           ep("10.180.0.2", ready=False, serving=False, terminating=True))
    t = chains(ipt_text.restore_text(state((svc, eps))))
    svc_c = ipt.service_chain(svc)
    assert t["nat"][svc_c][1] == (f'-A {svc_c} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" '
                                  f"-j {ipt.endpoint_chain(svc, eps[0])}")
    assert len(t["nat"][svc_c]) == 2
    assert t["filter"]["KUBE-SERVICES"] == []
    # once a ready endpoint exists, the terminating one is no longer used
    t2 = chains(ipt_text.restore_text(state((svc, eps + (ep("10.180.0.9"),)))))
    assert [r.split()[-1] for r in t2["nat"][svc_c][1:]] == [ipt.endpoint_chain(svc, ep("10.180.0.9"))]


def test_masquerade_all():
    svc = sp("ns1", "svc1", "172.30.0.41")
    t = chains(ipt_text.restore_text(state((svc, (ep("10.180.0.1"),)), masquerade_all=True)))
    svc_c = ipt.service_chain(svc)
    assert t["nat"][svc_c][0] == (f'-A {svc_c} -m comment --comment "ns1/svc1:p80 cluster IP" '
                                  "-m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-MARK-MASQ")


def test_udp_service():
    svc = sp("kube-system", "kube-dns", "172.30.0.10", port_name="dns", protocol="UDP", port=53)
    e = ep("10.180.0.7", 53)
    t = chains(ipt_text.restore_text(state((svc, (e,)))))
    svc_c, sep = ipt.service_chain(svc), ipt.endpoint_chain(svc, e)
    assert svc_c == "KUBE-SVC-" + ipt.port_proto_hash("kube-system/kube-dns:dns", "udp")
    assert t["nat"]["KUBE-SERVICES"][0] == (
        '-A KUBE-SERVICES -m comment --comment "kube-system/kube-dns:dns cluster IP" '
        f"-m udp -p udp -d 172.30.0.10 --dport 53 -j {svc_c}")
    assert t["nat"][sep][1] == (f"-A {sep} -m comment --comment kube-system/kube-dns:dns "
                                "-m udp -p udp -j DNAT --to-destination 10.180.0.7:53")


def test_unnamed_port_comments():
    svc = sp("default", "web", "172.30.0.50", port_name="")
    t = ipt_text.restore_text(state((svc, (ep("10.180.0.1", 8080),))))
    assert '--comment "default/web cluster IP"' in t
    assert "-m comment --comment default/web -s 10.180.0.1 -j KUBE-MARK-MASQ" in t


def test_endpoints_sorted_and_deduplicated_like_endpoints_map():
    svc = sp("ns1", "svc1", "172.30.0.41")
    eps = (ep("10.180.0.10"), ep("10.180.0.9"), ep("10.180.0.10"))
    t = chains(ipt_text.restore_text(state((svc, eps))))
    comments = [shlex.split(r)[5] for r in t["nat"][ipt.service_chain(svc)][1:]]
    assert comments == ["ns1/svc1:p80 -> 10.180.0.10:80", "ns1/svc1:p80 -> 10.180.0.9:80"]  # string order


def test_firewall_allows_node_and_lb_ip_when_range_contains_node_ip():
    svc = sp("ns5", "svc5", "172.30.0.45", load_balancer_ips=(A("5.6.7.8"),),
             load_balancer_source_ranges=(N("192.168.0.0/24"), N("203.0.113.0/25")))
    t = chains(ipt_text.restore_text(state((svc, (ep("10.180.0.3"),)))))
    fw, ext = ipt.firewall_chain(svc), ipt.external_chain(svc)
    c = '-m comment --comment "ns5/svc5:p80 loadbalancer IP"'
    assert t["nat"][fw] == [
        f"-A {fw} {c} -s 192.168.0.0/24 -j {ext}",
        f"-A {fw} {c} -s 203.0.113.0/25 -j {ext}",
        f"-A {fw} {c} -s 5.6.7.8 -j {ext}",
        f'-A {fw} -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"',
    ]


def test_external_local_without_local_endpoints_keeps_short_circuit():
    svc = sp("ns2", "svc2", "172.30.0.42", node_port=3001, external_policy_local=True)
    t = chains(ipt_text.restore_text(state((svc, (ep("10.180.0.2", node="other"),)))))
    ext = ipt.external_chain(svc)
    assert len(t["nat"][ext]) == 3 and not t["nat"][ext][-1].endswith(ipt.local_chain(svc))
    assert ipt.local_chain(svc) not in t["nat"]
    assert t["filter"]["KUBE-EXTERNAL-SERVICES"] == [
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" '
        "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP"]


def test_stale_chains_are_flushed_and_deleted():
    svc1 = sp("ns1", "svc1", "172.30.0.41")
    svc2 = sp("ns2", "svc2", "172.30.0.42")
    first = ipt_text.restore_text(state((svc1, (ep("10.180.0.1"),)), (svc2, (ep("10.180.0.2"),))))
    existing = {t: set(c) | {"KUBE-SERVICES", "KUBE-MARK-MASQ", "POSTROUTING", "OTHER-CHAIN"}
                for t, c in chains(first).items()}
    second = ipt_text.restore_text(state((svc1, (ep("10.180.0.1"),))), existing)
    lines = second.splitlines()
    stale = sorted([ipt.service_chain(svc2), ipt.endpoint_chain(svc2, ep("10.180.0.2"))])
    assert stale == ["KUBE-SEP-RS4RBKLTHTF2IUXJ", "KUBE-SVC-GNZBNJ2PO5MGZ6GT"]
    for c in stale:
        assert f":{c} - [0:0]" in lines and f"-X {c}" in lines
    assert [l for l in lines if l.startswith("-X")] == [f"-X {c}" for c in stale]
    # -X lines come after every per-service rule and just before the final nodeports rule (upstream order)
    assert lines.index(f"-X {stale[-1]}") == len(lines) - 3
    assert not any(l.startswith("-X") for l in first.splitlines())
    assert set(chains(second)["nat"]) == set(chains(first)["nat"]) - set(stale)


def test_large_cluster_mode_drops_endpoint_comments():
    svc = sp("ns1", "svc1", "172.30.0.41")
    eps = tuple(ep(f"10.{1 + i // 250}.{i % 250}.1") for i in range(1001))
    t = chains(ipt_text.restore_text(state((svc, eps))))
    svc_c = ipt.service_chain(svc)
    assert "--comment" in t["nat"][svc_c][0]  # the cluster IP masq rule keeps its comment
    assert all("--comment" not in r for r in t["nat"][svc_c][1:])
    assert t["nat"][svc_c][1].split()[2:6] == ["-m", "statistic", "--mode", "random"]
    sep = ipt.endpoint_chain(svc, eps[0])
    assert t["nat"][sep][0] == f"-A {sep} -s 10.1.0.1 -j KUBE-MARK-MASQ"


def test_option_switches():
    svc = sp("ns1", "svc1", "172.30.0.41")
    text = ipt_text.restore_text(state((svc, (ep("10.180.0.1"),))),
                            options=ipt.Options(localhost_nodeports=False, conntrack_tcp_be_liberal=True))
    t = chains(text)
    assert "KUBE-FIREWALL" not in t["filter"]
    assert t["nat"]["KUBE-SERVICES"][-1].endswith("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")
    assert not any("INVALID" in r for r in t["filter"]["KUBE-FORWARD"])


# ----------------------------------------------------------------------------------------------- saved form


@pytest.mark.parametrize("written, saved", [
    ('-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 '
     "-j KUBE-SVC-4SW47YFZTEDKD3PK",
     '-A KUBE-SERVICES -d 172.30.0.44/32 -p tcp -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp --dport 80 '
     "-j KUBE-SVC-4SW47YFZTEDKD3PK"),
    ('-A KUBE-SVC-X -m comment --comment "a cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 '
     "-j KUBE-MARK-MASQ",
     '-A KUBE-SVC-X ! -s 10.0.0.0/8 -d 172.30.0.42/32 -p tcp -m comment --comment "a cluster IP" -m tcp --dport 80 '
     "-j KUBE-MARK-MASQ"),
    ("-A KUBE-SEP-I -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I --set -m tcp -p tcp "
     "-j DNAT --to-destination 10.180.0.3:80",
     '-A KUBE-SEP-I -p tcp -m comment --comment "ns5/svc5:p80" -m recent --set --name KUBE-SEP-I '
     "--mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.180.0.3:80"),
    ('-A KUBE-SVC-N -m comment --comment "x -> y" -m recent --name KUBE-SEP-I --rcheck --seconds 10800 --reap '
     "-j KUBE-SEP-I",
     '-A KUBE-SVC-N -m comment --comment "x -> y" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-I '
     "--mask 255.255.255.255 --rsource -j KUBE-SEP-I"),
    ("-A C -m statistic --mode random --probability 0.3333333333 -j S",
     "-A C -m statistic --mode random --probability 0.33333333349 -j S"),
    ("-A C -m statistic --mode random --probability 0.5000000000 -j S",
     "-A C -m statistic --mode random --probability 0.50000000000 -j S"),
    ("-A C -m statistic --mode random --probability 0.0000099999 -j S",
     "-A C -m statistic --mode random --probability 0.00001000008 -j S"),
    ("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000", "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"),
    ("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000", "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0"),
    ('-A KUBE-SERVICES -m comment --comment "s has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT',
     '-A KUBE-SERVICES -d 172.30.0.46/32 -p tcp -m comment --comment "s has no endpoints" -m tcp --dport 80 '
     "-j REJECT --reject-with icmp-port-unreachable"),
    ('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 '
     "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
     '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" '
     "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"),
    ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "c d" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 '
     "-j DROP",
     '-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "c d" -m addrtype --dst-type LOCAL -m tcp --dport 3001 '
     "-j DROP"),
    # observed on real nodes: nfacct's name is printed after two spaces
    ("-A KUBE-NODEPORTS -m comment --comment a/b -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 "
     "-m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X",
     '-A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment "a/b" -m tcp --dport 3001 '
     "-m nfacct --nfacct-name  localhost_nps_accepted_pkts -j KUBE-EXT-X"),
    ('-A KUBE-FW-N -m comment --comment "other traffic to x will be dropped by KUBE-PROXY-FIREWALL"',
     '-A KUBE-FW-N -m comment --comment "other traffic to x will be dropped by KUBE-PROXY-FIREWALL"'),
    ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
     "--random-fully",
     '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
     "--random-fully"),
    ("-X KUBE-SVC-X", "-X KUBE-SVC-X"),
])
def test_saved_form(written, saved):
    assert ipt_text.saved_form(written) == saved


def test_restore_and_saved_chain_parsers():
    save = ("# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n"
            "-A PREROUTING -j KUBE-A\n-A KUBE-A -j KUBE-B\nCOMMIT\n")
    assert ipt_text.saved_chains(save, "KUBE-") == {"nat": {"KUBE-A": ["-A KUBE-A -j KUBE-B"], "KUBE-B": []}}
    text = "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j X\n-X KUBE-B\nCOMMIT\n"
    assert ipt_text.restore_chains(text) == {"nat": {"KUBE-A": ["-A KUBE-A -j X"]}}
