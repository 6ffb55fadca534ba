"""`emu trace`: send one probe with taps everywhere it may go and the kernel's rule trace on every node, then
correlate and report.

Order of operations (and of cleanup, which runs in `finally` blocks, also on KeyboardInterrupt):
taps open -> trace tables installed -> probe -> frames settle -> drain -> tables removed -> taps closed -> rule texts
read -> report.  Nothing stays behind: no table, no socket, no thread, no process.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from emu.observe import probe, probing, targets
from emu.cluster.lifecycle import Cluster
from emu.addons.kubeproxy import modes
from emu.errors import EmuError
from emu.observe.trace import assemble, diagnose, flow, nftrace, ruletext
from emu.observe.trace.capture import Captured, Taps
from emu.observe.trace.correlate import FlowPacket, Seed, correlate
from emu.observe.trace.routes import Router

PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
SETTLE_S = 0.015  # a quiet interval after the probe: the flow's last frames (FIN/ACK) are in flight
SETTLE_MAX_S = 0.25


@dataclass
class Raw:
    """What one traced probe produced, before it is turned into a report."""

    src: targets.Target
    dst: targets.Target
    proto: str
    port: int | None
    size: int | None
    df: bool
    result: dict[str, Any]
    frames: list[Captured]
    packets: list[FlowPacket]
    traversals: list[nftrace.Traversal]
    ifnames: dict[str, dict[int, str]]
    t0: int
    variants: flow.Variants
    notes: list[str] = field(default_factory=list)
    rules_traced: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


def _send(cl: Cluster, src: targets.Target, dst: targets.Target, proto: str, port: int | None, size: int | None,
          df: bool, timeout: float, ident: int) -> dict[str, Any]:
    """One probe, as `emu probe` sends it, with a known ICMP identifier."""
    return probing._one(cl, src, dst, proto, port, size, df, timeout, ident=ident)


def _rule_trace_plan(cl: Cluster) -> tuple[bool, list[str]]:
    """Whether the nodes' rules can be traced, and what to tell the user about it."""
    c = cl.topology.cluster
    if c.iptables_backend == "legacy":
        if modes.for_mode(c.proxy.mode).service_rules_in_iptables:  # kube-proxy's own rules are the ones lost
            return False, ["rule tracing needs the nft iptables backend (this cluster has iptablesBackend: legacy): "
                           "the packet path is shown without rules"]
        return True, ["flannel's rules use iptables-legacy here and are not traced (only nftables rules are)"]
    return True, []


def _settle(taps: Taps, since: int) -> list[Captured]:
    frames = taps.drain(since)
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() < deadline:
        time.sleep(SETTLE_S)
        more = taps.drain(since)
        if not more:
            break
        frames.extend(more)
    frames.sort(key=lambda c: c.ts_ns)
    return frames


def capture(cl: Cluster, src_text: str, dst_text: str, proto: str = "tcp", port: int | None = None,
            size: int | None = None, df: bool = False, timeout: float = 1.0, rules: bool = True) -> Raw:
    """Send one probe from src to dst with taps and (if `rules`) the nftables trace on every node."""
    if proto not in PROTOS:
        raise EmuError(f"--proto must be tcp, udp or icmp, not {proto}")
    src = probing._source(cl, src_text)
    dst = targets.resolve(cl, dst_text, proto)
    if proto != "icmp" and port is None:
        port = probing._default_port(cl, dst, proto)
    if proto == "tcp" and (size is not None or df):
        raise EmuError("--size and --df apply to udp and icmp probes (TCP segments are sized by the kernel)")
    if proto == "icmp":
        port = None
    assert src.netns is not None
    ident = probe.next_ident()
    v = flow.variants(cl, dst, proto, port)
    can_trace, notes = _rule_trace_plan(cl) if rules else (False, [])
    match = nftrace.FlowMatch(proto, v.addrs, v.ports, ident if proto == "icmp" else None)
    seconds: dict[str, float] = {}
    t_start = time.monotonic()
    with ExitStack() as stack:
        taps = stack.enter_context(Taps(flow.capture_netns(cl, src.netns, v.addrs)))
        tracer = stack.enter_context(nftrace.RuleTracer(flow.node_netns(cl), match)) if can_trace else None
        seconds["setup"] = time.monotonic() - t_start
        t0 = time.time_ns()
        result = _send(cl, src, dst, proto, port, size, df, timeout, ident)
        seconds["probe"] = time.monotonic() - t_start - seconds["setup"]
        frames = _settle(taps, t0)
        events = tracer.events() if tracer else []
        if tracer and tracer.lost:
            notes.append("the kernel dropped some trace messages (socket buffer full): the rule list is partial")
        ifnames = dict(taps.ifnames)
    seed = Seed(src.netns, PROTOS[proto], frozenset(v.addrs),
                frozenset([ident]) if proto == "icmp" else frozenset(v.ports))
    packets = correlate(seed, frames)
    raw = Raw(src, dst, proto, port, size, df, result, frames, packets, nftrace.group(events), ifnames, t0, v,
              notes, can_trace, seconds)
    return raw


def _rule_texts(cl: Cluster, traversals: list[nftrace.Traversal]) -> assemble.RuleLookup:
    """Rule texts for the tables that appear in each node's events (read after the trace, in parallel)."""
    tables: dict[str, set[tuple[str, str]]] = {}
    for t in traversals:
        for e in t.events:
            tables.setdefault(t.netns, set()).add((e.family, e.table))
    c = cl.topology.cluster
    save = c.iptables("save") if c.iptables_backend == "nft" else None
    if not tables:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(tables))) as ex:
        found = list(ex.map(lambda ns: ruletext.lookup(ns, tables[ns], save), list(tables)))
    return dict(zip(tables, found))


def report(cl: Cluster, raw: Raw, routes: bool = True) -> dict[str, Any]:
    """The trace as data (see emu.observe.trace.assemble for the shape of each packet)."""
    t_start = time.monotonic()
    ctx = assemble.Context(flow.labels(cl), flow.roles(cl), raw.ifnames, _rule_texts(cl, raw.traversals), raw.t0,
                           ipvs=modes.for_mode(cl.topology.cluster.proxy.mode).nat_outside_netfilter)
    assemble.attach(raw.packets, raw.traversals, ctx)
    with Router() as router:
        ctx.router = router if routes else None
        pkts = [assemble.packet_dict(p, ctx, routes) for p in raw.packets if p.hops]
        drop = diagnose.explain(raw.result, raw.packets, ctx, raw.src.netns or "")
    first = {role: next((d for d in pkts if d["role"] == role), None) for role in ("request", "reply")}
    errors = [dict(diagnose.icmp_error(p, ctx), path=next(d for d in pkts if d["index"] == p.index))
              for p in raw.packets if p.role == "icmp-error" and p.hops]
    shown = [d for d in (first["request"], first["reply"]) if d] + [e["path"] for e in errors]
    rewrites = [r for d in shown for r in d["rewrites"] if r["kind"] != "ttl"]
    raw.seconds["report"] = time.monotonic() - t_start
    return {
        "from": raw.src.label, "to": raw.dst.label, "to_ip": raw.dst.ip, "proto": raw.proto, "port": raw.port,
        "size": raw.size, "df": raw.df,
        "probe": raw.result, "ok": bool(raw.result.get("ok")), "verdict": raw.result.get("verdict"),
        "answered_by": raw.result.get("answered_by"),
        "service": list(raw.variants.services),
        "request": first["request"], "reply": first["reply"], "icmp_errors": errors,
        "rewrites": rewrites, "drop": drop,
        "rules_traced": raw.rules_traced, "notes": raw.notes,
        "packets": [{"index": d["index"], "role": d["role"], "summary": d["summary"], "hops": len(d["hops"])}
                    for d in pkts],
        "all_packets": pkts,
        "frames_captured": len(raw.frames),
        "seconds": {k: round(v, 3) for k, v in raw.seconds.items()},
    }


def trace(cl: Cluster, src: str, dst: str, proto: str = "tcp", port: int | None = None, size: int | None = None,
          df: bool = False, timeout: float = 1.0, rules: bool = True, pcap_dir: str | None = None,
          svg: str | None = None) -> dict[str, Any]:
    """`emu trace FROM TO`: the report, plus pcaps (one per interface the flow crossed) and an SVG on request."""
    t0 = time.monotonic()
    raw = capture(cl, src, dst, proto, port, size, df, timeout, rules)
    res = report(cl, raw)
    if pcap_dir:
        from emu.observe.trace import pcap

        res["pcaps"] = pcap.write_dir(pcap_dir, raw.packets)
    if svg:
        from emu.observe.trace import svg as svg_mod

        res["svg"] = svg_mod.write(svg, res)
    res["seconds"]["total"] = round(time.monotonic() - t0, 3)
    return res
