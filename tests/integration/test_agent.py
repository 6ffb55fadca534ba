"""The per-cluster agent on real namespaces: one daemon serving pods in several namespaces, live sync, failures.

    client 10.99.1.2 -- router -- web-0 10.99.2.2 (80/TCP, 80/UDP)
                              \\-- web-1 10.99.3.2 (8080/TCP)

Every namespace a test creates is removed in its fixture's teardown (the agent is stopped first), also on failure.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from emu.cluster.agent import client as agent, server
from emu.apply import netns
from emu.observe import probe
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

CLIENT_IP, WEB0_IP, WEB1_IP = "10.99.1.2", "10.99.2.2", "10.99.3.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Net:
    """Namespaces with unique names; `made` lists exactly those this test created (and must remove)."""

    prefix: str = field(default_factory=lambda: f"emutest-{secrets.token_hex(4)}-")
    made: list[str] = field(default_factory=list)

    def ns(self, short: str) -> str:
        return self.prefix + short

    def create(self, *shorts: str) -> None:
        netns.create_many([self.ns(s) for s in shorts], on_each=self.made.append)

    def remove(self) -> None:
        for name in self.made:
            netns.remove(name)


def _wire(n: Net) -> None:
    n.create("c", "r", "web0", "web1")
    c, r = n.ns("c"), n.ns("r")
    ip("-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", r)
    ip("-n", r, "link", "add", "r1", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", n.ns("web0"))
    ip("-n", r, "link", "add", "r2", "type", "veth", "peer", "name", "eth0", "netns", n.ns("web1"))
    ip("-n", n.ns("web0"), "link", "set", "eth0", "mtu", "1450")
    for ns, dev, cidr in ((c, "c0", f"{CLIENT_IP}/24"), (r, "r0", "10.99.1.1/24"), (r, "r1", "10.99.2.1/24"),
                          (r, "r2", "10.99.3.1/24"), (n.ns("web0"), "eth0", f"{WEB0_IP}/24"),
                          (n.ns("web1"), "eth0", f"{WEB1_IP}/24")):
        ip("-n", ns, "addr", "add", cidr, "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
    for ns, gw in ((c, "10.99.1.1"), (n.ns("web0"), "10.99.2.1"), (n.ns("web1"), "10.99.3.1")):
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", gw)
    subprocess.run(["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    n = Net()
    try:
        _wire(n)
        yield n
    finally:
        n.remove()


def web0(n: Net, ports: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    ports = [(80, "TCP"), (80, "UDP")] if ports is None else ports
    return {"netns": n.ns("web0"), "owner": "default/web-0", "node": "node-1", "ip": WEB0_IP,
            "ports": [{"port": p, "protocol": proto} for p, proto in ports]}


def web1(n: Net, ports: list[tuple[int, str]] | None = None) -> dict[str, Any]:
    ports = [(8080, "TCP")] if ports is None else ports
    return {"netns": n.ns("web1"), "owner": "default/web-1", "node": "node-2", "ip": WEB1_IP,
            "ports": [{"port": p, "protocol": proto} for p, proto in ports]}


def gone(n: Net) -> dict[str, Any]:
    """An endpoint whose namespace does not exist (never created)."""
    return {"netns": n.ns("gone"), "owner": "default/gone", "node": "node-1", "ip": "10.99.9.9",
            "ports": [{"port": 80, "protocol": "TCP"}]}


class Running:
    def __init__(self, d: str, pid: int):
        self.dir, self.pid, self.client = d, pid, agent.AgentClient(d)

    def file(self, name: str) -> str:
        return os.path.join(self.dir, name)


def _write_spec(d: str, endpoints: list[dict[str, Any]]) -> None:
    with open(os.path.join(d, "agent.json"), "w") as f:
        json.dump({"cluster": "t", "endpoints": endpoints}, f)


def _kill(a: Running) -> None:
    if agent.pid_alive(a.pid):
        try:
            a.client.stop(timeout=5)
        except agent.AgentError:
            os.kill(a.pid, signal.SIGKILL)


@pytest.fixture
def running(net: Net, tmp_path) -> Iterator[Running]:  # type: ignore[no-untyped-def]
    d = str(tmp_path)
    _write_spec(d, [web0(net), web1(net), gone(net)])
    a = Running(d, agent.start(d))
    try:
        a.client.wait_ready(timeout=20)
        yield a
    finally:
        _kill(a)


def exchange(ns: str, ip_: str, port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
    """Send `data` over TCP from namespace `ns`; return everything until the server closes, and our address."""
    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((ip_, port))
        s.sendall(data)
        return _read_to_eof(s), s.getsockname()


def _read_to_eof(s: socket.socket) -> bytes:
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    return buf


def udp_ask(ns: str, ip_: str, port: int, data: bytes) -> tuple[bytes, tuple[str, int]]:
    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect((ip_, port))
        s.send(data)
        return s.recv(65535), s.getsockname()


# --- start, readiness, ping -------------------------------------------------------------------------------------------


def test_ready_after_opening_sockets_and_a_missing_namespace_is_only_reported(running: Running, net: Net) -> None:
    with open(running.file("agent.ready")) as f:
        assert int(f.read()) == running.pid
    assert os.path.exists(running.file("agent.sock"))
    pong = running.client.ping()
    assert pong["ok"] and pong["pid"] == running.pid
    assert pong["endpoints"] == 3 and pong["sockets"] == 3  # web-0 TCP+UDP, web-1 TCP; none for the missing one
    with open(running.file("agent.log")) as f:
        log = f.read()
    assert f"netns {net.ns('gone')}: no such namespace" in log


def test_file_descriptor_soft_limit_is_raised_to_the_hard_limit(running: Running) -> None:
    with open(f"/proc/{running.pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard and int(soft) >= 20000


def test_a_second_agent_for_the_same_directory_is_refused(running: Running) -> None:
    with pytest.raises(agent.AgentError, match="already answers"):
        agent.start(running.dir)
    assert running.client.ping()["pid"] == running.pid


def test_wait_ready_reports_a_daemon_that_died_with_its_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "agent.json").write_text("{not json")
    agent.start(str(tmp_path))
    with pytest.raises(RuntimeError, match="exited before it was ready") as e:
        agent.AgentClient(str(tmp_path)).wait_ready(timeout=20)
    assert "cannot start" in str(e.value)  # the tail of agent.log is in the message


# --- TCP behaviour ----------------------------------------------------------------------------------------------------


def test_http_paths_like_netexec(running: Running, net: Net) -> None:
    c = net.ns("c")
    body, me = exchange(c, WEB0_IP, 80, b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, text = body.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
    assert b"Content-Length: 5" in head and text == b"web-0"
    body, me = exchange(c, WEB0_IP, 80, b"GET /clientip HTTP/1.0\r\n\r\n")
    assert body.partition(b"\r\n\r\n")[2].decode() == f"{me[0]}:{me[1]}" and me[0] == CLIENT_IP
    body, me = exchange(c, WEB1_IP, 8080, b"GET /anything?x=1 HTTP/1.0\r\n\r\n")
    head, _, text = body.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head
    obj = json.loads(text)
    assert obj.pop("request") == {"method": "GET", "uri": "/anything?x=1", "headers": {}}
    assert obj == {"owner": "default/web-1", "node": "node-2", "ip": WEB1_IP, "local_ip": WEB1_IP,
                                "port": 8080, "protocol": "TCP", "client_ip": CLIENT_IP, "client_port": me[1]}


def test_a_plain_line_gets_a_json_line(running: Running, net: Net) -> None:
    body, me = exchange(net.ns("c"), WEB0_IP, 80, b"hello\n")
    assert body.endswith(b"\n")
    obj = json.loads(body)
    assert obj["owner"] == "default/web-0" and obj["client_port"] == me[1] and obj["protocol"] == "TCP"


def test_local_ip_is_the_address_the_connection_arrived_on(running: Running, net: Net) -> None:
    body, _ = exchange(net.ns("web0"), "127.0.0.1", 80, b"x\n")  # from inside the pod, over loopback
    obj = json.loads(body)
    assert obj["local_ip"] == "127.0.0.1" and obj["ip"] == WEB0_IP and obj["client_ip"] == "127.0.0.1"


def test_a_slow_client_does_not_block_the_others_and_is_answered_at_the_timeout(running: Running, net: Net) -> None:
    with netns.socket_in(net.ns("c"), socket.AF_INET, socket.SOCK_STREAM) as slow:
        slow.settimeout(server.REQUEST_TIMEOUT + 30)  # bounds the wait only; the answer comes at REQUEST_TIMEOUT
        t0 = time.monotonic()  # before connect, so before the agent starts the connection's clock
        slow.connect((WEB0_IP, 80))
        slow.sendall(b"no newline yet")
        assert probe.tcp(net.ns("c"), WEB1_IP, 8080, timeout=10).ok  # served ...
        assert _nothing_yet(slow)  # ... while `slow` is still pending: one client does not block the others
        body = _read_to_eof(slow)
        # answered once the agent's request timeout ran out, not before (an upper bound would be a speed target)
        assert time.monotonic() - t0 >= server.REQUEST_TIMEOUT
    assert json.loads(body)["owner"] == "default/web-0"


def test_an_idle_connection_is_closed_after_the_timeout(running: Running, net: Net) -> None:
    with netns.socket_in(net.ns("c"), socket.AF_INET, socket.SOCK_STREAM) as idle:
        idle.settimeout(server.REQUEST_TIMEOUT + 30)
        t0 = time.monotonic()
        idle.connect((WEB0_IP, 80))
        assert idle.recv(100) == b""
        assert time.monotonic() - t0 >= server.REQUEST_TIMEOUT  # closed by the timeout, not at once
    assert running.client.ping()["connections"] == 0


def _nothing_yet(s: socket.socket) -> bool:
    """True if nothing (no data, no FIN) has arrived on `s`: a non-blocking read finds the queue empty."""
    timeout = s.gettimeout()
    s.setblocking(False)  # with a timeout set, Python polls for up to that long before it reads
    try:
        s.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        s.settimeout(timeout)
    return False


def test_running_out_of_descriptors_pauses_accepting_then_recovers(running: Running, net: Net) -> None:
    import resource
    fds = len(os.listdir(f"/proc/{running.pid}/fd"))
    old = resource.prlimit(running.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(running.pid, resource.RLIMIT_NOFILE, (fds + 2, old[1]))  # soft only: no CAP_SYS_RESOURCE
    socks = []
    try:
        for _ in range(6):  # more connections than descriptors left: the rest wait in the backlog
            s = netns.socket_in(net.ns("c"), socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect((WEB0_IP, 80))
            socks.append(s)
        wait_until(lambda: "pausing the listener" in _log(running), what="the agent to hit EMFILE and pause")
        # Spinning on EMFILE would burn a whole CPU for as long as the backlog is full; paused, the agent retries
        # every ACCEPT_PAUSE and sleeps in between.  Half a CPU over a second separates the two on any load.
        cpu0, t0 = _cpu_seconds(running.pid), time.monotonic()
        time.sleep(1.0)  # the window the CPU share is measured over (a rate needs one), not a wait for an event
        assert _cpu_seconds(running.pid) - cpu0 < 0.5 * (time.monotonic() - t0)  # paused, not spinning
    finally:
        resource.prlimit(running.pid, resource.RLIMIT_NOFILE, old)
    for s in socks:
        s.sendall(b"x\n")
        assert json.loads(_read_to_eof(s))["owner"] == "default/web-0"
        s.close()


def _log(a: Running) -> str:
    with open(a.file("agent.log")) as f:
        return f.read()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- UDP behaviour ----------------------------------------------------------------------------------------------------


def test_udp_keywords_and_json(running: Running, net: Net) -> None:
    c = net.ns("c")
    assert udp_ask(c, WEB0_IP, 80, b"hostname")[0] == b"web-0"
    data, me = udp_ask(c, WEB0_IP, 80, b"clientip")
    assert data.decode() == f"{CLIENT_IP}:{me[1]}"
    data, me = udp_ask(c, WEB0_IP, 80, b"x" * 3000)  # fragmented on the way (1450 hop), reassembled
    assert json.loads(data) == {"owner": "default/web-0", "node": "node-1", "ip": WEB0_IP, "local_ip": WEB0_IP,
                                "port": 80, "protocol": "UDP", "client_ip": CLIENT_IP, "client_port": me[1],
                                "bytes": 3000}


def test_udp_reply_comes_from_the_address_the_datagram_was_sent_to(running: Running, net: Net) -> None:
    ip("-n", net.ns("web0"), "addr", "add", "10.99.2.3/24", "dev", "eth0")
    try:
        with netns.socket_in(net.ns("c"), socket.AF_INET, socket.SOCK_DGRAM) as s:  # unconnected: any source
            s.settimeout(2)
            s.sendto(b"?", ("10.99.2.3", 80))
            data, src = s.recvfrom(65535)
        assert src == ("10.99.2.3", 80) and json.loads(data)["local_ip"] == "10.99.2.3"
    finally:
        ip("-n", net.ns("web0"), "addr", "del", "10.99.2.3/24", "dev", "eth0")


# --- sync -------------------------------------------------------------------------------------------------------------


def test_sync_opens_and_closes_live_and_leaves_unchanged_sockets_alone(running: Running, net: Net) -> None:
    c = net.ns("c")
    with netns.socket_in(c, socket.AF_INET, socket.SOCK_STREAM) as kept:
        kept.settimeout(5)
        kept.connect((WEB1_IP, 8080))  # established before the sync, request sent after it
        res = running.client.sync([web1(net, [(8080, "TCP"), (53, "UDP")])])  # web-0 goes, web-1 gains 53/UDP
        assert res == {"ok": True, "opened": 1, "closed": 2, "errors": []}
        kept.sendall(b"still there?\n")
        assert json.loads(_read_to_eof(kept))["owner"] == "default/web-1"
    assert probe.tcp(c, WEB0_IP, 80).verdict == "refused"
    assert probe.udp(c, WEB0_IP, 80).verdict == "refused"
    assert probe.udp(c, WEB1_IP, 53).answered_by == "default/web-1"
    assert running.client.sync([web1(net, [(8080, "TCP"), (53, "UDP")])])["opened"] == 0
    assert running.client.ping()["sockets"] == 2
    res = running.client.sync([web0(net), web1(net)])
    assert (res["opened"], res["closed"]) == (2, 1)
    assert probe.tcp(c, WEB0_IP, 80).answered_by == "default/web-0"


def test_sync_updates_who_answers_without_reopening(running: Running, net: Net) -> None:
    moved = {**web0(net), "owner": "other/web-0b", "node": "node-9"}
    res = running.client.sync([moved, web1(net)])
    assert (res["opened"], res["closed"]) == (0, 0)
    assert probe.tcp(net.ns("c"), WEB0_IP, 80).answered_by == "other/web-0b"


def test_sync_reports_missing_namespaces_and_bind_failures_and_the_agent_survives(running: Running, net: Net) -> None:
    with netns.socket_in(net.ns("web1"), socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("0.0.0.0", 9999))  # the agent cannot bind 9999/UDP in web-1
        res = running.client.sync([web0(net), web1(net, [(8080, "TCP"), (9999, "UDP")]), gone(net)])
    assert res["ok"] and res["opened"] == 0 and res["closed"] == 0
    assert any("no such namespace" in e and net.ns("gone") in e for e in res["errors"])
    assert any("UDP port 9999" in e and "in use" in e for e in res["errors"])
    assert running.client.ping()["ok"]
    assert probe.tcp(net.ns("c"), WEB0_IP, 80).ok


def test_a_namespace_removed_and_recreated_gets_fresh_sockets(running: Running, net: Net) -> None:
    extra = Net(prefix=net.prefix + "x-")
    try:
        extra.create("p")
        ep = {"netns": extra.ns("p"), "owner": "default/p", "node": "n", "ip": "127.0.0.1",
              "ports": [{"port": 7, "protocol": "TCP"}]}
        assert running.client.sync([web0(net), web1(net), ep])["opened"] == 1
        assert probe.tcp(extra.ns("p"), "127.0.0.1", 7).verdict == "unreachable"  # lo is still down
        netns.remove(extra.ns("p"))
        res = running.client.sync([web0(net), web1(net), ep])
        assert res["closed"] == 1 and any("no such namespace" in e for e in res["errors"])
        extra.create("p")
        ip("-n", extra.ns("p"), "link", "set", "lo", "up")
        res = running.client.sync([web0(net), web1(net), ep])
        assert (res["opened"], res["errors"]) == (1, [])
        assert probe.tcp(extra.ns("p"), "127.0.0.1", 7).answered_by == "default/p"
    finally:
        extra.remove()  # idempotent: the name may be listed twice


def test_bad_control_requests_get_an_error_line(running: Running) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(running.file("agent.sock"))
        s.sendall(b'not json\n{"op":"dance"}\n{"op":"sync"}\n{"op":"ping"}\n')
        lines = b""
        while lines.count(b"\n") < 4:
            lines += s.recv(65536)
    replies = [json.loads(x) for x in lines.splitlines()]
    assert [r["ok"] for r in replies] == [False, False, False, True]


# --- stop -------------------------------------------------------------------------------------------------------------


def test_stop_replies_exits_and_removes_its_files(running: Running) -> None:
    res = running.client.stop()
    assert res == {"ok": True, "pid": running.pid}
    assert not agent.pid_alive(running.pid)
    assert not os.path.exists(running.file("agent.sock"))
    assert not os.path.exists(running.file("agent.ready"))


def test_sigterm_closes_everything_and_removes_its_files(running: Running, net: Net) -> None:
    os.kill(running.pid, signal.SIGTERM)
    wait_until(lambda: not agent.pid_alive(running.pid), what=f"the agent (pid {running.pid}) to exit on SIGTERM")
    assert not os.path.exists(running.file("agent.sock")) and not os.path.exists(running.file("agent.ready"))
    assert probe.tcp(net.ns("c"), WEB0_IP, 80).verdict == "refused"


# --- scale ------------------------------------------------------------------------------------------------------------


def test_4000_sockets_in_200_namespaces_are_served_and_resynced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The agent's memory at this size is a benchmark figure (tools/bench/bringup.py prints `agent MB`), not a test's
    target: here, every socket is open, answers as its pod, and a resync closes exactly the removed pods' ones."""
    n = Net()
    a = None
    try:
        n.create(*(f"p{i}" for i in range(200)))
        ports = [(8000 + k, proto) for k in range(10) for proto in ("TCP", "UDP")]
        eps = [{"netns": n.ns(f"p{i}"), "owner": f"default/p{i}", "node": "n", "ip": "127.0.0.1",
                "ports": [{"port": p, "protocol": proto} for p, proto in ports]} for i in range(200)]
        _write_spec(str(tmp_path), eps)
        a = Running(str(tmp_path), agent.start(str(tmp_path)))
        pong = a.client.wait_ready(timeout=60)
        assert pong["sockets"] == 4000 and pong["endpoints"] == 200
        ip("-n", n.ns("p7"), "link", "set", "lo", "up")
        assert probe.udp(n.ns("p7"), "127.0.0.1", 8009).answered_by == "default/p7"
        assert probe.tcp(n.ns("p7"), "127.0.0.1", 8003).answered_by == "default/p7"
        assert a.client.sync(eps[:100])["closed"] == 2000
    finally:
        if a is not None:
            _kill(a)
        n.remove()
