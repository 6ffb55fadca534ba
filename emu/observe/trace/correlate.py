"""Correlation: from frames captured everywhere to the probe's packets, each with its hops in order.

A packet keeps its identity across NAT, forwarding and encapsulation even though its addresses change: TCP keeps
its sequence numbers, UDP and ICMP their IP identification (`decode.signature`).  So the probe's flow is followed
like conntrack follows it:

  * the first packet is the first frame *leaving the source namespace* towards one of the flow's possible
    destinations (the target, or any endpoint it may be DNATed to);
  * a frame whose signature is known is the same packet seen further on; if its addresses changed, the new
    5-tuple is a NAT variant of the flow and is remembered (a DNAT on the way there, an SNAT, or their reversal);
  * a frame whose 5-tuple (or its reverse) is a known variant is a new packet of the flow (request or reply);
  * an ICMP error belongs to the flow when the packet it quotes does;
  * a non-first fragment has no ports: it joins the datagram with the same IP id.

Pure: captured frames in, packets out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emu.observe.trace import decode
from emu.observe.trace.capture import Captured
from emu.observe.trace.decode import Frame, IPv4

Tuple5 = tuple[int, str, int | None, str, int | None]


@dataclass(frozen=True)
class Seed:
    """What is known of the flow before the first packet: where it leaves, its protocol, where it may go."""

    src_netns: str
    proto: int  # 6, 17 or 1
    dst_addrs: frozenset[str]
    dst_ports: frozenset[int]  # tcp/udp destination ports; for icmp the echo identifier (empty: any)


@dataclass
class Hop:
    """The packet at one interface of one namespace, in one direction (its fragments merged into one hop)."""

    ts_ns: int
    netns: str
    iface: str
    direction: str  # "in" | "out"
    frame: Frame
    fragments: list[IPv4] = field(default_factory=list)
    captured: list[Captured] = field(default_factory=list)

    @property
    def packet(self) -> IPv4:
        p = self.frame.packet
        assert p is not None
        return p

    @property
    def encapsulated(self) -> bool:
        return self.frame.inner is not None


@dataclass
class FlowPacket:
    """One packet of the flow: the request, a reply, a later segment, or an ICMP error about one of them."""

    index: int
    role: str  # "request" | "reply" | "icmp-error"
    signature: tuple[Any, ...] | None
    hops: list[Hop] = field(default_factory=list)

    @property
    def first(self) -> IPv4:
        return self.hops[0].packet


def _tuple(p: IPv4) -> Tuple5:
    sp, dp = p.ports()
    return (p.proto, p.src, sp, p.dst, dp)


def _reverse(t: Tuple5) -> Tuple5:
    return (t[0], t[3], t[4], t[1], t[2])


class Correlator:
    def __init__(self, seed: Seed):
        self.seed = seed
        self.forward: set[Tuple5] = set()  # the flow's 5-tuples in the request's orientation
        self.by_sig: dict[tuple[Any, ...], int] = {}
        self.by_frag: dict[tuple[int, int, str, str], int] = {}  # (proto, ip id, src, dst) -> packet
        self.packets: list[FlowPacket] = []

    # -- classification --------------------------------------------------------------------------------------------

    def _new(self, role: str, sig: tuple[Any, ...] | None) -> int:
        idx = len(self.packets)
        self.packets.append(FlowPacket(idx, role, sig))
        if sig is not None:
            self.by_sig[sig] = idx
        return idx

    def _is_seed(self, c: Captured, p: IPv4) -> bool:
        s = self.seed
        if not c.outgoing or c.netns != s.src_netns or p.proto != s.proto or p.dst not in s.dst_addrs:
            return False
        if p.l4 is None:
            return False
        if p.proto == 1:
            return p.l4.icmp_type == 8 and (not s.dst_ports or p.l4.sport in s.dst_ports)
        return not s.dst_ports or p.l4.dport in s.dst_ports

    def _error_about(self, p: IPv4) -> bool:
        q = p.quoted
        if q is None or p.l4 is None or p.l4.icmp_type not in decode.ICMP_ERRORS:
            return False
        t = _tuple(q)
        if t in self.forward or _reverse(t) in self.forward:
            return True
        # an error quoting a packet whose addresses are not known yet (rewritten where it was generated):
        # match the quoted TCP sequence number / ICMP echo id and seq, which NAT keeps
        for sig in self.by_sig:
            if q.proto == 6 and q.l4 and sig[0] == 6 and sig[1] == q.l4.seq:
                return True
            if q.proto == 1 and q.l4 and sig[0] == 1 and sig[2] == q.l4.seq and sig[1] == q.l4.icmp_type:
                return True
            if q.proto == 17 and sig[0] == 17 and sig[1] == q.ident:
                return True
        return False

    def classify(self, c: Captured, p: IPv4) -> int | None:
        """The index of the flow packet this frame carries, or None if it is not the flow's."""
        if p.frag_offset:
            return self.by_frag.get((p.proto, p.ident, p.src, p.dst))
        sig = decode.signature(p)
        idx = self.by_sig.get(sig) if sig is not None else None
        if idx is None and p.proto == 1 and p.l4 and p.l4.icmp_type in decode.ICMP_ERRORS:
            esig = ("icmp-error", p.l4.icmp_type, p.l4.icmp_code, p.ident)
            idx = self.by_sig.get(esig)
            if idx is None and self._error_about(p):
                idx = self._new("icmp-error", esig)
            return idx
        t = _tuple(p)
        if idx is None:
            if t in self.forward:
                idx = self._new("request", sig)
            elif _reverse(t) in self.forward:
                idx = self._new("reply", sig)
            elif self._is_seed(c, p) and not self.packets:
                idx = self._new("request", sig)
        if idx is None:
            return None
        role = self.packets[idx].role
        if role == "request":
            self.forward.add(t)
        elif role == "reply":
            self.forward.add(_reverse(t))
        if p.mf:
            self.by_frag[(p.proto, p.ident, p.src, p.dst)] = idx
        return idx

    # -- hops ------------------------------------------------------------------------------------------------------

    def feed(self, frames: list[Captured]) -> list[FlowPacket]:
        """Classify frames (in timestamp order) and build each packet's hops."""
        for c in frames:
            f = decode.decode(c.data)
            p = f.packet
            if p is None:
                continue
            idx = self.classify(c, p)
            if idx is None:
                continue
            self._add_hop(self.packets[idx], c, f, p)
        return self.packets

    @staticmethod
    def _add_hop(pkt: FlowPacket, c: Captured, f: Frame, p: IPv4) -> None:
        direction = "out" if c.outgoing else "in"
        if p.is_fragment:
            # fragments of one datagram at the same interface and direction make one hop
            for h in reversed(pkt.hops):
                if (h.netns, h.iface, h.direction) == (c.netns, c.iface, direction) and h.fragments and \
                        h.fragments[0].ident == p.ident:
                    h.fragments.append(p)
                    h.captured.append(c)
                    if p.frag_offset == 0:
                        h.frame = f
                    return
            pkt.hops.append(Hop(c.ts_ns, c.netns, c.iface, direction, f, [p], [c]))
            return
        pkt.hops.append(Hop(c.ts_ns, c.netns, c.iface, direction, f, [], [c]))


def correlate(seed: Seed, frames: list[Captured]) -> list[FlowPacket]:
    return Correlator(seed).feed(frames)
