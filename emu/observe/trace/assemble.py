"""From correlated packets and trace events to the report: each packet's hops grouped into visits (consecutive hops in
one namespace), and per visit the rules it traversed, the routing decision and the rewrites it underwent.

Contract of the report (`emu trace -o json`), per packet (`request`, `reply`, `icmp_errors[]`, `packets[]`):

    {"index", "role", "summary", "hops": [HOP...], "visits": [VISIT...], "rewrites": [REWRITE...]}
    HOP     {"n", "where", "netns", "iface", "dir": "in"|"out", "t_us", "packet", "headers", "fragments"?}
            headers: eth, ip, tcp|udp|icmp, quoted (ICMP errors), encap (VXLAN: eth, ip, udp, vni)
    VISIT   {"where", "netns", "hops": [first n, last n], "route"?, "rules": [TRAVERSAL...], "rewrites": [...]}
    TRAVERSAL {"table", "chain", "iif", "oif", "packet", "events": [{"table", "chain", "type", "handle",
              "rule", "iptables", "verdict"}]}
    REWRITE {"kind": dnat|snat|un-dnat|un-snat|nat|ttl|vxlan-encap|vxlan-decap|fragmented|reassembled,
             "where", "netns", "from", "to", "rule"?, ...}
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emu.observe.trace import decode, nftrace
from emu.observe.trace.correlate import FlowPacket, Hop
from emu.observe.trace.decode import IPv4
from emu.observe.trace.nftrace import Traversal
from emu.observe.trace.routes import Router
from emu.observe.trace.ruletext import Rule

RuleLookup = dict[str, dict[tuple[str, str, str, int], Rule]]


@dataclass
class Context:
    labels: dict[str, str]
    roles: dict[str, str]
    ifnames: dict[str, dict[int, str]]
    rules: RuleLookup
    t0: int
    router: Router | None = None
    traversals: dict[int, list[Traversal]] = field(default_factory=dict)  # packet index -> its traversals
    ipvs: bool = False  # kube-proxy's IPVS mode: Services are rewritten by IPVS, outside netfilter's rules
    origin: dict[int, IPv4] = field(default_factory=dict)  # packet index -> headers as the sender's socket wrote them

    def label(self, ns: str) -> str:
        return self.labels.get(ns, ns)


# --- trace events -> packets ------------------------------------------------------------------------------------------


def attach(packets: list[FlowPacket], traversals: list[Traversal], ctx: Context) -> None:
    """Give each traversal to the packet whose headers it dumped (same signature); remember the headers a packet had
    when its own namespace's output hook saw it first (before any NAT: the socket's view)."""
    by_sig = {p.signature: p.index for p in packets if p.signature is not None}
    for t in traversals:
        h = t.head
        p = decode.decode_headers(h.network, h.transport) if h.network else None
        sig = decode.trace_signature(p) if p is not None else None
        idx = by_sig.get(sig)
        if idx is None:
            continue
        ctx.traversals.setdefault(idx, []).append(t)
        pkt = packets[idx]
        if p is not None and idx not in ctx.origin and pkt.hops and t.netns == pkt.hops[0].netns and h.iif is None:
            ctx.origin[idx] = p


def _event_dict(e: nftrace.TraceEvent, ctx: Context) -> dict[str, Any]:
    rule = ctx.rules.get(e.netns, {}).get((e.family, e.table, e.chain, e.handle or -1))
    return {"table": f"{e.family} {e.table}", "chain": e.chain, "type": e.type, "handle": e.handle,
            "rule": rule.text if rule else None, "iptables": rule.iptables if rule else None, "verdict": e.verdict}


def traversal_dict(t: Traversal, ctx: Context) -> dict[str, Any]:
    h = t.head
    names = ctx.ifnames.get(t.netns, {})
    p = decode.decode_headers(h.network, h.transport) if h.network else None
    # before the routing decision (prerouting, input: an input interface only) or after it (forward, output,
    # postrouting: an output interface)
    stage = "pre" if h.iif and not h.oif else "post"
    return {"table": f"{h.family} {h.table}", "chain": h.chain, "stage": stage,
            "iif": names.get(h.iif, h.iif) if h.iif else None, "oif": names.get(h.oif, h.oif) if h.oif else None,
            "packet": decode.summary(p) if p else None, "events": _events(t, ctx)}


def _events(t: Traversal, ctx: Context) -> list[dict[str, Any]]:
    """The traversal's events; the kernel's rule-less `continue` at a chain's end becomes a `return` (no rule
    matched there), and is left out right before a base chain's policy, which says the same."""
    out = []
    for i, e in enumerate(t.events):
        d = _event_dict(e, ctx)
        if e.type == "rule" and e.handle is None:
            nxt = t.events[i + 1] if i + 1 < len(t.events) else None
            if nxt is not None and nxt.type == "policy" and nxt.chain == e.chain:
                continue
            d["type"], d["verdict"] = "return", "return"
        out.append(d)
    return out


# --- hops and visits --------------------------------------------------------------------------------------------------


def hop_dict(n: int, h: Hop, ctx: Context) -> dict[str, Any]:
    d = {"n": n, "where": ctx.label(h.netns), "netns": h.netns, "iface": h.iface, "dir": h.direction,
         "t_us": round((h.ts_ns - ctx.t0) / 1000, 1), "packet": decode.summary(h.packet),
         "headers": decode.frame_dict(h.frame)}
    if h.fragments:
        d["fragments"] = [{"offset": f.frag_offset, "bytes": f.total_len - f.header_len, "more": f.mf,
                           "len": f.total_len} for f in sorted(h.fragments, key=lambda f: f.frag_offset)]
    if h.encapsulated and h.frame.ip is not None:
        d["outer"] = decode.summary(h.frame.ip) + f" vxlan vni {h.frame.vni}"
    return d


def _visits(hops: list[Hop]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive hops in one namespace."""
    out = []
    start = 0
    for i in range(1, len(hops) + 1):
        if i == len(hops) or hops[i].netns != hops[start].netns:
            out.append((start, i))
            start = i
    return out


def _ep(p: IPv4, side: str) -> str:
    sp, dp = p.ports()
    return decode.endpoint(p.src, sp) if side == "src" else decode.endpoint(p.dst, dp)


def _nat_rule(travs: list[Traversal], words: tuple[str, ...], ctx: Context) -> dict[str, Any] | None:
    """The rule that did a NAT: the last traced rule whose text names one of `words` (dnat / snat, masquerade)."""
    found = None
    for t in travs:
        for e in t.events:
            if e.type != "rule":
                continue
            r = _event_dict(e, ctx)
            text = f"{r['rule'] or ''} {r['iptables'] or ''}".lower()
            if any(w in text for w in words):
                found = r
    return found


NAT_KINDS = {("request", "dst"): "dnat", ("request", "src"): "snat", ("reply", "src"): "un-dnat",
             ("reply", "dst"): "un-snat", ("icmp-error", "src"): "nat", ("icmp-error", "dst"): "nat"}


def changes(role: str, a: IPv4 | None, b: IPv4, hop_a: Hop | None, hop_b: Hop) -> list[dict[str, Any]]:
    """What differs between the packet at one point and the next (pure)."""
    out: list[dict[str, Any]] = []
    if a is not None:
        for side in ("dst", "src"):
            if _ep(a, side) != _ep(b, side):
                out.append({"kind": NAT_KINDS[(role, side)], "field": side, "from": _ep(a, side), "to": _ep(b, side)})
        if b.ttl < a.ttl and hop_a is not None:
            out.append({"kind": "ttl", "from": a.ttl, "to": b.ttl})
    if hop_a is not None:
        if hop_b.encapsulated and not hop_a.encapsulated and hop_b.frame.ip is not None:
            o = hop_b.frame.ip
            out.append({"kind": "vxlan-encap", "vni": hop_b.frame.vni, "outer_src": o.src, "outer_dst": o.dst,
                        "udp_dport": o.l4.dport if o.l4 else None, "iface": hop_b.iface})
        if hop_a.encapsulated and not hop_b.encapsulated:
            out.append({"kind": "vxlan-decap", "vni": hop_a.frame.vni, "iface": hop_b.iface})
        if hop_b.fragments and not hop_a.fragments:
            out.append({"kind": "fragmented", "fragments": len(hop_b.fragments), "iface": hop_b.iface})
        if hop_a.fragments and not hop_b.fragments:
            out.append({"kind": "reassembled", "fragments": len(hop_a.fragments), "iface": hop_b.iface})
    return out


def _assign(travs: list[Traversal], visits: list[tuple[int, int]], hops: list[Hop], ctx: Context
            ) -> dict[int, list[Traversal]]:
    """Traversals to visits: the visit in the traversal's namespace whose interfaces include its iif/oif (a packet
    may cross one namespace twice), else the first visit there."""
    out: dict[int, list[Traversal]] = {}
    for t in travs:
        names = ctx.ifnames.get(t.netns, {})
        iif, oif = names.get(t.head.iif or 0), names.get(t.head.oif or 0)
        cands = [v for v, (s, e) in enumerate(visits) if hops[s].netns == t.netns]
        if not cands:
            continue
        pick = next((v for v in cands if any(h.iface in (iif, oif) for h in hops[visits[v][0]:visits[v][1]])),
                    cands[0])
        out.setdefault(pick, []).append(t)
    return out


def _route(ns: str, vh: list[Hop], ctx: Context, first_visit: bool) -> dict[str, Any] | None:
    """The routing decision in a visit: for a forwarded packet, `ip route get` with the interface it came in on
    and the addresses it had then; for the sender's own packet, the output route."""
    if ctx.router is None:
        return None
    outs = [i for i, h in enumerate(vh) if h.direction == "out"]
    ins = [i for i, h in enumerate(vh) if h.direction == "in"]
    if not outs:
        return None
    o = vh[outs[0]]
    before = [i for i in ins if i < outs[0]]
    if before:
        i = vh[before[-1]]
        if o.packet.ttl >= i.packet.ttl:
            return None  # bridged, not routed
        d = ctx.router.get(ns, o.packet.dst, i.packet.src, i.iface)
    elif first_visit:
        d = ctx.router.get(ns, o.packet.dst)
    else:
        return None
    return d.to_dict()


def packet_dict(pkt: FlowPacket, ctx: Context, routes: bool = True) -> dict[str, Any]:
    hops = pkt.hops
    travs = ctx.traversals.get(pkt.index, [])
    spans = _visits(hops)
    assigned = _assign(travs, spans, hops, ctx)
    hop_dicts = [hop_dict(n, h, ctx) for n, h in enumerate(hops, 1)]
    visits, all_rewrites = [], []
    for v, (s, e) in enumerate(spans):
        ns = hops[s].netns
        vt = assigned.get(v, [])
        rw: list[dict[str, Any]] = []
        prev = hops[s - 1] if s else None
        a_pkt = prev.packet if prev else ctx.origin.get(pkt.index)
        for k in range(s, e):
            for c in changes(pkt.role, a_pkt, hops[k].packet, prev, hops[k]):
                c.update({"where": ctx.label(ns), "netns": ns})
                if c["kind"] == "reassembled":
                    # conntrack needs whole datagrams: nf_defrag_ipv4 reassembles them before netfilter's hooks
                    # (on a bridge too, with br_netfilter), and the way out fragments them again (to the largest
                    # fragment size seen, so the path MTU semantics survive)
                    c["by"] = "conntrack's defragmentation (nf_defrag_ipv4)"
                if c["kind"] == "fragmented" and any(r["kind"] == "reassembled" for r in rw):
                    c["again"] = True
                if c["kind"] in ("dnat", "un-dnat") or (c["kind"] == "nat" and c["field"] == "dst"):
                    rule = _nat_rule(vt, ("dnat",), ctx)
                elif c["kind"] in ("snat", "un-snat", "nat"):
                    rule = _nat_rule(vt, ("snat", "masquerade"), ctx)
                else:
                    rule = None
                if c["kind"] in ("un-dnat", "un-snat"):
                    rule = None  # the reply is translated by conntrack, by no rule
                if rule:
                    c["rule"] = rule
                elif ctx.ipvs and c["kind"] in ("dnat", "un-dnat"):
                    # IPVS picks the real server and rewrites at LOCAL_IN, and its own connection table translates
                    # the replies (net/netfilter/ipvs): no netfilter rule, so nftables' trace has none to name
                    c["by"] = "IPVS (its virtual server; not in netfilter's trace)"
                elif c["kind"] in ("dnat", "snat", "un-dnat", "un-snat", "nat") and pkt.index in ctx.traversals:
                    c["by"] = "conntrack"  # only a flow's first packet meets the nat rules; conntrack does the rest
                rw.append(c)
            prev, a_pkt = hops[k], hops[k].packet
        if e == len(hops) and hops[-1].direction == "in" and hops[-1].fragments:
            rw.append({"kind": "reassembled", "fragments": len(hops[-1].fragments), "where": ctx.label(ns),
                       "netns": ns, "iface": hops[-1].iface, "by": "the receiving kernel (ip_defrag)"})
        visit = {"where": ctx.label(ns), "netns": ns, "hops": [s + 1, e], "rules": [traversal_dict(t, ctx) for t in vt],
                 "rewrites": rw}
        if routes:
            r = _route(ns, hops[s:e], ctx, v == 0)
            if r:
                visit["route"] = r
        visits.append(visit)
        all_rewrites.extend(rw)
    return {"index": pkt.index, "role": pkt.role, "summary": decode.summary(hops[0].packet) if hops else None,
            "hops": hop_dicts, "visits": visits, "rewrites": all_rewrites}


def pick(packets: list[FlowPacket], role: str, pred: Callable[[FlowPacket], bool] = lambda p: True
         ) -> FlowPacket | None:
    return next((p for p in packets if p.role == role and p.hops and pred(p)), None)
