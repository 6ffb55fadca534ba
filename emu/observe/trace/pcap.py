"""pcap files, one per interface the flow crossed (`<netns>_<iface>.pcap`), readable by tcpdump, tshark and
Wireshark: the classic format with nanosecond timestamps (magic 0xa1b23c4d), link type Ethernet."""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from emu.observe.trace.capture import Captured
from emu.observe.trace.correlate import FlowPacket

MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144


def header() -> bytes:
    return struct.pack("=IHHiIII", MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


def record(c: Captured) -> bytes:
    sec, nsec = divmod(c.ts_ns, 1_000_000_000)
    return struct.pack("=IIII", sec, nsec, len(c.data), len(c.data)) + c.data


def file_name(netns: str, iface: str) -> str:
    return f"{netns}_{iface}.pcap".replace("/", "_")


def write(path: str, frames: Iterable[Captured]) -> None:
    with open(path, "wb") as f:
        f.write(header())
        for c in frames:
            f.write(record(c))


def write_dir(directory: str, packets: list[FlowPacket]) -> list[str]:
    """The flow's frames (every packet, every fragment), grouped by namespace and interface; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    groups: dict[tuple[str, str], list[Captured]] = {}
    for p in packets:
        for h in p.hops:
            for c in h.captured:
                groups.setdefault((c.netns, c.iface), []).append(c)
    paths = []
    for (ns, iface), frames in groups.items():
        path = os.path.join(directory, file_name(ns, iface))
        write(path, sorted(frames, key=lambda c: c.ts_ns))
        paths.append(path)
    return sorted(paths)
