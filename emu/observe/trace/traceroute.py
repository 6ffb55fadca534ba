"""`emu probe --traceroute`: the routers between two endpoints, as traceroute finds them.

One socket per TTL (1..max_hops) in the source namespace, all sent at once: each router that decrements a TTL to
zero answers ICMP time exceeded from its own address (the one facing the sender), which the kernel queues on that
socket's error queue (IP_RECVERR) with the offender's address.  The first TTL that reaches the destination ends the
path (an answer, a TCP connect or RST, an ICMP port unreachable from the target).  A bridge is no hop (it does not
touch the TTL), so two pods on one node are one hop apart.  Routers rate-limit time-exceeded per destination
(net.ipv4.icmp_ratelimit): a hop may show `*` when traced many times in a second.
"""
from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any

from emu.apply import netns
from emu.observe import probe, probing, targets, verdicts
from emu.cluster.lifecycle import Cluster
from emu.errors import EmuError

IP_TTL = 2


def _errqueue(s: socket.socket) -> verdicts.ExtendedErr | None:
    try:
        quoted, anc, _flags, _addr = s.recvmsg(2048, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except OSError:
        return None
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == probe.IP_RECVERR:
            return verdicts.parse_extended_err(data, quoted)
    return None


def _hop(ttl: int, t0: float, addr: str | None, kind: str, reached: bool, **kw: Any) -> dict[str, Any]:
    return {"ttl": ttl, "address": addr, "kind": kind, "reached": reached,
            "rtt_ms": round((time.monotonic() - t0) * 1000, 3), **kw}


def _from_error(ttl: int, t0: float, err: verdicts.ExtendedErr, dst_ip: str) -> dict[str, Any]:
    if err.origin == verdicts.SO_EE_ORIGIN_ICMP:
        if err.type == verdicts.ICMP_TIME_EXCEEDED:
            return _hop(ttl, t0, err.sender, "time-exceeded", False)
        reached = err.sender == dst_ip or err.code == verdicts.ICMP_PORT_UNREACH
        return _hop(ttl, t0, err.sender, f"unreachable (ICMP 3/{err.code})", reached, final=True)
    return _hop(ttl, t0, None, f"local error: {errno.errorcode.get(err.errno, err.errno)}", False, final=True)


def _open(ns: str, proto: str, n: int) -> list[socket.socket]:
    kind = {"udp": (socket.SOCK_DGRAM, 0), "tcp": (socket.SOCK_STREAM, 0),
            "icmp": (socket.SOCK_RAW, socket.IPPROTO_ICMP)}[proto]
    socks = netns.sockets_in(ns, [(socket.AF_INET, kind[0], kind[1])] * n)
    for ttl, s in enumerate(socks, start=1):
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_IP, IP_TTL, ttl)
        s.setsockopt(socket.IPPROTO_IP, probe.IP_RECVERR, 1)
    return socks


def _send(s: socket.socket, proto: str, ip: str, port: int, echo: bytes | None) -> None:
    if proto == "tcp":
        s.connect_ex((ip, port))  # EINPROGRESS: the SYN is on its way
    elif proto == "udp":
        s.connect((ip, port))
        s.send(verdicts.payload(None))
    else:
        assert echo is not None
        s.connect((ip, 0))
        s.send(echo)


def _check(s: socket.socket, proto: str, ttl: int, t0: float, ip: str, ident: int, ev: int) -> dict[str, Any] | None:
    """What one socket's event means: a router (time exceeded), the destination, or nothing yet."""
    err = _errqueue(s)
    if err is not None:
        if proto == "icmp" and err.origin == verdicts.SO_EE_ORIGIN_ICMP and \
                not verdicts.quotes_our_echo(err.quoted, ident, ttl):
            return None
        return _from_error(ttl, t0, err, ip)
    if proto == "tcp":
        if ev & (select.POLLOUT | select.POLLERR | select.POLLHUP):
            code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                return _hop(ttl, t0, ip, "connected", True)
            if code == errno.ECONNREFUSED:
                return _hop(ttl, t0, ip, "refused (RST)", True)
        return None
    try:
        data = s.recv(65535)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return None  # an error whose details are on the error queue (read next time)
    if proto == "udp":
        return _hop(ttl, t0, ip, "answered", True)
    found = verdicts.classify_icmp_packet(data, ident, ttl)
    if not found:
        return None
    if found["kind"] == "reply":
        return _hop(ttl, t0, found["src"], "echo-reply", True)
    if found["type"] == verdicts.ICMP_TIME_EXCEEDED:
        return _hop(ttl, t0, found["sender"], "time-exceeded", False)
    return _hop(ttl, t0, found["sender"], f"unreachable (ICMP {found['type']}/{found['code']})",
                found["sender"] == ip, final=True)


def traceroute(cl: Cluster, src: str, dst: str, proto: str = "udp", port: int | None = None, max_hops: int = 8,
               timeout: float = 1.0) -> dict[str, Any]:
    """{"from", "to", "to_ip", "proto", "port", "reached", "hops": [{"ttl", "address", "name", "kind",
    "reached", "rtt_ms"}]} with one entry per TTL up to the destination (`address` None: no answer)."""
    if proto not in ("udp", "tcp", "icmp"):
        raise EmuError(f"traceroute proto must be udp, tcp or icmp, not {proto}")
    if not 1 <= max_hops <= 64:
        raise EmuError("max hops must be between 1 and 64")
    s_t = probing._source(cl, src)
    d_t = targets.resolve(cl, dst, proto)
    assert s_t.netns is not None
    if proto != "icmp" and port is None:
        port = probing._default_port(cl, d_t, proto)
    ident = probe.next_ident()
    echoes = [verdicts.echo_request(ident, ttl, 56) for ttl in range(1, max_hops + 1)] if proto == "icmp" else []
    socks = _open(s_t.netns, proto, max_hops)
    found: dict[int, dict[str, Any]] = {}
    try:
        t0 = time.monotonic()
        for ttl, s in enumerate(socks, start=1):
            try:
                _send(s, proto, d_t.ip, port or 0, echoes[ttl - 1] if echoes else None)
            except OSError as e:
                found[ttl] = _hop(ttl, t0, None, f"local error: {e.strerror}", False, final=True)
        poller = select.poll()
        fds = {s.fileno(): (ttl, s) for ttl, s in enumerate(socks, start=1) if ttl not in found}
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLERR | (select.POLLOUT if proto == "tcp" else 0))
        deadline = t0 + timeout
        while True:
            end = min((t for t, h in found.items() if h["reached"] or h.get("final")), default=max_hops)
            if all(t in found for t in range(1, end + 1)):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, ev in poller.poll(left * 1000):
                ttl, s = fds[fd]
                h = _check(s, proto, ttl, t0, d_t.ip, ident, ev)
                if h is not None and ttl not in found:
                    found[ttl] = h
                    poller.unregister(fd)
    finally:
        for s in socks:
            s.close()
    end = min((t for t, h in found.items() if h["reached"] or h.get("final")), default=max_hops)
    hops = []
    for ttl in range(1, end + 1):
        h = found.get(ttl) or {"ttl": ttl, "address": None, "kind": "no answer", "reached": False, "rtt_ms": None}
        h["name"] = targets.who(cl, h["address"]) if h.get("address") else None
        hops.append(h)
    notes = []
    if d_t.kind in ("svc", "lb", "nodeport") and any(h["address"] == d_t.ip and not h["reached"] for h in hops):
        # conntrack translates ICMP errors about a NATed flow back to what the sender knows, outer source included
        notes.append(f"routers behind the Service's DNAT answer as {d_t.ip}: conntrack rewrites ICMP errors of a "
                     f"NATed flow (the outer source too), as the kernel does for any traceroute through NAT")
    return {"from": s_t.label, "to": d_t.label, "to_ip": d_t.ip, "proto": proto, "port": port,
            "reached": any(h["reached"] for h in hops), "hops": hops, "notes": notes}


def traceroute_text(res: dict[str, Any]) -> str:
    what = res["proto"] + (f"/{res['port']}" if res.get("port") and res["proto"] != "icmp" else "")
    lines = [f"traceroute {res['from']} -> {res['to']} ({res['to_ip']}) {what}, {len(res['hops'])} hops"]
    for h in res["hops"]:
        if h["address"] is None:
            lines.append(f"{h['ttl']:>3}  *  ({h['kind']})")
            continue
        name = f" ({h['name']})" if h.get("name") else ""
        lines.append(f"{h['ttl']:>3}  {h['address']}{name}  {h['rtt_ms']:.3f} ms  {h['kind']}")
    if not res["reached"]:
        lines.append("destination not reached")
    lines.extend(f"note: {n}" for n in res.get("notes", []))
    return "\n".join(lines)
