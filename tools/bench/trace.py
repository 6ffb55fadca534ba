#!/usr/bin/env python3
"""Trace benchmark: how long `emu trace` takes on a 10-node cluster (target: <= 2 s per trace).

Brings up one flannel-vxlan cluster of NODES nodes with PODS pods per node and a NodePort Service over all of them
(kube-proxy iptables mode, or --mode nftables), then times `emu.observe.trace.run.trace` (what `emu trace` runs: taps in
every namespace on the path, the nftables trace table on every node, the probe, correlation, rule texts, routing
decisions) for each kind of path, REPEAT times each, and prints the median and the worst.

    .venv/bin/python tools/bench/trace.py [--nodes 10] [--pods 5] [--repeat 5] [--mode iptables] [--json] [--smoke]

Needs root; removes its cluster (and whatever `down` left of it, see owned.py) however it ends.  Exit status 1 if
the target is missed (not with --smoke, which checks that it runs, not how fast) or the teardown found leftovers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import owned  # noqa: E402
from emu.cluster import lifecycle as clusters  # noqa: E402
from emu.apply import state  # noqa: E402
from emu.observe.trace import run  # noqa: E402

TARGET_S = 2.0
SMOKE = {"nodes": 2, "pods": 2, "repeat": 1}  # what CI runs (tests/integration/test_bench_smoke.py)


def topology(name: str, nodes: int, pods: int, mode: str) -> str:
    docs = [f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\n"
            f"spec: {{nodes: {nodes}, proxy: {{mode: {mode}}}, cni: {{plugin: flannel, backend: vxlan}}}}\n"]
    for n in range(1, nodes + 1):
        for i in range(pods):
            docs.append(f"kind: Pod\nmetadata: {{name: p{n}-{i}, labels: {{app: web}}}}\n"
                        f"spec: {{nodeName: node-{n}, containers: [{{name: c, ports: "
                        f"[{{containerPort: 80, protocol: TCP}}, {{containerPort: 80, protocol: UDP}}]}}]}}\n")
    docs.append("kind: Service\nmetadata: {name: web}\nspec: {type: NodePort, selector: {app: web}, "
                "ports: [{port: 80, targetPort: 80, nodePort: 30080}]}\n")
    return "---\n".join(docs)


def cases(nodes: int) -> list[tuple[str, str, str, str, dict]]:
    last = f"node-{nodes}"
    return [
        ("pod -> pod across nodes (tcp)", "default/p1-0", f"default/p{nodes}-0", "tcp", {}),
        ("pod -> ClusterIP (tcp)", "default/p1-0", "svc/default/web:80", "tcp", {}),
        ("external -> NodePort (tcp)", "external", f"nodeport/{last}:30080", "tcp", {}),
        ("pod -> pod, fragmented (udp 3000)", "default/p1-0", f"default/p{nodes}-0", "udp", {"size": 3000}),
        ("pod -> pod (icmp)", "default/p1-0", f"default/p{nodes}-1", "icmp", {}),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods", type=int, default=5, help="pods per node")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mode", choices=["iptables", "nftables"], default="iptables")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the smallest run, as CI makes it: "
                    + " ".join(f"--{k} {v}" for k, v in SMOKE.items()))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    name = owned.cluster_name("trace")
    rows = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="emu-bench-trace-") as d:
        path = os.path.join(d, "topology.yaml")
        with open(path, "w") as f:
            f.write(topology(name, args.nodes, args.pods, args.mode))
        with owned.cluster(name, state.cluster_dir(name), clusters.down, problems):
            t0 = time.monotonic()
            cl = clusters.up(path, name)
            up_s = time.monotonic() - t0
            run.trace(cl, "default/p1-0", f"default/p{args.nodes}-0")  # warm-up: imports, first scapy use
            for label, src, dst, proto, kw in cases(args.nodes):
                times, stages, hops, ok = [], [], 0, True
                for _ in range(args.repeat):
                    t = time.monotonic()
                    res = run.trace(cl, src, dst, proto, **kw)
                    times.append(time.monotonic() - t)
                    stages.append(res["seconds"])
                    hops = len(res["request"]["hops"]) if res["request"] else 0
                    ok = ok and res["ok"]
                rows.append({"case": label, "median_s": round(statistics.median(times), 3),
                             "max_s": round(max(times), 3), "hops": hops, "ok": ok,
                             "stages_median": {k: round(statistics.median(s.get(k, 0) for s in stages), 3)
                                               for k in ("setup", "probe", "report")}})
    worst = max(r["max_s"] for r in rows)
    out = {"nodes": args.nodes, "pods": args.nodes * args.pods, "mode": args.mode, "up_s": round(up_s, 2),
           "repeat": args.repeat, "target_s": TARGET_S, "worst_s": worst, "within_target": worst <= TARGET_S,
           "cases": rows}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.nodes} nodes, {args.nodes * args.pods} pods, kube-proxy {args.mode}, up in {up_s:.2f}s; "
              f"{args.repeat} traces per case")
        print(f"{'case':<36} {'median s':>9} {'max s':>7} {'hops':>5}  setup/probe/report (median)  ok")
        for r in rows:
            st = r["stages_median"]
            print(f"{r['case']:<36} {r['median_s']:>9.3f} {r['max_s']:>7.3f} {r['hops']:>5}  "
                  f"{st['setup']:.3f}/{st['probe']:.3f}/{st['report']:.3f}{'':>11}{'yes' if r['ok'] else 'NO'}")
        print(f"worst {worst:.3f}s, target <= {TARGET_S:.1f}s: {'met' if worst <= TARGET_S else 'MISSED'}")
    return 1 if problems or (worst > TARGET_S and not args.smoke) else 0


if __name__ == "__main__":
    sys.exit(owned.main(main))
