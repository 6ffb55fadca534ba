"""Real-packet probes sent from inside a namespace: TCP, UDP, ICMP echo, and path-MTU discovery.

Every probe creates its socket in the source namespace (`netns.socket_in`) and does its own I/O, so any thread can
run probes in any namespace in parallel.  What comes back is classified the way a network engineer reads it:

    connected    the far end answered (the agent's JSON says who, and which client address it saw)
    refused      TCP RST, or ICMP port unreachable
    timeout      nothing came back in time
    unreachable  no route, or ICMP destination/host/net unreachable (also admin-prohibited, time exceeded)
    frag-needed  too big with DF: ICMP type 3 code 4 from a router (its address and next-hop MTU), or the kernel's
                 own EMSGSIZE (sender "local", the MTU it reports)
    error        anything else (detail says what)

ICMP errors are read from the socket's error queue (IP_RECVERR: `struct sock_extended_err` and the offender's
address), so even a UDP probe names the router that dropped it.  ICMP echo packets are built and dissected with
scapy, but scapy never sends: its global `conf` and routes belong to the root namespace.
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from emu.apply import netns

# <linux/in.h>, <linux/errqueue.h>, <linux/icmp.h>
IP_MTU_DISCOVER, IP_RECVERR, IP_MTU = 10, 11, 14
IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE = 0, 2, 3
SO_EE_ORIGIN_LOCAL, SO_EE_ORIGIN_ICMP = 1, 2
ICMP_ECHOREPLY, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
ICMP_PROT_UNREACH, ICMP_PORT_UNREACH, ICMP_FRAG_NEEDED = 2, 3, 4
IP_ICMP_HEADERS = 28  # IPv4 20 + ICMP (or UDP) 8: payload size = MTU - 28
MIN_MTU = 68  # RFC 791

TCP_REQUEST = b"GET /emu HTTP/1.0\r\n\r\n"
UDP_DEFAULT_PAYLOAD = b"emu-probe"
VERDICTS = ("connected", "refused", "timeout", "unreachable", "frag-needed", "error")
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
_idents = itertools.count(os.getpid())

IPPROTO_SCTP = 132


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


# --- pure parsing helpers (no sockets) --------------------------------------------------------------------------------


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


# --- socket helpers ---------------------------------------------------------------------------------------------------


def _open(ns: str, type_: int, proto: int, pmtudisc: int | None, src_ip: str | None = None) -> socket.socket:
    """A socket in namespace `ns` that reports ICMP errors on its error queue (bound to `src_ip` when given)."""
    s = netns.socket_in(ns, socket.AF_INET, type_, proto)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        if pmtudisc is not None:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, pmtudisc)
        if src_ip is not None:
            s.bind((src_ip, 0))
    except OSError:
        s.close()
        raise
    return s


def _ip_mtu(s: socket.socket) -> int | None:
    """The MTU the kernel uses toward the connected peer (route/interface MTU, or a learned path MTU)."""
    try:
        return s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None


@contextmanager
def _nonblocking(s: socket.socket) -> Iterator[None]:
    """MSG_DONTWAIT alone is not enough in Python: on a socket with a timeout, CPython answers the kernel's EAGAIN
    by polling the socket until the timeout and retrying (sock_call_ex), so an empty error queue would cost the
    whole timeout (a TCP probe refused by an RST took 1 s).  A timeout of 0 makes the call return at once."""
    before = s.gettimeout()
    s.settimeout(0)
    try:
        yield
    finally:
        s.settimeout(before)


def _read_errqueue(s: socket.socket) -> ExtendedErr | None:
    try:
        with _nonblocking(s):
            quoted, anc, _flags, _addr = s.recvmsg(2048, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return None
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_RECVERR:
            return parse_extended_err(data, quoted)
    return None


def _recv_nowait(s: socket.socket, size: int = 65535) -> bytes | None:
    """One datagram if there is one; None if none (or a pending socket error was reported instead)."""
    try:
        with _nonblocking(s):
            return s.recv(size, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return None  # sk_err (e.g. ECONNREFUSED); the details are on the error queue


def _wait(s: socket.socket, deadline: float) -> bool:
    """Wait until the socket has data or an error queued; False at the deadline."""
    poller = select.poll()
    poller.register(s, select.POLLIN | select.POLLERR)
    left = deadline - time.monotonic()
    return left > 0 and bool(poller.poll(left * 1000))


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 3)


def _result(proto: str, ns: str, ip: str, port: int | None, verdict: str, **kw: Any) -> ProbeResult:
    return ProbeResult(ok=verdict == "connected", verdict=verdict, proto=proto, src_netns=ns, dst_ip=ip,
                       dst_port=port, **kw)


def _describe_icmp(icmp: dict[str, Any]) -> str:
    if icmp["sender"] == "local":
        return f"local error: message too long, mtu {icmp['mtu']}" if icmp["mtu"] else "local error"
    text = f"ICMP type {icmp['type']} code {icmp['code']} from {icmp['sender']}"
    return text + (f", mtu {icmp['mtu']}" if icmp.get("mtu") else "")


def _from_error(mk: Callable[..., ProbeResult], err: ExtendedErr, t0: float) -> ProbeResult:
    icmp = err.to_icmp()
    return mk(err.verdict, icmp=icmp, rtt_ms=None if err.local else _ms(t0), detail=_describe_icmp(icmp))


def _from_oserror(mk: Callable[..., ProbeResult], s: socket.socket, e: OSError, t0: float) -> ProbeResult:
    """A send/connect that failed: use the error queue's details (ICMP sender, MTU) when the kernel left some."""
    err = _read_errqueue(s)
    if err is not None and err.errno == e.errno:
        return _from_error(mk, err, t0)
    if e.errno == errno.EMSGSIZE:
        mtu = _ip_mtu(s)
        return mk("frag-needed", icmp={"type": ICMP_DEST_UNREACH, "code": ICMP_FRAG_NEEDED, "sender": "local",
                                       "mtu": mtu}, detail=f"local error: message too long, mtu {mtu}")
    if e.errno == errno.ECONNREFUSED:  # a TCP RST (an ICMP port unreachable would be on the error queue)
        return mk("refused", rtt_ms=_ms(t0), detail="connection refused (RST)")
    return mk(errno_verdict(e.errno or 0), detail=os.strerror(e.errno) if e.errno else str(e))


# --- TCP --------------------------------------------------------------------------------------------------------------


def tcp(netns_name: str, ip: str, port: int, timeout: float = 1.0, src_ip: str | None = None) -> ProbeResult:
    """Connect from `netns_name` to ip:port and ask the agent who it is (`GET /emu`).

    `timeout` applies to the handshake and, separately, to the answer.
    """
    return _stream("tcp", 0, netns_name, ip, port, timeout, src_ip)


def sctp(netns_name: str, ip: str, port: int, timeout: float = 1.0, src_ip: str | None = None) -> ProbeResult:
    """Like `tcp`, over an SCTP association (one-to-one style socket); needs a kernel with SCTP."""
    return _stream("sctp", IPPROTO_SCTP, netns_name, ip, port, timeout, src_ip)


def _stream(label: str, ipproto: int, netns_name: str, ip: str, port: int, timeout: float,
            src_ip: str | None = None) -> ProbeResult:
    mk = partial(_result, label, netns_name, ip, port, bytes_sent=len(TCP_REQUEST))
    try:
        sock = _open(netns_name, socket.SOCK_STREAM, ipproto, None, src_ip)
    except OSError as e:
        return mk("error", detail=f"cannot open a {label} socket: {e.strerror or e}")
    with sock as s:
        s.settimeout(timeout)
        t0 = time.monotonic()
        try:
            s.connect((ip, port))
        except TimeoutError:
            return mk("timeout", detail=f"no answer to the {'SYN' if label == 'tcp' else 'INIT'} "
                                         f"within {timeout:g}s")
        except OSError as e:
            return _from_oserror(mk, s, e, t0)
        rtt = _ms(t0)
        return _tcp_exchange(s, mk, rtt, timeout)


def _tcp_exchange(s: socket.socket, mk: Callable[..., ProbeResult], rtt: float, timeout: float) -> ProbeResult:
    try:
        s.sendall(TCP_REQUEST)
        data = _recv_all(s, time.monotonic() + timeout)
    except OSError as e:
        return mk("error", rtt_ms=rtt, detail=f"connected, then {os.strerror(e.errno) if e.errno else e}")
    if not data:
        return mk("timeout", rtt_ms=rtt, detail=f"connected, but no answer within {timeout:g}s")
    obj = parse_answer(data)
    by = who_answered(obj)
    seen = obj.get("client_ip") if obj else None
    detail = f"answered by {by}, client IP seen {seen}" if by else \
        f"connected; the answer is not the agent's ({len(data)} bytes)"
    return mk("connected", answered_by=by, client_ip_seen=seen, rtt_ms=rtt, detail=detail, answer=obj)


def _recv_all(s: socket.socket, deadline: float) -> bytes:
    """Read until the peer closes (the agent closes after answering) or the deadline; what came so far."""
    buf = bytearray()
    while len(buf) < 1 << 20:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# --- UDP --------------------------------------------------------------------------------------------------------------


def udp(netns_name: str, ip: str, port: int, size: int | None = None, df: bool = False,
        timeout: float = 1.0, src_ip: str | None = None) -> ProbeResult:
    """Send one datagram of `size` payload bytes (DF or not) and wait for the agent's answer or an ICMP error.

    Without DF the kernel fragments a datagram larger than the MTU; the agent reports how many bytes arrived whole.
    """
    data = payload(size)
    mk = partial(_result, "udp", netns_name, ip, port, bytes_sent=len(data))
    with _open(netns_name, socket.SOCK_DGRAM, 0, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT, src_ip) as s:
        t0 = time.monotonic()
        try:
            s.connect((ip, port))
            s.send(data)
        except OSError as e:
            return _from_oserror(mk, s, e, t0)
        return _udp_outcome(s, mk, t0, timeout)


def _udp_outcome(s: socket.socket, mk: Callable[..., ProbeResult], t0: float, timeout: float) -> ProbeResult:
    deadline = t0 + timeout
    while _wait(s, deadline):
        err = _read_errqueue(s)
        if err is not None:
            return _from_error(mk, err, t0)
        data = _recv_nowait(s)
        if data is not None:
            return _udp_answer(mk, data, _ms(t0))
    return mk("timeout", detail=f"no answer within {timeout:g}s")


def _udp_answer(mk: Callable[..., ProbeResult], data: bytes, rtt: float) -> ProbeResult:
    obj = parse_answer(data)
    by = who_answered(obj)
    got = obj.get("bytes") if obj else None
    seen = obj.get("client_ip") if obj else None
    detail = f"answered by {by}, {got} bytes arrived, client IP seen {seen}" if by else \
        f"answered ({len(data)} bytes, not the agent's JSON)"
    return mk("connected", answered_by=by, client_ip_seen=seen, rtt_ms=rtt, bytes_answered=got, detail=detail,
              answer=obj)


# --- ICMP -------------------------------------------------------------------------------------------------------------


def icmp(netns_name: str, ip: str, size: int = 56, df: bool = False, timeout: float = 1.0, ident: int | None = None,
         seq: int = 1, src_ip: str | None = None) -> ProbeResult:
    """One ICMP echo of `size` payload bytes (like `ping -s SIZE [-M do]`)."""
    return _echo(netns_name, ip, size, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT, timeout, ident, seq, src_ip)


def next_ident() -> int:
    return next(_idents) & 0xFFFF


def _echo(ns: str, ip: str, size: int, pmtudisc: int, timeout: float, ident: int | None, seq: int,
          src_ip: str | None = None) -> ProbeResult:
    ident = next_ident() if ident is None else ident & 0xFFFF
    seq &= 0xFFFF
    packet = echo_request(ident, seq, size)
    mk = partial(_result, "icmp", ns, ip, None, bytes_sent=size)
    with _open(ns, socket.SOCK_RAW, socket.IPPROTO_ICMP, pmtudisc, src_ip) as s:
        t0 = time.monotonic()
        try:
            s.connect((ip, 0))  # IP_MTU needs a connected socket; errors still arrive via IP_RECVERR
            s.send(packet)
        except OSError as e:
            return _from_oserror(mk, s, e, t0)
        return _echo_outcome(s, mk, ident, seq, t0, timeout)


def _echo_outcome(s: socket.socket, mk: Callable[..., ProbeResult], ident: int, seq: int, t0: float,
                  timeout: float) -> ProbeResult:
    """Wait for our echo reply, or an ICMP error about our request (error queue: routers; socket: the target)."""
    deadline = t0 + timeout
    while _wait(s, deadline):
        err = _read_errqueue(s)
        if err is not None and (err.local or quotes_our_echo(err.quoted, ident, seq)):
            return _from_error(mk, err, t0)
        packet = _recv_nowait(s)
        found = classify_icmp_packet(packet, ident, seq) if packet else None
        if found and found["kind"] == "reply":
            return mk("connected", answered_by=found["src"], rtt_ms=_ms(t0), detail=f"echo reply from {found['src']}")
        if found:
            icmp = {k: found[k] for k in ("type", "code", "sender", "mtu")}
            return mk(icmp_verdict(icmp["type"], icmp["code"]), icmp=icmp, rtt_ms=_ms(t0),
                      detail=_describe_icmp(icmp))
    return mk("timeout", detail=f"no echo reply within {timeout:g}s")


# --- count and path MTU -----------------------------------------------------------------------------------------------


def many(fn: Callable[..., ProbeResult], count: int, interval: float = 0.0, **kw: Any) -> list[ProbeResult]:
    """Run probe `fn` `count` times (icmp gets seq 1..count unless given), `interval` seconds apart."""
    out = []
    for i in range(1, count + 1):
        args = dict(kw)
        if fn is icmp and "seq" not in kw:
            args["seq"] = i
        out.append(fn(**args))
        if interval and i < count:
            time.sleep(interval)
    return out


def route_mtu(netns_name: str, ip: str) -> int | None:
    """IP_MTU toward ip from inside the namespace: the route/interface MTU, or a path MTU the kernel learned."""
    with netns.socket_in(netns_name, socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, 9))
        except OSError:
            return None
        return _ip_mtu(s)


def interface_mtu(netns_name: str, ip: str) -> int | None:
    """The MTU of the interface toward ip, ignoring any learned path MTU: a DF send in IP_PMTUDISC_PROBE mode that
    is larger than any MTU fails locally with EMSGSIZE and the interface MTU (nothing is sent)."""
    with _open(netns_name, socket.SOCK_DGRAM, 0, IP_PMTUDISC_PROBE) as s:
        try:
            s.connect((ip, 9))
            s.send(b"\0" * 65507)
        except OSError as e:
            err = _read_errqueue(s)
            if e.errno == errno.EMSGSIZE and err is not None and err.info:
                return err.info
        return None  # nothing limits below 64 KiB (loopback)


@dataclass
class _PmtuSearch:
    """State of a path-MTU search: follow frag-needed MTUs; binary-search where probes vanish silently."""

    start: int
    good: int | None = None  # largest MTU that got an echo reply
    bad: int | None = None  # smallest MTU that was refused or vanished
    hint: int | None = None  # next MTU to try, from a frag-needed
    limited_by: str | None = "local"
    stopped: str | None = None  # a verdict that ends the search (unreachable, ...)
    probes: list[tuple[int, str]] = field(default_factory=list)

    def next_mtu(self) -> int | None:
        if self.stopped or (self.good is not None and (self.bad is None or self.bad - self.good <= 1)):
            return None
        if self.hint is not None:
            mtu, self.hint = self.hint, None
            return mtu
        if self.bad is None:
            return self.start
        if self.good is None and len(self.probes) == 1:
            return MIN_MTU  # is it reachable at all?
        lo = self.good if self.good is not None else MIN_MTU
        return (lo + self.bad) // 2 if self.bad - lo > 1 else None

    def record(self, mtu: int, r: ProbeResult) -> None:
        self.probes.append((mtu - IP_ICMP_HEADERS, r.verdict))
        reported = (r.icmp or {}).get("mtu")
        if r.ok:
            self.good = mtu
        elif r.verdict == "frag-needed" and reported and MIN_MTU <= reported < mtu:
            # everything above the reported MTU is too big: try exactly that next
            self.bad, self.hint, self.limited_by = reported + 1, reported, (r.icmp or {}).get("sender")
        elif r.verdict in ("timeout", "frag-needed"):
            self.bad = mtu
            if self.good is None and mtu == MIN_MTU:
                self.stopped = r.verdict
            elif self.hint is None:
                self.limited_by = "unknown (no ICMP frag-needed came back)"
        else:
            self.stopped = r.verdict


def pmtu(netns_name: str, ip: str, timeout: float = 1.0) -> dict[str, Any]:
    """Discover the path MTU toward ip with DF echo probes and name the hop that limits it.

    Starts at the interface MTU (IP_PMTUDISC_PROBE: a cached path MTU neither limits nor hides the router),
    follows each frag-needed's MTU, and binary-searches downward when probes vanish without an ICMP error.
    Returns {"path_mtu", "limited_by" ("local", a router's IP, or "unknown ..."), "reported_mtu" (IP_MTU),
    "interface_mtu", "probes": [(size, verdict), ...], "ok", "verdict"}.
    """
    reported = route_mtu(netns_name, ip)
    start = interface_mtu(netns_name, ip) or reported or 1500
    search = _PmtuSearch(start)
    ident = next_ident()
    while (mtu := search.next_mtu()) is not None:
        r = _echo(netns_name, ip, mtu - IP_ICMP_HEADERS, IP_PMTUDISC_PROBE, timeout, ident, len(search.probes) + 1)
        search.record(mtu, r)
    ok = search.good is not None
    return {"path_mtu": search.good, "limited_by": search.limited_by if ok else None, "reported_mtu": reported,
            "interface_mtu": start, "probes": search.probes, "ok": ok,
            "verdict": "connected" if ok else (search.stopped or "timeout")}
