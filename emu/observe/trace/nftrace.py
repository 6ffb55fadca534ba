"""Rule tracing with the kernel's own nftables trace (`meta nftrace set 1`), as `nft monitor trace` shows it.

In each node namespace, for the time of one probe:

  * a netlink socket joins the NFNLGRP_NFTRACE multicast group (what `nft monitor trace` listens to);
  * a temporary table `inet emu-trace-<pid>` hooks prerouting and output at priority -350 (before conntrack at
    -200, raw at -300 and every NAT chain) with rules that set `meta nftrace` only on the probe's flow: the
    destination addresses and ports it may have before and after DNAT, both directions, and ICMP errors;
  * from then on the kernel reports every rule a traced packet meets in *every* table of that namespace, iptables-nft
    ones included (they are nftables rules): table, chain, rule handle, verdict, and the packet's headers at the
    start of each base chain (hook).

The table is deleted and the socket closed on exit, always (also on KeyboardInterrupt, also after a partial setup).
The trace flag lives in the skb and is cleared when a packet changes namespace (skb_scrub_packet), so each node
needs its own table; encapsulation on the same node keeps it.

Listening on netlink ourselves (instead of running `nft monitor trace`) leaves no process to stop, has no start-up
race (the group is joined before the table exists) and gives the raw headers, with TCP sequence numbers, that tie
each event to one captured packet.  Rule texts come afterwards from `nft -a list table`, by handle.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from emu.apply import netns, tools

NETLINK_NETFILTER = 12
NFNLGRP_NFTRACE = 9
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_TRACE = 17
MSG_TRACE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE
NLMSG_ERROR, NLMSG_DONE = 2, 3

# enum nft_trace_attributes
(A_TABLE, A_CHAIN, A_RULE_HANDLE, A_TYPE, A_VERDICT, A_ID, A_LL, A_NETWORK, A_TRANSPORT, A_IIF, A_IIFTYPE, A_OIF,
 A_OIFTYPE, A_MARK, A_NFPROTO, A_POLICY) = range(1, 17)
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
TABLE_PREFIX = "emu-trace-"
PRIORITY = -350  # before raw (-300), conntrack (-200), mangle (-150) and dstnat (-100)
RCVBUF = 8 << 20


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One nftables trace message: a rule that matched (with its verdict), a chain's implicit return, or a base
    chain's policy.  `network`/`transport` are the packet's headers, sent with the first event of each hook."""

    netns: str
    trace_id: int
    family: str
    table: str
    chain: str
    type: str  # "rule" | "return" | "policy"
    handle: int | None = None
    verdict: str | None = None  # "accept", "drop", "continue", "jump KUBE-SVC-...", "return", ...
    iif: int | None = None
    oif: int | None = None
    nfproto: int | None = None
    mark: int | None = None
    network: bytes | None = None
    transport: bytes | None = None


# --- netlink parsing (pure) -------------------------------------------------------------------------------------------


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        length, kind = struct.unpack_from("=HH", buf, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4:off + length]  # drop NLA_F_NESTED / NLA_F_NET_BYTEORDER
        off += (length + 3) & ~3
    return out


def _str(b: bytes | None) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace") if b else ""


def _u32(b: bytes | None) -> int | None:
    return struct.unpack("!I", b[:4])[0] if b and len(b) >= 4 else None


def _verdict(raw: bytes) -> str:
    v = _attrs(raw, 0, len(raw))
    code = struct.unpack("!i", v[NFTA_VERDICT_CODE][:4])[0] if NFTA_VERDICT_CODE in v else None
    if code is None:
        return "?"
    name = VERDICTS.get(code if code < 0 else code & 0xFF, str(code))
    chain = _str(v.get(NFTA_VERDICT_CHAIN))
    return f"{name} {chain}" if chain else name


def parse_messages(data: bytes, ns: str) -> list[TraceEvent]:
    """Every NFT_MSG_TRACE in one netlink datagram (a datagram may hold several messages)."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16:
            break
        if kind == MSG_TRACE and length >= 20:
            out.append(_event(data, off, off + length, ns))
        off += (length + 3) & ~3
    return out


def _event(data: bytes, start: int, end: int, ns: str) -> TraceEvent:
    family = data[start + 16]
    a = _attrs(data, start + 20, end)
    type_ = TRACE_TYPES.get(_u32(a.get(A_TYPE)) or 0, "unknown")
    verdict = _verdict(a[A_VERDICT]) if A_VERDICT in a else None
    if type_ == "policy" and A_POLICY in a:
        verdict = VERDICTS.get(_u32(a[A_POLICY]) or 0, "?")
    if type_ == "return" and verdict is None:
        verdict = "return"
    handle = struct.unpack("!Q", a[A_RULE_HANDLE][:8])[0] if A_RULE_HANDLE in a else None
    return TraceEvent(ns, _u32(a.get(A_ID)) or 0, FAMILIES.get(family, str(family)), _str(a.get(A_TABLE)),
                      _str(a.get(A_CHAIN)), type_, handle, verdict, _u32(a.get(A_IIF)), _u32(a.get(A_OIF)),
                      _u32(a.get(A_NFPROTO)), _u32(a.get(A_MARK)), a.get(A_NETWORK), a.get(A_TRANSPORT))


# --- what to trace (pure) ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowMatch:
    """The probe's flow as nftables can match it without knowing the source port: its protocol, every destination
    address and port it may carry (before and after DNAT), and for ICMP echo the identifier."""

    proto: str  # "tcp" | "udp" | "icmp"
    addrs: tuple[str, ...]
    ports: tuple[int, ...] = ()
    icmp_id: int | None = None


def _set(items: Iterable[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def trace_rules(m: FlowMatch) -> list[str]:
    """The rule lines that set nftrace on the flow's packets, both directions, and on ICMP errors."""
    a = _set(m.addrs)
    if m.proto == "icmp":
        ident = f" icmp id {m.icmp_id}" if m.icmp_id is not None else ""
        fwd = f"ip daddr {a} icmp type echo-request{ident}"
        back = f"ip saddr {a} icmp type echo-reply{ident}"
    else:
        p = _set(m.ports)
        fwd = f"meta l4proto {m.proto} ip daddr {a} th dport {p}"
        back = f"meta l4proto {m.proto} ip saddr {a} th sport {p}"
    errors = "icmp type { destination-unreachable, time-exceeded, parameter-problem }"
    return [f"{r} meta nftrace set 1" for r in (fwd, back, errors)]


def table_name(tag: str | None = None) -> str:
    return TABLE_PREFIX + (tag or str(os.getpid()))


def table_script(m: FlowMatch, name: str) -> str:
    """`nft -f` input creating the trace table (one transaction)."""
    rules = "".join(f"\t\t{r}\n" for r in trace_rules(m))
    chains = "".join(f"\tchain {chain} {{\n\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;\n{rules}"
                     f"\t}}\n" for chain, hook in (("pre", "prerouting"), ("out", "output")))
    return f"table inet {name} {{\n{chains}}}\n"


# --- the tracer -----------------------------------------------------------------------------------------------------


def _nft(ns: str, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run nft inside a namespace (the child inherits the calling thread's namespace)."""
    return tools.run(ns, ["nft", *argv], stdin, timeout=20)


def _listen() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.bind((0, 0))
        s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
        return s
    except BaseException:
        s.close()
        raise


def _parallel(fn: Callable[[str], Any], names: list[str]) -> list[Any]:
    """fn(name) for every name on worker threads; every call finishes (no half-done setup or cleanup is abandoned,
    even when the caller is interrupted: the executor waits for its workers)."""
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as ex:
        return list(ex.map(fn, names))


class TraceError(Exception):
    pass


@dataclass
class RuleTracer:
    """Context manager: trace tables and listeners in `namespaces` (node namespaces) for the duration of the block.

    `events()` drains what the kernel reported so far.  `lost` is set when the kernel dropped trace messages
    (the socket buffer overflowed)."""

    namespaces: list[str]
    match: FlowMatch
    name: str = field(default_factory=table_name)
    lost: bool = False
    _socks: dict[str, socket.socket] = field(default_factory=dict)
    _installed: list[str] = field(default_factory=list)

    def __enter__(self) -> "RuleTracer":
        try:
            socks = netns.each(self.namespaces, lambda _ns: _listen())
            self._socks = dict(zip(self.namespaces, socks))
            script = table_script(self.match, self.name)

            def install(ns: str) -> str | None:
                # a trace killed with SIGKILL could not remove its table: remove such leftovers first
                stale = leftover_tables(_nft(ns, ["list", "tables"]).stdout)
                r = _nft(ns, ["-f", "-"], "".join(f"delete table {t}\n" for t in stale) + script)
                return None if r.returncode == 0 else r.stderr.strip()

            # recorded first: removal is attempted everywhere, even where the install failed half-way
            self._installed = list(self.namespaces)
            errors = [e for e in _parallel(install, self.namespaces) if e]
            if errors:
                raise TraceError(f"cannot install the trace table: {errors[0]}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the trace tables and close the sockets.  Re-entrant; an interrupt during it is re-raised only
        after everything is removed."""
        pending: BaseException | None = None
        installed, self._installed = self._installed, []
        while True:
            try:
                _parallel(lambda ns: _nft(ns, ["delete", "table", "inet", self.name]), installed)
                break
            except KeyboardInterrupt as e:  # finish the cleanup first
                pending = e
        for s in self._socks.values():
            s.close()
        self._socks.clear()
        if pending is not None:
            raise pending

    def events(self) -> list[TraceEvent]:
        out: list[TraceEvent] = []
        for ns, s in self._socks.items():
            while True:
                try:
                    data = s.recv(1 << 16, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        self.lost = True
                        continue
                    raise
                out.extend(e for e in parse_messages(data, ns) if e.table != self.name)
        return out


def leftover_tables(ruleset_text: str) -> list[str]:
    """Names of trace tables in `nft list tables` output whose owning process is gone (a trace killed with
    SIGKILL): `emu-trace-<pid>` with no such pid."""
    out = []
    for line in ruleset_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "table" and parts[2].startswith(TABLE_PREFIX):
            pid = parts[2][len(TABLE_PREFIX):]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                out.append(f"{parts[1]} {parts[2]}")
    return out


# --- grouping (pure) --------------------------------------------------------------------------------------------------


@dataclass
class Traversal:
    """One packet's way through one hook of one namespace: the events from the headers' dump to the verdict."""

    netns: str
    trace_id: int
    events: list[TraceEvent]

    @property
    def head(self) -> TraceEvent:
        return self.events[0]


def group(events: list[TraceEvent]) -> list[Traversal]:
    """Split each namespace's events into traversals.  The kernel dumps the headers with the first event of every
    hook it traces the packet through; later events of that hook carry the same trace id and no headers."""
    out: list[Traversal] = []
    current: dict[tuple[str, int], Traversal] = {}
    for e in events:
        key = (e.netns, e.trace_id)
        if e.network is not None or key not in current:
            current[key] = Traversal(e.netns, e.trace_id, [e])
            out.append(current[key])
        else:
            current[key].events.append(e)
    return out
