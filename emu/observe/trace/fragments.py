"""Fragmentation details for `emu probe --size` without `--df`: how many fragments left the sender, their sizes and
offsets, where they were reassembled (and where a node's conntrack reassembled and re-fragmented them on the way),
taken from taps on the path (no rule tracing: it is not needed here and costs time)."""
from __future__ import annotations

from typing import Any

from emu.cluster.lifecycle import Cluster
from emu.observe.trace import assemble, flow
from emu.observe.trace.run import capture


def _frags(hop: dict[str, Any]) -> list[dict[str, Any]]:
    return hop.get("fragments") or []


def fragments(cl: Cluster, src: str, dst: str, size: int, proto: str = "udp", timeout: float = 1.0
              ) -> dict[str, Any]:
    """{"fragmented", "count", "fragments": [{offset, bytes, more, len}], "left": "NS IFACE", "reassembled_at",
    "reassembled_by", "on_the_way": [{where, kind, ...}], "probe": {...}}."""
    raw = capture(cl, src, dst, proto, None, size, False, timeout, rules=False)
    ctx = assemble.Context(flow.labels(cl), flow.roles(cl), raw.ifnames, {}, raw.t0)
    req = assemble.pick(raw.packets, "request")
    out: dict[str, Any] = {"from": raw.src.label, "to": raw.dst.label, "to_ip": raw.dst.ip, "proto": proto,
                           "size": size, "probe": raw.result, "ok": bool(raw.result.get("ok")),
                           "fragmented": False, "count": 1, "fragments": [], "left": None, "reassembled_at": None,
                           "reassembled_by": None, "on_the_way": []}
    if req is None:
        return out
    d = assemble.packet_dict(req, ctx, routes=False)
    first = d["hops"][0]
    out["left"] = f"{first['where']} {first['iface']}"
    out["fragments"] = _frags(first)
    out["fragmented"] = bool(out["fragments"])
    out["count"] = max(1, len(out["fragments"]))
    final = [r for r in d["rewrites"] if r["kind"] == "reassembled" and r.get("by", "").startswith("the receiving")]
    if final:
        out["reassembled_at"], out["reassembled_by"] = final[0]["where"], final[0]["by"]
    elif d["hops"][-1]["dir"] == "in" and not _frags(d["hops"][-1]):
        out["reassembled_at"] = None  # arrived whole (never fragmented, or reassembled on the way and not again)
    out["on_the_way"] = [{k: r[k] for k in ("kind", "where", "fragments", "iface", "by") if k in r}
                         for r in d["rewrites"] if r["kind"] in ("reassembled", "fragmented") and r not in final]
    return out


def fragments_text(res: dict[str, Any]) -> str:
    if not res["left"]:
        return "fragments: no packet left the sender"
    if not res["fragmented"]:
        return f"fragments: none, the datagram left {res['left']} whole"
    frs = ", ".join(f"{f['bytes']} bytes at offset {f['offset']}" for f in res["fragments"])
    line = f"fragments: {res['count']} left {res['left']} ({frs})"
    for r in res["on_the_way"]:
        if r["kind"] == "reassembled":
            line += f"; reassembled at {r['where']} by {r.get('by')}"
        else:
            line += f"; fragmented again at {r['where']} {r['iface']} ({r['fragments']})"
    if res["reassembled_at"]:
        line += f"; reassembled at {res['reassembled_at']} (the destination)"
    return line
