"""What the agent and its clients agree on: the files in the agent's directory, and the answer every pod gives.

Each pod answers like agnhost netexec (test/images/agnhost/netexec/netexec.go): who answered (owner, node, endpoint
IP), the address the request arrived on, and the client address the server saw, which is what a CNI test wants to
know about NAT, routing and fragmentation.  A stream (TCP, SCTP) request that starts with an HTTP request line gets an
HTTP response (`/hostname` and `/clientip` as netexec serves them, anything else the JSON object); any other request
gets the JSON object on one line.  A UDP datagram `hostname` or `clientip` gets netexec's UDP answer, anything else the
JSON object with the datagram's size.

Files in DIR: agent.json (the desired endpoints), agent.sock (control: one JSON object per line, one JSON reply per
line), agent.ready (our pid, written once the initial sockets are open), agent.pid (written by `start`), agent.log.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SPEC_FILE, SOCK_FILE, READY_FILE, PID_FILE, LOG_FILE = "agent.json", "agent.sock", "agent.ready", "agent.pid", \
    "agent.log"
REQUEST_MAX = 4096  # bytes of a TCP request we read before answering anyway
HTTP_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/\d\.\d\r?$")
CONTROL_LINE_MAX = 64 << 20  # a sync of thousands of endpoints is a few MB


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


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
