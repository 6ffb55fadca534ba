"""The agent's sockets: listeners created inside a pod's namespace, their connections, and the few system calls
around them (IP_PKTINFO for the address a datagram arrived on, RLIMIT_NOFILE for thousands of them).

A socket keeps the namespace it was created in, so `create_in_ns` creates a namespace's sockets from a thread that
has entered it (`netns.run_in`: setns changes only the calling thread) and the one selector loop serves them all.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from emu.apply import netns
from emu.cluster.agent.protocol import Endpoint, ListenerKey

log = logging.getLogger("emu.cluster.agent")

WANTED_NOFILE = 1 << 16
BACKLOG = 128
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


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


def create_in_ns(name: str, protos: list[str]) -> tuple[list[socket.socket | OSError], int]:
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


def bind(sock: socket.socket, proto: str, port: int) -> None:
    sock.setblocking(False)
    if proto in STREAM_PROTOCOLS:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(BACKLOG)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))


def pktinfo_local(ancdata: list[tuple[int, int, bytes]]) -> str:
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


def drain(sock: socket.socket) -> None:
    for _ in range(16):
        try:
            if not sock.recv(65536):
                return
        except OSError:
            return


def send_from(sock: socket.socket, data: bytes, dest: tuple[str, int], local: str) -> None:
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


def send_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    """Control replies are small and local: send them whole (briefly blocking)."""
    sock.settimeout(5.0)
    try:
        sock.sendall(json.dumps(obj).encode() + b"\n")
    except OSError as e:
        log.warning("control reply: %s", e)
    finally:
        sock.setblocking(False)
