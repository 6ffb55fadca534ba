#!/usr/bin/env python3
"""Measure the kernel lane: boot time (first run with downloads, and cached) and the slowdown of one small test.

    sudo .venv/bin/python tools/kernel-lane/bench.py            # cached boots + slowdown
    sudo .venv/bin/python tools/kernel-lane/bench.py --cold     # also a first run from an empty cache (downloads
                                                                # the kernel with apt into a temp dir, removed after)
    sudo .venv/bin/python tools/kernel-lane/bench.py --json
    sudo .venv/bin/python tools/kernel-lane/bench.py --smoke    # smallest run (CI: tests/kernel/test_bench_smoke.py)

The slowdown test is tests/kernel/test_lane_smoke.py::test_veth_tcp_baseline (two namespaces, a veth, 20 TCP
round trips; nothing emu-specific but its namespace helper). It runs as its own pytest process on the host and in
the lane; both the process's wall time (interpreter start, imports, collection, the test) and the test's own time
(setup, call and teardown, from pytest's JUnit XML) are compared. Times inside the lane are taken inside the guest,
so the boot is not in them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from emu.lane import host as lane_host, initramfs, kernels, vm  # noqa: E402

TEST = "tests/kernel/test_lane_smoke.py::test_veth_tcp_baseline"
SMOKE = {"boots": 1, "reps": 1}  # two VM boots in all: one `run -- true`, one running the test once
MARK = "@@bench@@"


def inner() -> None:
    """Run the slowdown test once in a pytest process and print its timings (host or guest): the process's wall
    time, and the test's own time (setup + call + teardown, from pytest's JUnit XML, in milliseconds)."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as d:
        xml = os.path.join(d, "junit.xml")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                            TEST], cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - t0
        case = ET.parse(xml).find(".//testcase") if os.path.exists(xml) else None
    test = float(case.get("time")) if case is not None else None
    print(MARK + json.dumps({"rc": r.returncode, "wall": wall, "test": test}), flush=True)
    if r.returncode:
        print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)


def _parse(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith(MARK))
    return json.loads(line[len(MARK):])


def host_once() -> dict:
    r = subprocess.run([sys.executable, __file__, "--inner"], capture_output=True, text=True, cwd=ROOT)
    return _parse(r.stdout)


def lane_once(kernel: kernels.KernelImage, reps: int) -> tuple[list[dict], dict]:
    """One VM running the test REPS times (the boot is paid once)."""
    out = io.BytesIO()
    t: dict[str, float] = {}
    script = "; ".join([f"{sys.executable} tools/kernel-lane/bench.py --inner"] * reps)
    rc = vm.run(["sh", "-c", script], kernel=kernel, out=out, timings=t, timeout=900)
    text = out.getvalue().decode(errors="replace")
    if rc != 0:
        raise SystemExit(f"lane run failed ({rc}):\n{text[-3000:]}")
    return [json.loads(ln[len(MARK):]) for ln in text.splitlines() if ln.startswith(MARK)], t


def boot(kernel: kernels.KernelImage) -> dict[str, float]:
    t: dict[str, float] = {}
    rc = vm.run(["true"], kernel=kernel, out=io.BytesIO(), timings=t, timeout=300)
    assert rc == 0, rc
    return t


def cold() -> dict[str, float]:
    """First use from an empty cache: apt download + unpack + depmod, initramfs, boot."""
    tmp = tempfile.mkdtemp(prefix="emu-lane-cold-")
    old = os.environ.get(lane_host.CACHE_ENV)
    os.environ[lane_host.CACHE_ENV] = tmp
    try:
        t0 = time.monotonic()
        k = kernels.ensure_kernel()
        t1 = time.monotonic()
        initramfs.build_initramfs(k)
        t2 = time.monotonic()
        b = boot(k)
        return {"kernel": t1 - t0, "initramfs": t2 - t1, "boot": b["boot"], "total": time.monotonic() - t0}
    finally:
        if old is None:
            os.environ.pop(lane_host.CACHE_ENV, None)
        else:
            os.environ[lane_host.CACHE_ENV] = old
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cold", action="store_true", help="also measure a first run from an empty cache")
    ap.add_argument("--boots", type=int, default=3, help="cached boots to time (default 3)")
    ap.add_argument("--reps", type=int, default=3, help="slowdown-test repetitions on each side (default 3)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the smallest run, as CI makes it: "
                    + " ".join(f"--{k} {v}" for k, v in SMOKE.items()))
    a = ap.parse_args()
    if a.smoke:
        vars(a).update(SMOKE)
    if a.inner:
        inner()
        return
    lane_host.ensure_tools()
    res: dict = {}
    if a.cold:
        res["cold"] = cold()
    k = kernels.ensure_kernel()
    initramfs.build_initramfs(k)
    res["kernel"] = k.version
    boots = [boot(k) for _ in range(a.boots)]
    res["cached_boot"] = {"boot": statistics.median(b["boot"] for b in boots),
                          "true_total": statistics.median(b["total"] for b in boots),
                          "all_boot": [round(b["boot"], 2) for b in boots]}
    host = [host_once() for _ in range(a.reps)]
    lane, lane_t = lane_once(k, a.reps)
    for side in (host, lane):
        bad = [r for r in side if r["rc"] != 0]
        if bad:
            raise SystemExit(f"the slowdown test failed: {bad}")
    med = {name: {f: statistics.median(r[f] for r in side) for f in ("wall", "test")}
           for name, side in (("host", host), ("lane", lane))}
    res["slowdown"] = {"test": TEST, **med,
                       "factor_wall": med["lane"]["wall"] / med["host"]["wall"],
                       "factor_test": med["lane"]["test"] / med["host"]["test"]}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"kernel {res['kernel']}")
    if "cold" in res:
        c = res["cold"]
        print(f"first run, empty cache: {c['total']:.1f}s  (apt download+unpack+depmod {c['kernel']:.1f}s, "
              f"initramfs {c['initramfs']:.1f}s, boot {c['boot']:.1f}s)")
    cb = res["cached_boot"]
    print(f"cached boot to the command: {cb['boot']:.1f}s median of {cb['all_boot']}; "
          f"`run -- true` total {cb['true_total']:.1f}s")
    s = res["slowdown"]
    print(f"{TEST}:\n  host: pytest process {s['host']['wall']:.2f}s, the test {s['host']['test']:.3f}s\n"
          f"  lane: pytest process {s['lane']['wall']:.2f}s, the test {s['lane']['test']:.3f}s\n"
          f"  slowdown: {s['factor_wall']:.1f}x (pytest process), {s['factor_test']:.1f}x (the test itself)")


if __name__ == "__main__":
    main()
