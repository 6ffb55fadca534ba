"""A small DNS wire-format codec (RFC 1035): enough for queries, answers with A, AAAA, CNAME, PTR, SRV, SOA, NS,
TXT records, and name compression on decode."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
CLASS_IN = 1


class WireError(ValueError):
    pass


@dataclass(frozen=True)
class RR:
    name: str  # absolute, lower case, with the trailing dot
    type: str
    ttl: int
    data: object  # A/AAAA: str; CNAME/PTR/NS: name; SRV: (prio, weight, port, target); SOA: (mname, rname, 5 ints)

    def text(self) -> str:
        d = self.data
        if self.type == "SRV":
            d = " ".join(str(x) for x in d)  # type: ignore[union-attr]
        elif self.type == "SOA":
            d = " ".join(str(x) for x in d)  # type: ignore[union-attr]
        elif self.type == "TXT":
            d = f'"{d}"'
        return f"{self.name}\t{self.ttl}\tIN\t{self.type}\t{d}"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "ttl": self.ttl,
                "data": list(self.data) if isinstance(self.data, tuple) else self.data}


@dataclass
class Message:
    id: int = 0
    qr: bool = False
    opcode: int = 0
    aa: bool = False
    tc: bool = False
    rd: bool = True
    ra: bool = False
    rcode: int = 0
    question: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    edns: tuple[int, bool] | None = field(default=None, compare=False)  # a decoded OPT: (UDP size, DO bit)

    @property
    def rcode_name(self) -> str:
        return RCODES.get(self.rcode, str(self.rcode))


def fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _enc_name(name: str) -> bytes:
    out = b""
    for label in fqdn(name).rstrip(".").split(".") if name not in (".", "") else []:
        b = label.encode()
        if not 0 < len(b) < 64:
            raise WireError(f"bad label in {name!r}")
        out += bytes([len(b)]) + b
    return out + b"\0"


def _enc_rdata(rr: RR) -> bytes:
    d = rr.data
    if rr.type == "A":
        return ipaddress.IPv4Address(d).packed  # type: ignore[arg-type]
    if rr.type == "AAAA":
        return ipaddress.IPv6Address(d).packed  # type: ignore[arg-type]
    if rr.type in ("CNAME", "PTR", "NS"):
        return _enc_name(str(d))
    if rr.type == "SRV":
        prio, weight, port, target = d  # type: ignore[misc]
        return struct.pack("!HHH", prio, weight, port) + _enc_name(target)
    if rr.type == "SOA":
        mname, rname, serial, refresh, retry, expire, minimum = d  # type: ignore[misc]
        return _enc_name(mname) + _enc_name(rname) + struct.pack("!IIIII", serial, refresh, retry, expire, minimum)
    if rr.type == "TXT":
        b = str(d).encode()[:255]
        return bytes([len(b)]) + b
    raise WireError(f"cannot encode {rr.type}")


def encode(m: Message) -> bytes:
    flags = (m.qr << 15) | (m.opcode << 11) | (m.aa << 10) | (m.tc << 9) | (m.rd << 8) | (m.ra << 7) | m.rcode
    out = struct.pack("!HHHHHH", m.id, flags, len(m.question), len(m.answer), len(m.authority), len(m.additional))
    for name, qtype in m.question:
        out += _enc_name(name) + struct.pack("!HH", TYPES.get(qtype, 0) if not qtype.isdigit() else int(qtype),
                                             CLASS_IN)
    for rr in m.answer + m.authority + m.additional:
        rdata = _enc_rdata(rr)
        out += _enc_name(rr.name) + struct.pack("!HHIH", TYPES[rr.type], CLASS_IN, rr.ttl, len(rdata)) + rdata
    return out


def _dec_name(buf: bytes, off: int) -> tuple[str, int]:
    labels, end, jumps = [], None, 0
    while True:
        if off >= len(buf):
            raise WireError("name runs past the message")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf) or jumps > 32:
                raise WireError("bad compression pointer")
            if end is None:
                end = off + 2
            off, jumps = ((n & 0x3F) << 8) | buf[off + 1], jumps + 1
            continue
        if n == 0:
            off += 1
            break
        labels.append(buf[off + 1:off + 1 + n].decode(errors="replace").lower())
        off += 1 + n
    return (".".join(labels) + ".") if labels else ".", end if end is not None else off


def _dec_rdata(buf: bytes, off: int, rtype: str, rdlen: int) -> object:
    raw = buf[off:off + rdlen]
    if rtype == "A" and rdlen == 4:
        return str(ipaddress.IPv4Address(raw))
    if rtype == "AAAA" and rdlen == 16:
        return str(ipaddress.IPv6Address(raw))
    if rtype in ("CNAME", "PTR", "NS"):
        return _dec_name(buf, off)[0]
    if rtype == "SRV":
        prio, weight, port = struct.unpack("!HHH", raw[:6])
        return (prio, weight, port, _dec_name(buf, off + 6)[0])
    if rtype == "SOA":
        mname, o = _dec_name(buf, off)
        rname, o = _dec_name(buf, o)
        return (mname, rname, *struct.unpack("!IIIII", buf[o:o + 20]))
    if rtype == "TXT":
        return raw[1:1 + raw[0]].decode(errors="replace") if raw else ""
    return raw.hex()


def decode(buf: bytes) -> Message:
    if len(buf) < 12:
        raise WireError("shorter than a DNS header")
    mid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", buf[:12])
    m = Message(mid, bool(flags >> 15), (flags >> 11) & 0xF, bool(flags & 0x400), bool(flags & 0x200),
                bool(flags & 0x100), bool(flags & 0x80), flags & 0xF)
    off = 12
    for _ in range(qd):
        name, off = _dec_name(buf, off)
        qtype, _cls = struct.unpack("!HH", buf[off:off + 4])
        off += 4
        m.question.append((name, TYPE_NAMES.get(qtype, str(qtype))))
    for count, section in ((an, m.answer), (ns, m.authority), (ar, m.additional)):
        for _ in range(count):
            name, off = _dec_name(buf, off)
            if off + 10 > len(buf):
                raise WireError("record runs past the message")
            rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
            off += 10
            tname = TYPE_NAMES.get(rtype, str(rtype))
            if tname != "41":  # OPT (EDNS0) is not a record to show
                section.append(RR(name, tname, ttl, _dec_rdata(buf, off, tname, rdlen)))
            else:  # RFC 6891: CLASS is the requestor's UDP payload size, the TTL's bit 15 the DO bit
                m.edns = (_cls, bool(ttl & 0x8000))
            off += rdlen
    return m


def query(name: str, qtype: str = "A", mid: int = 0, rd: bool = True) -> bytes:
    return encode(Message(id=mid, rd=rd, question=[(fqdn(name), qtype)]))
