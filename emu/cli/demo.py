"""The main job, end to end: bring a topology up, probe it, report what the dataplane did, tear it down."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emu.cluster import lifecycle as clusters
from emu.network import table as networks
from emu.observe import probing
from emu.report import matrix, views
from emu.cluster.lifecycle import Progress


def _cross_node_pair(cl: clusters.Cluster) -> tuple[str, str] | None:
    pods = cl.plan.pods
    for a in pods:
        for b in pods:
            if a.node != b.node:
                return a.key, b.key
    return None


def run(path: str, name: str | None, progress: Progress, say: Callable[[str], Any] | None) -> dict[str, Any]:
    echo = say or (lambda s: None)
    cl = clusters.up(path, name, progress)
    try:
        c = cl.topology.cluster
        net = networks.for_cluster(c)
        echo(f"cluster {cl.name} up: {len(c.nodes)} nodes, {len(cl.plan.pods)} pods, {net.summary(c)}")
        echo(views.pods(cl, None).table(wide=True))
        out: dict[str, Any] = {"cluster": cl.name, "backend": c.cni.backend.value, "checks": []}
        for proto in ("tcp", "udp"):
            m = probing.matrix(cl, proto, 80, 1.0)
            echo("")
            echo(matrix.matrix_text(m))
            out["checks"].append({"check": f"matrix {proto}/80", "ok": m["failures"] == 0,
                                  "probes": m["probes"], "failures": m["failures"]})
        pair = _cross_node_pair(cl)
        if pair:
            a, b = pair
            edge = net.pod_mtu(c, None) - 28  # ICMP payload that fills the pod MTU: IP 20 + ICMP 8
            echo(f"\nMTU edge across nodes ({a} -> {b}), pod MTU {net.pod_mtu(c, None)}:")
            for size, expect in ((edge, True), (edge + 1, False)):
                r = probing.probe_many(cl, a, b, "icmp", None, size, True, 1, 1.0)
                echo("  " + probing.probe_text(r))
                out["checks"].append({"check": f"icmp DF size {size}", "ok": r["ok"] == expect,
                                      "verdict": r["verdict"], "expected_ok": expect})
            r = probing.probe_many(cl, a, b, "udp", 80, 4000, False, 1, 1.0)
            echo("  " + probing.probe_text(r))
            out["checks"].append({"check": "udp 4000 bytes fragmented", "ok": r["ok"] and
                                  r["results"][0].get("bytes_answered") == 4000})
            pm = probing.pmtu(cl, a, b, 1.0)
            echo("  " + probing.pmtu_text(pm))
            out["checks"].append({"check": "path MTU", "ok": pm["path_mtu"] == net.pod_mtu(c, None),
                                  "path_mtu": pm["path_mtu"]})
        out["ok"] = all(ch["ok"] for ch in out["checks"])
        bad = [ch["check"] for ch in out["checks"] if not ch["ok"]]
        echo("\nresult: " + ("every check passed" if not bad else f"FAILED: {', '.join(bad)}"))
        return out
    finally:
        clusters.down(cl.name)
        echo(f"cluster {cl.name} removed")
