"""CoreDNS's log lines (emu.addons.dns.corelog): the log plugin's common log format, the errors plugin, the banner.

Where the expectations come from: emu's own, written from coredns/coredns plugin/pkg/replacer (CommonLogFormat:
`{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize}
{duration}`), plugin/errors (`plugin/errors: <rcode> <name> <type>: <err>`) and the start-up banner of the
registry.k8s.io/coredns/coredns:v1.11.1 image emu pins (emu.addons.dns.corelog.VERSION, BUILD); not captured from a
running CoreDNS.  The durations follow Go's strconv.FormatFloat(d.Seconds(), 'f', -1, 64).  The reload digest is emu's
and documented as differing from CoreDNS's (emu.addons.dns.corelog.digest).
"""
from __future__ import annotations

import struct

import pytest

from emu.addons.dns import corelog, wire


def edns_query(name: str, size: int, do: bool) -> bytes:
    """A query with an OPT record (RFC 6891): CLASS = UDP payload size, TTL bit 15 = DO."""
    head = bytearray(wire.query(name, "A", mid=7168))
    head[10:12] = struct.pack("!H", 1)  # ARCOUNT
    return bytes(head) + b"\x00" + struct.pack("!HHIH", 41, size, 0x8000 if do else 0, 0)


def answer(q: wire.Message, aa: bool, rcode: int = 0) -> bytes:
    return wire.encode(wire.Message(id=q.id, qr=True, aa=aa, rd=True, ra=not aa, rcode=rcode,
                                    question=list(q.question),
                                    answer=[wire.RR(q.question[0][0], "A", 5, "10.96.12.7")] if not rcode else []))


def test_query_line_without_edns_is_bufsize_512_do_false():
    data = wire.query("my-service.default.svc.cluster.local", mid=7168)
    q = wire.decode(data)
    reply = answer(q, aa=True)
    line = corelog.query_line("10.244.1.3", 41025, "udp", data, q, reply, 0.000137)
    assert line == ('[INFO] 10.244.1.3:41025 - 7168 "A IN my-service.default.svc.cluster.local. udp 54 false 512" '
                    f'NOERROR qr,aa,rd {len(reply)} 0.000137s')


def test_query_line_reads_the_opt_record_and_the_reply_flags():
    data = edns_query("example.com", 1232, True)
    q = wire.decode(data)
    assert q.edns == (1232, True)
    reply = answer(q, aa=False, rcode=3)
    line = corelog.query_line("10.244.0.9", 5353, "tcp", data, q, reply, 2.5)
    assert line == (f'[INFO] 10.244.0.9:5353 - 7168 "A IN example.com. tcp {len(data)} true 1232" NXDOMAIN qr,rd,ra '
                    f'{len(reply)} 2.5s')


@pytest.mark.parametrize("seconds,text", [(0.000137, "0.000137s"), (1.0, "1s"), (0.0, "0s"),
                                          (0.0000000004, "0s"), (2.003887613, "2.003887613s")])
def test_durations_as_go_formats_seconds(seconds, text):
    assert corelog._duration(seconds) == text


def test_errors_plugin_line():
    assert corelog.error_line(2, "example.com.", "A", "read udp 10.244.0.3:36452->172.18.0.2:53: i/o timeout") == \
        "[ERROR] plugin/errors: 2 example.com. A: read udp 10.244.0.3:36452->172.18.0.2:53: i/o timeout"


def test_banner_has_the_reload_digest_only_with_the_reload_plugin():
    text = ".:53 {\n    errors\n    reload\n}\n"
    b = corelog.banner(text, [".:53"], ["errors", "reload"])
    assert b[0] == ".:53" and b[-2:] == ["CoreDNS-1.11.1", "linux/amd64, go1.20.7, ae2bbc2"]
    assert b[1] == f"[INFO] plugin/reload: Running configuration SHA512 = {corelog.digest(text)}"
    assert len(corelog.digest(text)) == 128
    assert corelog.banner(text, [".:53"], ["errors"]) == [".:53", "CoreDNS-1.11.1", "linux/amd64, go1.20.7, ae2bbc2"]
    assert corelog.reloaded(text)[0] == "[INFO] Reloading" and corelog.reloaded(text)[-1] == "[INFO] Reloading complete"
