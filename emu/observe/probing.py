"""Probes between named endpoints of a running cluster: resolve names, run the packet-level probes of `probe` and
`pmtu`, and say what came back (the matrix's text is emu.report.matrix)."""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from emu.cluster import daemons
from emu.observe import pmtu as path_mtu
from emu.observe import probe
from emu.observe import targets
from emu.observe.verdicts import ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED
from emu.cluster.lifecycle import Cluster, Progress, _quiet
from emu.errors import EmuError
from emu.model.types import Protocol
from emu.addons.netpol import explain as netpol_explain
from emu.addons.netpol import sync as netpol_sync
from emu.addons.netpol.engine import Engine


def _default_port(cl: Cluster, dst: targets.Target, proto: str) -> int:
    if dst.port is not None:
        return dst.port
    if dst.kind == "pod":
        pod = next(p for p in cl.topology.pods if p.key == dst.label)
        want = Protocol(proto.upper())
        for p in pod.ports:
            if p.protocol is want:
                return p.container_port
    return 80


def _source(cl: Cluster, text: str) -> targets.Target:
    src = targets.resolve(cl, text)
    if src.netns is None:
        raise targets.TargetError(f"{text}: a probe is sent from a pod, node/NAME or external, not from an address")
    return src


def _one(cl: Cluster, src: targets.Target, dst: targets.Target, proto: str, port: int | None, size: int | None,
         df: bool, timeout: float, seq: int = 1, ident: int | None = None) -> dict[str, Any]:
    """One probe from a resolved source to a resolved target; answers that carry only an address are named."""
    assert src.netns is not None
    b = src.bind
    if proto == "icmp":
        r = probe.icmp(src.netns, dst.ip, size=56 if size is None else size, df=df, timeout=timeout, seq=seq,
                       ident=ident, src_ip=b)
    elif proto == "udp":
        r = probe.udp(src.netns, dst.ip, port or 80, size=size, df=df, timeout=timeout, src_ip=b)
    elif proto == "sctp":
        r = probe.sctp(src.netns, dst.ip, port or 80, timeout=timeout, src_ip=b)
    else:
        r = probe.tcp(src.netns, dst.ip, port or 80, timeout=timeout, src_ip=b)
    d = r.to_dict()
    if proto == "icmp" and d.get("answered_by"):
        d["answered_by"] = targets.who(cl, d["answered_by"]) or d["answered_by"]
    if d.get("icmp") and d["icmp"].get("sender") not in (None, "local"):
        d["icmp"]["sender_name"] = targets.who(cl, d["icmp"]["sender"])
    return d


def probe_many(cl: Cluster, src_text: str, dst_text: str, proto: str, port: int | None, size: int | None,
               df: bool, count: int, timeout: float) -> dict[str, Any]:
    src, dst = _source(cl, src_text), targets.resolve(cl, dst_text, proto)
    if proto != "icmp" and port is None:
        port = _default_port(cl, dst, proto)
    if proto == "tcp" and (size is not None or df):
        raise EmuError("--size and --df apply to udp and icmp probes (TCP segments are sized by the kernel)")
    results = [_one(cl, src, dst, proto, port, size, df, timeout, seq=i) for i in range(1, count + 1)]
    first = results[0]
    verdicts = Counter(r["verdict"] for r in results)
    ok = all(r["ok"] for r in results)
    return {**first, "from": src.label, "to": dst.label, "to_ip": dst.ip, "proto": proto,
            "port": None if proto == "icmp" else port, "size": size, "df": df, "count": count,
            "ok": ok, "verdict": verdicts.most_common(1)[0][0],
            "ok_count": sum(r["ok"] for r in results), "results": results,
            "note": None if ok else daemons.note(cl.record)}  # nobody answers because a daemon of ours died?


def denial(r: dict[str, Any]) -> str | None:
    """How a probe (one of `probe_many`'s results) was turned away, read as a firewall's verdict:

        drop              nothing came back (a DROP: the SYN, datagram or echo vanished)
        reset             a TCP RST (`REJECT --reject-with tcp-reset`, or nothing listens on the port)
        icmp-unreachable  an ICMP destination unreachable from another host (iptables' REJECT, whose default
                          --reject-with is icmp-port-unreachable, its other codes, or a router without a route)

    None when it was not turned away: it connected, the far end accepted and then stayed silent, or the probe failed
    in the sender (a local error such as EMSGSIZE, a socket error) or got a frag-needed, which is no denial."""
    icmp = r.get("icmp") or {}
    if r["verdict"] == "timeout":
        return "drop" if r.get("rtt_ms") is None else None  # an rtt means the handshake completed
    if r["verdict"] == "refused" and not icmp and r.get("proto") == "tcp":
        return "reset"
    if icmp.get("type") == ICMP_DEST_UNREACH and icmp.get("code") != ICMP_FRAG_NEEDED and \
            icmp.get("sender") not in (None, "local"):
        return "icmp-unreachable"
    return None


def probe_text(res: dict[str, Any], wide: bool = False) -> str:
    lines = []
    for i, r in enumerate(res["results"], start=1):
        what = f"{res['proto']}" + (f"/{res['port']}" if res["port"] else "")
        head = f"{res['from']} -> {res['to']} ({res['to_ip']}) {what}"
        if res["size"] is not None:
            head += f" size={res['size']}" + (" DF" if res["df"] else "")
        line = f"{head}: {r['verdict']}"
        if r.get("answered_by"):
            line += f", answered by {r['answered_by']}"
        if r.get("client_ip_seen"):
            line += f", client IP seen {r['client_ip_seen']}"
        if r.get("rtt_ms") is not None:
            line += f", rtt {r['rtt_ms']:.2f} ms"
        if r.get("bytes_answered") is not None:
            line += f", {r['bytes_answered']} bytes arrived"
        icmp = r.get("icmp")
        if icmp:
            sender = icmp.get("sender")
            name = icmp.get("sender_name")
            line += f"; ICMP type {icmp.get('type')} code {icmp.get('code')} from {sender}" + \
                (f" ({name})" if name else "")
            if icmp.get("mtu"):
                line += f", mtu {icmp['mtu']}"
        if res["count"] > 1:
            line = f"[{i}] " + line
        lines.append(line)
        if wide and r.get("detail"):
            lines.append(f"    {r['detail']}")
    if res["count"] > 1:
        lines.append(f"{res['ok_count']}/{res['count']} ok")
    if res.get("note"):
        lines.append(res["note"])
    return "\n".join(lines)


def pmtu(cl: Cluster, src_text: str, dst_text: str, timeout: float) -> dict[str, Any]:
    src, dst = _source(cl, src_text), targets.resolve(cl, dst_text)
    assert src.netns is not None
    res = dict(path_mtu.pmtu(src.netns, dst.ip, timeout=timeout))
    limited = res.get("limited_by")
    res.update({"from": src.label, "to": dst.label, "to_ip": dst.ip})
    if limited and limited != "local":
        res["limited_by_name"] = targets.who(cl, limited)
    return res


def pmtu_text(res: dict[str, Any]) -> str:
    by = res.get("limited_by")
    hop = f"the sender's own interface ({res['from']})" if by == "local" else \
        f"{by}" + (f" ({res['limited_by_name']})" if res.get("limited_by_name") else "")
    return f"path MTU {res['from']} -> {res['to']} ({res['to_ip']}): {res['path_mtu']}, limited by {hop}"


def matrix(cl: Cluster, proto: str, port: int, timeout: float, progress: Progress = _quiet,
           workers: int = 64, namespaces: list[str] | None = None, retries: int = 1) -> dict[str, Any]:
    """Every pod to every pod (itself included, only `namespaces` when given), probed in parallel, beside what the
    policy engine expects.  A probe that gets no answer is tried again (`retries` times) before it counts as failed,
    so a short `timeout` is safe: a slow first answer (neighbour resolution, a cold path) is not read as a denial.
    A policy's REJECT answers at once (ICMP port unreachable), until the node's ICMP rate limit (the kernel's
    net.ipv4.icmp_ratelimit: a burst of 6, then 1/s per destination) makes further denials cost the timeout.
    `failures` counts probes that did not connect; `denials` names how each pair was turned away (`denial`; None
    for a pair that was not); `disagreements` lists the pairs where the dataplane differs from the engine;
    `expected` is the engine's matrix."""
    pods = [p.key for p in cl.plan.pods if namespaces is None or p.key.split("/", 1)[0] in namespaces]
    tgt = {k: targets.resolve(cl, k) for k in pods}
    pairs = [(a, b) for a in pods for b in pods]
    t0 = time.monotonic()
    done = 0

    def run(pair: tuple[str, str]) -> tuple[str, str, dict[str, Any]]:
        a, b = pair
        r = _one(cl, tgt[a], tgt[b], proto, port, None, False, timeout)
        for _ in range(retries):
            if r["ok"] or r["verdict"] == "refused":  # an RST or a port unreachable (a REJECT) is an answer
                break
            r = _one(cl, tgt[a], tgt[b], proto, port, None, False, timeout)
        return a, b, r

    results: dict[str, dict[str, Any]] = {a: {} for a in pods}
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for a, b, r in ex.map(run, pairs):
            results[a][b] = r
            done += 1
            progress("probes", done, len(pairs))
    observed = {a: {b: results[a][b]["ok"] for b in pods} for a in pods}
    verdicts = {a: {b: results[a][b]["verdict"] for b in pods} for a in pods}
    denials = {a: {b: denial(results[a][b]) for b in pods} for a in pods}
    failures = sum(not ok for row in observed.values() for ok in row.values())
    expected = Engine.for_cluster(cl.topology, cl.allocations).matrix(pods, port, Protocol(proto.upper()))
    return {"proto": proto, "port": port, "pods": pods, "observed": observed, "verdicts": verdicts,
            "denials": denials,
            "client_ip_seen": {a: {b: results[a][b].get("client_ip_seen") for b in pods} for a in pods},
            "probes": len(pairs), "failures": failures, "seconds": round(time.monotonic() - t0, 3),
            "expected": expected, "disagreements": netpol_explain.disagreements(pods, observed, expected, verdicts),
            "policies": len(cl.topology.network_policies), "note": daemons.note(cl.record) if failures else None}


def matrix_failed(res: dict[str, Any]) -> bool:
    """The matrix's exit status: once the cluster has policies, any disagreement with the engine; without any,
    any probe that did not connect (every pod must reach every pod)."""
    return bool(res["disagreements"]) if res["policies"] else res["failures"] > 0


def explain(cl: Cluster, src: str, dst: str, proto: str, port: int | None) -> dict[str, Any]:
    """What the policy engine decides for FROM -> TO, with the rules behind it and the chains that enforce it."""
    engine = Engine.for_cluster(cl.topology, cl.allocations)
    try:
        a, b = engine.endpoint(src), engine.endpoint(dst)
    except (KeyError, ValueError):
        raise targets.TargetError(f"explain takes NS/POD, node/NAME, external or an IP address: {src} -> {dst}") \
            from None
    if port is None:
        port = _default_port(cl, targets.resolve(cl, dst), proto) if b.pod is not None else 80
    v = engine.check(a, b, port, Protocol(proto.upper()))
    return netpol_explain.verdict_dict(v, _dataplane(cl, v))


def _dataplane(cl: Cluster, v: Any) -> dict[str, str]:
    """Where each side is enforced: the node, the pod's KUBE-POD-FW chain and the rule that rejects."""
    out = {}
    for side in (v.egress, v.ingress):
        if side.pod is None or not side.policies:
            continue
        pp = cl.plan.pod(side.pod)
        index = netpol_sync.load_index(cl.record, pp.node) if pp else {}
        chain = next((c for c, what in index.items() if what == f"pod {side.pod}"), None)
        if pp and chain:
            out[f"{side.direction.lower} of {side.pod}"] = (
                f"node {pp.node}, chain {chain}; what no policy allows hits its rule \"{side.pod} reject\"")
    return out
