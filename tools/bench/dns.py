#!/usr/bin/env python3
"""DNS benchmark: queries per second the cluster DNS server answers (from a pod, through the kube-dns ClusterIP
and kube-proxy's DNAT), and the resolution time of a short name under ndots:5 (the search path first: NXDOMAINs,
then the answer) versus a fully qualified one (one query).

    .venv/bin/python tools/bench/dns.py [--queries 5000] [--window 32] [--repeat 20] [--json] [--smoke]

Brings up topologies/dns.yaml under a random name; needs root; removes its cluster (and whatever `down` left of
it, see owned.py) however it ends.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import owned  # noqa: E402
from emu.cluster import lifecycle as clusters  # noqa: E402
from emu.apply import netns, state  # noqa: E402
from emu.addons.dns import addon, wire  # noqa: E402
from emu.addons.dns import probe as dns_probe  # noqa: E402

SMOKE = {"queries": 200, "repeat": 2}  # what CI runs (tests/integration/test_bench_smoke.py)


def qps(server: str, name: str, total: int, window: int) -> float:
    """`window` queries in flight over one UDP socket (as dnsperf does), `total` answered."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    packets = [wire.query(name, "A", i & 0xFFFF) for i in range(total)]
    sent = answered = 0
    t0 = time.perf_counter()
    while sent < min(window, total):
        s.sendto(packets[sent], (server, 53))
        sent += 1
    while answered < total:
        try:
            s.recv(4096)
        except socket.timeout:
            break
        answered += 1
        if sent < total:
            s.sendto(packets[sent], (server, 53))
            sent += 1
    dt = time.perf_counter() - t0
    s.close()
    return answered / dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the smallest run, as CI makes it: "
                    + " ".join(f"--{k} {v}" for k, v in SMOKE.items()))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    name = owned.cluster_name("dns")
    problems: list[str] = []
    with owned.cluster(name, state.cluster_dir(name), clusters.down, problems):
        clusters.up(os.path.join(ROOT, "topologies/dns.yaml"), name)
        cl = clusters.open_cluster(name)
        src = cl.plan.pod("ns1/client").netns.name
        dns_ip = addon.cluster_dns_ip(cl)
        rate = netns.run_in(src, lambda: qps(dns_ip, "web.default.svc.cluster.local.", args.queries, args.window))
        rate_fwd = netns.run_in(src, lambda: qps(dns_ip, "example.com.", min(args.queries, 1000), 8))
        out = {"qps_cluster_name": round(rate), "qps_forwarded": round(rate_fwd)}
        for label, q in (("short", "web.default"), ("fqdn", "web.default.svc.cluster.local.")):
            times, nq = [], 0
            for _ in range(args.repeat):
                r = dns_probe.probe_dns(cl, "ns1/client", q)
                assert r["ok"], r
                times.append(r["total_ms"])
                nq = len(r["queries"])
            out[label] = {"name": q, "queries": nq, "median_ms": round(statistics.median(times), 3),
                          "worst_ms": round(max(times), 3)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"queries/s (cluster name, {args.window} in flight): {out['qps_cluster_name']}")
        print(f"queries/s (forwarded to the external resolver, 8 in flight): {out['qps_forwarded']}")
        for label in ("short", "fqdn"):
            o = out[label]
            print(f"{label:5} {o['name']:<34} {o['queries']} queries  median {o['median_ms']:.2f} ms  "
                  f"worst {o['worst_ms']:.2f} ms")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(owned.main(main))
