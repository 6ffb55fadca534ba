"""The trace as a readable hop list: per packet (request, reply, ICMP errors), one line per interface crossed, and
under each namespace the rules its packet traversed, the routing decision and the rewrites done there."""
from __future__ import annotations

from typing import Any

RULE_INDENT = " " * 9


def _head(res: dict[str, Any]) -> str:
    what = res["proto"] + (f"/{res['port']}" if res.get("port") else "")
    line = f"trace {res['from']} -> {res['to']} ({res['to_ip']}) {what}"
    if res.get("size") is not None:
        line += f" size={res['size']}" + (" DF" if res.get("df") else "")
    p = res["probe"]
    line += f": {p.get('verdict')}"
    if p.get("answered_by"):
        line += f", answered by {p['answered_by']}"
    if p.get("client_ip_seen"):
        line += f", client IP seen {p['client_ip_seen']}"
    icmp = p.get("icmp")
    if icmp:
        line += f"; ICMP type {icmp.get('type')} code {icmp.get('code')} from {icmp.get('sender')}"
        if icmp.get("sender_name"):
            line += f" ({icmp['sender_name']})"
        if icmp.get("mtu"):
            line += f", mtu {icmp['mtu']}"
    return line


def _rule_line(e: dict[str, Any]) -> str:
    if e["type"] == "policy":
        return f"{e['table']} {e['chain']}: policy {e['verdict']}"
    if e["type"] == "return":
        return f"{e['table']} {e['chain']}: no rule matched, return"
    text = e.get("iptables") or e.get("rule") or f"rule handle {e.get('handle')}"
    return f"{e['table']} {e['chain']}: {text}  => {e['verdict']}"


def _rewrite_line(r: dict[str, Any]) -> str:
    k = r["kind"]
    if k in ("dnat", "snat", "un-dnat", "un-snat", "nat"):
        line = f"{k.upper()} {r['from']} -> {r['to']}"
        rule = r.get("rule")
        if rule:
            line += f"  by {rule['table']} {rule['chain']}"
        elif r.get("by"):
            line += f"  by {r['by']}"
        return line
    if k == "ttl":
        return f"TTL {r['from']} -> {r['to']} (forwarded)"
    if k == "vxlan-encap":
        return f"VXLAN encapsulation on {r['iface']}: outer {r['outer_src']} -> {r['outer_dst']} udp/{r['udp_dport']} " \
               f"vni {r['vni']}"
    if k == "vxlan-decap":
        return f"VXLAN decapsulation (vni {r['vni']}) -> {r['iface']}"
    if k == "fragmented":
        return f"fragmented {'again ' if r.get('again') else ''}into {r['fragments']} fragments on {r['iface']}"
    if k == "reassembled":
        return f"reassembled from {r['fragments']} fragments" + (f" by {r['by']}" if r.get("by") else "")
    return str(r)


def _hop_packet(h: dict[str, Any]) -> str:
    text = h["packet"]
    if h.get("outer"):
        text = f"[{h['outer']}] {text}"
    if h.get("fragments"):
        frs = ", ".join(f"{f['offset']}+{f['bytes']}{'' if f['more'] else ' (last)'}" for f in h["fragments"])
        text += f" | {len(h['fragments'])} fragments: {frs}"
    return text


def _rules_lines(travs: list[dict[str, Any]]) -> list[str]:
    out = []
    for t in travs:
        where = " ".join(x for x in (f"iif {t['iif']}" if t.get("iif") else "",
                                     f"oif {t['oif']}" if t.get("oif") else "") if x)
        out.append(f"rules  {t['table']} {t['chain']}" + (f" ({where})" if where else ""))
        out.extend(f"{RULE_INDENT}{_rule_line(e)}" for e in t["events"])
    return out


def _nat_lines(rw: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rw:
        out.append(f"NAT    {_rewrite_line(r)}")
        if r.get("rule"):
            out.append(f"{RULE_INDENT}{r['rule'].get('iptables') or r['rule'].get('rule')}")
    return out


def packet_text(pkt: dict[str, Any], title: str, rules: bool = True) -> list[str]:
    """Per visit: the hops in, then what the namespace decided (rules before routing, the route, rules after it,
    NAT), then the hops out and what happened on the way out (encapsulation, fragmentation)."""
    lines = [f"{title}: {pkt['summary']}"]
    hops = pkt["hops"]
    w_where = max((len(h["where"]) for h in hops), default=5)
    w_if = max((len(h["iface"]) for h in hops), default=5)
    prev: list[str | None] = [None]

    def hop_line(h: dict[str, Any]) -> str:
        text = _hop_packet(h)
        shown = "=" if text == prev[0] else text
        prev[0] = text
        return f"  {h['n']:>3}  {h['where']:<{w_where}}  {h['iface']:<{w_if}}  {h['dir']:<3}  {shown}"

    for v in pkt["visits"]:
        first, last = v["hops"]
        vh = hops[first - 1:last]
        n_in = next((i for i, h in enumerate(vh) if h["dir"] == "out"), len(vh))
        lines.extend(hop_line(h) for h in vh[:n_in])
        travs = v["rules"] if rules else []
        middle = _rules_lines([t for t in travs if t.get("stage") == "pre"])
        if v.get("route"):
            r = v["route"]
            middle.append(f"route  {r['route']}" if r["ok"] else f"route  {r['error']}")
        middle += _rules_lines([t for t in travs if t.get("stage") != "pre"])
        middle += _nat_lines([r for r in v["rewrites"] if "nat" in r["kind"]])
        lines.extend(f"       {x}" for x in middle)
        lines.extend(hop_line(h) for h in vh[n_in:])
        notes = [r for r in v["rewrites"] if "nat" not in r["kind"] and r["kind"] != "ttl"]
        lines.extend(f"       {r['kind'].split('-')[0]:<5}  {_rewrite_line(r)}" for r in notes)
    return lines


def text(res: dict[str, Any], wide: bool = False) -> str:
    """The default terminal output of `emu trace`."""
    out = [_head(res)]
    out.extend(f"note: {n}" for n in res.get("notes", []))
    if res.get("service"):
        out.append(f"service port: {', '.join(res['service'])}")
    if res["request"] is None:
        out.append("no packet of the probe was seen on any interface")
    else:
        out.append("")
        out.extend(packet_text(res["request"], "request"))
    for e in res.get("icmp_errors", []):
        out.append("")
        title = f"ICMP error ({e['text']}) generated in {e['generated_in']} by {e['sender']}"
        out.extend(packet_text(e["path"], title))
    if res.get("reply"):
        out.append("")
        out.extend(packet_text(res["reply"], "reply"))
    if wide:
        for p in res.get("all_packets", []):
            if p["index"] not in {x["index"] for x in (res["request"], res["reply"]) if x} and \
                    p["role"] != "icmp-error":
                out.append("")
                out.extend(packet_text(p, f"packet {p['index'] + 1} ({p['role']})"))
    out.append("")
    nat = [r for r in res["rewrites"] if r["kind"] in ("dnat", "snat")]
    for r in nat:
        out.append(f"{r['kind'].upper()} at {r['where']}: {r['from']} -> {r['to']}" +
                   (f" ({r['rule']['table']} {r['rule']['chain']})" if r.get("rule") else ""))
    drop = res.get("drop")
    if drop:
        out.append(f"dropped at {drop['where']}: {drop['detail']}")
    others = len(res["packets"]) - sum(1 for x in (res["request"], res["reply"]) if x) - len(res["icmp_errors"])
    tail = f"{len(res['packets'])} packets of the flow, {res['frames_captured']} frames captured"
    if others > 0 and not wide:
        tail += f"; {others} more packets in -o wide / -o json"
    if res.get("pcaps"):
        tail += f"; {len(res['pcaps'])} pcap files written"
    out.append(tail + f"; {res['seconds'].get('total', 0):.2f}s")
    return "\n".join(out)
