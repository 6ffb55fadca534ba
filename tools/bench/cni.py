#!/usr/bin/env python3
"""Bring-up of NODES x PODS pods with the built-in wiring and with the real reference plugins (bridge + host-local +
portmap through flannel's delegate, plus loopback), in one run; per-pod plugin time from `emu cni log`.

    .venv/bin/python tools/bench/cni.py [--nodes 10] [--pods-per-node 50] [--smoke]

Needs root; removes its clusters (and whatever `down` left of them, see owned.py) however it ends.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import owned  # noqa: E402
from emu.cluster import lifecycle as clusters  # noqa: E402
from emu.apply import state  # noqa: E402
from emu.network.cni import pods as cni_pods, runtime  # noqa: E402

SMOKE = (1, 2)  # nodes, pods per node: what CI runs (tests/integration/test_bench_smoke.py)

CLUSTER = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  nodes: {nodes}
  cni: {cni}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
"""


def run(d: str, tag: str, cni: str, nodes: int, per: int, problems: list[str]) -> dict[str, float]:
    name = owned.cluster_name(tag)
    path = os.path.join(d, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(CLUSTER.format(name=name, nodes=nodes, cni=cni, replicas=nodes * per))
    with owned.cluster(name, state.cluster_dir(name), clusters.down, problems):
        t0 = time.perf_counter()
        cl = clusters.up(path, name)
        up = time.perf_counter() - t0
        out = {"up": up, "pods/s": nodes * per / up}
        log = runtime.read_log(cni_pods.log_path(state.cluster_dir(name)))
        if log:
            per_pod: dict[str, float] = {}
            for e in log:
                per_pod[e["pod"]] = per_pod.get(e["pod"], 0.0) + e["ms"]
            out["plugin ms/pod"] = statistics.mean(per_pod.values())
            out["p95 ms/pod"] = sorted(per_pod.values())[math.ceil(len(per_pod) * 0.95) - 1]  # nearest rank
            for p in ("loopback", "bridge", "portmap"):
                ms = [e["ms"] for e in log if e["plugin"] == p]
                out[f"{p} ms"] = statistics.mean(ms) if ms else 0.0
        t0 = time.perf_counter()
        clusters.down(cl.name)
        out["down"] = time.perf_counter() - t0
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods-per-node", type=int, default=50)
    ap.add_argument("--smoke", action="store_true",
                    help=f"the smallest run, as CI makes it: --nodes {SMOKE[0]} --pods-per-node {SMOKE[1]}")
    a = ap.parse_args()
    if a.smoke:
        a.nodes, a.pods_per_node = SMOKE
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        # a private state root unless one is set; the clusters are gone before it is removed
        os.environ.setdefault("EMU_STATE_DIR", os.path.join(d, "state"))
        rows = [("built-in", run(d, "builtin", "{plugin: flannel}", a.nodes, a.pods_per_node, problems)),
                ("real plugins", run(d, "cni", "{plugin: cni, nodeConfig: flannel}", a.nodes, a.pods_per_node,
                                     problems))]
    print(f"{a.nodes}x{a.pods_per_node} = {a.nodes * a.pods_per_node} pods")
    print(f"{'wiring':<13} {'up s':>6} {'pods/s':>7} {'down s':>7} {'plugin ms/pod':>14} {'p95':>6} "
          f"{'loopback':>9} {'bridge':>7} {'portmap':>8}")
    for label, r in rows:
        print(f"{label:<13} {r['up']:6.2f} {r['pods/s']:7.0f} {r['down']:7.2f} {r.get('plugin ms/pod', 0):14.1f} "
              f"{r.get('p95 ms/pod', 0):6.1f} {r.get('loopback ms', 0):9.1f} {r.get('bridge ms', 0):7.1f} "
              f"{r.get('portmap ms', 0):8.1f}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(owned.main(main))
