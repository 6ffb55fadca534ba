"""`emu probe FROM --dns NAME`: resolve a name from a pod's (or node's) namespace with its own resolv.conf, as
glibc's stub resolver does (each name the search path and ndots give, each nameserver in turn), every query with
its answer and time.  An observer of the DNS addon: it reads the addon's resolv.conf model and sends real queries."""
from __future__ import annotations

import os
import socket
import time
from typing import Any

from emu.apply import netns
from emu.observe import targets
from emu.errors import ClusterError
from emu.addons.dns import addon, resolvconf, wire

LAYER = "observe"


def _src(cl: Any, src: str) -> tuple[str, resolvconf.DNSConfig]:
    t = targets.resolve(cl, src)
    if t.kind == "pod":
        return t.netns, addon.pod_dns_config(cl, t.label)
    if t.kind in ("node", "external"):
        return t.netns, addon.node_dns(cl)
    raise ClusterError(f"{src}: a DNS probe runs from a pod, a node or external")


def candidates(name: str, searches: list[str], ndots: int) -> list[str]:
    """The names glibc's res_search tries, in order."""
    if name.endswith("."):
        return [name]
    absolute = [name + "."]
    listed = [f"{name}.{s.rstrip('.')}." for s in searches]
    return absolute + listed if name.count(".") >= ndots else listed + absolute


def _ask(server: str, data: bytes, timeout: float) -> tuple[bytes | None, float, str | None]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    t0 = time.perf_counter()
    try:
        s.sendto(data, (server, 53))
        ans, _ = s.recvfrom(65535)
        return ans, (time.perf_counter() - t0) * 1000, None
    except OSError as e:
        return None, (time.perf_counter() - t0) * 1000, "timeout" if isinstance(e, socket.timeout) else str(e)
    finally:
        s.close()


def probe_dns(cl: Any, src: str, name: str, qtype: str = "A", timeout: float = 2.0,
              attempts: int = 2) -> dict[str, Any]:
    """Resolve NAME from SRC's namespace with SRC's resolv.conf, as the stub resolver does: each name the search
    path and ndots give, each nameserver in turn; every query with its answer and time."""
    ns, conf = _src(cl, src)
    names_tried = candidates(name, conf.searches, conf.ndots())

    def run() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, cand in enumerate(names_tried):
            for server in conf.servers:
                done = False
                for _ in range(attempts):
                    mid = (os.getpid() + len(out) * 7919 + i) & 0xFFFF
                    raw, ms, err = _ask(server, wire.query(cand, qtype, mid), timeout)
                    q: dict[str, Any] = {"name": cand, "type": qtype, "server": server, "ms": round(ms, 3)}
                    if raw is None:
                        q.update(rcode="TIMEOUT" if err == "timeout" else "ERROR", error=err, answers=[])
                        out.append(q)
                        continue
                    m = wire.decode(raw)
                    q.update(rcode=m.rcode_name, answers=[r.to_json() for r in m.answer],
                             authority=[r.to_json() for r in m.authority], aa=m.aa)
                    out.append(q)
                    done = True
                    break
                if done:
                    break  # an answer (even NXDOMAIN) from a server: glibc does not ask the next one
            last = out[-1] if out else None
            if last and last["rcode"] == "NOERROR" and any(a["type"] == qtype for a in last["answers"]):
                return out
        return out

    t0 = time.perf_counter()
    queries = netns.run_in(ns, run) if ns else run()
    total = (time.perf_counter() - t0) * 1000
    last = queries[-1] if queries else {}
    found = last.get("rcode") == "NOERROR" and any(a["type"] == qtype for a in last.get("answers", []))
    return {"ok": found, "from": src, "name": name, "type": qtype, "resolved_as": last.get("name") if found else None,
            "addresses": [a["data"] for a in last.get("answers", []) if a["type"] == qtype] if found else [],
            "queries": queries, "total_ms": round(total, 3), "resolv_conf": conf.render(),
            "ndots": conf.ndots(), "search": conf.searches, "nameservers": conf.servers}


def probe_dns_text(res: dict[str, Any]) -> str:
    lines = [f"{res['from']} resolves {res['name']} ({res['type']}) with nameservers {', '.join(res['nameservers'])}"
             f", ndots:{res['ndots']}, search {' '.join(res['search']) or '(none)'}"]
    for q in res["queries"]:
        ans = ", ".join(str(a["data"]) if not isinstance(a["data"], list) else " ".join(map(str, a["data"]))
                        for a in q["answers"]) or "-"
        lines.append(f"  {q['ms']:8.2f} ms  {q['server']:<15} {q['type']:<5} {q['name']:<50} {q['rcode']:<9} {ans}")
    shown = ", ".join(" ".join(map(str, a)) if isinstance(a, list) else str(a) for a in res["addresses"])  # SRV as dig
    verdict = (f"{res['name']} -> {shown} (as {res['resolved_as']})" if res["ok"]
               else f"{res['name']}: not resolved")
    lines.append(f"{verdict}: {len(res['queries'])} queries in {res['total_ms']:.2f} ms")
    return "\n".join(lines)
