"""The kernel lane's kernel has, for real, what this host's lacks: each test uses one feature between network
namespaces it creates (and always removes). On a kernel without the feature a test is skipped, naming it; run them
with tools/kernel-lane/run-tests.

Addresses are from the documentation ranges (RFC 5737) and exist only inside the test namespaces.
"""
from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import Counter
from socket import IPPROTO_TCP

import pytest

from tests.waiting import wait_until

from emu.apply import netns
from emu.apply.kernel import IPPROTO_SCTP

from .conftest import in_ns, ip, link_json, veth

pytestmark = pytest.mark.integration


def ping(ns: str, addr: str, count: int = 3) -> dict[str, float]:
    """ping from NS; returns {"loss": percent, "min"/"avg"/"max": ms}."""
    r = in_ns(ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "5", addr, check=False)
    loss = re.search(r"([\d.]+)% packet loss", r.stdout)
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", r.stdout)
    out = {"loss": float(loss.group(1)) if loss else 100.0}
    if rtt:
        out.update(min=float(rtt.group(1)), avg=float(rtt.group(2)), max=float(rtt.group(3)))
    return out


def test_veth_tcp_baseline(namespaces):
    """No special feature: TCP round trips over a veth between two namespaces (runs anywhere; the lane's slowdown is
    measured with it, see tools/kernel-lane/README.md)."""
    a, b = namespaces("a", "b")
    veth(a, "va", "198.51.100.1/24", b, "vb", "198.51.100.2/24")
    srv = netns.socket_in(b, socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("198.51.100.2", 8080))
    srv.listen(16)
    n = 20

    def serve() -> None:
        for _ in range(n):
            c, _ = srv.accept()
            with c:
                c.sendall(c.recv(64).upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        for i in range(n):
            with netns.socket_in(a, socket.AF_INET, socket.SOCK_STREAM) as c:
                c.settimeout(10)
                c.connect(("198.51.100.2", 8080))
                c.sendall(b"hello %d" % i)
                assert c.recv(64) == b"HELLO %d" % i
        t.join(10)
    finally:
        srv.close()


@pytest.mark.kernel("dummy")
def test_dummy_link(namespaces):
    """A dummy device (IPVS mode's kube-ipvs0 is one) holds an address the namespace answers on."""
    (a,) = namespaces("a")
    ip(a, "link", "add", "d0", "type", "dummy")
    ip(a, "addr", "add", "203.0.113.10/32", "dev", "d0")
    ip(a, "link", "set", "d0", "up")
    assert link_json(a, "d0")["linkinfo"]["info_kind"] == "dummy"
    assert ping(a, "203.0.113.10", count=1)["loss"] == 0


@pytest.mark.parametrize("kind", [pytest.param("ipip", marks=pytest.mark.kernel("ipip")),
                                  pytest.param("gre", marks=pytest.mark.kernel("gre"))])
def test_tunnel_between_namespaces(namespaces, kind):
    """An IPIP (Calico's) or GRE tunnel across a veth: ping through it, and its counters show the packets."""
    a, b = namespaces("a", "b")
    veth(a, "va", "198.51.100.1/24", b, "vb", "198.51.100.2/24")
    for ns, local, remote, inner in ((a, "198.51.100.1", "198.51.100.2", "203.0.113.1/24"),
                                     (b, "198.51.100.2", "198.51.100.1", "203.0.113.2/24")):
        ip(ns, "link", "add", "t0", "type", kind, "local", local, "remote", remote)
        ip(ns, "addr", "add", inner, "dev", "t0")
        ip(ns, "link", "set", "t0", "up")
    assert link_json(a, "t0")["linkinfo"]["info_kind"] == kind
    r = ping(a, "203.0.113.2")
    assert r["loss"] == 0, r
    assert link_json(a, "t0")["stats64"]["tx"]["packets"] >= 3
    assert link_json(b, "t0")["stats64"]["rx"]["packets"] >= 3


@pytest.mark.kernel("netem")
def test_netem_delay(namespaces):
    """A netem qdisc delays every packet leaving va: ping's round trip grows by at least the delay."""
    a, b = namespaces("a", "b")
    veth(a, "va", "198.51.100.1/24", b, "vb", "198.51.100.2/24")
    before = ping(a, "198.51.100.2")
    assert before["loss"] == 0, before
    in_ns(a, "tc", "qdisc", "add", "dev", "va", "root", "netem", "delay", "200ms")
    after = ping(a, "198.51.100.2")
    assert after["loss"] == 0, after
    assert after["min"] >= 195, (before, after)
    assert after["min"] - before["min"] >= 150, (before, after)


@pytest.mark.kernel("sctp")
def test_sctp_exchange(namespaces):
    """An SCTP association between two namespaces carries data both ways."""
    a, b = namespaces("a", "b")
    veth(a, "va", "198.51.100.1/24", b, "vb", "198.51.100.2/24")
    srv = netns.socket_in(b, socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    cli = netns.socket_in(a, socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    with srv, cli:
        srv.bind(("198.51.100.2", 9999))
        srv.listen(1)
        srv.settimeout(20)
        cli.settimeout(20)
        cli.connect(("198.51.100.2", 9999))
        conn, peer = srv.accept()
        with conn:
            assert peer[0] == "198.51.100.1"
            cli.sendall(b"ping over sctp")
            assert conn.recv(100) == b"ping over sctp"
            conn.sendall(b"pong")
            assert cli.recv(100) == b"pong"


# --- IPVS -----------------------------------------------------------------------------------------------------------

VIP = "203.0.113.10"
REAL = {"r1": "192.0.2.2", "r2": "192.0.2.6"}


def _ipvs_conn_dests(ns: str) -> Counter[str]:
    """Real-server addresses of the TCP entries in NS's IPVS connection table (/proc/net/ip_vs_conn)."""
    out: Counter[str] = Counter()
    for line in in_ns(ns, "cat", "/proc/net/ip_vs_conn").stdout.splitlines()[1:]:
        f = line.split()
        if len(f) >= 7 and f[0] == "TCP":
            out[socket.inet_ntoa(bytes.fromhex(f[5]))] += 1
    return out


@pytest.mark.kernel("ip_vs", "dummy")
def test_ipvs_spreads_connections(namespaces):
    """kube-proxy's IPVS mode in miniature: a director namespace holds the VIP on a dummy device and an IPVS
    virtual server (round robin, NAT) programmed with pyroute2's IPVS API; two real servers in their own namespaces
    each serve half of the client's connections, as their own counts and the connection table both show."""
    from pyroute2 import IPVS, IPVSDest, IPVSService

    client, director, r1, r2 = namespaces("client", "director", "r1", "r2")
    veth(client, "eth0", "198.51.100.2/24", director, "to-client", "198.51.100.1/24")
    ip(client, "route", "add", "203.0.113.0/24", "via", "198.51.100.1")
    for ns, dev, gw in ((r1, "to-r1", "192.0.2.1"), (r2, "to-r2", "192.0.2.5")):
        role = ns.rsplit("-", 1)[1]
        veth(director, dev, f"{gw}/30", ns, "eth0", f"{REAL[role]}/30")
        ip(ns, "route", "add", "default", "via", gw)
    in_ns(director, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    ip(director, "link", "add", "kube-ipvs0", "type", "dummy")
    ip(director, "addr", "add", f"{VIP}/32", "dev", "kube-ipvs0")

    served: Counter[str] = Counter()
    servers = {}
    for ns in (r1, r2):
        role = ns.rsplit("-", 1)[1]
        s = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        s.bind((REAL[role], 8080))
        s.listen(16)
        s.settimeout(30)
        servers[role] = s

    def serve(role: str, s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with c:
                served[role] += 1
                c.sendall(role.encode())

    threads = [threading.Thread(target=serve, args=kv, daemon=True) for kv in servers.items()]
    for t in threads:
        t.start()

    svc = IPVSService(addr=VIP, port=80, protocol=IPPROTO_TCP, sched_name="rr")

    def program() -> list:
        with IPVS() as ipvs:
            ipvs.service("add", service=svc)
            for addr in REAL.values():
                ipvs.dest("add", service=svc, dest=IPVSDest(addr=addr, port=8080, fwd_method=0))  # 0: masquerade
            return [IPVSDest.from_message(d) for d in ipvs.dest("dump", service=svc)]

    try:
        dests = netns.run_in(director, program)
        assert sorted(d["addr"] for d in dests) == sorted(REAL.values())
        answers: Counter[str] = Counter()
        n = 10
        for _ in range(n):
            with netns.socket_in(client, socket.AF_INET, socket.SOCK_STREAM) as c:
                c.settimeout(20)
                c.connect((VIP, 80))
                answers[c.recv(16).decode()] += 1
        wait_until(lambda: sum(served.values()) >= n, what="the real servers to count every connection")
        assert answers == {"r1": n // 2, "r2": n // 2}, answers
        assert served == answers
        assert _ipvs_conn_dests(director) == {REAL["r1"]: n // 2, REAL["r2"]: n // 2}
    finally:
        for s in servers.values():
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            s.close()
