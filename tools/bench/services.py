#!/usr/bin/env python3
"""Service benchmark: kube-proxy sync time and first-packet latency at 100, 1000 and 5000 Services, in iptables and
nftables mode, measured in one run.

For each mode and size it brings up a fresh 2-node cluster with two server pods and a client pod, builds node-1's
proxier input with N ClusterIP Services x 2 endpoints and times the sync that writes them all (`iptables-restore
--noflush` or `nft -f`, exactly what `emu` runs), then a resync after one endpoint moved (nftables mode rewrites
only that service, as kube-proxy's partial sync does; iptables mode here always restores everything).  Then it
measures the median TCP connect time from the client pod to ClusterIPs spread over the whole table (the first
packet of a connection walks the rules: linear in iptables mode, a map lookup in nftables mode).

    .venv/bin/python tools/bench/services.py [--sizes 100,1000,5000] [--connects 60] [--json] [--smoke]

Needs root; removes its clusters (and whatever `down` left of them, see owned.py) however it ends.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import owned  # noqa: E402
from emu.cluster import lifecycle as clusters  # noqa: E402
from emu.observe import probe  # noqa: E402
from emu.apply import state  # noqa: E402
from emu.addons.kubeproxy import sync as kpsync  # noqa: E402
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort  # noqa: E402
from emu.model.types import ProxyMode  # noqa: E402

# iptables mode twice: with Debian's default nft backend, whose `iptables-restore --noflush` is slow on large
# inputs (iptables 1.8.9), and with the legacy backend (spec.iptablesBackend: legacy).
MODES = ("iptables/nft", "iptables/legacy", "nftables")
SMOKE = {"sizes": "10", "connects": 5}  # what CI runs (tests/integration/test_bench_smoke.py)
TOPOLOGY = """apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec: {{nodes: 2, proxy: {{mode: {mode}}}, iptablesBackend: {backend}}}
---
kind: Pod
metadata: {{name: a, labels: {{app: s}}}}
spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
---
kind: Pod
metadata: {{name: b, labels: {{app: s}}}}
spec: {{nodeName: node-2, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
---
kind: Pod
metadata: {{name: client}}
spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
"""


def proxier_input(cl: clusters.Cluster, n: int) -> NodeProxyState:
    """node-1's proxier input with n Services x 2 endpoints; ClusterIPs from 10.100.0.0 up."""
    base = int(ipaddress.IPv4Address("10.100.0.0"))
    eps = tuple(Endpoint(pp.ip, 80, pp.node, pod=pp.key) for pp in cl.plan.pods if pp.key != "default/client")
    svcs = tuple((ServicePort("bench", f"svc-{i}", "http", "TCP", ipaddress.IPv4Address(base + i), 80), eps)
                 for i in range(n))
    c = cl.topology.cluster
    node = cl.plan.nodes[0]
    return NodeProxyState(node.name, (node.ip,), c.pod_cidr, (c.service_cidr,), svcs)


def latency(cl: clusters.Cluster, n: int, connects: int) -> float:
    client = cl.plan.pod("default/client")
    assert client is not None
    base = int(ipaddress.IPv4Address("10.100.0.0"))
    rtts = []
    for k in range(connects):
        ip = str(ipaddress.IPv4Address(base + (k * 7919) % n))  # spread over the whole table
        r = probe.tcp(client.netns.name, ip, 80, timeout=2.0)
        if r.ok and r.rtt_ms is not None:
            rtts.append(r.rtt_ms)
    return statistics.median(rtts) if rtts else float("nan")


def one_endpoint_moved(st: NodeProxyState) -> NodeProxyState:
    """The same Services with one endpoint of the first one changed (a pod replaced)."""
    (svc, eps), rest = st.services[0], st.services[1:]
    moved = (dataclasses.replace(eps[0], ip=ipaddress.IPv4Address(int(eps[0].ip) + 100)),) + eps[1:]
    return dataclasses.replace(st, services=((svc, moved),) + rest)


def run_size(label: str, n: int, connects: int, tmp: str, problems: list[str]) -> dict[str, object]:
    """A fresh 2-node cluster; sync n Services onto node-1 (the first sync that has them: the full one), then
    resync after one endpoint moved (kube-proxy's common case), then measure connects."""
    mode, _, backend = label.partition("/")
    backend = backend or "nft"
    name = owned.cluster_name("svc", *label.split("/"))
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(TOPOLOGY.format(name=name, mode=mode, backend=backend))
    with owned.cluster(name, state.cluster_dir(name), clusters.down, problems):
        cl = clusters.up(path, name)
        ns = cl.plan.nodes[0].netns
        st = proxier_input(cl, n)
        full = kpsync.sync_node(ns, st, ProxyMode(mode), first=False, backend=backend)
        moved = one_endpoint_moved(st)
        t0 = time.monotonic()
        kpsync.sync_node(ns, moved, ProxyMode(mode), first=False, backend=backend, previous=st)
        resync = time.monotonic() - t0
        kpsync.sync_node(ns, st, ProxyMode(mode), first=False, backend=backend, previous=moved)
        lat = latency(cl, n, connects)
    print(f"  {label:<15} {n:>5} services: full sync {full.seconds:.2f}s, resync {resync:.2f}s, "
          f"median connect {lat:.3f} ms", file=sys.stderr, flush=True)
    return {"mode": label, "services": n, "sync_s": round(full.seconds, 3), "resync_s": round(resync, 3),
            "rules": full.rules, "connect_ms": round(lat, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--connects", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the smallest run, as CI makes it: "
                    + " ".join(f"--{k} {v}" for k, v in SMOKE.items()))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    sizes = [int(x) for x in args.sizes.split(",")]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="emu-bench-services-") as tmp:
        rows = [run_size(label, n, args.connects, tmp, problems) for label in MODES for n in sizes]
    for r in rows:
        if math.isnan(float(r["connect_ms"])):  # type: ignore[arg-type]
            problems.append(f"{r['mode']} {r['services']} services: no connection to a ClusterIP succeeded")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if problems else 0
    print(f"{'mode':<15} {'services':>8} {'sync s':>7} {'resync s':>8} {'lines':>7} {'connect ms':>10} "
          f"{'vs smallest':>11}")
    for r in rows:
        first = next(x for x in rows if x["mode"] == r["mode"])
        ratio = float(r["connect_ms"]) / float(first["connect_ms"])  # type: ignore[arg-type]
        print(f"{r['mode']:<15} {r['services']:>8} {r['sync_s']:>7.2f} {r['resync_s']:>8.2f} {r['rules']:>7} "
              f"{r['connect_ms']:>10.3f} {ratio:>10.2f}x")
    big = max(sizes)
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        top = next(r for r in rs if r["services"] == big)
        print(f"{'PASS' if float(top['sync_s']) <= 5 else 'MISS'}  {mode}: full sync of {big} Services <= 5 s "
              f"({top['sync_s']} s)")
    nf = [r for r in rows if r["mode"] == "nftables"]
    ratio = float(nf[-1]["connect_ms"]) / float(nf[0]["connect_ms"])
    print(f"{'PASS' if ratio <= 1.2 else 'MISS'}  nftables: connect latency at {big} within 1.2x of {min(sizes)} "
          f"({ratio:.2f}x)")
    for p in problems:
        print(f"problem: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(owned.main(main))
