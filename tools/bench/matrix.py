#!/usr/bin/env python3
"""Matrix benchmark: how fast `emu matrix` probes a cluster with NetworkPolicies, allowed and denied probes mixed.

For each size it brings up a cluster (the 9-pod upstream model, topologies/netpol-model.yaml, then generated models
of 30 and 100 pods in namespaces x, y and z labelled pod=a|b|c), applies one policy set live (`emu apply`, timed:
that is kube-router's sync on every node), and runs the all-pairs matrix for TCP and UDP on ports 80 and 81.  Each
probe is a real connection or datagram; a denied one is answered by kube-router's REJECT (ICMP port unreachable)
unless the node's ICMP rate limit swallows it, then it costs the probe timeout (and one retry).

The policies: x is default-deny for ingress, with x/a open to namespace y on port 81 (TCP and UDP); y's pods
labelled pod=b may send only to namespace z.

    .venv/bin/python tools/bench/matrix.py [--sizes 9,30,100] [--timeout 0.3] [--workers 64] [--json] [--smoke]

Needs root; removes its clusters (and whatever `down` left of them, see owned.py) however it ends.  Target: the
9-pod model's 4 matrices (324 probes) in <= 30 s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import owned  # noqa: E402
from emu.cluster import converge  # noqa: E402
from emu.cluster import lifecycle as clusters  # noqa: E402
from emu.apply import neighbours
from emu.observe import probing
from emu.apply import state  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "topologies", "netpol-model.yaml")
SMOKE_SIZES = "9"  # what CI runs (tests/integration/test_bench_smoke.py): the upstream model, 324 probes
COMBOS = (("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81))
PORTS = ("[{name: serve-80-tcp, containerPort: 80}, {name: serve-80-udp, containerPort: 80, protocol: UDP}, "
         "{name: serve-81-tcp, containerPort: 81}, {name: serve-81-udp, containerPort: 81, protocol: UDP}]")
POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y-on-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
    ports: [{port: 81, protocol: TCP}, {port: 81, protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-to-z-only, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]}]
"""


def topology(name: str, pods: int) -> str:
    """pods spread over x, y, z (labelled pod=a|b|c in turn) and over enough nodes to keep the shared neighbour
    table of an all-pairs matrix under the root namespace's gc_thresh3."""
    nodes = max(3, pods // 5)
    docs = [f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {{nodes: {nodes}}}\n"]
    docs += [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in "xyz"]
    for i in range(pods):
        ns, label = "xyz"[i % 3], "abc"[(i // 3) % 3]
        docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {ns}, labels: {{pod: {label}}}}}\n"
                    f"spec: {{containers: [{{name: c, ports: {PORTS}}}]}}\n")
    return "---\n".join(docs)


def run_size(pods: int, timeout: float, workers: int, tmp: str, problems: list[str]) -> dict:
    name = owned.cluster_name(f"m{pods}")
    path = MODEL if pods == 9 else os.path.join(tmp, f"{name}.yaml")
    if pods != 9:
        with open(path, "w") as f:
            f.write(topology(name, pods))
    pol = os.path.join(tmp, "policies.yaml")
    with open(pol, "w") as f:
        f.write(POLICIES)
    with owned.cluster(name, state.cluster_dir(name), clusters.down, problems):
        clusters.up(path, name)
        t0 = time.monotonic()
        converge.apply_file(name, pol)
        sync = time.monotonic() - t0
        cl = clusters.open_cluster(name)
        risk = neighbours.for_matrix(cl.plan)
        rows, t0 = [], time.monotonic()
        for proto, port in COMBOS:
            m = probing.matrix(cl, proto, port, timeout, workers=workers)
            rows.append({"proto": proto, "port": port, "probes": m["probes"], "denied": m["failures"],
                         "disagreements": len(m["disagreements"]), "seconds": m["seconds"]})
        total = time.monotonic() - t0
    probes = sum(r["probes"] for r in rows)
    return {"pods": pods, "nodes": len(cl.plan.nodes), "probes": probes, "denied": sum(r["denied"] for r in rows),
            "disagreements": sum(r["disagreements"] for r in rows), "seconds": round(total, 3),
            "probes_per_s": round(probes / total, 1), "policy_sync_s": round(sync, 3),
            "neighbour_risk": risk.at_risk, "matrices": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="9,30,100")
    ap.add_argument("--timeout", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help=f"the smallest run, as CI makes it: --sizes {SMOKE_SIZES}")
    args = ap.parse_args()
    if args.smoke:
        args.sizes = SMOKE_SIZES
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="emu-bench-matrix-") as tmp:
        results = [run_size(int(s), args.timeout, args.workers, tmp, problems) for s in args.sizes.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return 1 if problems else 0
    print(f"{'pods':>5} {'nodes':>5} {'probes':>7} {'denied':>7} {'wrong':>5} {'matrix s':>9} {'probes/s':>9} "
          f"{'sync s':>7}")
    for r in results:
        print(f"{r['pods']:>5} {r['nodes']:>5} {r['probes']:>7} {r['denied']:>7} {r['disagreements']:>5} "
              f"{r['seconds']:>9.2f} {r['probes_per_s']:>9.1f} {r['policy_sync_s']:>7.3f}")
    nine = next((r for r in results if r["pods"] == 9), None)
    if nine:
        verdict = "PASS" if nine["seconds"] <= 30 and nine["disagreements"] == 0 else "MISS"
        print(f"{verdict}: 9-pod model, 2 ports x 2 protocols ({nine['probes']} probes) in {nine['seconds']:.2f} s "
              f"(target <= 30 s, no disagreement)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(owned.main(main))
