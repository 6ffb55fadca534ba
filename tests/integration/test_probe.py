"""Real-packet probes across a small routed topology of throw-away namespaces:

    client 10.99.1.2 --c0/r0 (MTU 1500)-- router --r1/s0 (MTU 1450)-- server 10.99.2.2   (agent: web-0, 80/TCP+UDP)

Nothing here touches the root namespace: every link is created inside the test namespaces, and every namespace a
test created is removed in the fixture's teardown, also when the test fails.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from emu.cluster.agent import client as agent
from emu.apply import netns
from emu.observe import pmtu, probe, verdicts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

CLIENT_IP, ROUTER_IP, ROUTER_FAR_IP, SERVER_IP = "10.99.1.2", "10.99.1.1", "10.99.2.1", "10.99.2.2"
NO_ROUTE_IP, NO_HOST_IP = "10.99.77.1", "10.99.2.99"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Routed:
    """client -- router -- server, each a namespace with a unique name; remove() deletes only what it made."""

    def __init__(self) -> None:
        prefix = f"emutest-{secrets.token_hex(4)}-"
        self.client, self.router, self.server = prefix + "c", prefix + "r", prefix + "s"
        self.made: list[str] = []

    def build(self) -> Routed:
        netns.create_many([self.client, self.router, self.server], on_each=self.made.append)
        ip("-n", self.client, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", self.router)
        ip("-n", self.router, "link", "add", "r1", "mtu", "1450", "type", "veth", "peer", "name", "s0", "netns",
           self.server)
        ip("-n", self.server, "link", "set", "s0", "mtu", "1450")
        for ns, dev, cidr in ((self.client, "c0", f"{CLIENT_IP}/24"), (self.router, "r0", f"{ROUTER_IP}/24"),
                              (self.router, "r1", f"{ROUTER_FAR_IP}/24"), (self.server, "s0", f"{SERVER_IP}/24")):
            ip("-n", ns, "addr", "add", cidr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        for ns in self.made:
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.client, "route", "add", "default", "via", ROUTER_IP)
        ip("-n", self.server, "route", "add", "default", "via", ROUTER_FAR_IP)
        subprocess.run(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        return self

    def remove(self) -> None:
        for name in self.made:
            netns.remove(name)


@pytest.fixture
def fresh() -> Iterator[Routed]:
    """A new topology per test: the kernel's learned path MTU must not leak between MTU tests."""
    t = Routed()
    try:
        yield t.build()
    finally:
        t.remove()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    """One topology for the module, with the agent serving web-0 on the server."""
    t = Routed()
    d = str(tmp_path_factory.mktemp("agent"))
    pid = None
    try:
        t.build()
        spec = {"cluster": "t", "endpoints": [{"netns": t.server, "owner": "default/web-0", "node": "node-1",
                                               "ip": SERVER_IP, "ports": [{"port": 80, "protocol": "TCP"},
                                                                          {"port": 80, "protocol": "UDP"}]}]}
        with open(os.path.join(d, "agent.json"), "w") as f:
            json.dump(spec, f)
        pid = agent.start(d)
        agent.AgentClient(d).wait_ready(timeout=20)
        yield t
    finally:
        _stop_agent(d, pid)
        t.remove()


def _stop_agent(d: str, pid: int | None) -> None:
    if pid is None:
        return
    try:
        agent.AgentClient(d).stop(timeout=5)
    except agent.AgentError:
        if agent.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- TCP --------------------------------------------------------------------------------------------------------------


def test_tcp_answer_names_the_owner_and_the_client_ip_it_saw(net: Routed) -> None:
    r = probe.tcp(net.client, SERVER_IP, 80)
    assert r.ok and r.verdict == "connected"
    assert r.answered_by == "default/web-0"
    assert r.client_ip_seen == CLIENT_IP  # routed, no NAT
    assert r.rtt_ms is not None and r.rtt_ms > 0
    assert r.proto == "tcp" and r.dst_port == 80 and r.src_netns == net.client
    d = r.to_dict()
    assert d["verdict"] == "connected" and d["icmp"] is None


def test_tcp_closed_port_is_refused_by_rst(net: Routed) -> None:
    r = probe.tcp(net.client, SERVER_IP, 81, timeout=5.0)
    assert not r.ok and r.verdict == "refused" and r.icmp is None
    # The RST's round trip, not the timeout: an empty error queue must not make the probe wait for it (CPython
    # retries a MSG_DONTWAIT read on a socket with a timeout until the timeout).
    assert r.rtt_ms is not None and r.rtt_ms < 2500


def test_tcp_without_route_is_unreachable_and_names_the_router(net: Routed) -> None:
    r = probe.tcp(net.client, NO_ROUTE_IP, 80)
    assert r.verdict == "unreachable"
    assert r.icmp == {"type": 3, "code": 0, "sender": ROUTER_IP, "mtu": None}


def test_tcp_to_a_silent_address_times_out(net: Routed) -> None:
    r = probe.tcp(net.client, NO_HOST_IP, 80, timeout=0.3)
    assert r.verdict == "timeout" and not r.ok


# --- UDP --------------------------------------------------------------------------------------------------------------


def test_udp_answer(net: Routed) -> None:
    r = probe.udp(net.client, SERVER_IP, 80)
    assert r.ok and r.answered_by == "default/web-0" and r.client_ip_seen == CLIENT_IP
    assert r.bytes_answered == r.bytes_sent == len(verdicts.UDP_DEFAULT_PAYLOAD)


def test_udp_4000_bytes_without_df_arrive_whole_across_a_1450_hop(net: Routed) -> None:
    r = probe.udp(net.client, SERVER_IP, 80, size=4000)
    assert r.ok and r.bytes_sent == 4000 and r.bytes_answered == 4000


def test_udp_closed_port_is_refused_by_icmp_port_unreachable(net: Routed) -> None:
    r = probe.udp(net.client, SERVER_IP, 81)
    assert r.verdict == "refused"
    assert r.icmp == {"type": 3, "code": 3, "sender": SERVER_IP, "mtu": None}


def test_udp_df_larger_than_the_interface_fails_locally(net: Routed) -> None:
    r = probe.udp(net.client, SERVER_IP, 80, size=2000, df=True)
    assert r.verdict == "frag-needed"
    assert r.icmp is not None and r.icmp["sender"] == "local" and r.icmp["mtu"] == 1500


def test_udp_df_too_big_for_the_router_names_it_then_the_kernel_remembers(fresh: Routed) -> None:
    first = probe.udp(fresh.client, SERVER_IP, 80, size=1472, df=True)
    assert first.verdict == "frag-needed"
    assert first.icmp == {"type": 3, "code": 4, "sender": ROUTER_IP, "mtu": 1450}
    again = probe.udp(fresh.client, SERVER_IP, 80, size=1472, df=True)  # the learned path MTU now applies locally
    assert again.verdict == "frag-needed" and again.icmp is not None
    assert again.icmp["sender"] == "local" and again.icmp["mtu"] == 1450


# --- ICMP -------------------------------------------------------------------------------------------------------------


def test_icmp_echo(net: Routed) -> None:
    r = probe.icmp(net.client, SERVER_IP)
    assert r.ok and r.answered_by == SERVER_IP and r.rtt_ms is not None
    assert r.dst_port is None and r.proto == "icmp" and r.bytes_sent == 56


def test_icmp_4000_bytes_without_df_are_fragmented_and_answered(net: Routed) -> None:
    assert probe.icmp(net.client, SERVER_IP, size=4000).ok


def test_icmp_without_route_is_unreachable(net: Routed) -> None:
    r = probe.icmp(net.client, NO_ROUTE_IP)
    assert r.verdict == "unreachable"
    assert r.icmp == {"type": 3, "code": 0, "sender": ROUTER_IP, "mtu": None}


def test_icmp_to_a_silent_address_times_out(net: Routed) -> None:
    assert probe.icmp(net.client, NO_HOST_IP, timeout=0.3).verdict == "timeout"


def test_icmp_df_over_a_smaller_router_link_gets_frag_needed_from_the_router(fresh: Routed) -> None:
    r = probe.icmp(fresh.client, SERVER_IP, size=1423, df=True)
    assert r.verdict == "frag-needed" and not r.ok
    assert r.icmp == {"type": 3, "code": 4, "sender": ROUTER_IP, "mtu": 1450}
    assert probe.icmp(fresh.client, SERVER_IP, size=1422, df=True).ok  # 1422 + 28 = 1450 fits
    cached = probe.icmp(fresh.client, SERVER_IP, size=1423, df=True)  # like ping -M do: a local error now
    assert cached.verdict == "frag-needed" and cached.icmp is not None
    assert cached.icmp["sender"] == "local" and cached.icmp["mtu"] == 1450


def test_icmp_df_larger_than_the_interface_is_a_local_emsgsize(fresh: Routed) -> None:
    r = probe.icmp(fresh.client, SERVER_IP, size=1473, df=True)
    assert r.verdict == "frag-needed"
    assert r.icmp is not None and r.icmp["sender"] == "local" and r.icmp["mtu"] == 1500


def test_many_and_parallel_icmp_probes_keep_their_own_replies(net: Routed) -> None:
    rs = probe.many(probe.icmp, 3, netns_name=net.client, ip=SERVER_IP)
    assert [r.ok for r in rs] == [True] * 3
    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(lambda i: probe.icmp(net.client, SERVER_IP, seq=i), range(32)))
    assert all(r.ok for r in results)
    assert probe.many(probe.tcp, 2, netns_name=net.client, ip=SERVER_IP, port=80)[1].answered_by == "default/web-0"


# --- path MTU ---------------------------------------------------------------------------------------------------------


def test_pmtu_names_the_router_and_keeps_naming_it_once_the_kernel_learned_it(fresh: Routed) -> None:
    res = pmtu.pmtu(fresh.client, SERVER_IP)
    assert res["path_mtu"] == 1450 and res["limited_by"] == ROUTER_IP
    assert res["reported_mtu"] == 1500 and res["interface_mtu"] == 1500
    assert res["probes"][0] == (1472, "frag-needed") and res["probes"][-1] == (1422, "connected")
    again = pmtu.pmtu(fresh.client, SERVER_IP)
    assert again["reported_mtu"] == 1450  # IP_MTU now includes the learned path MTU ...
    assert again["path_mtu"] == 1450 and again["limited_by"] == ROUTER_IP  # ... which does not hide the router


def test_pmtu_limited_by_the_senders_own_interface(fresh: Routed) -> None:
    res = pmtu.pmtu(fresh.server, CLIENT_IP)
    assert res == {**res, "path_mtu": 1450, "limited_by": "local", "probes": [(1422, "connected")]}


def test_pmtu_black_hole_is_found_by_binary_search(fresh: Routed) -> None:
    drop = ["ip", "netns", "exec", fresh.router, "iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type",
            "fragmentation-needed", "-j", "DROP"]
    if subprocess.run(drop, capture_output=True).returncode != 0:
        pytest.skip("iptables does not work inside a namespace here")
    res = pmtu.pmtu(fresh.client, SERVER_IP, timeout=0.3)
    assert res["path_mtu"] == 1450 and res["limited_by"].startswith("unknown")
    assert ("timeout" in {v for _, v in res["probes"]}) and len(res["probes"]) <= 16


def test_pmtu_of_an_unreachable_destination(net: Routed) -> None:
    res = pmtu.pmtu(net.client, NO_ROUTE_IP, timeout=0.3)
    assert res["path_mtu"] is None and not res["ok"] and res["verdict"] == "unreachable"
