"""What comes back from a probe and how it is read, without sockets: the verdicts, `ProbeResult`, ICMP errors
from a socket's error queue, the agent's answer, and our ICMP echo packets (built and dissected with scapy).

The verdicts, the way a network engineer reads them:

    connected    the far end answered (the agent's JSON says who, and which client address it saw)
    refused      TCP RST, or ICMP port unreachable
    timeout      nothing came back in time
    unreachable  no route, or ICMP destination/host/net unreachable (also admin-prohibited, time exceeded)
    frag-needed  too big with DF: ICMP type 3 code 4 from a router (its address and next-hop MTU), or the kernel's
                 own EMSGSIZE (sender "local", the MTU it reports)
    error        anything else (detail says what)

ICMP errors arrive as `struct sock_extended_err` plus the offender's address (<linux/errqueue.h>), so even a UDP
probe names the router that dropped it.  scapy only builds and dissects here, it never sends: its global `conf` and
routes belong to the root namespace.
"""
from __future__ import annotations

import errno
import json
import logging
import socket
import struct
from dataclasses import asdict, dataclass
from typing import Any

# <linux/errqueue.h>, <linux/icmp.h>
SO_EE_ORIGIN_LOCAL, SO_EE_ORIGIN_ICMP = 1, 2
ICMP_ECHOREPLY, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
ICMP_PROT_UNREACH, ICMP_PORT_UNREACH, ICMP_FRAG_NEEDED = 2, 3, 4

UDP_DEFAULT_PAYLOAD = b"emu-probe"
VERDICTS = ("connected", "refused", "timeout", "unreachable", "frag-needed", "error")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe did on the wire."""

    ok: bool
    verdict: str
    proto: str  # "tcp" | "udp" | "icmp"
    src_netns: str
    dst_ip: str
    dst_port: int | None  # None for icmp
    answered_by: str | None = None  # owner (or node) from the agent's answer; the replying address for icmp
    client_ip_seen: str | None = None  # the client address the server saw (SNAT shows here)
    rtt_ms: float | None = None  # tcp: handshake; udp: request to answer; icmp: echo to reply (or error)
    bytes_sent: int = 0  # payload bytes (tcp: the request)
    bytes_answered: int | None = None  # udp: how many bytes the server received in one datagram
    icmp: dict[str, Any] | None = None  # {"type", "code", "sender", "mtu"}; sender "local" for the kernel's own
    detail: str = ""
    answer: dict[str, Any] | None = None  # the server's own JSON (owner, node, ip, local_ip, port, client_ip, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExtendedErr:
    """One `struct sock_extended_err` from the error queue, with the offender's address (None if unknown)."""

    errno: int
    origin: int
    type: int
    code: int
    info: int  # the next-hop MTU for frag-needed and for local EMSGSIZE
    data: int
    sender: str | None
    quoted: bytes = b""  # the datagram payload the error refers to (for raw ICMP: our echo header)

    @property
    def local(self) -> bool:
        return self.origin == SO_EE_ORIGIN_LOCAL

    @property
    def verdict(self) -> str:
        if self.origin == SO_EE_ORIGIN_ICMP:
            return icmp_verdict(self.type, self.code)
        return errno_verdict(self.errno)

    def to_icmp(self) -> dict[str, Any]:
        if self.local:
            frag = self.errno == errno.EMSGSIZE
            return {"type": ICMP_DEST_UNREACH if frag else None, "code": ICMP_FRAG_NEEDED if frag else None,
                    "sender": "local", "mtu": self.info if frag else None}
        mtu = self.info if (self.type, self.code) == (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED) else None
        return {"type": self.type, "code": self.code, "sender": self.sender, "mtu": mtu}


def parse_extended_err(cmsg_data: bytes, quoted: bytes = b"") -> ExtendedErr:
    """Decode the IP_RECVERR control message: sock_extended_err, then the offender's sockaddr_in."""
    ee_errno, origin, type_, code, _pad, info, data = _EXTENDED_ERR.unpack_from(cmsg_data)
    sender = None
    off = _EXTENDED_ERR.size
    if len(cmsg_data) >= off + 8:
        family, _port, addr = struct.unpack_from("=HH4s", cmsg_data, off)
        if family == socket.AF_INET:
            sender = socket.inet_ntoa(addr)
    return ExtendedErr(ee_errno, origin, type_, code, info, data, sender, quoted)


def icmp_verdict(type_: int, code: int) -> str:
    if type_ == ICMP_DEST_UNREACH:
        if code == ICMP_FRAG_NEEDED:
            return "frag-needed"
        return "refused" if code in (ICMP_PROT_UNREACH, ICMP_PORT_UNREACH) else "unreachable"
    return "unreachable" if type_ == ICMP_TIME_EXCEEDED else "error"


def errno_verdict(err: int) -> str:
    if err == errno.ECONNREFUSED:
        return "refused"
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENONET):
        return "unreachable"
    if err == errno.EMSGSIZE:
        return "frag-needed"
    return "timeout" if err == errno.ETIMEDOUT else "error"


def parse_answer(data: bytes) -> dict[str, Any] | None:
    """The agent's JSON object from an HTTP response or a bare JSON answer; None for anything else."""
    body = data
    if data.startswith(b"HTTP/"):
        _head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def who_answered(obj: dict[str, Any] | None) -> str | None:
    if not obj:
        return None
    return obj.get("owner") or obj.get("node") or None


def payload(size: int | None) -> bytes:
    """`size` bytes of a recognisable pattern (never the agent's keywords "hostname"/"clientip")."""
    if size is None:
        return UDP_DEFAULT_PAYLOAD
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def _scapy() -> tuple[Any, Any, Any]:
    """Import scapy's IP/ICMP/Raw on first use (slow import), with its warnings silenced."""
    logging.getLogger("scapy").setLevel(logging.ERROR)
    from scapy.layers.inet import ICMP, IP  # noqa: PLC0415
    from scapy.packet import Raw  # noqa: PLC0415

    return IP, ICMP, Raw


def echo_request(ident: int, seq: int, size: int) -> bytes:
    """An ICMP Echo Request (header and `size` payload bytes, like `ping -s`), checksum filled in by scapy."""
    _ip, icmp, raw = _scapy()
    return bytes(icmp(type=ICMP_ECHO, code=0, id=ident, seq=seq) / raw(payload(size)))


def quotes_our_echo(quoted_icmp: bytes, ident: int, seq: int) -> bool:
    """True if an ICMP error's quoted datagram (starting at its ICMP header) is our echo request."""
    if len(quoted_icmp) < 8:
        return False
    _ip, icmp, _raw = _scapy()
    q = icmp(quoted_icmp[:8])
    return q.type == ICMP_ECHO and q.id == ident and q.seq == seq


def classify_icmp_packet(packet: bytes, ident: int, seq: int) -> dict[str, Any] | None:
    """Dissect a received IPv4 packet: our echo reply, an ICMP error about our echo request, or None (not ours).

    Returns {"kind": "reply", "src": ...} or {"kind": "error", "type", "code", "sender", "mtu"}.
    """
    ip_cls, icmp_cls, _raw = _scapy()
    pkt = ip_cls(packet)
    icmp = pkt.getlayer(icmp_cls)
    if icmp is None:
        return None
    if icmp.type == ICMP_ECHOREPLY:
        return {"kind": "reply", "src": pkt.src} if (icmp.id, icmp.seq) == (ident, seq) else None
    if icmp.type not in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED):
        return None
    inner = icmp.payload  # IPerror / ICMPerror: the packet that caused the error
    quoted = bytes(inner.payload) if inner else b""
    if not inner or getattr(inner, "proto", None) != socket.IPPROTO_ICMP or not quotes_our_echo(quoted, ident, seq):
        return None
    frag = (icmp.type, icmp.code) == (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED)
    return {"kind": "error", "type": int(icmp.type), "code": int(icmp.code), "sender": pkt.src,
            "mtu": int(icmp.nexthopmtu) if frag else None}
