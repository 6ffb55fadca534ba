"""Path-MTU discovery from inside a namespace: DF echo probes that follow each frag-needed's MTU and binary-search
where probes vanish silently, naming the hop that limits the path."""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import Any

from emu.apply import netns
from emu.observe.probe import IP_PMTUDISC_PROBE, echo, ip_mtu, next_ident, open_socket, read_errqueue
from emu.observe.verdicts import ProbeResult

IP_ICMP_HEADERS = 28  # IPv4 20 + ICMP (or UDP) 8: payload size = MTU - 28
MIN_MTU = 68  # RFC 791


def route_mtu(netns_name: str, ip: str) -> int | None:
    """IP_MTU toward ip from inside the namespace: the route/interface MTU, or a path MTU the kernel learned."""
    with netns.socket_in(netns_name, socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, 9))
        except OSError:
            return None
        return ip_mtu(s)


def interface_mtu(netns_name: str, ip: str) -> int | None:
    """The MTU of the interface toward ip, ignoring any learned path MTU: a DF send in IP_PMTUDISC_PROBE mode that
    is larger than any MTU fails locally with EMSGSIZE and the interface MTU (nothing is sent)."""
    with open_socket(netns_name, socket.SOCK_DGRAM, 0, IP_PMTUDISC_PROBE) as s:
        try:
            s.connect((ip, 9))
            s.send(b"\0" * 65507)
        except OSError as e:
            err = read_errqueue(s)
            if e.errno == errno.EMSGSIZE and err is not None and err.info:
                return err.info
        return None  # nothing limits below 64 KiB (loopback)


@dataclass
class _PmtuSearch:
    """State of a path-MTU search: follow frag-needed MTUs; binary-search where probes vanish silently."""

    start: int
    good: int | None = None  # largest MTU that got an echo reply
    bad: int | None = None  # smallest MTU that was refused or vanished
    hint: int | None = None  # next MTU to try, from a frag-needed
    limited_by: str | None = "local"
    stopped: str | None = None  # a verdict that ends the search (unreachable, ...)
    probes: list[tuple[int, str]] = field(default_factory=list)

    def next_mtu(self) -> int | None:
        if self.stopped or (self.good is not None and (self.bad is None or self.bad - self.good <= 1)):
            return None
        if self.hint is not None:
            mtu, self.hint = self.hint, None
            return mtu
        if self.bad is None:
            return self.start
        if self.good is None and len(self.probes) == 1:
            return MIN_MTU  # is it reachable at all?
        lo = self.good if self.good is not None else MIN_MTU
        return (lo + self.bad) // 2 if self.bad - lo > 1 else None

    def record(self, mtu: int, r: ProbeResult) -> None:
        self.probes.append((mtu - IP_ICMP_HEADERS, r.verdict))
        reported = (r.icmp or {}).get("mtu")
        if r.ok:
            self.good = mtu
        elif r.verdict == "frag-needed" and reported and MIN_MTU <= reported < mtu:
            # everything above the reported MTU is too big: try exactly that next
            self.bad, self.hint, self.limited_by = reported + 1, reported, (r.icmp or {}).get("sender")
        elif r.verdict in ("timeout", "frag-needed"):
            self.bad = mtu
            if self.good is None and mtu == MIN_MTU:
                self.stopped = r.verdict
            elif self.hint is None:
                self.limited_by = "unknown (no ICMP frag-needed came back)"
        else:
            self.stopped = r.verdict


def pmtu(netns_name: str, ip: str, timeout: float = 1.0) -> dict[str, Any]:
    """Discover the path MTU toward ip with DF echo probes and name the hop that limits it.

    Starts at the interface MTU (IP_PMTUDISC_PROBE: a cached path MTU neither limits nor hides the router),
    follows each frag-needed's MTU, and binary-searches downward when probes vanish without an ICMP error.
    Returns {"path_mtu", "limited_by" ("local", a router's IP, or "unknown ..."), "reported_mtu" (IP_MTU),
    "interface_mtu", "probes": [(size, verdict), ...], "ok", "verdict"}.
    """
    reported = route_mtu(netns_name, ip)
    start = interface_mtu(netns_name, ip) or reported or 1500
    search = _PmtuSearch(start)
    ident = next_ident()
    while (mtu := search.next_mtu()) is not None:
        r = echo(netns_name, ip, mtu - IP_ICMP_HEADERS, IP_PMTUDISC_PROBE, timeout, ident, len(search.probes) + 1)
        search.record(mtu, r)
    ok = search.good is not None
    return {"path_mtu": search.good, "limited_by": search.limited_by if ok else None, "reported_mtu": reported,
            "interface_mtu": start, "probes": search.probes, "ok": ok,
            "verdict": "connected" if ok else (search.stopped or "timeout")}
