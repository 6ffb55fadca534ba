#!/usr/bin/env python3
"""Bring-up benchmark: how fast `emu.cluster.lifecycle.up` / `down` are, against a floor built with `ip -batch`.

For each size NODESxPODS_PER_NODE it writes a topology file (pods spread evenly over the nodes with nodeName),
times `up` and `down`, reads the agent's RSS right after `up`, and builds "the floor": the same namespaces, veths,
addresses and routes made by iproute2 in batch mode (one `ip -batch` for every `netns add`, then one `ip -batch FILE`
per namespace, entered with `nsenter --net` or, with --floor-enter ip-n, as `ip -n NS -batch FILE`), which is about
the least a process-per-namespace tool can do.

    .venv/bin/python tools/bench/bringup.py [--sizes 3x10,10x50,10x100] [--json] [--profile] [--smoke]

Needs root.  It never touches the root network namespace; it removes only what it created (emu's cluster through
`emu.cluster.lifecycle.down` of its own uniquely named cluster, then whatever that left, see owned.py; the floor's namespaces
from its own list), in `finally`, also on Ctrl-C and SIGTERM.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import owned
from owned import log, no_interrupts

NETNS_DIR = "/run/netns"
DEFAULT_SIZES = "3x10,10x50,10x100"
SMOKE_SIZES = "1x2"  # what CI runs (tests/integration/test_bench_smoke.py): it finishes and prints its table
POD_MTU = 1450  # flannel vxlan: underlay 1500 - 50
UNDERLAY_MTU = 1500
TARGET_PODS = 1000
TARGET_PODS_PER_S = 200.0
TARGET_RATIO = 2.0
TARGET_DOWN_S = 2.0
TARGET_AGENT_MB = 150.0

TOKEN = secrets.token_hex(3)  # one per run: every floor namespace this run makes carries it


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


# --- sizes and topology files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    nodes: int
    per_node: int

    @property
    def pods(self) -> int:
        return self.nodes * self.per_node

    @property
    def label(self) -> str:
        return f"{self.nodes}x{self.per_node}"


def parse_sizes(text: str) -> list[Size]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n, p = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise SystemExit(f"bad size {part!r}: expected NODESxPODS_PER_NODE, e.g. 10x100") from None
        if not 1 <= n <= 250 or not 0 <= p <= 250:
            raise SystemExit(f"bad size {part!r}: 1..250 nodes and 0..250 pods per node (one /24 per node)")
        out.append(Size(n, p))
    if not out:
        raise SystemExit("no sizes given")
    return out


def pod_doc(node: int, j: int) -> str:
    ports = ", ".join(f"{{containerPort: {port}, protocol: {proto}}}" for port in (80, 81) for proto in ("TCP", "UDP"))
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p-{node}-{j}, namespace: default}}\n"
            f"spec: {{nodeName: node-{node}, containers: [{{name: c, ports: [{ports}]}}]}}\n")


def topology_text(name: str, size: Size) -> str:
    docs = [
        "apiVersion: emu.dev/v1alpha1\nkind: Cluster\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{nodes: {size.nodes}, podCIDR: 10.244.0.0/16, nodeCIDRMaskSize: 24, nodeNetwork: 172.18.0.0/24, "
        "mtu: 1500, cni: {plugin: flannel, backend: vxlan}}\n"
    ]
    # round robin over the nodes, so every node gets exactly per_node pods
    docs += [pod_doc(n, j) for j in range(1, size.per_node + 1) for n in range(1, size.nodes + 1)]
    return "---\n".join(docs)


# --- results --------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    size: str
    nodes: int
    pods: int
    up_s: float | None = None
    pods_per_s: float | None = None
    stages: dict[str, float] = field(default_factory=dict)  # seconds spent in each stage of up
    down_s: float | None = None
    agent_mb: float | None = None
    netns: int | None = None
    floor_s: float | None = None
    floor_del_s: float | None = None
    floor_netns: int | None = None
    ratio: float | None = None
    problems: list[str] = field(default_factory=list)


def rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class StageClock:
    """The `progress` callback of `up`: notes when each stage is first and last reported.

    `plan` runs from the call to the first report (parse, IPAM, plan, preflight, record); every stage then ends at
    its last report (so `pods` includes the infrastructure namespaces, `agent` the agent's start and readiness);
    `finish` is what follows the last report."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def split(self, end: float) -> dict[str, float]:
        if not self.first:
            return {"plan": round(end - self.t0, 3)}
        out, t = {}, self.t0
        out["plan"] = round(min(self.first.values()) - t, 3)
        t = min(self.first.values())
        for stage in sorted(self.last, key=lambda k: self.last[k]):
            out[stage] = round(self.last[stage] - t, 3)
            t = self.last[stage]
        out["finish"] = round(end - t, 3)
        return out


# --- ip -batch ------------------------------------------------------------------------------------------------------


def ip_batch(lines: list[str], path: str, netns: str | None = None, force: bool = False) -> None:
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    run_ip(ip_argv(path, netns, force))


ENTER = "nsenter"  # how the floor runs a batch inside a namespace: "ip-n" (ip -n NS -batch) or "nsenter"


def ip_argv(path: str, netns: str | None = None, force: bool = False) -> list[str]:
    """`ip -n NS -batch FILE`.  `ip -n` also unshares a mount namespace and remounts /sys (for `ip link` names in
    sysfs); copying the mount table costs more the more namespaces are mounted under /run/netns.  With ENTER
    "nsenter" the same batch runs under `nsenter --net=/run/netns/NS`: only setns(), no mount namespace."""
    opt = ["-force"] if force else []
    if netns and ENTER == "nsenter":
        return ["nsenter", f"--net={os.path.join(NETNS_DIR, netns)}", "ip", *opt, "-batch", path]
    return ["ip", *(["-n", netns] if netns else []), *opt, "-batch", path]


def run_ip(argv: list[str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {(p.stderr or p.stdout).strip()[:500]}")


def remove_netns(names: list[str], workdir: str, what: str) -> list[str]:
    """Delete those of `names` (all made by this run) that still exist; returns the ones that did."""
    left = [n for n in names if netns_exists(n)]
    if left:
        try:
            ip_batch([f"netns del {n}" for n in left], os.path.join(workdir, f"cleanup-{what}.batch"), force=True)
        except RuntimeError as e:
            log(f"cleanup of {what}: {e}")
    return left


# --- emu ------------------------------------------------------------------------------------------------------------


class EmuRun:
    """One `up` + `down` of a cluster this run names and owns."""

    def __init__(self, size: Size, workdir: str, tag: str = "") -> None:
        from emu.cluster import lifecycle as cluster
        from emu.apply import state
        self.size = size
        self.name = owned.cluster_name(size.label + tag)  # e.g. bench-ab12-10x100, bench-ab12-10x100-prof
        self.state_dir = state.cluster_dir(self.name)
        if os.path.exists(self.state_dir) or owned.namespaces(self.name):
            raise RuntimeError(f"cluster name {self.name} is already in use: not this run's to remove")
        self.path = os.path.join(workdir, f"{self.name}.yaml")
        with open(self.path, "w") as f:
            f.write(topology_text(self.name, size))
        self.cluster = cluster
        self.names = cluster.plan_file(self.path, self.name)[2].all_netns()  # pure: what up will create
        self.started = False
        self.seen: list[owned.Process] = []  # the cluster's processes right after up

    def up(self, progress: Callable[[str, int, int], None]) -> Any:
        self.started = True
        log(f"cluster {self.name}")
        return self.cluster.up(self.path, name=self.name, progress=progress)

    def agent_mb(self) -> tuple[float | None, list[str]]:
        """VmRSS of the cluster's agent, and a problem if there is not exactly one.  The agent is found as `emu down`
        recognises it: a process of this cluster (owned.processes) running `-m emu.cluster.agent`.  Also notes every process
        of the cluster, so that `cleanup` can check each is gone after `down`."""
        self.seen = owned.processes(self.name, self.state_dir)
        agents = [p for p in self.seen if "emu.cluster.agent" in p.argv]
        if len(agents) != 1:
            return None, [f"expected one agent process after up, found {len(agents)}"]
        return rss_mb(agents[0].pid), []

    def down(self) -> bool:
        return self.cluster.down(self.name)

    def cleanup(self) -> list[str]:
        """Called in `finally`: down if still up, then report (and remove) whatever down left behind."""
        if not self.started:
            return []
        return owned.teardown(self.name, self.state_dir, self.cluster.down, seen=self.seen)


def bench_emu(size: Size, workdir: str, res: Result) -> None:
    run = EmuRun(size, workdir)
    try:
        clock = StageClock()
        t0 = clock.t0
        cl = run.up(clock)
        t1 = time.perf_counter()
        res.up_s = t1 - t0
        res.stages = clock.split(t1)
        res.pods_per_s = size.pods / res.up_s if res.up_s > 0 else None
        res.agent_mb, problems = run.agent_mb()
        res.problems += problems
        res.netns = len(cl.plan.all_netns())
        missing = [n for n in run.names if not netns_exists(n)]
        if missing:
            res.problems.append(f"after up {len(missing)} planned namespaces do not exist (e.g. {missing[0]})")
        t0 = time.perf_counter()
        run.down()
        res.down_s = time.perf_counter() - t0
    finally:
        res.problems += run.cleanup()


def profile_up(size: Size, workdir: str, top: int, dump: str | None) -> str:
    """cProfile of one `up`: the main thread's top entries by cumulative time, then emu's worker threads (namespace
    creation, netns sockets, sysctls and iptables-restore run on short-lived threads that setns())."""
    run = EmuRun(size, workdir, tag="-prof")
    main = cProfile.Profile()
    workers: list[tuple[threading.Thread, cProfile.Profile]] = []
    lock = threading.Lock()

    def hook(frame: Any, event: str, arg: Any) -> None:  # runs once in each new thread, then hands over to cProfile
        sys.setprofile(None)
        p = cProfile.Profile()
        with lock:
            workers.append((threading.current_thread(), p))
        p.enable()

    out = io.StringIO()
    try:
        threading.setprofile(hook)
        t0 = time.perf_counter()
        main.enable()
        try:
            run.up(lambda *a: None)
        finally:
            main.disable()
            threading.setprofile(None)
        wall = time.perf_counter() - t0
        # threads that outlive `up` (the agent's reaper waits for the daemon to exit) are not part of its cost
        done = [p for t, p in workers if not t.is_alive()]
        outliving = [t.name for t, _ in workers if t.is_alive()]
    finally:
        problems = run.cleanup()
    print(f"profile of up {size.label} ({size.pods} pods): {wall:.2f} s wall under the profiler "
          f"(main thread; {len(done)} worker threads below"
          + (f"; left out, still running after up: {', '.join(outliving)}" if outliving else "") + ")", file=out)
    st = pstats.Stats(main, stream=out)
    st.sort_stats("cumulative").print_stats(top)
    if done:
        ws: pstats.Stats | None = None
        for p in done:
            p.create_stats()
            if p.stats:  # type: ignore[attr-defined]
                if ws is None:
                    ws = pstats.Stats(p, stream=out)
                else:
                    ws.add(p)
        if ws is not None:
            print("worker threads, merged (their time is inside the main thread's Thread.join above):", file=out)
            ws.sort_stats("cumulative").print_stats(15)
    if dump:
        st.dump_stats(dump)
        print(f"main-thread stats written to {dump} (python -m pstats {dump})", file=out)
    for p in problems:
        print(f"problem: {p}", file=out)
    return out.getvalue()


# --- the floor: ip -batch -----------------------------------------------------------------------------------------


class Floor:
    """The same namespaces, veths, addresses and routes as emu's pod network, made with iproute2 batches.

    Namespaces: an underlay (bridge + one veth per node and one to the external host), an external host, the nodes
    (eth0 from the underlay with its address; cni0 with .1/24; one veth per pod, enslaved and up, with the peer
    created as `eth0` directly in the pod namespace, MTU 1450) and the pods (eth0 address /24, default route via
    .1).  Not made: flannel.1 and its neighbours/FDB/routes, sysctls, iptables (emu does those as well).
    """

    def __init__(self, size: Size, workdir: str, jobs: int = 1) -> None:
        self.size, self.jobs = size, max(1, jobs)
        self.dir = os.path.join(workdir, f"floor-{size.label}")
        os.makedirs(self.dir, exist_ok=True)
        pre = f"floor{TOKEN}-{size.label}-"
        self.underlay, self.external = pre + "u", pre + "x"
        self.nodes = [f"{pre}n{i}" for i in range(1, size.nodes + 1)]
        self.pods = [(i, j, f"{pre}p{i}-{j}") for j in range(1, size.per_node + 1) for i in range(1, size.nodes + 1)]
        self.names = [self.underlay, self.external, *self.nodes, *(p for _, _, p in self.pods)]
        self.created: list[str] = []  # filled before `ip netns add` runs, so a half-done batch is still cleaned
        self.batches = self._write()

    def _file(self, name: str, lines: list[str]) -> str:
        path = os.path.join(self.dir, name + ".batch")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _write(self) -> list[list[list[str]]]:
        """Steps in order; the commands of one step are independent of each other (may run in parallel)."""
        s = self.size
        add = self._file("add", [f"netns add {n}" for n in self.names])
        u = ["link set lo up", f"link add br-underlay mtu {UNDERLAY_MTU} type bridge", "link set br-underlay up"]
        for i, node in enumerate(self.nodes, start=1):
            u += [f"link add to-n{i} mtu {UNDERLAY_MTU} master br-underlay type veth peer name eth0 "
                  f"mtu {UNDERLAY_MTU} netns {node}", f"link set to-n{i} up"]
        u += [f"link add to-x mtu {UNDERLAY_MTU} master br-underlay type veth peer name eth0 mtu {UNDERLAY_MTU} "
              f"netns {self.external}", "link set to-x up"]
        x = ["link set lo up", "addr add 172.18.0.1/24 dev eth0", "link set eth0 up"]
        per_node: dict[int, list[str]] = {
            i: ["link set lo up", f"addr add 172.18.0.{i + 1}/24 dev eth0", "link set eth0 up",
                f"link add cni0 mtu {POD_MTU} type bridge", f"addr add 10.244.{i - 1}.1/24 dev cni0",
                "link set cni0 up"] for i in range(1, s.nodes + 1)}
        pods: list[list[str]] = []
        for k, (i, j, pod) in enumerate(self.pods):
            veth = f"veth{k:08x}"
            per_node[i] += [f"link add {veth} mtu {POD_MTU} master cni0 type veth peer name eth0 mtu {POD_MTU} "
                            f"netns {pod}", f"link set {veth} up"]
            pods.append(ip_argv(self._file(pod, [
                "link set lo up", f"addr add 10.244.{i - 1}.{j + 1}/24 dev eth0", "link set eth0 up",
                f"route add default via 10.244.{i - 1}.1 dev eth0"]), pod))
        nodes = [ip_argv(self._file(n, per_node[i]), n) for i, n in enumerate(self.nodes, start=1)]
        return [[ip_argv(add)],
                [ip_argv(self._file("underlay", u), self.underlay)],
                [ip_argv(self._file("external", x), self.external), *nodes],
                pods]

    def _run_step(self, cmds: list[list[str]]) -> None:
        if self.jobs == 1 or len(cmds) == 1:
            for argv in cmds:
                run_ip(argv)
            return
        running: list[tuple[list[str], subprocess.Popen[str]]] = []
        todo = list(cmds)
        try:
            while todo or running:
                while todo and len(running) < self.jobs:
                    argv = todo.pop(0)
                    running.append((argv, subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                           stderr=subprocess.PIPE, text=True)))
                argv, proc = running.pop(0)
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv)} failed: {err.strip()[:500]}")
        finally:
            for _, proc in running:
                proc.wait()

    def create(self) -> float:
        t0 = time.perf_counter()
        self.created = list(self.names)
        for step in self.batches:
            self._run_step(step)
        return time.perf_counter() - t0

    def check(self) -> list[str]:
        """Outside the timing: every namespace exists, and the last pod has its address and default route."""
        problems = []
        missing = [n for n in self.names if not netns_exists(n)]
        if missing:
            problems.append(f"floor: {len(missing)} namespaces missing after create (e.g. {missing[0]})")
        if self.pods:
            i, j, pod = self.pods[-1]
            a = subprocess.run(["ip", "-n", pod, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                               text=True).stdout
            r = subprocess.run(["ip", "-n", pod, "route", "show", "default"], capture_output=True, text=True).stdout
            if f"10.244.{i - 1}.{j + 1}/24" not in a or f"via 10.244.{i - 1}.1" not in r:
                problems.append(f"floor: pod {pod} is not configured (addr {a.strip()!r}, route {r.strip()!r})")
        return problems

    def delete(self) -> float:
        path = self._file("del", [f"netns del {n}" for n in self.names])
        t0 = time.perf_counter()
        run_ip(ip_argv(path))
        return time.perf_counter() - t0

    def cleanup(self) -> list[str]:
        left = remove_netns(self.created, self.dir, "floor")
        still = [n for n in self.created if netns_exists(n)]
        return [f"floor: could not remove {len(still)} namespaces (e.g. {still[0]})"] if still else []


def bench_floor(size: Size, workdir: str, res: Result, jobs: int) -> None:
    fl = Floor(size, workdir, jobs)
    try:
        res.floor_s = fl.create()
        res.floor_netns = len(fl.names)
        res.problems += fl.check()
        res.floor_del_s = fl.delete()
    finally:
        with no_interrupts():
            res.problems += fl.cleanup()


# --- output ---------------------------------------------------------------------------------------------------------


def fmt(v: float | int | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[Result]) -> str:
    head = (f"{'size':<8} {'pods':>5} {'up s':>7} {'pods/s':>7} {'floor s':>8} {'ratio':>6} {'down s':>7} "
            f"{'fdel s':>7} {'agent MB':>9} {'netns':>6}")
    rows = [head]
    for r in results:
        rows.append(f"{r.size:<8} {r.pods:>5} {fmt(r.up_s, '.2f'):>7} {fmt(r.pods_per_s, '.0f'):>7} "
                    f"{fmt(r.floor_s, '.2f'):>8} {fmt(r.ratio, '.2f'):>6} {fmt(r.down_s, '.2f'):>7} "
                    f"{fmt(r.floor_del_s, '.2f'):>7} {fmt(r.agent_mb, '.1f'):>9} {fmt(r.netns, 'd'):>6}")
    return "\n".join(rows)


def verdicts(r: Result) -> list[dict[str, Any]]:
    def v(target: str, measured: float | None, ok: bool | None, unit: str) -> dict[str, Any]:
        return {"target": target, "size": r.size, "measured": None if measured is None else round(measured, 3),
                "unit": unit, "verdict": "N/A" if ok is None else ("PASS" if ok else "MISS")}

    pps = r.pods_per_s
    return [
        v(f"{TARGET_PODS} pods up at >= {TARGET_PODS_PER_S:.0f} pods/s", pps,
          None if pps is None else (r.pods >= TARGET_PODS and pps >= TARGET_PODS_PER_S), "pods/s"),
        v(f"up within {TARGET_RATIO:.0f}x the floor", r.ratio, None if r.ratio is None else r.ratio <= TARGET_RATIO,
          "x floor"),
        v(f"down <= {TARGET_DOWN_S:.0f} s", r.down_s, None if r.down_s is None else r.down_s <= TARGET_DOWN_S, "s"),
        v(f"agent <= {TARGET_AGENT_MB:.0f} MB", r.agent_mb,
          None if r.agent_mb is None else r.agent_mb <= TARGET_AGENT_MB, "MB"),
    ]


def verdict_lines(vs: list[dict[str, Any]], pods: int) -> list[str]:
    out = []
    for v in vs:
        x = v["measured"]
        m = "-" if x is None else f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"
        m += "" if x is None else f" {v['unit']}"
        note = f" (largest size has {pods} pods)" if v["target"].startswith(str(TARGET_PODS)) and \
            pods < TARGET_PODS else ""
        out.append(f"{v['verdict']:<4}  {v['target']:<34} {v['size']}: {m}{note}")
    return out


# --- main -----------------------------------------------------------------------------------------------------------


def _cpu() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait


def settle(limit: float) -> None:
    """Namespaces are torn down by a kernel worker after `netns del` returns (~1 s of system time for 1000 of
    them): wait until the machine has been idle for a quarter of a second (at most `limit` seconds), so that one
    measurement does not pay for the previous one's teardown."""
    deadline = time.monotonic() + limit
    time.sleep(min(0.25, limit))
    while time.monotonic() < deadline:
        t0, i0 = _cpu()
        time.sleep(0.25)
        t1, i1 = _cpu()
        if t1 > t0 and (i1 - i0) / (t1 - t0) > 0.9:
            return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"NODESxPODS_PER_NODE,... (default {DEFAULT_SIZES})")
    ap.add_argument("--smoke", action="store_true",
                    help=f"the smallest run, as CI makes it: --sizes {SMOKE_SIZES} --settle 0")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--profile", action="store_true",
                    help="also run cProfile on one extra `up` of the largest size and print the top entries")
    ap.add_argument("--profile-top", type=int, default=25, metavar="N", help="entries to print (default 25)")
    ap.add_argument("--profile-out", metavar="FILE", help="write the main thread's pstats to FILE")
    ap.add_argument("--floor-jobs", type=int, default=1, metavar="N",
                    help="run up to N `ip -n NS -batch` at once for the floor (default 1: one after the other)")
    ap.add_argument("--floor-enter", choices=("nsenter", "ip-n"), default="nsenter",
                    help="run each namespace's batch as `nsenter --net=/run/netns/NS ip -batch FILE` (default: "
                         "faster, no mount namespace) or as `ip -n NS -batch FILE`")
    ap.add_argument("--floor-only", action="store_true", help="only build the floor (no emu)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor")
    ap.add_argument("--settle", type=float, default=4.0, metavar="S",
                    help="after each teardown wait until the CPUs are idle, at most S seconds (default 4), while "
                         "the kernel frees the namespaces; 0: do not wait")
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes, args.settle = SMOKE_SIZES, 0.0
    sizes = parse_sizes(args.sizes)
    global ENTER
    ENTER = args.floor_enter
    if os.geteuid() != 0:
        log("bringup: needs root (network namespaces)")
        return 2
    if not args.floor_only:
        try:
            import emu.cluster.agent  # noqa: F401 - `up` starts it
            import emu.observe.probe  # noqa: F401
            import emu.cluster.lifecycle  # noqa: F401
        except ImportError as e:
            log(f"bringup: cannot import emu ({e}); run with {sys.executable} from the repo's .venv "
                "(tools/setup), or use --floor-only")
            return 2

    results: list[Result] = []
    profile_text = None
    failed = False
    with tempfile.TemporaryDirectory(prefix="emu-bench-") as workdir:
        try:
            for size in sizes:
                res = Result(size.label, size.nodes, size.pods)
                results.append(res)
                try:
                    if not args.floor_only:
                        log(f"[{size.label}] emu up/down ...")
                        bench_emu(size, workdir, res)
                        settle(args.settle)
                    if not args.no_floor:
                        log(f"[{size.label}] floor create/delete ...")
                        bench_floor(size, workdir, res, args.floor_jobs)
                        settle(args.settle)
                except Exception as e:  # noqa: BLE001 - report it and go on with the next size
                    failed = True
                    res.problems.append(f"{type(e).__name__}: {e}")
                    log(f"[{size.label}] failed: {type(e).__name__}: {e}")
                if res.up_s and res.floor_s:
                    res.ratio = res.up_s / res.floor_s
                if res.netns is not None and res.floor_netns is not None and res.netns != res.floor_netns:
                    res.problems.append(f"namespace count differs: emu {res.netns}, floor {res.floor_netns}")
            if args.profile and not args.floor_only:
                big = max(sizes, key=lambda s: s.pods)
                log(f"[{big.label}] profiled up ...")
                try:
                    profile_text = profile_up(big, workdir, args.profile_top, args.profile_out)
                except Exception as e:  # noqa: BLE001
                    failed = True
                    profile_text = f"profile failed: {type(e).__name__}: {e}\n"
        except KeyboardInterrupt:
            if results:
                results[-1].problems.append("interrupted (everything this run made was removed)")
            log("interrupted: cleaned up what this run made")
            failed = True

    largest = max(results, key=lambda r: r.pods) if results else None
    vs = verdicts(largest) if largest and not args.floor_only else []
    if args.json:
        rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in results]
        doc: dict[str, Any] = {"results": rows, "verdicts": vs,
                               "floor_jobs": args.floor_jobs,
                               "floor_enter": args.floor_enter}
        if profile_text is not None:
            doc["profile"] = profile_text
        print(json.dumps(doc, indent=2))
    else:
        print(table(results))
        for r in results:
            if r.stages:
                print(f"{r.size:<8} up stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in r.stages.items()))
        if vs and largest:
            print()
            print("\n".join(verdict_lines(vs, largest.pods)))
        for r in results:
            for p in r.problems:
                print(f"problem [{r.size}]: {p}")
        if profile_text:
            print()
            print(profile_text, end="")
    return 1 if failed or any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(owned.main(main))
