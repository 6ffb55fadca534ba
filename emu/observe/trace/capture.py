"""Passive capture in many namespaces at once: one AF_PACKET socket per namespace.

An `AF_PACKET, SOCK_RAW, ETH_P_ALL` socket that is not bound to an interface is a tap on *every* interface of the
namespace it was created in (the kernel's `ptype_all` list is per namespace), in both directions: received frames
with their pkttype (HOST, OTHERHOST, ...), transmitted ones as PACKET_OUTGOING (`dev_queue_xmit_nit`).  A frame that
crosses a veth is therefore seen twice, leaving one namespace and entering the other, and a bridge shows it on the
port and, when the bridge delivers it up to its own IP stack, on the bridge device.

SO_TIMESTAMPNS stamps each frame with CLOCK_REALTIME when the kernel tapped it, so frames from different
namespaces order on one clock.  The sockets buffer in the kernel until drained, so opening them before the probe and
draining after it misses nothing (SO_RCVBUFFORCE makes the buffer large enough for a trace).  A classic BPF filter
keeps only IPv4 frames, so the kernel does not queue ARP or IPv6 neighbour discovery for us.

No thread, process or namespace change outlives `Taps`: closing the sockets is the whole cleanup.
"""
from __future__ import annotations

import ctypes
import socket
import struct
import threading
from dataclasses import dataclass

from emu.apply import netns

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: struct timespec with 64-bit fields on 64-bit kernels
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
RCVBUF = 8 << 20
SNAPLEN = 65535

# tcpdump -dd ip: ldh [12]; jeq #0x800; ret #snaplen; ret #0
_IPV4_ONLY = [(0x28, 0, 0, 12), (0x15, 0, 1, 0x0800), (0x06, 0, 0, SNAPLEN), (0x06, 0, 0, 0)]


@dataclass(frozen=True, slots=True)
class Captured:
    """One frame as a tap saw it."""

    ts_ns: int  # CLOCK_REALTIME, nanoseconds
    netns: str
    iface: str
    outgoing: bool  # transmitted by this namespace's interface (else received)
    pkttype: int
    data: bytes  # from the Ethernet header on


def _attach_filter(s: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with a classic BPF program (struct sock_fprog { u16 len; struct sock_filter *filter })."""
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))  # native alignment: u16, pad, pointer
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _open_tap() -> tuple[socket.socket, dict[int, str]]:
    """Inside the target namespace: the tap socket, and the namespace's interface index -> name map."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        _attach_filter(s, _IPV4_ONLY)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        return s, dict(socket.if_nameindex())
    except BaseException:
        s.close()
        raise


class Taps:
    """Taps on every interface of the given namespaces (context manager: the sockets close on exit, always).

    `drain()` returns the frames queued so far, ordered by kernel timestamp (ties keep each tap's own order)."""

    def __init__(self, namespaces: list[str]):
        self.namespaces = list(dict.fromkeys(namespaces))
        self._socks: dict[str, socket.socket] = {}
        self.ifnames: dict[str, dict[int, str]] = {}

    def __enter__(self) -> "Taps":
        opened: list[tuple[socket.socket, dict[int, str]]] = []
        try:
            opened = netns.each(self.namespaces, lambda _ns: _open_tap())
        except BaseException:
            self.close()
            raise
        for ns, (s, names) in zip(self.namespaces, opened):
            self._socks[ns] = s
            self.ifnames[ns] = names
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every tap.  Closing a packet socket waits for an RCU grace period (packet_release ->
        synchronize_net, ~10 ms each); closed from parallel threads the waits overlap, so 60 taps take about as long
        as one.  Every socket is closed before this returns, also when interrupted."""
        socks = list(self._socks.values())
        self._socks.clear()
        if len(socks) <= 2:
            for s in socks:
                s.close()
            return
        threads = [threading.Thread(target=s.close, name="emu-tap-close") for s in socks]
        for t in threads:
            t.start()
        pending: BaseException | None = None
        for t in threads:
            while True:
                try:
                    t.join()
                    break
                except KeyboardInterrupt as e:  # finish closing first
                    pending = e
        if pending is not None:
            raise pending

    def drain(self, since_ns: int = 0) -> list[Captured]:
        out: list[Captured] = []
        for ns, s in self._socks.items():
            out.extend(_drain_one(ns, s, since_ns))
        out.sort(key=lambda c: c.ts_ns)  # stable: one tap's frames keep the kernel's queue order on a tie
        return out


def _drain_one(ns: str, s: socket.socket, since_ns: int) -> list[Captured]:
    out = []
    while True:
        try:
            data, anc, _flags, addr = s.recvmsg(SNAPLEN, 64, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return out
        ts = 0
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(blob) >= 16:
                sec, nsec = struct.unpack_from("=qq", blob)
                ts = sec * 1_000_000_000 + nsec
        if ts < since_ns:
            continue
        # addr = (ifname, ethertype, pkttype, hatype, hwaddr); the name is resolved in the socket's namespace
        out.append(Captured(ts, ns, addr[0], addr[2] == PACKET_OUTGOING, addr[2], data))
