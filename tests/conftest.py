"""Shared test configuration: who may skip and why, the `kernel` and `lane` markers, and the session-end leak check.

- Integration tests need root; without it they are skipped with that reason.
- A skip is allowed only for a kernel feature (the kernel lacks one a test needs, or has one whose absence a test
  is about) or a lane-only test outside the lane: ALLOWED_SKIPS.  When the environment variable CI is set, any other
  skip (not root, ../shared missing, a tool tools/setup installs is absent, ...) FAILS instead, so CI cannot go green
  by skipping.  With EMU_SKIP_REPORT_DIR set, every skip is written there as JSON (.ci/run sums them up).
- `@pytest.mark.kernel("ip_vs", ...)`, wherever the test lives: it needs those emu.apply.kernel features.  On a kernel
  without one it is skipped, naming the feature and the way to run it (tools/kernel-lane/run-tests).  Inside the
  kernel lane (EMU_KERNEL_LANE=1) a missing feature fails the test instead: the lane exists to have them.  There,
  EMU_HOST_LACKS (the features the host lacks, set by run-tests) deselects the kernel tests the host already ran.
- `@pytest.mark.lane`: the test boots the lane's VM itself; it runs only when EMU_LANE_TESTS=1, never in the lane.
- At the end of the session, any network namespace, /etc/netns entry or process that the session created and left
  behind fails the run, naming what leaked (see `pytest_sessionfinish`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import secrets
import signal
import tempfile
import time

import pytest

from emu.apply import kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"

RUN_IT = "run it in the kernel lane (tools/kernel-lane/run-tests)"

# The only reasons a test may skip, by kind.  Every other skip fails under CI.
ALLOWED_SKIPS = (
    ("kernel feature", re.compile(r"^needs .+, which this kernel lacks: run it in the kernel lane")),
    ("kernel feature", re.compile(r"^this kernel has ")),  # a test of the error a kernel without the feature gives
    ("lane only", re.compile(r"^boots the kernel lane's VM")),
)
SKIP_REPORT_ENV = "EMU_SKIP_REPORT_DIR"
HOST_LACKS_ENV = "EMU_HOST_LACKS"


def in_ci() -> bool:
    """CI is set (GitHub, GitLab and most CI services set CI=true); "", "0" and "false" count as unset."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def in_lane() -> bool:
    return os.environ.get("EMU_KERNEL_LANE") == "1"


def skip_kind(reason: str) -> str | None:
    """The allowed kind of a skip reason ("kernel feature", "lane only"), or None if it is not allowed."""
    for kind, pattern in ALLOWED_SKIPS:
        if pattern.search(reason):
            return kind
    return None


# --- markers --------------------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_lane() and HOST_LACKS_ENV in os.environ:
        # The lane runs what the host could not: a kernel test whose features the host all has ran there already.
        lacks = set(filter(None, os.environ[HOST_LACKS_ENV].split(",")))
        ran = [i for i in items if (names := _kernel_features(i)) and not lacks.intersection(names)]
        if ran:
            config.hook.pytest_deselected(items=ran)
            items[:] = [i for i in items if i not in ran]
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (network namespaces)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def _kernel_features(item: pytest.Item) -> list[str]:
    return [n for m in item.iter_markers("kernel") for n in m.args]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lane") is not None:
        if in_lane():
            pytest.skip("boots the kernel lane's VM: not from inside the lane")
        if os.environ.get("EMU_LANE_TESTS") != "1":
            pytest.skip("boots the kernel lane's VM (slow): run tools/kernel-lane/run-tests, or set EMU_LANE_TESTS=1")
    names = _kernel_features(item)
    if not names or os.geteuid() != 0:
        return  # without root the collection hook has skipped it (integration)
    feats = kernel.features()
    unknown = [n for n in names if n not in feats]
    if unknown:
        pytest.fail(f"@pytest.mark.kernel names unknown features {unknown}; known: {sorted(feats)}", pytrace=False)
    missing = [feats[n] for n in names if not feats[n].present]
    if not missing:
        return
    what = ", ".join(f"{f.name} ({f.detail})" for f in missing)
    if in_lane():
        pytest.fail(f"the kernel lane's kernel ({os.uname().release}) lacks {what}", pytrace=False)
    pytest.skip(f"needs {what}, which this kernel lacks: {RUN_IT}")


# --- skips: counted, and under CI only the allowed ones ---------------------------------------------------------------


_SKIPS = pytest.StashKey[list]()


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, line, "Skipped: REASON") for pytest.skip() and for skip/skipif markers alike.
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _police(config: pytest.Config, rep: pytest.TestReport | pytest.CollectReport) -> None:
    """Record a skip; under CI turn a skip that is not allowed into a failure that names the reason."""
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = _skip_reason(rep.longrepr)
    kind = skip_kind(reason)
    config.stash.setdefault(_SKIPS, []).append({"nodeid": rep.nodeid, "reason": reason, "kind": kind})
    if kind is None and in_ci():
        rep.outcome = "failed"
        rep.longrepr = (f"CI is set, so this test may not skip: {reason!r}. Only a kernel feature or a lane-only "
                        f"test may skip (tests/conftest.py ALLOWED_SKIPS); run tools/setup as root.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    _police(item.config, outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    _police(collector.config, outcome.get_result())


def _write_skip_report(config: pytest.Config) -> None:
    d = os.environ.get(SKIP_REPORT_ENV)
    if not d:
        return
    path = pathlib.Path(d) / f"skips-{os.getpid()}-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps({"args": list(config.invocation_params.args), "lane": in_lane(),
                                "skips": config.stash.get(_SKIPS, [])}, indent=1) + "\n")


# --- nothing left behind ----------------------------------------------------------------------------------------------
#
# Processes are ours for certain: every process this session starts inherits SESSION_ENV (emu's daemons are spawned
# with the caller's environment, nginx by the agent), and /proc/PID/environ shows it.  Namespaces carry no creator,
# so they are compared with a snapshot taken at the start: a developer's own clusters are never blamed.  If another
# test session ran at the same time (not our ancestor), a namespace it made could look like ours: then namespace
# leaks are reported but fail the run only under CI.

SESSION_ENV = "EMU_TEST_SESSION"
NETNS_DIR = "/run/netns"  # where `ip netns add` pins a namespace (iproute2 ip/ipnetns.c NETNS_RUN_DIR)
ETC_NETNS_DIR = "/etc/netns"  # per-namespace /etc overlay `ip netns exec` bind-mounts (ip/ipnetns.c NETNS_ETC_DIR)
LEAK_WAIT_ENV = "EMU_LEAK_WAIT_S"  # how long to wait for the session's processes to go (tests of this check set 0)
UNSURE_SHOWN = 20
LEAK_WAIT_S = 10.0  # emu's daemons exit by themselves once their cluster's directory is gone: give them time


@dataclasses.dataclass
class _Session:
    tag: str
    old_tag: str | None
    netns: set[str]
    etc_netns: set[str]
    registration: pathlib.Path | None
    overlapped: list[int]
    leaks: list[str] = dataclasses.field(default_factory=list)  # fail the run
    unsure: list[str] = dataclasses.field(default_factory=list)  # maybe another session's: reported only


_SESSION = pytest.StashKey[_Session]()


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _start_time(pid: int) -> str | None:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _ancestors() -> set[int]:
    out, pid = set(), os.getppid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return out


def _registry() -> pathlib.Path:
    return pathlib.Path(tempfile.gettempdir()) / "emu-test-sessions"


def _other_sessions() -> list[int]:
    """Pids of other live test sessions (each registers as PID with its start time), our ancestors excepted."""
    skip = _ancestors() | {os.getpid()}
    out = []
    for f in _registry().glob("*"):
        pid = int(f.name) if f.name.isdigit() else 0
        try:
            if pid and pid not in skip and _start_time(pid) == f.read_text().strip():
                out.append(pid)
        except OSError:
            continue  # it just ended
    return out


def tagged_processes(tag: str) -> list[str]:
    """`PID (COMMAND LINE)` of every live process (zombies excepted) but this one whose environment has
    SESSION_ENV=TAG."""
    needle = f"{SESSION_ENV}={tag}".encode()
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if needle not in (p / "environ").read_bytes().split(b"\0"):
                continue
            if (p / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            argv = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue  # gone, or not ours to read
        out.append(f"{p.name} ({argv[:120]})")
    return sorted(out)


def leaks(s: _Session) -> list[str]:
    """What the session left: namespaces and /etc/netns entries not there at its start, and its processes."""
    out = [f"network namespace {n}" for n in sorted(_listdir(NETNS_DIR) - s.netns)]
    out += [f"{ETC_NETNS_DIR}/{n}" for n in sorted(_listdir(ETC_NETNS_DIR) - s.etc_netns)]
    out += [f"process {p}" for p in tagged_processes(s.tag)]
    return out


def _register() -> pathlib.Path | None:
    """Register this session (PID file holding its start time), so others can tell they overlapped with it."""
    reg = _registry()
    try:
        if not reg.is_dir():
            reg.mkdir(exist_ok=True)
            reg.chmod(0o1777)  # shared by every user's sessions, as /tmp is
        me = reg / str(os.getpid())
        me.write_text(_start_time(os.getpid()) or "")
        return me
    except OSError:
        return None  # the check still runs; only the overlap with other sessions goes unseen


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    # `timeout pytest ...` sends SIGTERM, which would end the process without tearing down a cluster fixture (and
    # without the leak check below); as an interrupt, pytest unwinds the running test and runs every finalizer.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    tag = secrets.token_hex(8)
    s = _Session(tag, os.environ.get(SESSION_ENV), _listdir(NETNS_DIR), _listdir(ETC_NETNS_DIR), _register(),
                 _other_sessions())
    os.environ[SESSION_ENV] = tag
    session.config.stash[_SESSION] = s


@pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish has torn down session-scoped fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run (exit status 1, with what leaked in the summary) if the session left anything behind."""
    _write_skip_report(session.config)
    s = session.config.stash.get(_SESSION, None)
    if s is None:
        return
    try:
        deadline = time.monotonic() + float(os.environ.get(LEAK_WAIT_ENV, LEAK_WAIT_S))
        while tagged_processes(s.tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        found = leaks(s)
        s.overlapped += [p for p in _other_sessions() if p not in s.overlapped]
        if s.overlapped and not in_ci():  # a namespace may be the other session's: say so, do not fail for it
            s.unsure = [x for x in found if not x.startswith("process ")]
            found = [x for x in found if x.startswith("process ")]
        s.leaks = found
        if found and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        if s.old_tag is None:
            os.environ.pop(SESSION_ENV, None)
        else:
            os.environ[SESSION_ENV] = s.old_tag
        if s.registration is not None:
            s.registration.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    s = config.stash.get(_SESSION, None)
    if s is None:
        return
    if s.leaks:
        terminalreporter.section("left behind by this test session", sep="=", red=True, bold=True)
        for x in s.leaks:
            terminalreporter.line(f"LEAKED {x}")
        terminalreporter.line("the run fails: every test removes what it creates, also when it fails")
    if s.unsure:
        terminalreporter.section(f"left behind by this test session or by another one running at the same time "
                                 f"(pids {s.overlapped})", sep="=", yellow=True, bold=True)
        for x in s.unsure[:UNSURE_SHOWN]:
            terminalreporter.line(f"MAYBE LEAKED {x}")
        if len(s.unsure) > UNSURE_SHOWN:
            terminalreporter.line(f"... and {len(s.unsure) - UNSURE_SHOWN} more")
