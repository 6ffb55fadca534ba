"""Real-packet probes sent from inside a namespace: TCP, SCTP, UDP and ICMP echo.

Every probe creates its socket in the source namespace (`netns.socket_in`) and does its own I/O, so any thread can
run probes in any namespace in parallel.  ICMP errors are read from the socket's error queue (IP_RECVERR), and what
comes back is classified as emu.observe.verdicts says (connected, refused, timeout, unreachable, frag-needed,
error).  Path-MTU discovery, built on the echo probe, is emu.observe.pmtu.
"""
from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from emu.apply import netns
from emu.observe.verdicts import (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ExtendedErr, ProbeResult, classify_icmp_packet,
                                  echo_request, errno_verdict, icmp_verdict, parse_answer, parse_extended_err, payload,
                                  quotes_our_echo, who_answered)

# <linux/in.h>
IP_MTU_DISCOVER, IP_RECVERR, IP_MTU = 10, 11, 14
IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE = 0, 2, 3

TCP_REQUEST = b"GET /emu HTTP/1.0\r\n\r\n"
_idents = itertools.count(os.getpid())

IPPROTO_SCTP = 132


def open_socket(ns: str, type_: int, proto: int, pmtudisc: int | None, src_ip: str | None = None) -> socket.socket:
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


def ip_mtu(s: socket.socket) -> int | None:
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


def read_errqueue(s: socket.socket) -> ExtendedErr | None:
    """The next ICMP or local error queued on the socket (IP_RECVERR), without waiting; None if there is none."""
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
    err = read_errqueue(s)
    if err is not None and err.errno == e.errno:
        return _from_error(mk, err, t0)
    if e.errno == errno.EMSGSIZE:
        mtu = ip_mtu(s)
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
        sock = open_socket(netns_name, socket.SOCK_STREAM, ipproto, None, src_ip)
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
    with open_socket(netns_name, socket.SOCK_DGRAM, 0, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT, src_ip) as s:
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
        err = read_errqueue(s)
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
    return echo(netns_name, ip, size, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT, timeout, ident, seq, src_ip)


def next_ident() -> int:
    return next(_idents) & 0xFFFF


def echo(ns: str, ip: str, size: int, pmtudisc: int, timeout: float, ident: int | None, seq: int,
         src_ip: str | None = None) -> ProbeResult:
    """One ICMP echo of `size` payload bytes with the socket in path-MTU discovery mode `pmtudisc` (IP_PMTUDISC_DONT,
    _DO, or _PROBE: DF at full size whatever path MTU the kernel learned); `ident` None takes the next one."""
    ident = next_ident() if ident is None else ident & 0xFFFF
    seq &= 0xFFFF
    packet = echo_request(ident, seq, size)
    mk = partial(_result, "icmp", ns, ip, None, bytes_sent=size)
    with open_socket(ns, socket.SOCK_RAW, socket.IPPROTO_ICMP, pmtudisc, src_ip) as s:
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
        err = read_errqueue(s)
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
