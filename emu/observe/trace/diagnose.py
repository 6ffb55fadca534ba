"""Where and why the probe did not get through, from the evidence of one trace, in this order:

  1. nothing left the sender: the sender's own kernel refused it (the probe's local error: EMSGSIZE with the
     interface MTU, no route);
  2. an ICMP error came back: who generated it (the namespace where it first appears, and its source address), what
     it says (frag-needed with the MTU, unreachable, TTL exceeded, administratively prohibited);
  3. a traced rule or a base chain's policy said drop (or reject);
  4. a TCP RST came back (nothing listens);
  5. the request arrived and nothing answered;
  6. the packet entered a namespace and never left it: the kernel's routing answer there (`ip route get ... iif`)
     names a missing route or the reverse-path filter.
"""
from __future__ import annotations

from typing import Any

from emu.observe.trace import decode
from emu.observe.trace.assemble import Context, pick
from emu.observe.trace.correlate import FlowPacket


def _rule_drop(pkt: FlowPacket, ctx: Context) -> dict[str, Any] | None:
    for t in ctx.traversals.get(pkt.index, []):
        last = t.events[-1]
        if last.verdict == "drop":
            rule = ctx.rules.get(t.netns, {}).get((last.family, last.table, last.chain, last.handle or -1))
            what = "policy drop" if last.type == "policy" else "rule"
            return {"where": ctx.label(t.netns), "netns": t.netns, "why": "rule",
                    "detail": f"{what} in {last.family} {last.table} {last.chain}" +
                              (f": {rule.iptables or rule.text}" if rule else ""),
                    "rule": {"table": f"{last.family} {last.table}", "chain": last.chain,
                             "rule": rule.text if rule else None, "iptables": rule.iptables if rule else None,
                             "type": last.type}}
    return None


def icmp_error(err: FlowPacket, ctx: Context) -> dict[str, Any]:
    """An ICMP error's origin and meaning: the namespace it first leaves, its sender address, type/code, MTU."""
    first = err.hops[0]
    p = first.packet
    l4 = p.l4
    assert l4 is not None
    return {"generated_in": ctx.label(first.netns), "netns": first.netns, "sender": p.src, "to": p.dst,
            "type": l4.icmp_type, "code": l4.icmp_code, "mtu": l4.mtu, "text": decode.icmp_text(l4),
            "about": decode.summary_quoted(p.quoted) if p.quoted else None,
            "last_seen": f"{ctx.label(err.hops[-1].netns)} {err.hops[-1].iface} {err.hops[-1].direction}"}


def explain(result: dict[str, Any], packets: list[FlowPacket], ctx: Context, src_netns: str) -> dict[str, Any] | None:
    """None when the probe got its answer; else {"where", "netns", "why", "detail", ...}."""
    if result.get("ok"):
        return None
    req = pick(packets, "request")
    if req is None:
        icmp = result.get("icmp") or {}
        why = result.get("verdict", "error")
        detail = result.get("detail") or ""
        if icmp.get("sender") == "local":
            detail = f"the sender's kernel refused to send it: {detail}"
        return {"where": ctx.label(src_netns), "netns": src_netns, "why": why, "detail": detail or
                "nothing left the sender"}
    err = pick(packets, "icmp-error")
    if err is not None:
        e = icmp_error(err, ctx)
        rule = _rule_drop(req, ctx)
        out = {"where": e["generated_in"], "netns": e["netns"], "why": result.get("verdict") or "icmp",
               "detail": f"{e['text']} sent by {e['generated_in']} ({e['sender']})" +
                         (f", next-hop MTU {e['mtu']}" if e["mtu"] else ""), "icmp": e}
        if rule and rule["netns"] == e["netns"]:
            out["rule"] = rule["rule"]
        return out
    for pkt in (req, pick(packets, "reply")):
        if pkt is not None and (rule := _rule_drop(pkt, ctx)):
            return rule
    rst = pick(packets, "reply", lambda p: p.first.proto == 6 and bool((p.first.l4.flags or 0) & 0x04)
               if p.first.l4 else False)
    if rst is not None:
        h = rst.hops[0]
        return {"where": ctx.label(h.netns), "netns": h.netns, "why": "refused",
                "detail": f"TCP RST from {h.packet.src} ({ctx.label(h.netns)}): nothing listens on that port"}
    reply = pick(packets, "reply")
    for pkt, name in ((reply, "reply"), (req, "request")):
        if pkt is None:
            continue
        last = pkt.hops[-1]
        role = ctx.roles.get(last.netns)
        delivered = last.direction == "in" and (role == "pod" or name == "reply" and last.netns == src_netns)
        if delivered and name == "request":
            return {"where": ctx.label(last.netns), "netns": last.netns, "why": "no answer",
                    "detail": f"the request reached {ctx.label(last.netns)} ({last.iface}) and nothing answered"}
        if delivered:
            return {"where": ctx.label(last.netns), "netns": last.netns, "why": result.get("verdict", "timeout"),
                    "detail": "the reply came back to the sender, which did not take it"}
        return _stuck(pkt, name, ctx)
    return None


def _stuck(pkt: FlowPacket, name: str, ctx: Context) -> dict[str, Any]:
    """The packet's last sighting; for a packet that entered a namespace and vanished, the kernel's routing answer."""
    last = pkt.hops[-1]
    where = ctx.label(last.netns)
    out: dict[str, Any] = {"where": where, "netns": last.netns, "why": "lost",
                           "detail": f"the {name} was last seen {'entering' if last.direction == 'in' else 'leaving'} "
                                     f"{where} on {last.iface}"}
    if last.direction == "in" and ctx.router is not None:
        p = last.packet
        d = ctx.router.get(last.netns, p.dst, p.src, last.iface)
        out["route"] = d.to_dict()
        if not d.ok:
            out["why"] = "no route" if "route" in (d.error or "") else "routing"
            out["detail"] += f"; routing there says: {d.error}"
        else:
            out["detail"] += f"; it routes via {d.route}, but no copy of it left"
    return out
