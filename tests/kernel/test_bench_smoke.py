"""tools/kernel-lane/bench.py at its smallest size (`--smoke`: one cached boot, then the slowdown test once on the
host and once in one VM), so the lane's benchmark cannot rot unnoticed (issue 12).  It boots the VM twice itself, so
it is a `lane` test: only tools/kernel-lane/run-tests runs it (EMU_LANE_TESTS=1), on the host side, never inside
the lane.  It checks that the benchmark finishes and prints its report with numbers in it, never how fast."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.lane]

ROOT = Path(__file__).resolve().parents[2]
TEST = re.escape("tests/kernel/test_lane_smoke.py::test_veth_tcp_baseline")
NUM = r"(\d+(?:\.\d+)?)"
REPORT = [  # the report's lines, in order
    r"kernel \S+",
    rf"cached boot to the command: {NUM}s median of \[{NUM}\]; `run -- true` total {NUM}s",
    rf"{TEST}:",
    rf"  host: pytest process {NUM}s, the test {NUM}s",
    rf"  lane: pytest process {NUM}s, the test {NUM}s",
    rf"  slowdown: {NUM}x \(pytest process\), {NUM}x \(the test itself\)",
]


def test_lane_bench_smoke_run_prints_its_report():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "kernel-lane" / "bench.py"), "--smoke"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    why = f"exit status {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    assert r.returncode == 0, why
    lines = r.stdout.splitlines()
    assert len(lines) == len(REPORT), why
    for line, pattern in zip(lines, REPORT):
        m = re.fullmatch(pattern, line)
        assert m, f"{line!r} does not match {pattern!r}\n{why}"
        assert all(math.isfinite(float(x)) for x in m.groups()), line
