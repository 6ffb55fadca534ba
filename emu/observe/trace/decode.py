"""Decode captured frames: Ethernet, IPv4 (fragments included), TCP/UDP/ICMP, VXLAN with its inner frame, and the
packet an ICMP error quotes.

Pure and fast (struct, no scapy: a trace decodes a few hundred frames and must stay well under a second, and
scapy's import alone costs more).  Only what a trace shows and correlates is decoded; anything else is kept as
`ethertype` / `proto` numbers.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, replace
from typing import Any

ETH_P_IP = 0x0800
VXLAN_PORTS = (8472, 4789)  # Linux's default (flannel's) and IANA's
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}
ICMP_ERRORS = (3, 4, 5, 11, 12)  # dest unreachable, source quench, redirect, time exceeded, parameter problem
ICMP_NAMES = {0: "echo-reply", 3: "dest-unreachable", 5: "redirect", 8: "echo-request", 11: "time-exceeded",
              12: "parameter-problem"}
UNREACH_CODES = {0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable", 3: "port-unreachable",
                 4: "frag-needed", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def tcp_flags(bits: int) -> str:
    """tcpdump's letters: S SYN, F FIN, R RST, P PSH, . ACK (e.g. "S", "S.", "P.", "F.")."""
    letters = {0x02: "S", 0x01: "F", 0x04: "R", 0x08: "P", 0x20: "U"}
    return "".join(c for b, c in letters.items() if bits & b) + ("." if bits & 0x10 else "")


@dataclass(frozen=True, slots=True)
class L4:
    """The transport header (or as much of it as was there: an ICMP error quotes only 8 bytes)."""

    proto: int
    sport: int | None = None  # tcp/udp ports; for ICMP echo the identifier (conntrack's "port")
    dport: int | None = None
    seq: int | None = None  # tcp sequence number, or ICMP echo sequence
    ack: int | None = None
    flags: int | None = None  # tcp flag bits
    length: int | None = None  # udp length field
    icmp_type: int | None = None
    icmp_code: int | None = None
    mtu: int | None = None  # next-hop MTU of a frag-needed
    payload_len: int = 0  # bytes after the transport header (tcp: after options)


@dataclass(frozen=True, slots=True)
class IPv4:
    src: str
    dst: str
    proto: int
    ttl: int
    ident: int
    total_len: int
    df: bool
    mf: bool
    frag_offset: int  # in bytes
    header_len: int
    l4: L4 | None = None  # None for a non-first fragment (no transport header there)
    quoted: "IPv4 | None" = None  # the packet an ICMP error is about

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_offset > 0

    def ports(self) -> tuple[int | None, int | None]:
        return (self.l4.sport, self.l4.dport) if self.l4 else (None, None)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded Ethernet frame; for VXLAN, `vni` and the `inner` frame it carries."""

    eth_src: str
    eth_dst: str
    ethertype: int
    ip: IPv4 | None = None
    vni: int | None = None
    inner: "Frame | None" = None
    length: int = 0

    @property
    def innermost(self) -> "Frame":
        f = self
        while f.inner is not None:
            f = f.inner
        return f

    @property
    def packet(self) -> IPv4 | None:
        """The IPv4 packet the frame is about: the inner one when encapsulated."""
        return self.innermost.ip


def decode_l4(proto: int, data: bytes, *, quoted: bool = False) -> tuple[L4 | None, IPv4 | None]:
    """The transport header; for an ICMP error also the quoted IPv4 packet (header + 8 bytes, RFC 792)."""
    if proto in (6, 17) and len(data) >= 8:
        sport, dport = struct.unpack_from("!HH", data)
        if proto == 17:
            length = struct.unpack_from("!H", data, 4)[0]
            return L4(17, sport, dport, length=length, payload_len=max(0, len(data) - 8)), None
        if len(data) >= 14:
            seq, ack, off, flags = struct.unpack_from("!IIBB", data, 4)
            hl = (off >> 4) * 4
            return L4(6, sport, dport, seq=seq, ack=ack, flags=flags,
                      payload_len=max(0, len(data) - hl) if not quoted else 0), None
        seq = struct.unpack_from("!I", data, 4)[0]
        return L4(6, sport, dport, seq=seq), None
    if proto == 1 and len(data) >= 8:
        type_, code, _csum, a, b = struct.unpack_from("!BBHHH", data)
        if type_ in (0, 8, 13, 14):
            return L4(1, a, a, seq=b, icmp_type=type_, icmp_code=code, payload_len=len(data) - 8), None
        mtu = b if (type_, code) == (3, 4) else None
        inner = decode_ip(data[8:], quoted=True) if type_ in ICMP_ERRORS and not quoted else None
        return L4(1, icmp_type=type_, icmp_code=code, mtu=mtu, payload_len=len(data) - 8), inner
    return None, None


def decode_ip(data: bytes, *, quoted: bool = False) -> IPv4 | None:
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    vihl, _tos, total, ident, frag, ttl, proto, _csum, src, dst = struct.unpack_from("!BBHHHBBH4s4s", data)
    hl = (vihl & 0xF) * 4
    offset = (frag & 0x1FFF) * 8
    body = data[hl:total] if total >= hl and not quoted else data[hl:]
    l4, inner = (None, None) if offset else decode_l4(proto, body, quoted=quoted)
    return IPv4(socket.inet_ntoa(src), socket.inet_ntoa(dst), proto, ttl, ident, total, bool(frag & 0x4000),
                bool(frag & 0x2000), offset, hl, l4, inner)


def decode(data: bytes) -> Frame:
    """An Ethernet frame as AF_PACKET hands it over (link-layer header first)."""
    if len(data) < 14:
        return Frame("", "", 0, length=len(data))
    dst, src, ethertype = data[:6], data[6:12], struct.unpack_from("!H", data, 12)[0]
    ip = decode_ip(data[14:]) if ethertype == ETH_P_IP else None
    vni = inner = None
    if ip and ip.l4 and ip.proto == 17 and ip.l4.dport in VXLAN_PORTS and not ip.is_fragment:
        off = 14 + ip.header_len + 8
        if len(data) >= off + 8 + 14 and data[off] & 0x08:
            vni = int.from_bytes(data[off + 4:off + 7], "big")
            inner = decode(data[off + 8:])
    return Frame(mac(src), mac(dst), ethertype, ip, vni, inner, len(data))


# --- text and JSON views --------------------------------------------------------------------------------------------


def endpoint(ip: str, port: int | None) -> str:
    return ip if port is None else f"{ip}:{port}"


def summary(p: IPv4) -> str:
    """One line, tcpdump-like: `10.244.0.3:41876 > 10.96.0.10:80 tcp [S] ttl 64 id 59016 len 60`."""
    l4 = p.l4
    name = PROTO_NAMES.get(p.proto, f"proto {p.proto}")
    if p.frag_offset:
        head = f"{p.src} > {p.dst} {name} fragment"
    elif l4 and p.proto in (6, 17):
        head = f"{endpoint(p.src, l4.sport)} > {endpoint(p.dst, l4.dport)} {name}"
        if p.proto == 6 and l4.flags is not None:
            head += f" [{tcp_flags(l4.flags)}]"
    elif l4 and p.proto == 1:
        head = f"{p.src} > {p.dst} icmp {icmp_text(l4)}"
    else:
        head = f"{p.src} > {p.dst} {name}"
    tail = f" ttl {p.ttl} id {p.ident} len {p.total_len}" + (" DF" if p.df else "")
    if p.is_fragment:
        tail += f" frag off {p.frag_offset}" + (" MF" if p.mf else "")
    if p.quoted is not None:
        tail += f" (about {summary_quoted(p.quoted)})"
    return head + tail


def summary_quoted(q: IPv4) -> str:
    name = PROTO_NAMES.get(q.proto, str(q.proto))
    sp, dp = q.ports()
    if q.proto == 1 and q.l4:
        return f"{q.src} > {q.dst} icmp {icmp_text(q.l4)}"
    return f"{endpoint(q.src, sp)} > {endpoint(q.dst, dp)} {name}"


def icmp_text(l4: L4) -> str:
    t = l4.icmp_type
    if t in (0, 8):
        return f"{ICMP_NAMES[t]} id {l4.sport} seq {l4.seq}"
    name = ICMP_NAMES.get(t, f"type {t}")
    if t == 3:
        name += f" {UNREACH_CODES.get(l4.icmp_code, f'code {l4.icmp_code}')}"
    elif t == 11:
        name += " ttl" if l4.icmp_code == 0 else " reassembly"
    if l4.mtu:
        name += f" mtu {l4.mtu}"
    return name


def ip_dict(p: IPv4) -> dict[str, Any]:
    """The headers as JSON: ip, then tcp/udp/icmp, then the quoted packet of an ICMP error."""
    d: dict[str, Any] = {"ip": {"src": p.src, "dst": p.dst, "proto": PROTO_NAMES.get(p.proto, p.proto),
                                "ttl": p.ttl, "id": p.ident, "len": p.total_len, "df": p.df}}
    if p.is_fragment:
        d["ip"]["fragment"] = {"offset": p.frag_offset, "more": p.mf, "bytes": p.total_len - p.header_len}
    l4 = p.l4
    if l4 and p.proto == 6:
        d["tcp"] = {"sport": l4.sport, "dport": l4.dport, "flags": tcp_flags(l4.flags or 0), "seq": l4.seq,
                    "ack": l4.ack, "payload": l4.payload_len}
    elif l4 and p.proto == 17:
        d["udp"] = {"sport": l4.sport, "dport": l4.dport, "length": l4.length}
    elif l4 and p.proto == 1:
        d["icmp"] = {"type": l4.icmp_type, "code": l4.icmp_code, "name": icmp_text(l4)}
        if l4.icmp_type in (0, 8):
            d["icmp"].update({"id": l4.sport, "seq": l4.seq})
        if l4.mtu:
            d["icmp"]["mtu"] = l4.mtu
    if p.quoted is not None:
        d["quoted"] = ip_dict(p.quoted)
    return d


def frame_dict(f: Frame) -> dict[str, Any]:
    """A frame as JSON: `eth`, the packet's headers and, for VXLAN, `encap` (outer eth/ip/udp/vni)."""
    inner = f.innermost
    d: dict[str, Any] = {"eth": {"src": inner.eth_src, "dst": inner.eth_dst}}
    if inner.ip is not None:
        d.update(ip_dict(inner.ip))
    if f.inner is not None and f.ip is not None and f.ip.l4 is not None:
        d["encap"] = {"type": "vxlan", "eth": {"src": f.eth_src, "dst": f.eth_dst},
                      "ip": {"src": f.ip.src, "dst": f.ip.dst, "ttl": f.ip.ttl, "len": f.ip.total_len,
                             "df": f.ip.df},
                      "udp": {"sport": f.ip.l4.sport, "dport": f.ip.l4.dport}, "vni": f.vni}
    return d


def signature(p: IPv4) -> tuple[Any, ...] | None:
    """What identifies one packet across NAT, forwarding and encapsulation (NAT rewrites addresses and ports, never
    these): tcp seq/ack/flags/length, udp IP id and length, icmp echo type/seq and IP id.  None for a non-first
    fragment (it has no transport header: it joins its datagram by IP id)."""
    l4 = p.l4
    if p.frag_offset or l4 is None:
        return None
    if p.proto == 6:
        return (6, l4.seq, l4.ack, l4.flags, l4.payload_len)
    if p.proto == 17:
        return (17, p.ident, l4.length)
    if p.proto == 1 and l4.icmp_type in (0, 8):
        return (1, l4.icmp_type, l4.seq, p.ident)
    return None


def decode_headers(network: bytes, transport: bytes | None) -> IPv4 | None:
    """The packet as an nftables trace reports it: the IP header and the first bytes of the transport header
    (lengths come from the IP header, since the payload itself is not in the trace)."""
    data = network + (transport or b"")
    p = decode_ip(data, quoted=True)
    if p is None or p.l4 is None:
        return p
    if p.proto == 6 and transport and len(transport) >= 13:
        payload = p.total_len - p.header_len - (transport[12] >> 4) * 4
        return replace(p, l4=replace(p.l4, payload_len=max(0, payload)))
    if p.proto == 1:
        return replace(p, l4=replace(p.l4, payload_len=max(0, p.total_len - p.header_len - 8)))
    return p


def trace_signature(p: IPv4) -> tuple[Any, ...] | None:
    """`signature`, and for an ICMP error the key the correlator gives it."""
    if p.proto == 1 and p.l4 and p.l4.icmp_type in ICMP_ERRORS:
        return ("icmp-error", p.l4.icmp_type, p.l4.icmp_code, p.ident)
    return signature(p)
