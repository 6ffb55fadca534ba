"""The agent's server: one selector (epoll) loop on one thread serving every listener of a cluster, their
connections, and the control socket.

No process per pod: the listeners of every pod live in this one loop (see emu.cluster.agent.sockets for how they are
created inside each pod's namespace).  Control ops: {"op": "ping"}, {"op": "sync", "endpoints": [...]},
{"op": "stop"}.

Do not import scapy or pyroute2 here: the daemon's RSS budget is 150 MB with thousands of sockets.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Collection
from typing import Any

from emu.apply import processes
from emu.cluster.agent.protocol import (CONTROL_LINE_MAX, READY_FILE, REQUEST_MAX, SOCK_FILE, SPEC_FILE, Endpoint,
                                        ListenerKey, parse_endpoints, request_complete, tcp_reply, udp_reply,
                                        unlink_quiet)
from emu.cluster.agent.sockets import (STREAM_PROTOCOLS, Connection, ControlConn, Listener, bind, create_in_ns, drain,
                                       ns_inode, pktinfo_local, send_from, send_line)

log = logging.getLogger("emu.cluster.agent")

REQUEST_TIMEOUT = 2.0  # seconds a TCP connection may take to send its request (and to read our answer)
ORPHAN_CHECK = 1.0  # seconds between checks that the cluster still exists
ACCEPT_PAUSE = 0.1
UDP_BUFFER = 65535


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
            socks, inode = create_in_ns(name, [k[1] for k in keys])
        except OSError as e:
            errors.append(f"netns {name}: {e.strerror or e}")
            return 0
        opened = 0
        for sock, key in zip(socks, keys):
            if isinstance(sock, OSError):
                errors.append(f"netns {name}: {key[1]} port {key[2]}: {sock.strerror or sock}")
                continue
            try:
                bind(sock, key[1], key[2])
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
            drain(conn.sock)  # unread input would turn our FIN into a RST and may destroy the answer in flight
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
            local = pktinfo_local(anc)
            reply = udp_reply(payload, lst.endpoint, lst.port, (local, lst.port), client[:2])
            send_from(lst.sock, reply, client, local)

    # control --------------------------------------------------------------------------------------------------------

    def listen_control(self) -> None:
        path = self.path(SOCK_FILE)
        unlink_quiet(path)  # stale: serve() checked that no agent answers on it
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
            send_line(cc.sock, self.handle_control(line))
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
        drain(self._wake_r)

    def run(self) -> None:
        next_check = 0.0
        nginx = ingress_nginx(self.dir)
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
                unlink_quiet(self.path(name))
        self.sel.close()


def _dispatch(data: Any) -> None:
    if isinstance(data, tuple):
        data[0](data[1])
    else:
        data()


def ingress_nginx(agent_dir: str) -> processes.Companion:
    """The cluster's ingress nginx as emu.addons.ingress.controller lays it out: <cluster>/ingress/nginx.pid, written by
    nginx's `pid` directive, and `-c <cluster>/ingress/nginx.conf` on its command line."""
    d = os.path.join(os.path.dirname(os.path.abspath(agent_dir)), "ingress")
    return processes.Companion(os.path.join(d, "nginx.pid"), f"-c {os.path.join(d, 'nginx.conf')}")
