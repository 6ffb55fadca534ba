"""The per-cluster server daemon: one process per cluster that opens its sockets inside each pod's namespace.

No process per pod: a socket keeps the namespace it was created in, so one thread creates every listening socket in
its pod's namespace (`netns.sockets_in`) and serves them all from one `selectors` (epoll) loop.  Each pod answers like
agnhost netexec: who answered (owner, node, endpoint IP), the address the request arrived on, and the client address
the server saw, which is what a CNI test wants to know about NAT, routing and fragmentation.

    python -m emu.observe.agent --dir DIR        # reads DIR/agent.json, logs to stderr

Files in DIR: agent.json (the desired endpoints), agent.sock (control: one JSON object per line, one JSON reply per
line), agent.ready (our pid, written once the initial sockets are open), agent.pid (written by `start`), agent.log.

Control ops: {"op": "ping"}, {"op": "sync", "endpoints": [...]}, {"op": "stop"}.

Do not import scapy or pyroute2 here: the daemon's RSS budget is 150 MB with thousands of sockets.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from emu.apply import netns, processes
from emu.errors import EmuError

log = logging.getLogger("emu.observe.agent")

SPEC_FILE, SOCK_FILE, READY_FILE, PID_FILE, LOG_FILE = "agent.json", "agent.sock", "agent.ready", "agent.pid", \
    "agent.log"
REQUEST_MAX = 4096  # bytes of a TCP request we read before answering anyway
REQUEST_TIMEOUT = 2.0  # seconds a TCP connection may take to send its request (and to read our answer)
ORPHAN_CHECK = 1.0  # seconds between checks that the cluster still exists
ACCEPT_PAUSE = 0.1
WANTED_NOFILE = 1 << 16
UDP_BUFFER = 65535
BACKLOG = 128
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
HTTP_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/\d\.\d\r?$")
CONTROL_LINE_MAX = 64 << 20  # a sync of thousands of endpoints is a few MB


class AgentError(EmuError, RuntimeError):
    """The agent could not be started or reached; the message says why (with the tail of agent.log)."""


# --- the desired state ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A pod as the agent serves it: its namespace, who it is, and its declared ports."""

    netns: str
    owner: str
    node: str
    ip: str
    ports: tuple[tuple[int, str], ...]  # (port, "TCP" | "UDP")

    @property
    def pod_name(self) -> str:
        return self.owner.rsplit("/", 1)[-1]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        ports = tuple((int(p["port"]), str(p.get("protocol", "TCP")).upper()) for p in d.get("ports", []))
        return cls(str(d["netns"]), str(d.get("owner", d["netns"])), str(d.get("node", "")), str(d.get("ip", "")),
                   ports)


ListenerKey = tuple[str, str, int]  # (netns, protocol, port)


def parse_endpoints(items: Iterable[dict[str, Any]]) -> tuple[dict[ListenerKey, Endpoint], int, list[str]]:
    """Who serves each (netns, protocol, port), how many endpoints that is, and an error line for each malformed
    entry or port clash (the other entries are still served)."""
    wanted: dict[ListenerKey, Endpoint] = {}
    count, errors = 0, []
    for i, item in enumerate(items):
        try:
            ep = Endpoint.from_json(item)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            errors.append(f"endpoint #{i}: malformed ({e!r})")
            continue
        count += 1
        for port, proto in ep.ports:
            key = (ep.netns, proto, port)
            if proto not in ("TCP", "UDP", "SCTP") or not 0 < port < 65536:
                errors.append(f"netns {ep.netns}: {ep.owner}: unsupported port {port}/{proto}")
                continue
            if key in wanted and wanted[key].owner != ep.owner:
                errors.append(f"netns {ep.netns}: {proto} port {port} of {ep.owner} already served for "
                              f"{wanted[key].owner}")
                continue
            wanted[key] = ep
    return wanted, count, errors


def answer(ep: Endpoint, proto: str, port: int, local: tuple[str, int], client: tuple[str, int]) -> dict[str, Any]:
    """The JSON object every pod answers with (UDP adds "bytes")."""
    return {"owner": ep.owner, "node": ep.node, "ip": ep.ip, "local_ip": local[0], "port": port, "protocol": proto,
            "client_ip": client[0], "client_port": client[1]}


def http_response(body: bytes, content_type: str, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return head if head_only else head + body


def tcp_reply(request: bytes, ep: Endpoint, port: int, local: tuple[str, int], client: tuple[str, int],
              protocol: str = "TCP") -> bytes:
    """What a stream (TCP or SCTP) client gets for its request: an HTTP response to an HTTP request, else a JSON
    line."""
    first = request.split(b"\n", 1)[0]
    m = HTTP_REQUEST_LINE.match(first)
    obj = answer(ep, protocol, port, local, client)
    if not m:
        return json.dumps(obj).encode() + b"\n"
    target = m.group(2)
    path = target.split(b"?", 1)[0]
    head_only = m.group(1) == b"HEAD"
    # what arrived, as agnhost's netexec /echo-like answers show it: the path after any proxy's rewrite, the Host
    # and X-Forwarded-* headers an ingress controller adds
    obj["request"] = {"method": m.group(1).decode(), "uri": target.decode(errors="replace"),
                      "headers": _headers(request)}
    if path == b"/hostname":
        return http_response(ep.pod_name.encode(), "text/plain", head_only)
    if path == b"/clientip":
        return http_response(f"{client[0]}:{client[1]}".encode(), "text/plain", head_only)
    return http_response(json.dumps(obj).encode(), "application/json", head_only)


def _headers(request: bytes) -> dict[str, str]:
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    out = {}
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.decode(errors="replace").partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def request_complete(buf: bytes) -> bool:
    """An HTTP request is complete at its blank line; anything else at its first newline."""
    if len(buf) >= REQUEST_MAX:
        return True
    nl = buf.find(b"\n")
    if nl < 0:
        return False
    if not HTTP_REQUEST_LINE.match(buf[:nl]):
        return True
    return b"\r\n\r\n" in buf or b"\n\n" in buf


def udp_reply(payload: bytes, ep: Endpoint, port: int, local: tuple[str, int], client: tuple[str, int]) -> bytes:
    word = payload.strip()
    if word == b"hostname":
        return ep.pod_name.encode()
    if word == b"clientip":
        return f"{client[0]}:{client[1]}".encode()
    return json.dumps({**answer(ep, "UDP", port, local, client), "bytes": len(payload)}).encode()


# --- sockets ----------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Listener:
    """One listening TCP or bound UDP socket in a pod's namespace."""

    sock: socket.socket
    key: ListenerKey
    endpoint: Endpoint
    ns_inode: int  # identity of the namespace the socket lives in (a re-created namespace has a new inode)

    @property
    def protocol(self) -> str:
        return self.key[1]

    @property
    def port(self) -> int:
        return self.key[2]


@dataclass(eq=False)
class Connection:
    """An accepted TCP connection: reading its request, then writing our answer."""

    sock: socket.socket
    listener: Listener
    client: tuple[str, int]
    local: tuple[str, int]
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytes | None = None  # set once we answer


@dataclass(eq=False)
class ControlConn:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)


def ns_inode(name: str) -> int | None:
    """The inode of the namespace pinned at /run/netns/NAME, or None if there is none."""
    try:
        return os.stat(netns.path(name)).st_ino
    except OSError:
        return None


# SCTP one-to-one style sockets (SOCK_STREAM + IPPROTO_SCTP) listen, accept and stream like TCP.
SOCKET_KINDS = {"TCP": (socket.SOCK_STREAM, 0), "UDP": (socket.SOCK_DGRAM, 0), "SCTP": (socket.SOCK_STREAM, 132)}
STREAM_PROTOCOLS = ("TCP", "SCTP")


def _create_in_ns(name: str, protos: list[str]) -> tuple[list[socket.socket | OSError], int]:
    """Create one socket per protocol inside namespace `name` (an OSError in place of a socket the kernel refused,
    e.g. SCTP on a kernel without it); also return the namespace's inode."""

    def one(proto: str) -> socket.socket | OSError:
        try:
            return socket.socket(socket.AF_INET, *SOCKET_KINDS[proto])
        except OSError as e:
            return e

    def work() -> tuple[list[socket.socket | OSError], int]:
        inode = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
        return [one(p) for p in protos], inode

    return netns.run_in(name, work)


def _bind(sock: socket.socket, proto: str, port: int) -> None:
    sock.setblocking(False)
    if proto in STREAM_PROTOCOLS:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(BACKLOG)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))


def _pktinfo_local(ancdata: list[tuple[int, int, bytes]]) -> str:
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return socket.inet_ntoa(data[8:12])  # in_pktinfo.ipi_addr: the header's destination address
    return "0.0.0.0"


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (and a small hard limit to 65536 if we may): thousands of
    sockets are the point of this daemon.  Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < WANTED_NOFILE:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_NOFILE, WANTED_NOFILE))
            return WANTED_NOFILE
        except (OSError, ValueError):
            pass  # not privileged: the hard limit is the ceiling
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the server -------------------------------------------------------------------------------------------------------


class Agent:
    """Every listener of a cluster and their connections, served by one selector loop on one thread."""

    def __init__(self, directory: str):
        self.dir = directory
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[ListenerKey, Listener] = {}
        self.wanted: dict[ListenerKey, Endpoint] = {}
        self.endpoint_count = 0
        self.conns: dict[socket.socket, Connection] = {}  # insertion order is deadline order
        self.controls: dict[socket.socket, ControlConn] = {}
        self.control: socket.socket | None = None
        self.paused: dict[Listener, float] = {}  # listeners not polled until then (accept hit EMFILE)
        self._last_accept_warning = 0.0
        self.owns_files = False  # agent.sock/agent.ready are ours to remove only once we bound the socket
        self.stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # sync ---------------------------------------------------------------------------------------------------------

    def sync(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Make the open sockets match `items`; unchanged sockets (and their connections) are left alone."""
        wanted, self.endpoint_count, errors = parse_endpoints(items)
        inodes = {key[0]: ns_inode(key[0]) for key in wanted}
        closed = self._close_stale(wanted.keys(), inodes)
        self.wanted = wanted
        for lst in self.listeners.values():
            lst.endpoint = wanted[lst.key]  # owner/node/ip may change without touching the socket
        opened = self._open_missing(wanted.keys() - self.listeners.keys(), inodes, errors)
        return {"ok": True, "opened": opened, "closed": closed, "errors": errors}

    def _close_stale(self, keys: Collection[ListenerKey], inodes: dict[str, int | None]) -> int:
        stale = [k for k, lst in self.listeners.items() if k not in keys or inodes.get(k[0]) != lst.ns_inode]
        for k in stale:
            self._close_listener(self.listeners.pop(k))
        return len(stale)

    def _open_missing(self, missing: set[ListenerKey], inodes: dict[str, int | None], errors: list[str]) -> int:
        by_ns: dict[str, list[ListenerKey]] = {}
        for k in sorted(missing):
            by_ns.setdefault(k[0], []).append(k)
        opened = 0
        for name, keys in by_ns.items():
            if inodes.get(name) is None:
                errors.append(f"netns {name}: no such namespace ({len(keys)} sockets not opened)")
                continue
            opened += self._open_in_ns(name, keys, errors)
        return opened

    def _open_in_ns(self, name: str, keys: list[ListenerKey], errors: list[str]) -> int:
        try:
            socks, inode = _create_in_ns(name, [k[1] for k in keys])
        except OSError as e:
            errors.append(f"netns {name}: {e.strerror or e}")
            return 0
        opened = 0
        for sock, key in zip(socks, keys):
            if isinstance(sock, OSError):
                errors.append(f"netns {name}: {key[1]} port {key[2]}: {sock.strerror or sock}")
                continue
            try:
                _bind(sock, key[1], key[2])
            except OSError as e:
                sock.close()
                errors.append(f"netns {name}: {key[1]} port {key[2]}: {e.strerror or e}")
                continue
            self._add_listener(Listener(sock, key, self.wanted[key], inode))
            opened += 1
        return opened

    def _add_listener(self, lst: Listener) -> None:
        handler = self._on_accept if lst.protocol in STREAM_PROTOCOLS else self._on_datagram
        self.sel.register(lst.sock, selectors.EVENT_READ, (handler, lst))
        self.listeners[lst.key] = lst

    def _close_listener(self, lst: Listener) -> None:
        if self.paused.pop(lst, None) is None:
            self.sel.unregister(lst.sock)
        lst.sock.close()

    # TCP ----------------------------------------------------------------------------------------------------------

    def _on_accept(self, lst: Listener) -> None:
        for _ in range(64):  # bounded, so one busy listener cannot starve the others
            try:
                sock, client = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._accept_failed(lst, e)
                return
            self._track(sock, lst, client)

    def _track(self, sock: socket.socket, lst: Listener, client: tuple[str, int]) -> None:
        try:
            sock.setblocking(False)
            local = sock.getsockname()[:2]
        except OSError:  # reset before we got to it
            sock.close()
            return
        conn = Connection(sock, lst, client[:2], local, time.monotonic() + REQUEST_TIMEOUT)
        self.conns[sock] = conn
        self.sel.register(sock, selectors.EVENT_READ, (self._on_conn_read, conn))

    def _accept_failed(self, lst: Listener, e: OSError) -> None:
        """Out of descriptors or memory: stop polling this listener briefly, or the loop would spin."""
        if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            return  # ECONNABORTED and friends: the next one will do
        if time.monotonic() - self._last_accept_warning > 5:
            log.warning("accept on %s: %s (pausing the listener for %.1fs)", lst.key, e, ACCEPT_PAUSE)
            self._last_accept_warning = time.monotonic()
        self.sel.unregister(lst.sock)
        self.paused[lst] = time.monotonic() + ACCEPT_PAUSE

    def _resume_paused(self, now: float) -> None:
        for lst, until in list(self.paused.items()):
            if until <= now:
                del self.paused[lst]
                self.sel.register(lst.sock, selectors.EVENT_READ, (self._on_accept, lst))

    def _on_conn_read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(REQUEST_MAX - len(conn.inbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(conn)
            return
        conn.inbuf += data
        if not data and not conn.inbuf:  # connected and closed without a word
            self._close_conn(conn)
        elif not data or request_complete(bytes(conn.inbuf)):  # at EOF: answer what it sent
            self._respond(conn)

    def _respond(self, conn: Connection) -> None:
        lst = conn.listener
        conn.outbuf = tcp_reply(bytes(conn.inbuf), lst.endpoint, lst.port, conn.local, conn.client, lst.protocol)
        conn.deadline = time.monotonic() + REQUEST_TIMEOUT
        self.conns.pop(conn.sock, None)
        self.conns[conn.sock] = conn  # keep the dict in deadline order
        self.sel.modify(conn.sock, selectors.EVENT_WRITE, (self._on_conn_write, conn))
        self._on_conn_write(conn)

    def _on_conn_write(self, conn: Connection) -> None:
        assert conn.outbuf is not None
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(conn)
            return
        conn.outbuf = conn.outbuf[sent:]
        if not conn.outbuf:
            self._close_conn(conn, graceful=True)

    def _close_conn(self, conn: Connection, graceful: bool = False) -> None:
        self.conns.pop(conn.sock, None)
        self.sel.unregister(conn.sock)
        if graceful:
            _drain(conn.sock)  # unread input would turn our FIN into a RST and may destroy the answer in flight
        conn.sock.close()

    def _expire(self, now: float) -> None:
        """Answer (or drop) connections past their deadline; the dict is in deadline order."""
        for conn in list(self.conns.values()):
            if conn.deadline > now:
                return
            if conn.outbuf is None and conn.inbuf:
                self._respond(conn)  # a request without a newline: answer what came
            else:
                self._close_conn(conn)

    # UDP ----------------------------------------------------------------------------------------------------------

    def _on_datagram(self, lst: Listener) -> None:
        for _ in range(64):
            try:
                payload, anc, _flags, client = lst.sock.recvmsg(UDP_BUFFER, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("recv on %s: %s", lst.key, e)
                return
            local = _pktinfo_local(anc)
            reply = udp_reply(payload, lst.endpoint, lst.port, (local, lst.port), client[:2])
            _send_from(lst.sock, reply, client, local)

    # control --------------------------------------------------------------------------------------------------------

    def listen_control(self) -> None:
        path = self.path(SOCK_FILE)
        _unlink_quiet(path)  # stale: serve() checked that no agent answers on it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self.control = sock
        self.owns_files = True
        self.sel.register(sock, selectors.EVENT_READ, self._on_control_accept)

    def _on_control_accept(self) -> None:
        assert self.control is not None
        try:
            sock, _ = self.control.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        cc = ControlConn(sock)
        self.controls[sock] = cc
        self.sel.register(sock, selectors.EVENT_READ, (self._on_control_read, cc))

    def _on_control_read(self, cc: ControlConn) -> None:
        try:
            data = cc.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        cc.inbuf += data
        while b"\n" in cc.inbuf and not self.stopping:
            line, _, rest = bytes(cc.inbuf).partition(b"\n")
            cc.inbuf = bytearray(rest)
            _send_line(cc.sock, self.handle_control(line))
        if not data or len(cc.inbuf) > CONTROL_LINE_MAX:
            self._close_control(cc)

    def _close_control(self, cc: ControlConn) -> None:
        self.controls.pop(cc.sock, None)
        self.sel.unregister(cc.sock)
        cc.sock.close()

    def handle_control(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            op = req.get("op")
        except (ValueError, AttributeError) as e:
            return {"ok": False, "error": f"bad request: {e}"}
        if op == "ping":
            return self.status()
        if op == "sync":
            try:
                return self._control_sync(req.get("endpoints"))
            except Exception as e:  # report it; the sockets opened so far stay open
                log.exception("sync failed")
                return {"ok": False, "error": f"sync failed: {e!r}"}
        if op == "stop":
            log.info("stop requested")
            self.stopping = True
            return {"ok": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown op {op!r} (ping, sync, stop)"}

    def _control_sync(self, items: Any) -> dict[str, Any]:
        if not isinstance(items, list):
            return {"ok": False, "error": "sync needs \"endpoints\": [...]"}
        t0 = time.monotonic()
        res = self.sync(items)
        log.info("sync: %d endpoints, opened %d, closed %d, %d errors in %.2fs", self.endpoint_count,
                 res["opened"], res["closed"], len(res["errors"]), time.monotonic() - t0)
        for e in res["errors"]:
            log.warning("sync: %s", e)
        return res

    def status(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "endpoints": self.endpoint_count, "sockets": len(self.listeners),
                "connections": len(self.conns)}

    # the loop -------------------------------------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _on_wake(self) -> None:
        _drain(self._wake_r)

    def run(self) -> None:
        next_check = 0.0
        nginx = _ingress_nginx(self.dir)
        while not self.stopping:
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + ORPHAN_CHECK
                if processes.owner_gone(self.path(SPEC_FILE)):
                    # Our cluster's record is gone (removed by `down` while we were not recorded, e.g. after `up`
                    # was killed between spawning us and saving our pid): nobody owns us any more -- nor the
                    # ingress controller's nginx, which cannot notice by itself.
                    log.warning("%s vanished: the cluster was removed; exiting", SPEC_FILE)
                    if nginx.stop_orphan():
                        log.warning("stopped the ingress controller's nginx (pid %s), which outlived it", nginx.pid)
                    break
                nginx.remember()
            for key, _ in self.sel.select(min(self._next_timeout(), ORPHAN_CHECK)):
                try:
                    _dispatch(key.data)
                except Exception:  # a bug in one handler must not take every pod's server down
                    log.exception("handler for %r failed", key.fileobj)
            now = time.monotonic()
            self._expire(now)
            self._resume_paused(now)

    def _next_timeout(self) -> float:
        timeout = REQUEST_TIMEOUT
        if self.conns:
            timeout = next(iter(self.conns.values())).deadline - time.monotonic() + 0.01
        if self.paused:
            timeout = min(timeout, ACCEPT_PAUSE)
        return max(0.0, timeout)

    def close(self) -> None:
        """Close every socket and remove agent.sock and agent.ready."""
        for conn in list(self.conns.values()):
            self._close_conn(conn)
        for cc in list(self.controls.values()):
            self._close_control(cc)
        for lst in self.listeners.values():
            self._close_listener(lst)
        self.listeners.clear()
        if self.control is not None:
            self.sel.unregister(self.control)
            self.control.close()
            self.control = None
        if self.owns_files:
            for name in (SOCK_FILE, READY_FILE):
                _unlink_quiet(self.path(name))
        self.sel.close()


def _dispatch(data: Any) -> None:
    if isinstance(data, tuple):
        data[0](data[1])
    else:
        data()


def _drain(sock: socket.socket) -> None:
    for _ in range(16):
        try:
            if not sock.recv(65536):
                return
        except OSError:
            return


def _send_from(sock: socket.socket, data: bytes, dest: tuple[str, int], local: str) -> None:
    """Reply from the address the datagram arrived on (matters for a pod with several addresses)."""
    pktinfo = struct.pack("=i4s4s", 0, socket.inet_aton(local), b"\0" * 4)
    try:
        sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, dest)
        return
    except OSError:
        pass
    try:
        sock.sendto(data, dest)
    except OSError as e:
        log.debug("reply to %s: %s", dest, e)


def _send_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    """Control replies are small and local: send them whole (briefly blocking)."""
    sock.settimeout(5.0)
    try:
        sock.sendall(json.dumps(obj).encode() + b"\n")
    except OSError as e:
        log.warning("control reply: %s", e)
    finally:
        sock.setblocking(False)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _refuse_if_running(path: str) -> None:
    """Another agent answering on this control socket owns the directory: do not steal it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError:
        return
    finally:
        s.close()
    raise SystemExit(f"another agent is listening on {path}")


def _write_ready(directory: str) -> None:
    tmp = os.path.join(directory, f".{READY_FILE}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, os.path.join(directory, READY_FILE))


def load_spec(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, SPEC_FILE)) as f:
        spec = json.load(f)
    if not isinstance(spec, dict) or not isinstance(spec.get("endpoints", []), list):
        raise ValueError(f"{SPEC_FILE}: expected {{\"cluster\": ..., \"endpoints\": [...]}}")
    return spec


def serve(directory: str) -> int:
    """The daemon: open the initial sockets, then the control socket, then say ready and serve until told to stop."""
    _refuse_if_running(os.path.join(directory, SOCK_FILE))
    limit = raise_nofile_limit()
    spec = load_spec(directory)
    agent = Agent(directory)
    agent.install_signals()
    _unlink_quiet(os.path.join(directory, READY_FILE))  # stale: we are the only agent here
    try:
        t0 = time.monotonic()
        res = agent.sync(spec.get("endpoints", []))
        for e in res["errors"]:
            print(f"agent: {e}", file=sys.stderr, flush=True)
        log.info("cluster %s: %d endpoints, %d sockets opened in %.2fs (%d errors, nofile limit %d)",
                 spec.get("cluster", "?"), agent.endpoint_count, res["opened"], time.monotonic() - t0,
                 len(res["errors"]), limit)
        agent.listen_control()
        _write_ready(directory)
        agent.run()
    finally:
        agent.close()
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emu.observe.agent", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="directory with agent.json; agent.sock and agent.ready go here")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s agent[%(process)d] %(levelname)s %(message)s")
    log.info("starting in %s", args.dir)
    try:
        processes.write_pid(os.path.join(args.dir, PID_FILE), os.getpid())  # recorded before anything else
        return serve(os.path.abspath(args.dir))
    except (OSError, ValueError) as e:
        log.error("cannot start: %s", e)
        return 1


# --- the client API used by the rest of emu ---------------------------------------------------------------------------

def _ingress_nginx(agent_dir: str) -> processes.Companion:
    """The cluster's ingress nginx as emu.addons.ingress.controller lays it out: <cluster>/ingress/nginx.pid, written by
    nginx's `pid` directive, and `-c <cluster>/ingress/nginx.conf` on its command line."""
    d = os.path.join(os.path.dirname(os.path.abspath(agent_dir)), "ingress")
    return processes.Companion(os.path.join(d, "nginx.pid"), f"-c {os.path.join(d, 'nginx.conf')}")


def start(directory: str) -> int:
    """Spawn the daemon for DIR (detached, logging to DIR/agent.log, its pid in DIR/agent.pid) and return its pid;
    then `wait_ready`."""
    client = AgentClient(directory)
    if client.alive():
        raise AgentError(f"an agent already answers on {client.sock_path}")
    _unlink_quiet(client.ready_path)
    return processes.spawn_module("emu.observe.agent", directory, LOG_FILE, PID_FILE).pid


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no agent.log)"
    return "\n".join(text.splitlines()[-lines:]) or "(agent.log is empty)"


class AgentClient:
    """Talks to the agent of one directory over DIR/agent.sock (one JSON line out, one JSON line back)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.sock_path = os.path.join(directory, SOCK_FILE)
        self.ready_path = os.path.join(directory, READY_FILE)
        self.pid_path = os.path.join(directory, PID_FILE)
        self.log_path = os.path.join(directory, LOG_FILE)

    def request(self, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(self.sock_path)
                s.sendall(json.dumps(obj).encode() + b"\n")
                return json.loads(_recv_line(s))
        except (OSError, ValueError) as e:
            raise AgentError(f"agent at {self.dir} did not answer {obj.get('op')!r}: {e}") from e

    def alive(self) -> bool:
        try:
            return bool(self.request({"op": "ping"}, timeout=2.0).get("ok"))
        except AgentError:
            return False

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.request({"op": "ping"}, timeout)

    def sync(self, endpoints: list[dict[str, Any]], timeout: float = 300.0) -> dict[str, Any]:
        """Replace the served endpoints; returns {"ok", "opened", "closed", "errors"}."""
        res = self.request({"op": "sync", "endpoints": endpoints}, timeout)
        if not res.get("ok"):
            raise AgentError(f"agent sync failed: {res.get('error')}")
        return res

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask the agent to exit and wait until it has (its files are removed by then)."""
        res = self.request({"op": "stop"}, timeout)
        pid = res.get("pid")
        deadline = time.monotonic() + timeout
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid and pid_alive(pid):
            raise AgentError(f"agent {pid} did not exit within {timeout:.0f}s")
        return res

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for agent.ready and a ping; raise AgentError with the log's tail if it dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            pid = _read_pid(self.pid_path) or _read_pid(self.ready_path)
            if _read_pid(self.ready_path) is not None:
                try:
                    return self.ping()
                except AgentError:
                    pass
            if pid is not None and not pid_alive(pid):
                raise AgentError(f"agent {pid} exited before it was ready; {self.log_path}:\n"
                                 f"{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise AgentError(f"agent not ready after {timeout:.0f}s; {self.log_path}:\n"
                                 f"{log_tail(self.log_path)}")
            time.sleep(0.05)


def _recv_line(s: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = s.recv(1 << 16)
        if not chunk:
            raise ConnectionError(errno.ECONNRESET, "connection closed before a full reply")
        buf += chunk
    return bytes(buf.split(b"\n", 1)[0])


if __name__ == "__main__":
    sys.exit(main())
