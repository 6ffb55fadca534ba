"""CoreDNS's log lines, as `kubectl logs -n kube-system -l k8s-app=kube-dns` shows them: the start-up banner, the
`log` plugin's query lines (its common log format) and the `errors` plugin's lines.  Pure formatting; the DNS server
writes one file per coredns pod."""
from __future__ import annotations

import hashlib
import os
import struct

from emu.addons.dns import wire

VERSION = "CoreDNS-1.11.1"  # the addon's image, registry.k8s.io/coredns/coredns:v1.11.1
BUILD = "linux/amd64, go1.20.7, ae2bbc2"  # what that release prints under its version
# plugin/pkg/replacer: CommonLogFormat
COMMON_LOG_FORMAT = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} '
                     '{>rflags} {rsize} {duration}')
_FLAGS = ((15, "qr"), (10, "aa"), (9, "tc"), (8, "rd"), (7, "ra"), (6, "z"), (5, "ad"), (4, "cd"))


def log_path(dns_dir: str, pod_key: str) -> str:
    """The file holding what the coredns pod `pod_key` printed (the DNS server writes it, emu logs reads it)."""
    return os.path.join(dns_dir, "pods", pod_key.split("/", 1)[1] + ".log")


def digest(corefile: str) -> str:
    """The reload plugin's `Running configuration SHA512`.  CoreDNS hashes the JSON of caddy's parsed server blocks;
    emu hashes the Corefile's text, so the value changes exactly when the configuration does but is not the one a
    real CoreDNS prints for the same Corefile."""
    return hashlib.sha512(corefile.encode()).hexdigest()


def banner(corefile: str, servers: list[str], plugins: list[str]) -> list[str]:
    """What a CoreDNS pod prints when it starts: its server blocks, the reload plugin's digest, the version."""
    out = list(servers)
    if "reload" in plugins:
        out.append(f"[INFO] plugin/reload: Running configuration SHA512 = {digest(corefile)}")
    return out + [VERSION, BUILD]


def reloaded(corefile: str) -> list[str]:
    """The reload plugin's lines when the Corefile changed (the ConfigMap was applied again)."""
    return ["[INFO] Reloading", f"[INFO] plugin/reload: Running configuration SHA512 = {digest(corefile)}",
            "[INFO] Reloading complete"]


def _duration(seconds: float) -> str:
    """Go's strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" at nanosecond resolution."""
    text = f"{round(seconds, 9):.9f}".rstrip("0").rstrip(".")
    return (text or "0") + "s"


def _rflags(reply: bytes) -> str:
    flags = struct.unpack("!H", reply[2:4])[0] if len(reply) >= 4 else 0
    return ",".join(name for bit, name in _FLAGS if flags & (1 << bit))


def query_line(remote: str, port: int, proto: str, request: bytes, query: wire.Message, reply: bytes,
               seconds: float) -> str:
    """One `log` plugin line: `[INFO] 10.244.1.3:41025 - 7168 "A IN my-service.default.svc.cluster.local. udp 54
    false 512" NOERROR qr,aa,rd 106 0.000137s` (bufsize 512 and do false without EDNS0)."""
    name, qtype = query.question[0] if query.question else (".", "A")
    size, do = query.edns if query.edns else (512, False)
    rcode = wire.RCODES.get(reply[3] & 0xF, str(reply[3] & 0xF)) if len(reply) >= 4 else "-"
    return (f'[INFO] {remote}:{port} - {query.id} "{qtype} IN {name} {proto} {len(request)} {str(do).lower()} '
            f'{size}" {rcode} {_rflags(reply)} {len(reply)} {_duration(seconds)}')


def error_line(rcode: int, name: str, qtype: str, err: str) -> str:
    """The errors plugin: `[ERROR] plugin/errors: 2 example.com. A: read udp 10.244.0.3:36452->172.18.0.1:53: i/o
    timeout` (the rcode a plugin returned, then the error)."""
    return f"[ERROR] plugin/errors: {rcode} {name} {qtype}: {err}"
