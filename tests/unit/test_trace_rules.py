"""emu.observe.trace.nftrace, ruletext, pcap and svg: trace messages as the kernel sends them, the trace table, rule texts
by handle and their iptables-save form, pcap files, the graphviz source (pure: no root).

Where the expectations come from: emu's own, apart from the tool texts marked below; the NFTA_TRACE_* attribute
layout is the kernel's include/uapi/linux/netfilter/nf_tables.h.
"""
from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from emu.observe.trace import nftrace, pcap, ruletext, svg
from emu.observe.trace.capture import Captured


def nla(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def trace_msg(family: int, table: str, chain: str, type_: int, handle: int | None = None,
              code: int | None = None, target: str | None = None, ident: int = 0xABCD, network: bytes | None = None,
              iif: int | None = None) -> bytes:
    body = nla(nftrace.A_TABLE, table.encode() + b"\0") + nla(nftrace.A_CHAIN, chain.encode() + b"\0")
    body += nla(nftrace.A_TYPE, struct.pack("!I", type_)) + nla(nftrace.A_ID, struct.pack("!I", ident))
    if handle is not None:
        body += nla(nftrace.A_RULE_HANDLE, struct.pack("!Q", handle))
    if code is not None:
        v = nla(nftrace.NFTA_VERDICT_CODE, struct.pack("!i", code))
        if target:
            v += nla(nftrace.NFTA_VERDICT_CHAIN, target.encode() + b"\0")
        body += nla(nftrace.A_VERDICT | 0x8000, v)
    if type_ == 1:
        body += nla(nftrace.A_POLICY, struct.pack("!I", 1))
    if network is not None:
        body += nla(nftrace.A_NETWORK, network[:20]) + nla(nftrace.A_TRANSPORT, network[20:40])
    if iif is not None:
        body += nla(nftrace.A_IIF, struct.pack("!I", iif))
    payload = struct.pack("=BBH", family, 0, 0) + body
    return struct.pack("=IHHII", 16 + len(payload), nftrace.MSG_TRACE, 0, 0, 0) + payload


def test_parse_trace_messages_and_group_them() -> None:
    pkt = bytes(IP(src="10.244.0.3", dst="10.96.0.20") / TCP(sport=41000, dport=80, flags="S"))
    data = b"".join([
        trace_msg(2, "nat", "PREROUTING", 3, handle=16, code=-3, target="KUBE-SERVICES", network=pkt, iif=4),
        trace_msg(2, "nat", "KUBE-SERVICES", 3, handle=61, code=-3, target="KUBE-SVC-X"),
        trace_msg(2, "nat", "KUBE-SEP-Y", 3, handle=67, code=1),
        trace_msg(2, "filter", "FORWARD", 1, network=pkt, iif=4, ident=0x1234),
    ])
    events = nftrace.parse_messages(data, "ns")
    assert [(e.table, e.chain, e.handle, e.verdict) for e in events] == [
        ("nat", "PREROUTING", 16, "jump KUBE-SERVICES"), ("nat", "KUBE-SERVICES", 61, "jump KUBE-SVC-X"),
        ("nat", "KUBE-SEP-Y", 67, "accept"), ("filter", "FORWARD", None, "accept")]
    assert events[0].family == "ip" and events[0].iif == 4 and events[0].network == pkt[:20]
    assert events[3].type == "policy"
    groups = nftrace.group(events)
    assert [len(g.events) for g in groups] == [3, 1]


def test_trace_table_matches_only_the_flow() -> None:
    m = nftrace.FlowMatch("tcp", ("10.96.0.20", "10.244.1.2"), (80,))
    rules = nftrace.trace_rules(m)
    assert rules[0] == "meta l4proto tcp ip daddr { 10.96.0.20, 10.244.1.2 } th dport { 80 } meta nftrace set 1"
    assert rules[1] == "meta l4proto tcp ip saddr { 10.96.0.20, 10.244.1.2 } th sport { 80 } meta nftrace set 1"
    script = nftrace.table_script(m, "emu-trace-42")
    assert script.startswith("table inet emu-trace-42 {")
    assert "type filter hook prerouting priority -350; policy accept;" in script
    assert "type filter hook output priority -350; policy accept;" in script
    icmp = nftrace.trace_rules(nftrace.FlowMatch("icmp", ("10.244.1.2",), icmp_id=7))
    assert icmp[0] == "ip daddr { 10.244.1.2 } icmp type echo-request icmp id 7 meta nftrace set 1"


def test_leftover_tables_are_those_of_dead_processes() -> None:
    listing = "table ip nat\ntable inet emu-trace-999999999\ntable inet emu-trace-1\ntable ip kube-proxy\n"
    assert nftrace.leftover_tables(listing) == ["inet emu-trace-999999999"]  # pid 1 is alive


# Shaped as `nft -a list ruleset` prints (nftables 1.0.x: "# handle N" after each chain and rule), written by hand
# for this test, not captured from a run.
LISTING = """table ip nat { # handle 1
\tchain PREROUTING { # handle 1
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\t counter packets 2 bytes 100 jump KUBE-SERVICES # handle 16
\t}

\tchain KUBE-SEP-Y { # handle 30
\t\tip saddr 10.244.1.2  counter packets 0 bytes 0 jump KUBE-MARK-MASQ # handle 66
\t\tmeta l4proto tcp   counter packets 0 bytes 0 dnat to 10.244.1.2:80 # handle 67
\t}
}
table ip kube-proxy { # handle 5
\tset cluster-ips { # handle 3
\t\ttype ipv4_addr
\t\telements = { 10.96.0.1,
\t\t\t     10.96.0.20 }
\t}

\tchain endpoint-X { # handle 20
\t\tip saddr 10.244.1.2 jump mark-for-masquerade # handle 21
\t\tmeta l4proto tcp dnat to 10.244.1.2:80 # handle 22
\t}
}
"""

# Shaped as `iptables-save` prints (iptables 1.8), written by hand for this test, not captured from a run.
SAVE = """*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SEP-Y - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SEP-Y -s 10.244.1.2/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-Y -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.1.2:80
COMMIT
"""


def test_rule_texts_by_handle_and_their_iptables_form() -> None:
    rules = ruletext.parse_nft_listing(LISTING)
    assert rules[("ip", "nat", "KUBE-SEP-Y", 67)].text == "meta l4proto tcp dnat to 10.244.1.2:80"
    assert rules[("ip", "nat", "KUBE-SEP-Y", 67)].position == 1
    assert rules[("ip", "kube-proxy", "endpoint-X", 22)].text == "meta l4proto tcp dnat to 10.244.1.2:80"
    assert not any(k[2] == "cluster-ips" for k in rules)
    saved = ruletext.parse_iptables_save(SAVE)
    assert saved[("nat", "KUBE-SEP-Y")][1].endswith("-j DNAT --to-destination 10.244.1.2:80")


def test_pcap_is_readable(tmp_path) -> None:
    frame = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes(IP(dst="10.0.0.1") / TCP())
    path = tmp_path / "x.pcap"
    pcap.write(str(path), [Captured(1_700_000_000_123_456_789, "ns", "eth0", True, 4, frame)])
    pkts = rdpcap(str(path))
    assert len(pkts) == 1 and bytes(pkts[0]) == frame
    assert float(pkts[0].time) == 1_700_000_000.123456789
    assert pcap.file_name("c.node-1", "flannel.1") == "c.node-1_flannel.1.pcap"


def test_graphviz_source() -> None:
    hop = lambda n, where, iface, d, outer=None: {"n": n, "where": where, "iface": iface, "dir": d,  # noqa: E731
                                                  **({"outer": outer} if outer else {})}
    res = {"from": "default/a", "to": "default/b", "to_ip": "10.244.1.2", "proto": "tcp", "verdict": "connected",
           "request": {"role": "request", "hops": [hop(1, "default/a", "eth0", "out"),
                                                   hop(2, "node/node-1", "flannel.1", "out"),
                                                   hop(3, "node/node-1", "eth0", "out", "vxlan")]},
           "reply": None, "icmp_errors": []}
    text = svg.dot(res)
    assert text.startswith("digraph trace {")
    assert 'subgraph "cluster_1" { label="node/node-1"' in text
    assert '"node/node-1|flannel.1" -> "node/node-1|eth0"' in text and 'label="3 vxlan"' in text
