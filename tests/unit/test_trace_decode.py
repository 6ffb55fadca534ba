"""emu.observe.trace.decode and emu.observe.trace.correlate: frames built with scapy, decoded and followed across NAT, VXLAN,
fragmentation and ICMP errors (pure: no sockets, no root).

Where the expectations come from: emu's own.  The input frames are built with scapy (an independent encoder), so a
decoded field is checked against what scapy put there, not against emu's own encoder.
"""
from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror, fragment
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from emu.observe.trace import decode
from emu.observe.trace.capture import Captured
from emu.observe.trace.correlate import Seed, correlate

POD_A, POD_B, SVC = "10.244.0.3", "10.244.1.2", "10.96.0.20"


def eth(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


def vxlan(inner: bytes, src="172.18.0.2", dst="172.18.0.3") -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=40000, dport=8472) / VXLAN(vni=1, flags=0x08) /
                 Ether(inner))


def test_tcp_syn() -> None:
    f = decode.decode(eth(IP(src=POD_A, dst=SVC, ttl=64, id=7, flags="DF") / TCP(sport=41000, dport=80, flags="S",
                                                                                 seq=1234)))
    p = f.packet
    assert (p.src, p.dst, p.ttl, p.ident, p.df, p.l4.sport, p.l4.dport, p.l4.seq) == \
        (POD_A, SVC, 64, 7, True, 41000, 80, 1234)
    assert decode.tcp_flags(p.l4.flags) == "S"
    assert decode.summary(p) == f"{POD_A}:41000 > {SVC}:80 tcp [S] ttl 64 id 7 len 40 DF"
    assert decode.signature(p) == (6, 1234, 0, 0x02, 0)


def test_tcp_flag_letters() -> None:
    assert decode.tcp_flags(0x12) == "S."
    assert decode.tcp_flags(0x18) == "P."
    assert decode.tcp_flags(0x11) == "F."
    assert decode.tcp_flags(0x04) == "R"


def test_vxlan_outer_and_inner() -> None:
    inner = eth(IP(src=POD_A, dst=POD_B, ttl=63) / TCP(sport=41000, dport=80, flags="S"))
    f = decode.decode(vxlan(inner))
    assert f.vni == 1 and f.ip.src == "172.18.0.2" and f.ip.l4.dport == 8472
    assert f.packet.src == POD_A and f.packet.ttl == 63
    d = decode.frame_dict(f)
    assert d["encap"]["vni"] == 1 and d["encap"]["udp"]["dport"] == 8472
    assert d["encap"]["ip"] == {"src": "172.18.0.2", "dst": "172.18.0.3", "ttl": 64, "len": len(inner) + 36,
                                "df": False}
    assert d["ip"]["src"] == POD_A and d["tcp"]["flags"] == "S"


def test_frag_needed_quotes_the_packet() -> None:
    quoted = IPerror(src="172.18.0.1", dst="172.18.0.2", proto=17, flags="DF") / UDPerror(sport=5000, dport=30053)
    f = decode.decode(eth(IP(src="172.18.0.2", dst="172.18.0.1") / ICMP(type=3, code=4, nexthopmtu=1450) / quoted))
    p = f.packet
    assert p.l4.icmp_type == 3 and p.l4.icmp_code == 4 and p.l4.mtu == 1450
    assert p.quoted.src == "172.18.0.1" and p.quoted.l4.dport == 30053
    assert "frag-needed mtu 1450" in decode.summary(p)
    assert decode.ip_dict(p)["icmp"]["mtu"] == 1450


def test_fragments() -> None:
    frags = fragment(IP(src=POD_A, dst=POD_B, id=99) / UDP(sport=5000, dport=80) / Raw(b"x" * 3000), fragsize=1424)
    ds = [decode.decode(eth(f)).packet for f in frags]
    assert [d.frag_offset for d in ds] == [0, 1424, 2848]
    assert [d.mf for d in ds] == [True, True, False]
    assert ds[0].l4 is not None and ds[1].l4 is None
    assert decode.signature(ds[1]) is None


def test_headers_from_an_nftables_trace_give_the_same_signature() -> None:
    pkt = IP(src=POD_A, dst=SVC, id=5) / TCP(sport=41000, dport=80, flags="PA", seq=9, ack=10) / Raw(b"GET /")
    raw = bytes(pkt)
    full = decode.decode(eth(pkt)).packet
    from_trace = decode.decode_headers(raw[:20], raw[20:40])
    assert decode.trace_signature(from_trace) == decode.signature(full) == (6, 9, 10, 0x18, 5)


# --- correlation ------------------------------------------------------------------------------------------------------


def cap(t: int, ns: str, iface: str, out: bool, data: bytes) -> Captured:
    return Captured(t, ns, iface, out, 4 if out else 0, data)


def test_follows_a_dnat_and_the_reply_back() -> None:
    syn = dict(flags="S", seq=100)
    frames = [
        cap(1, "pod-a", "eth0", True, eth(IP(src=POD_A, dst=SVC) / TCP(sport=41000, dport=80, **syn))),
        cap(2, "node-1", "veth", False, eth(IP(src=POD_A, dst=SVC) / TCP(sport=41000, dport=80, **syn))),
        cap(3, "node-1", "flannel.1", True, eth(IP(src=POD_A, dst=POD_B, ttl=63) / TCP(sport=41000, dport=80,
                                                                                        **syn))),
        cap(4, "node-1", "eth0", True, vxlan(eth(IP(src=POD_A, dst=POD_B, ttl=63) /
                                              TCP(sport=41000, dport=80, **syn)))),
        cap(5, "other", "eth0", True, eth(IP(src="10.244.2.9", dst=POD_B) / TCP(sport=1, dport=80, flags="S"))),
        cap(6, "pod-b", "eth0", False, eth(IP(src=POD_A, dst=POD_B, ttl=62) / TCP(sport=41000, dport=80, **syn))),
        cap(7, "pod-b", "eth0", True, eth(IP(src=POD_B, dst=POD_A) / TCP(sport=80, dport=41000, flags="SA",
                                                                          seq=500, ack=101))),
        cap(8, "pod-a", "eth0", False, eth(IP(src=SVC, dst=POD_A, ttl=62) / TCP(sport=80, dport=41000, flags="SA",
                                                                                seq=500, ack=101))),
    ]
    pkts = correlate(Seed("pod-a", 6, frozenset({SVC, POD_B}), frozenset({80})), frames)
    assert [p.role for p in pkts] == ["request", "reply"]
    req, rep = pkts
    assert [(h.netns, h.iface, h.direction) for h in req.hops] == [
        ("pod-a", "eth0", "out"), ("node-1", "veth", "in"), ("node-1", "flannel.1", "out"), ("node-1", "eth0", "out"),
        ("pod-b", "eth0", "in")]
    assert req.hops[3].encapsulated and req.hops[2].packet.dst == POD_B
    assert [h.ts_ns for h in rep.hops] == [7, 8]


def test_icmp_error_about_the_flow_and_fragments() -> None:
    datagram = IP(src="172.18.0.1", dst="172.18.0.2", id=42, flags="DF") / UDP(sport=5000, dport=30053) / \
        Raw(b"y" * 1460)
    err = IP(src="172.18.0.2", dst="172.18.0.1", id=77) / ICMP(type=3, code=4, nexthopmtu=1450) / \
        IPerror(bytes(datagram)[:28])
    unrelated = IP(src="172.18.0.3", dst="172.18.0.1") / ICMP(type=3, code=3) / \
        IPerror(src="172.18.0.1", dst="172.18.0.3", proto=17) / UDPerror(sport=1, dport=2)
    frames = [cap(1, "ext", "eth0", True, eth(datagram)), cap(2, "node-1", "eth0", False, eth(datagram)),
              cap(3, "node-1", "eth0", True, eth(err)), cap(4, "ext", "eth0", False, eth(unrelated)),
              cap(5, "ext", "eth0", False, eth(err))]
    pkts = correlate(Seed("ext", 17, frozenset({"172.18.0.2"}), frozenset({30053})), frames)
    assert [p.role for p in pkts] == ["request", "icmp-error"]
    assert [(h.netns, h.direction) for h in pkts[1].hops] == [("node-1", "out"), ("ext", "in")]

    frags = fragment(IP(src=POD_A, dst=POD_B, id=99) / UDP(sport=5000, dport=80) / Raw(b"x" * 3000), fragsize=1424)
    frames = [cap(i, "pod-a", "eth0", True, eth(f)) for i, f in enumerate(frags)]
    frames += [cap(10 + i, "pod-b", "eth0", False, eth(f)) for i, f in enumerate(frags)]
    pkts = correlate(Seed("pod-a", 17, frozenset({POD_B}), frozenset({80})), frames)
    assert len(pkts) == 1 and len(pkts[0].hops) == 2
    assert [len(h.fragments) for h in pkts[0].hops] == [3, 3]
