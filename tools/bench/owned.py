"""What a benchmark run owns (its clusters, their namespaces and processes) and the teardown that removes all of it
however the run ends: return, exception, Ctrl-C or SIGTERM.

A cluster's namespaces are the entries of /run/netns named `<cluster>.<...>` (emu/model/names.py names every node, pod,
underlay and external namespace so), and its processes are those whose command line names the cluster's state
directory (the agent, the DNS server, nginx's master) or that live in one of the cluster's network namespaces
(nginx's workers).  Both are read from the kernel, not from emu's record, so the teardown's check also sees what
an interrupted `up` or a changed record layout would hide; it reports them, it never removes them.  Cluster names carry a random token and DNS-1123 labels
hold no dot, so `<cluster>.` names this run's namespaces and nobody else's.  Standard library only: the floor of
bringup.py runs without emu.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

NETNS_DIR = "/run/netns"
NAME_MAX = 40  # emu's limit for a cluster name: every netns and interface name derived from it must fit
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # DNS-1123 label (k8s.io/apimachinery validation.IsDNS1123Label)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cluster_name(*parts: str) -> str:
    """`bench-<4 random hex digits>-<parts>`, e.g. `bench-ab12-10x50`: a DNS-1123 label of at most 40 characters,
    so emu accepts it as a cluster name.  ValueError if the parts make it anything else."""
    name = "-".join(("bench", secrets.token_hex(2), *parts))
    if len(name) > NAME_MAX or not _LABEL.fullmatch(name):
        raise ValueError(f"benchmark cluster name {name!r} is not a DNS-1123 label of at most {NAME_MAX} characters")
    return name


# --- what a cluster has in the kernel -------------------------------------------------------------------------------


def namespaces(cluster: str) -> list[str]:
    """The network namespaces of `cluster` that exist now."""
    try:
        entries = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if n.startswith(cluster + "."))


@dataclass(frozen=True)
class Process:
    pid: int
    start: str  # /proc/PID/stat field 22, clock ticks after boot: with the pid it names one process, never a reuse
    argv: tuple[str, ...]


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process; None once it is gone.  The command name in field 2 may hold spaces and
    parentheses, so the fields are counted after its last ')' (proc(5))."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return rest[0], rest[19]


def alive(p: Process) -> bool:
    """Still running (a zombie has finished: it only waits for its parent to reap it)."""
    st = _stat(p.pid)
    return st is not None and st[0] not in ("Z", "X") and st[1] == p.start


def _netns_inode(path: str) -> int | None:
    """The nsfs inode behind /run/netns/NAME or /proc/PID/ns/net: equal inodes are the same namespace."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def processes(cluster: str, state_dir: str) -> list[Process]:
    """The processes of `cluster` running now (this process excluded): the command line names `state_dir` (the
    cluster's directory under emu's state root) or a path inside it, or the network namespace is the cluster's."""
    d = os.path.realpath(state_dir)
    inodes = {i for n in namespaces(cluster) if (i := _netns_inode(os.path.join(NETNS_DIR, n))) is not None}
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = tuple(f.read().decode(errors="replace").split("\0")[:-1])
        except OSError:
            continue
        words = " ".join(argv).split()  # nginx rewrites its argv into one title string
        mine = any(w == d or w.startswith(d + "/") for w in words)
        if not mine and inodes:
            mine = _netns_inode(f"/proc/{pid}/ns/net") in inodes
        st = _stat(pid)
        if mine and st is not None and st[0] not in ("Z", "X"):
            out.append(Process(pid, st[1], argv))
    return out


# --- teardown -------------------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Cleanup must finish: a Ctrl-C or SIGTERM during the block is held, and raised as KeyboardInterrupt after it."""
    held: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if held:
        raise KeyboardInterrupt(f"signal {held[0]}")


def join_other_threads(timeout: float = 30.0) -> None:
    """An interrupted `up` may leave a worker thread still creating namespaces: let it finish before checking."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join(max(0.0, deadline - time.monotonic()))


def teardown(cluster: str, state_dir: str, down: Callable[[str], object], seen: Sequence[Process] = ()) -> list[str]:
    """`down(cluster)`, then a check of what it left behind: each kind is reported as one problem line (logged, and
    the benchmark's exit status becomes 1), never swept away here.  emu removes what its record names and nothing
    else; a benchmark that deleted namespaces by name or killed processes it found by scanning would hide exactly
    the leak it should show (and break the rule that nothing is removed by pattern).  `down` may have run already
    (a benchmark that times it); `seen` are the cluster's processes noted before that.  Returns the problems."""
    problems = []
    with no_interrupts():
        join_other_threads()
        before = sorted(set(seen) | set(processes(cluster, state_dir)), key=lambda p: p.pid)
        try:
            down(cluster)
        except Exception as e:  # noqa: BLE001 - the checks below still run
            problems.append(f"emu down {cluster} failed: {type(e).__name__}: {e}")
        left = [p for p in before if alive(p)]
        if left:
            problems.append(f"{cluster}: {len(left)} processes still running after down: "
                            + ", ".join(f"{p.pid} ({' '.join(p.argv)[:60]})" for p in left))
        ns = namespaces(cluster)
        if ns:
            problems.append(f"{cluster}: down left {len(ns)} namespaces (e.g. {ns[0]})")
        if os.path.exists(state_dir):
            problems.append(f"{cluster}: down left its state directory {state_dir}")
    for p in problems:
        log(f"problem: {p}")
    return problems


@contextmanager
def cluster(name: str, state_dir: str, down: Callable[[str], object], problems: list[str]) -> Iterator[None]:
    """Owns cluster `name` for the block: refuses a name already in use (a benchmark never removes anybody else's
    cluster), and however the block ends, tears the cluster down and appends what was left behind to `problems`."""
    if os.path.exists(state_dir) or namespaces(name):
        raise RuntimeError(f"cluster name {name} is already in use: not this run's to benchmark or remove")
    log(f"cluster {name}")
    try:
        yield
    finally:
        problems += teardown(name, state_dir, down)


def main(run: Callable[[], int | None]) -> int:
    """A benchmark's entry point: SIGTERM interrupts like Ctrl-C, so every `finally` (every teardown) runs; an
    interrupted run ends with one line and exit status 130."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run() or 0
    except KeyboardInterrupt:
        log("interrupted: removed what this run made")
        return 130
