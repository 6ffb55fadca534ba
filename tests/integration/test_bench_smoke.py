"""Every benchmark in tools/bench runs in CI at its smallest size (`--smoke`), so none can rot unnoticed (issue 12:
bringup.py had crashed on a record field that no longer existed).  Each script runs as its own process with this
venv's python and a private state directory; the test checks that it finishes, that its table has its header and
columns with numbers in them (never how fast: speed targets are reports, not assertions), and that it left nothing
behind: no cluster record, no namespace, no process.  A second test interrupts each one with SIGTERM while its
cluster is coming up and checks the same.

tools/kernel-lane/bench.py boots the kernel lane's VM, so its smoke run is in tests/kernel/test_bench_smoke.py.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from emu.cluster import lifecycle as clusters
from emu.apply import state
from tests.conftest import TOPOLOGIES

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench"
NETNS_DIR = "/run/netns"
PREFIXES = ("bench-", "floor")  # every namespace a benchmark makes starts so (cluster names, bringup's floor)
TIMEOUT = 120.0


def _owned_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_owned", BENCH / "owned.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


owned = _owned_module()


# --- running a benchmark and checking what it left -----------------------------------------------------------------


def bench_namespaces() -> set[str]:
    try:
        return {n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIXES)}
    except FileNotFoundError:
        return set()


def processes_naming(path: str) -> list[str]:
    """Command lines that name `path` (the agent, the DNS server and nginx's master name their cluster's state
    directory)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if path in cmd:
                out.append(f"{entry}: {cmd[:120]}")
    return out


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def why(self) -> str:
        return f"exit status {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def start(script: str, state_dir: Path, *args: str) -> subprocess.Popen[str]:
    # sys.executable: the venv's python, which runs this pytest (tools/test, the README's test command)
    env = dict(os.environ, EMU_STATE_DIR=str(state_dir))
    return subprocess.Popen([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = TIMEOUT) -> Run:
    """Wait for the benchmark; past `timeout` it gets SIGTERM (it tears its clusters down on it), then SIGKILL."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{proc.args} did not finish in {timeout:.0f} s\n{Run(proc.returncode, out, err).why()}")
    return Run(proc.returncode, out, err)


@pytest.fixture
def state_dir():
    """A private state root, short: the agent's AF_UNIX socket lives under it (sun_path holds 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="emu-bench-") as d:
        yield Path(d)


def assert_nothing_left(run: Run, state_dir: Path, before: set[str]) -> None:
    """Checked from outside (namespaces, records, processes), and the benchmark's own teardown found nothing that
    `emu down` had left (owned.teardown logs `problem: ...`)."""
    left_ns = sorted(bench_namespaces() - before)
    left_state = sorted(os.listdir(state_dir))
    left_procs = processes_naming(str(state_dir))
    assert not (left_ns or left_state or left_procs), (
        f"left behind: namespaces {left_ns[:5]}, cluster records {left_state}, processes {left_procs}\n{run.why()}")
    assert "problem: " not in run.stderr, run.why()


# --- reading the tables ---------------------------------------------------------------------------------------------


def number(text: str) -> float:
    """A figure of a table: a finite number (a trailing unit letter like `1.00x` allowed)."""
    try:
        v = float(text.rstrip("xs"))
    except ValueError:
        raise AssertionError(f"{text!r} is not a number") from None
    assert math.isfinite(v), f"{text!r} is not a finite number"
    return v


def table_rows(out: str, columns: list[str]) -> list[str]:
    """The lines after the header line made of `columns` (in order, any spacing)."""
    head = re.compile(r"\s*" + r"\s+".join(map(re.escape, columns)) + r"\s*")
    lines = out.splitlines()
    at = next((i for i, line in enumerate(lines) if head.fullmatch(line)), None)
    assert at is not None, f"no table header {columns} in:\n{out}"
    return lines[at + 1:]


def row(rows: list[str], label: str, fields: int) -> list[str]:
    """The fields after `label` of the first row that starts with it; there must be `fields` of them."""
    line = next((r for r in rows if r.startswith(label + " ")), None)
    assert line is not None, f"no row {label!r} in:\n" + "\n".join(rows)
    got = line[len(label):].split()
    assert len(got) == fields, f"row {label!r} has {len(got)} fields, not {fields}: {line!r}"
    return got


def check_bringup(out: str) -> None:
    rows = table_rows(out, ["size", "pods", "up s", "pods/s", "floor s", "ratio", "down s", "fdel s", "agent MB",
                            "netns"])
    got = [number(x) for x in row(rows, "1x2", 9)]
    assert got[0] == 2, got  # pods
    assert re.search(r"^1x2\s+up stages: plan [\d.]+s(, [a-z-]+ [\d.]+s)+$", out, re.M), out
    verdicts = re.findall(r"^(PASS|MISS|N/A)\s+\S", out, re.M)
    assert len(verdicts) == 4, out


def check_cni(out: str) -> None:
    assert out.startswith("1x2 = 2 pods\n"), out
    rows = table_rows(out, ["wiring", "up s", "pods/s", "down s", "plugin ms/pod", "p95", "loopback", "bridge",
                            "portmap"])
    for label in ("built-in", "real plugins"):
        [number(x) for x in row(rows, label, 8)]
    assert number(row(rows, "real plugins", 8)[4]) > 0, "the real plugins' per-pod time is missing from `emu cni log`"


def check_dns(out: str) -> None:
    for pattern in (r"^queries/s \(cluster name, 32 in flight\): (\S+)$",
                    r"^queries/s \(forwarded to the external resolver, 8 in flight\): (\S+)$"):
        m = re.search(pattern, out, re.M)
        assert m, f"no line {pattern} in:\n{out}"
        number(m.group(1))
    for label, name in (("short", "web.default"), ("fqdn ", "web.default.svc.cluster.local.")):
        m = re.search(rf"^{label} {re.escape(name)}\s+(\S+) queries  median (\S+) ms  worst (\S+) ms$", out, re.M)
        assert m, f"no {label.strip()} line in:\n{out}"
        [number(x) for x in m.groups()]


def check_matrix(out: str) -> None:
    rows = table_rows(out, ["pods", "nodes", "probes", "denied", "wrong", "matrix s", "probes/s", "sync s"])
    got = [number(x) for x in row([r.lstrip() for r in rows], "9", 7)]
    assert got[1] == 9 * 9 * 4, got  # probes: every pair of the 9 pods, 2 ports x 2 protocols
    assert re.search(r"^(PASS|MISS): 9-pod model", out, re.M), out


def check_services(out: str) -> None:
    rows = table_rows(out, ["mode", "services", "sync s", "resync s", "lines", "connect ms", "vs smallest"])
    for mode in ("iptables/nft", "iptables/legacy", "nftables"):
        got = [number(x) for x in row(rows, mode, 6)]
        assert got[0] == 10, got
    assert len(re.findall(r"^(PASS|MISS)  ", out, re.M)) == 4, out


def check_trace(out: str) -> None:
    assert re.match(r"2 nodes, 4 pods, kube-proxy iptables, up in \S+s; 1 traces per case\n", out), out
    rows = table_rows(out, ["case", "median s", "max s", "hops", "setup/probe/report (median)", "ok"])
    for case in ("pod -> pod across nodes (tcp)", "pod -> ClusterIP (tcp)", "external -> NodePort (tcp)",
                 "pod -> pod, fragmented (udp 3000)", "pod -> pod (icmp)"):
        median, worst, hops, stages, ok = row(rows, case, 5)
        [number(x) for x in (median, worst, hops, *stages.split("/"))]
        assert ok in ("yes", "NO"), ok
    m = re.search(r"^worst (\S+)s, target <= 2.0s: (met|MISSED)$", out, re.M)
    assert m, out
    number(m.group(1))


SCRIPTS = {"bringup.py": check_bringup, "cni.py": check_cni, "dns.py": check_dns, "matrix.py": check_matrix,
           "services.py": check_services, "trace.py": check_trace}


def test_every_benchmark_has_a_smoke_run():
    assert sorted(SCRIPTS) == sorted(p.name for p in BENCH.glob("*.py") if p.name != "owned.py")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_smoke_run_prints_its_table_and_leaves_nothing(script, state_dir):
    before = bench_namespaces()
    run = finish(start(script, state_dir, "--smoke"))
    assert run.returncode == 0 and "problem" not in run.stdout, run.why()
    SCRIPTS[script](run.stdout)
    assert_nothing_left(run, state_dir, before)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_sigterm_while_a_cluster_comes_up_leaves_nothing(script, state_dir):
    """SIGTERM as soon as the benchmark's first namespace exists (its first `up` is under way): the benchmark
    removes everything it made and says it was interrupted.  Before the benchmarks turned SIGTERM into
    KeyboardInterrupt, the process died there and its cluster stayed."""
    before = bench_namespaces()
    proc = start(script, state_dir, "--smoke")
    deadline = time.monotonic() + 60
    while not bench_namespaces() - before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the benchmark ended before it made a namespace\n" + finish(proc).why()
    proc.send_signal(signal.SIGTERM)
    run = finish(proc)
    assert run.returncode != 0 and "interrupted" in run.stderr, run.why()
    assert_nothing_left(run, state_dir, before)


def test_teardown_reports_what_down_left(tmp_path):
    """owned.teardown with a `down` that removes nothing (a broken or interrupted one): it reports the agent and
    the namespaces that are still there (and leaves them to emu's own down, never sweeping by name)."""
    name = owned.cluster_name("td")
    path = tmp_path / "topology.yaml"
    path.write_text((TOPOLOGIES / "flannel-vxlan.yaml").read_text())
    try:
        clusters.up(str(path), name)
        assert owned.processes(name, state.cluster_dir(name)), "the cluster has no process to leave behind"
        problems = owned.teardown(name, state.cluster_dir(name), lambda n: None)
        assert any("processes still running after down" in p for p in problems), problems
        assert any("down left" in p and "namespaces" in p for p in problems), problems
        assert owned.namespaces(name)  # reported, not removed
    finally:
        clusters.down(name)
    assert not owned.namespaces(name) and not owned.processes(name, state.cluster_dir(name))


@pytest.mark.parametrize("parts", [(), ("250x250-prof",), ("svc", "iptables", "legacy"), ("m100",), ("trace",)])
def test_cluster_names_are_short_dns_labels(parts):
    name = owned.cluster_name(*parts)
    assert re.fullmatch(r"bench-[0-9a-f]{4}(-[a-z0-9-]+)?", name) and len(name) <= 40, name


@pytest.mark.parametrize("parts", [("Upper",), ("x" * 40,), ("a.b",), ("trailing-",)])
def test_cluster_name_refuses_what_emu_would(parts):
    with pytest.raises(ValueError, match="DNS-1123 label of at most 40 characters"):
        owned.cluster_name(*parts)
