"""The per-cluster DNS daemon: CoreDNS (the kubernetes plugin over the zone snapshot, then forward) listening on
UDP and TCP inside every `kube-system/coredns-*` pod namespace, health on :8080 and metrics on :9153 there, and
the upstream resolver of the `external` host (a few fixed names, never the real internet).

    python -m emu.addons.dns.server --dir DIR     # DIR/server.json, DIR/zone.json; writes dns.pid, dns.ready, dns.log

zone.json is re-read when it changes (the kubernetes plugin's watch; `emu apply` rewrites it)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from emu.apply import netns, processes
from emu.addons.dns import corelog, records, wire

log = logging.getLogger("emu.addons.dns")

# The external host's resolver: names outside the cluster (documentation addresses, RFC 5737).
PID_FILE = "dns.pid"  # written by the server itself as it starts (and by `addon.start` right after the fork)
EXTERNAL_NAMES = {
    "example.com.": "203.0.113.10",
    "www.example.com.": "203.0.113.10",
    "example.org.": "203.0.113.11",
    "https-example.foo.com.": None,  # filled with the ingress address when there is one (server.json)
    "upstream.test.": "198.51.100.53",
}
ROOT_SOA = wire.RR(".", "SOA", 3600, ("a.root-servers.net.", "nstld.verisign-grs.com.", 2024010100, 1800, 900,
                                      604800, 86400))


def upstream_answer(q: wire.Message, names: dict[str, str | None]) -> wire.Message:
    r = wire.Message(id=q.id, qr=True, rd=q.rd, ra=True, question=list(q.question))
    if not q.question:
        r.rcode = 1
        return r
    name, qtype = wire.fqdn(q.question[0][0]), q.question[0][1]
    if names.get(name):
        if qtype == "A":
            r.answer = [wire.RR(name, "A", 300, names[name])]
        else:
            r.authority = [ROOT_SOA]
    else:
        r.rcode = 3
        r.authority = [ROOT_SOA]
    return r


class Server:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        with open(os.path.join(directory, "server.json")) as f:
            self.conf = json.load(f)
        self.zone_path = os.path.join(directory, "zone.json")
        self.zone: dict[str, Any] = {}
        self.zone_mtime = 0.0
        self.sel = selectors.DefaultSelector()
        self.queries = 0
        self.stop = False
        self.names = dict(EXTERNAL_NAMES)
        self.names.update(self.conf.get("external_names") or {})
        self.log_lock = threading.Lock()
        self.corefile = self.conf.get("corefile_text") or ""

    # --- what each coredns pod prints (kubectl logs) ----------------------------------------------------------

    def plugins(self) -> list[str]:
        return list((self.conf.get("corefile") or {}).get("plugins") or [])

    def pod_print(self, ns: str | None, lines: list[str]) -> None:
        """Append to the log of the coredns pod living in `ns` (every pod's when ns is None)."""
        pods = self.conf.get("pods") or {}
        targets = [pods[ns]] if ns in pods else list(pods.values()) if ns is None else []
        with self.log_lock:
            for key in targets:
                path = corelog.log_path(self.dir, key)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "a") as f:
                    f.write("".join(line + "\n" for line in lines))

    def logged(self, reply: Any, ns: str, remote: tuple[str, int], proto: str, data: bytes, q: wire.Message) -> Any:
        """The `log` plugin: one line per answered query, in the pod that answered it."""
        if "log" not in self.plugins():
            return reply
        start = time.monotonic()

        def send(b: bytes) -> None:
            reply(b)
            self.pod_print(ns, [corelog.query_line(remote[0], remote[1], proto, data, q, b,
                                                   time.monotonic() - start)])
        return send

    def reload(self) -> None:
        try:
            m = os.stat(self.zone_path).st_mtime
        except OSError:
            return
        if m != self.zone_mtime:
            with open(self.zone_path) as f:
                self.zone = json.load(f)
            self.zone_mtime = m
            try:  # Ingress hosts for the external resolver, the Corefile (written before zone.json)
                with open(os.path.join(self.dir, "server.json")) as f:
                    conf = json.load(f)
                self.names = {**EXTERNAL_NAMES, **(conf.get("external_names") or {})}
                self.conf.update(corefile=conf.get("corefile"), upstreams=conf.get("upstreams"))
                text = conf.get("corefile_text") or ""
                if text != self.corefile:
                    self.corefile = text
                    if "reload" in self.plugins():
                        self.pod_print(None, corelog.reloaded(text))
            except (OSError, ValueError):
                pass
            log.info("zone loaded: serial %s, %d services", self.zone.get("serial"), len(self.zone["services"]))

    def open(self) -> None:
        port = self.conf.get("port", 53)
        for ns in self.conf["listen"]:
            u, t, h, m = netns.sockets_in(ns, [(socket.AF_INET, socket.SOCK_DGRAM, 0)] +
                                          [(socket.AF_INET, socket.SOCK_STREAM, 0)] * 3)
            for s, p in ((u, port), (t, port), (h, 8080), (m, 9153)):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", p))
                if s.type == socket.SOCK_STREAM:
                    s.listen(128)
                s.setblocking(False)
            self.sel.register(u, selectors.EVENT_READ, ("udp", ns, "cluster"))
            self.sel.register(t, selectors.EVENT_READ, ("tcp", ns, "cluster"))
            self.sel.register(h, selectors.EVENT_READ, ("health", ns, ""))
            self.sel.register(m, selectors.EVENT_READ, ("metrics", ns, ""))
        ext = self.conf.get("external_netns")
        if ext:
            u, t = netns.sockets_in(ext, [(socket.AF_INET, socket.SOCK_DGRAM, 0), (socket.AF_INET, socket.SOCK_STREAM, 0)])
            for s in (u, t):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", 53))
                s.setblocking(False)
            t.listen(64)
            self.sel.register(u, selectors.EVENT_READ, ("udp", ext, "upstream"))
            self.sel.register(t, selectors.EVENT_READ, ("tcp", ext, "upstream"))

    # --- answering --------------------------------------------------------------------------------------------

    def handle(self, data: bytes, ns: str, role: str, reply: Any, remote: tuple[str, int] = ("", 0),
               proto: str = "udp") -> None:
        """reply(bytes) sends the answer; forwarding happens on a thread."""
        self.queries += 1
        try:
            q = wire.decode(data)
        except (wire.WireError, struct.error, IndexError) as e:
            log.debug("bad query from %s: %s", ns, e)
            return
        if role == "upstream":
            reply(wire.encode(upstream_answer(q, self.names)))
            return
        reply = self.logged(reply, ns, remote, proto, data, q)
        what, r = records.resolve(self.zone, q)
        if what == "answer":
            assert r is not None
            last = r.answer[-1] if r.answer else None
            if last is not None and last.type == "CNAME" and q.question[0][1] in ("A", "AAAA"):
                # an ExternalName: CoreDNS resolves the target upstream and appends its records
                threading.Thread(target=self.chase, args=(r, str(last.data), ns, reply), daemon=True).start()
                return
            reply(wire.encode(r))
            return
        threading.Thread(target=self.forward, args=(data, q, ns, reply), daemon=True).start()

    def forward(self, data: bytes, q: wire.Message, ns: str, reply: Any) -> None:
        err = "no upstream"
        for up in self.conf.get("upstreams") or []:
            local = "?"
            try:
                s = netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
                with s:
                    s.settimeout(2.0)
                    s.connect((up, 53))
                    local = "%s:%d" % s.getsockname()
                    s.send(data)
                    ans = s.recv(65535)
                reply(ans)
                return
            except OSError as e:
                log.info("forward %s to %s: %s", q.question, up, e)
                # as Go's net.OpError words it: a deadline is "i/o timeout", a syscall error "read: <errno text>"
                why = "i/o timeout" if isinstance(e, socket.timeout) else f"read: {(e.strerror or str(e)).lower()}"
                err = f"read udp {local}->{up}:53: {why}"
        r = wire.Message(id=q.id, qr=True, rd=q.rd, ra=True, rcode=2, question=list(q.question))
        reply(wire.encode(r))
        if "errors" in self.plugins() and q.question:
            self.pod_print(ns, [corelog.error_line(2, q.question[0][0], q.question[0][1], err)])

    def chase(self, r: wire.Message, target: str, ns: str, reply: Any) -> None:
        qtype = r.question[0][1]
        q = wire.Message(id=r.id, question=[(target, qtype)])
        what, inner = records.resolve(self.zone, q)
        if what == "answer" and inner is not None:
            r.answer += inner.answer
        else:
            for up in self.conf.get("upstreams") or []:
                try:
                    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.settimeout(2.0)
                        s.sendto(wire.encode(q), (up, 53))
                        r.answer += wire.decode(s.recvfrom(65535)[0]).answer
                    break
                except (OSError, wire.WireError) as e:
                    log.info("upstream for %s via %s: %s", target, up, e)
        reply(wire.encode(r))

    def serve_tcp(self, conn: socket.socket, ns: str, role: str, remote: tuple[str, int]) -> None:
        lock = threading.Lock()

        def reply(b: bytes) -> None:
            with lock:
                try:
                    conn.sendall(struct.pack("!H", len(b)) + b)
                except OSError:
                    pass
        try:
            conn.settimeout(5.0)
            buf = b""
            while True:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    chunk = conn.recv(65535)
                    if not chunk:
                        return
                    buf += chunk
                n = struct.unpack("!H", buf[:2])[0]
                msg, buf = buf[2:2 + n], buf[2 + n:]
                self.handle(msg, ns, role, reply, remote, "tcp")
        except OSError:
            pass
        finally:
            time.sleep(0.05)
            conn.close()

    def run(self) -> None:
        self.reload()
        self.open()
        with open(os.path.join(self.dir, "dns.ready"), "w") as f:
            f.write(f"{os.getpid()}\n")
        log.info("serving in %s", ", ".join(self.conf["listen"]))
        c = self.conf.get("corefile") or {}
        self.pod_print(None, corelog.banner(self.corefile, c.get("servers") or [f".:{self.conf.get('port', 53)}"],
                                            self.plugins()))
        while not self.stop:
            if processes.owner_gone(os.path.join(self.dir, "server.json")):
                # `emu down` removed our cluster's directory (perhaps before it could record us): nobody owns us.
                log.warning("server.json vanished: the cluster was removed; exiting")
                break
            for key, _ in self.sel.select(timeout=0.3):
                kind, ns, role = key.data
                s = key.fileobj
                try:
                    if kind == "udp":
                        data, addr = s.recvfrom(65535)
                        self.handle(data, ns, role, lambda b, s=s, addr=addr: s.sendto(b, addr), addr, "udp")
                    elif kind == "tcp":
                        conn, addr = s.accept()
                        conn.setblocking(True)
                        threading.Thread(target=self.serve_tcp, args=(conn, ns, role, addr), daemon=True).start()
                    else:
                        conn, _ = s.accept()
                        self.http(conn, kind)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    log.debug("%s in %s: %s", kind, ns, e)
            self.reload()

    def http(self, conn: socket.socket, kind: str) -> None:
        body = b"OK" if kind == "health" else (
            f"# TYPE coredns_dns_requests_total counter\ncoredns_dns_requests_total {self.queries}\n".encode())
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emu.addons.dns.server")
    ap.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s dns[%(process)d] %(levelname)s %(message)s")
    processes.write_pid(os.path.join(args.dir, PID_FILE), os.getpid())  # recorded before anything else
    srv = Server(os.path.abspath(args.dir))

    def stop(*_: Any) -> None:
        srv.stop = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.run()
    except (OSError, ValueError, KeyError) as e:
        log.error("cannot serve: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
