"""Pure helpers of emu.observe.verdicts, probe and pmtu (and the agent answers they parse): no sockets, no root."""
from __future__ import annotations

import errno
import json
import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, ICMPerror, IPerror
from scapy.packet import Raw

from emu.cluster.agent import protocol
from emu.observe import pmtu, probe, verdicts


def _ee(err: int, origin: int, type_: int, code: int, info: int, sender: str | None) -> bytes:
    head = struct.pack("=IBBBBII", err, origin, type_, code, 0, info, 0)
    if sender is None:
        return head + struct.pack("=HH4s8x", socket.AF_UNSPEC, 0, b"\0" * 4)
    return head + struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(sender))


# --- sock_extended_err ------------------------------------------------------------------------------------------------


def test_frag_needed_from_a_router() -> None:
    e = verdicts.parse_extended_err(_ee(errno.EMSGSIZE, verdicts.SO_EE_ORIGIN_ICMP, 3, 4, 1450, "10.244.1.0"))
    assert (e.errno, e.type, e.code, e.info, e.sender) == (errno.EMSGSIZE, 3, 4, 1450, "10.244.1.0")
    assert e.verdict == "frag-needed" and not e.local
    assert e.to_icmp() == {"type": 3, "code": 4, "sender": "10.244.1.0", "mtu": 1450}


def test_local_emsgsize_has_no_sender_address() -> None:
    e = verdicts.parse_extended_err(_ee(errno.EMSGSIZE, verdicts.SO_EE_ORIGIN_LOCAL, 0, 0, 1500, None))
    assert e.local and e.sender is None and e.verdict == "frag-needed"
    assert e.to_icmp() == {"type": 3, "code": 4, "sender": "local", "mtu": 1500}


@pytest.mark.parametrize("type_, code, verdict", [(3, 3, "refused"), (3, 2, "refused"), (3, 1, "unreachable"),
                                                  (3, 0, "unreachable"), (3, 13, "unreachable"),
                                                  (11, 0, "unreachable"), (12, 0, "error")])
def test_icmp_errors_map_to_verdicts(type_: int, code: int, verdict: str) -> None:
    e = verdicts.parse_extended_err(_ee(errno.EHOSTUNREACH, verdicts.SO_EE_ORIGIN_ICMP, type_, code, 0, "10.0.0.1"))
    assert e.verdict == verdict and e.to_icmp()["mtu"] is None and e.to_icmp()["sender"] == "10.0.0.1"


def test_a_short_control_message_still_decodes_without_a_sender() -> None:
    e = verdicts.parse_extended_err(struct.pack("=IBBBBII", errno.ECONNREFUSED, 2, 3, 3, 0, 0, 0))
    assert e.sender is None and e.verdict == "refused"


@pytest.mark.parametrize("err, verdict", [(errno.ECONNREFUSED, "refused"), (errno.EHOSTUNREACH, "unreachable"),
                                          (errno.ENETUNREACH, "unreachable"), (errno.EMSGSIZE, "frag-needed"),
                                          (errno.ETIMEDOUT, "timeout"), (errno.EPERM, "error")])
def test_errno_verdicts(err: int, verdict: str) -> None:
    assert verdicts.errno_verdict(err) == verdict


# --- answers ----------------------------------------------------------------------------------------------------------

EP = protocol.Endpoint("ns", "default/web-0", "node-1", "10.244.1.2", ((80, "TCP"), (80, "UDP")))


def test_http_json_answer_round_trip() -> None:
    raw = protocol.tcp_reply(probe.TCP_REQUEST, EP, 80, ("10.244.1.2", 80), ("10.244.2.3", 40000))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in raw
    obj = verdicts.parse_answer(raw)
    assert obj.pop("request")["method"] == "GET"
    assert obj == {"owner": "default/web-0", "node": "node-1", "ip": "10.244.1.2", "local_ip": "10.244.1.2",
                   "port": 80, "protocol": "TCP", "client_ip": "10.244.2.3", "client_port": 40000}
    assert verdicts.who_answered(obj) == "default/web-0"


def test_content_length_matches_the_body() -> None:
    raw = protocol.tcp_reply(b"GET /emu HTTP/1.1\r\nHost: a\r\n\r\n", EP, 80, ("1.1.1.1", 80), ("2.2.2.2", 1))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head


def test_http_answers_show_the_request_as_it_arrived() -> None:
    raw = protocol.tcp_reply(b"GET /a/b?x=1 HTTP/1.1\r\nHost: web.example\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", EP, 80,
                          ("1.1.1.1", 80), ("2.2.2.2", 1))
    req = verdicts.parse_answer(raw)["request"]
    assert req == {"method": "GET", "uri": "/a/b?x=1", "headers": {"host": "web.example", "x-forwarded-for": "1.2.3.4"}}


def test_netexec_paths_and_plain_lines() -> None:
    local, client = ("10.244.1.2", 80), ("10.244.2.3", 5)
    assert protocol.tcp_reply(b"GET /hostname HTTP/1.0\r\n\r\n", EP, 80, local, client).endswith(b"\r\n\r\nweb-0")
    assert protocol.tcp_reply(b"GET /clientip HTTP/1.0\r\n\r\n", EP, 80, local, client).endswith(b"10.244.2.3:5")
    line = protocol.tcp_reply(b"hello\n", EP, 80, local, client)
    assert line.endswith(b"\n") and verdicts.parse_answer(line)["client_port"] == 5  # type: ignore[index]
    assert protocol.tcp_reply(b"HEAD / HTTP/1.0\r\n\r\n", EP, 80, local, client).endswith(b"\r\n\r\n")


def test_udp_answers() -> None:
    local, client = ("10.244.1.2", 80), ("10.244.2.3", 5)
    assert protocol.udp_reply(b"hostname", EP, 80, local, client) == b"web-0"
    assert protocol.udp_reply(b"clientip\n", EP, 80, local, client) == b"10.244.2.3:5"
    obj = verdicts.parse_answer(protocol.udp_reply(b"x" * 4000, EP, 80, local, client))
    assert obj is not None and obj["bytes"] == 4000 and obj["protocol"] == "UDP"


@pytest.mark.parametrize("data", [b"", b"web-0", b"HTTP/1.1 200 OK\r\n\r\nweb-0", b"HTTP/1.1 200 OK\r\n", b"[1, 2]"])
def test_anything_else_is_not_an_agent_answer(data: bytes) -> None:
    assert verdicts.parse_answer(data) is None


def test_when_a_request_is_complete() -> None:
    assert not protocol.request_complete(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert protocol.request_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not protocol.request_complete(b"hello")
    assert protocol.request_complete(b"hello\n")
    assert protocol.request_complete(b"x" * protocol.REQUEST_MAX)


def test_endpoint_parsing_reports_bad_entries_and_port_clashes() -> None:
    good = {"netns": "a", "owner": "d/a", "node": "n", "ip": "1.1.1.1", "ports": [{"port": 80, "protocol": "TCP"}]}
    clash = {**good, "owner": "d/b"}
    odd = {**good, "netns": "b", "ports": [{"port": 1, "protocol": "DCCP"}, {"port": 2, "protocol": "UDP"},
                                           {"port": 3, "protocol": "SCTP"}]}
    wanted, count, errors = protocol.parse_endpoints([good, {"owner": "x"}, clash, odd])
    assert list(wanted) == [("a", "TCP", 80), ("b", "UDP", 2), ("b", "SCTP", 3)]
    assert wanted[("a", "TCP", 80)].owner == "d/a"
    assert count == 3 and len(errors) == 3
    assert "malformed" in errors[0] and "already served" in errors[1] and "1/DCCP" in errors[2]


def test_payloads() -> None:
    assert verdicts.payload(None) == verdicts.UDP_DEFAULT_PAYLOAD not in (b"hostname", b"clientip")
    assert len(verdicts.payload(4000)) == 4000 and verdicts.payload(0) == b""


# --- ICMP dissection --------------------------------------------------------------------------------------------------


def _echo_bytes(ident: int, seq: int) -> bytes:
    return verdicts.echo_request(ident, seq, 56)


def test_echo_request_is_a_valid_icmp_echo() -> None:
    pkt = ICMP(_echo_bytes(0x1234, 7))
    assert (pkt.type, pkt.id, pkt.seq, len(pkt.payload)) == (8, 0x1234, 7, 56)
    assert pkt.chksum == ICMP(bytes(ICMP(type=8, id=0x1234, seq=7) / Raw(verdicts.payload(56)))).chksum


def test_our_echo_reply_and_someone_elses() -> None:
    reply = bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=5, seq=1) / Raw(b"x" * 8))
    assert verdicts.classify_icmp_packet(reply, 5, 1) == {"kind": "reply", "src": "10.0.0.2"}
    assert verdicts.classify_icmp_packet(reply, 5, 2) is None
    assert verdicts.classify_icmp_packet(reply, 6, 1) is None


def _error(type_: int, code: int, ident: int, seq: int, mtu: int = 0) -> bytes:
    quoted = IPerror(src="10.0.0.1", dst="10.0.0.9") / ICMPerror(_echo_bytes(ident, seq)[:8] + b"\0" * 8)
    return bytes(IP(src="10.0.0.254", dst="10.0.0.1") / ICMP(type=type_, code=code, nexthopmtu=mtu) / quoted)


def test_frag_needed_quoting_our_echo() -> None:
    assert verdicts.classify_icmp_packet(_error(3, 4, 9, 3, mtu=1450), 9, 3) == {
        "kind": "error", "type": 3, "code": 4, "sender": "10.0.0.254", "mtu": 1450}


def test_errors_about_other_packets_are_not_ours() -> None:
    assert verdicts.classify_icmp_packet(_error(3, 4, 9, 3, mtu=1450), 9, 4) is None
    assert verdicts.classify_icmp_packet(_error(3, 1, 8, 3), 9, 3) is None


def test_host_unreachable_quoting_our_echo() -> None:
    assert verdicts.classify_icmp_packet(_error(3, 1, 9, 3), 9, 3)["mtu"] is None  # type: ignore[index]
    assert verdicts.quotes_our_echo(_echo_bytes(9, 3)[:8], 9, 3)
    assert not verdicts.quotes_our_echo(b"\x08\x00", 9, 3)


# --- results and the path-MTU search ----------------------------------------------------------------------------------


def _r(verdict: str, icmp: dict | None = None) -> verdicts.ProbeResult:  # type: ignore[type-arg]
    return verdicts.ProbeResult(ok=verdict == "connected", verdict=verdict, proto="icmp", src_netns="a",
                             dst_ip="1.1.1.1", dst_port=None, icmp=icmp)


def test_probe_result_is_frozen_and_serialisable() -> None:
    r = _r("frag-needed", {"type": 3, "code": 4, "sender": "local", "mtu": 1500})
    with pytest.raises(AttributeError):
        r.ok = True  # type: ignore[misc]
    assert json.loads(json.dumps(r.to_dict()))["icmp"]["mtu"] == 1500
    assert not hasattr(r, "__dict__")  # slots


def _run_search(start: int, answer: dict[int, verdicts.ProbeResult], passes_up_to: int = 0) -> pmtu._PmtuSearch:
    """Simulate pmtu(): `answer` for given MTUs, else a reply up to `passes_up_to` and silence above it."""
    s = pmtu._PmtuSearch(start)
    while (mtu := s.next_mtu()) is not None:
        s.record(mtu, answer.get(mtu, _r("connected" if mtu <= passes_up_to else "timeout")))
    return s


def test_search_follows_the_routers_mtu() -> None:
    fn = {"type": 3, "code": 4, "sender": "10.0.0.254", "mtu": 1450}
    s = _run_search(1500, {1500: _r("frag-needed", fn), 1450: _r("connected")})
    assert (s.good, s.limited_by, s.probes) == (1450, "10.0.0.254", [(1472, "frag-needed"), (1422, "connected")])


def test_search_binary_searches_a_black_hole() -> None:
    s = _run_search(1500, {}, passes_up_to=1400)
    assert s.good == 1400 and s.limited_by.startswith("unknown") and len(s.probes) < 14  # type: ignore[union-attr]


def test_search_stops_when_nothing_answers() -> None:
    s = _run_search(1500, {})
    assert s.good is None and s.probes == [(1472, "timeout"), (40, "timeout")]


def test_many_passes_seq_to_icmp_only() -> None:
    seen = []

    def fake(**kw):  # type: ignore[no-untyped-def]
        seen.append(kw)
        return _r("connected")

    assert len(probe.many(fake, 3, netns_name="a")) == 3 and all("seq" not in kw for kw in seen)
