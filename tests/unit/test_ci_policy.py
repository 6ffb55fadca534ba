"""The test suite's own policy (tests/conftest.py), run on tiny test files through pytester in a subprocess: under
CI only a kernel-feature or lane-only skip is allowed, every skip is reported for .ci/run, and a session that leaves
a process, a network namespace or an /etc/netns entry behind fails."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import textwrap

import pytest

from tests.conftest import ROOT, SESSION_ENV

pytest_plugins = ("pytester",)

KERNEL_SKIP = ("needs ip_vs (IPVS virtual servers (kube-proxy ipvs mode): no IPVS netlink family), which this kernel "
               "lacks: run it in the kernel lane (tools/kernel-lane/run-tests)")

SKIPS = f"""
    import pytest

    @pytest.fixture
    def guide():
        pytest.skip("the seed guide is not at /x/shared/seeds/k8s-networking-guide.md")

    @pytest.mark.skipif(True, reason="nginx is not installed (tools/setup installs nginx-light)")
    def test_tool_missing():
        pass

    def test_shared_missing(guide):
        pass

    def test_kernel_feature():
        pytest.skip({KERNEL_SKIP!r})

    def test_only_without_the_feature():
        pytest.skip("this kernel has IP_VS")

    @pytest.mark.lane
    def test_boots_the_lane():
        pass

    def test_runs():
        pass
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, *args: str,
        **env: str) -> pytest.RunResult:
    """pytest in a subprocess with tests/conftest.py as its only conftest, CI set to `ci` (None: unset)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("EMU_SKIP_REPORT_DIR", raising=False)
    monkeypatch.delenv("EMU_LANE_TESTS", raising=False)
    monkeypatch.delenv("EMU_KERNEL_LANE", raising=False)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("EMU_LEAK_WAIT_S", "0")
    return pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider", "-rs", *args)


# --- skips -----------------------------------------------------------------------------------------------------------


def test_without_ci_every_skip_is_a_skip(pytester, monkeypatch):
    pytester.makepyfile(test_skips=SKIPS)
    r = run(pytester, monkeypatch, None)
    r.assert_outcomes(passed=1, skipped=5)
    assert r.ret == 0


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_only_kernel_and_lane_skips_are_allowed(pytester, monkeypatch, ci):
    pytester.makepyfile(test_skips=SKIPS)
    r = run(pytester, monkeypatch, ci)
    # the tool and the shared/ skips fail (both at setup: errors); kernel x2 and lane-only still skip
    r.assert_outcomes(passed=1, skipped=3, errors=2)
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    out = r.stdout.str()
    assert "CI is set, so this test may not skip: 'nginx is not installed (tools/setup installs nginx-light)'" in out
    assert "CI is set, so this test may not skip: 'the seed guide is not at" in out


@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_ci_set_to_false_is_unset(pytester, monkeypatch, ci):
    pytester.makepyfile(test_skips=SKIPS)
    assert run(pytester, monkeypatch, ci).ret == 0


def test_under_ci_a_module_level_skip_fails_too(pytester, monkeypatch):
    pytester.makepyfile(test_mod="""
        import pytest
        pytest.skip("iperf3 is not installed", allow_module_level=True)

        def test_x():
            pass
    """)
    r = run(pytester, monkeypatch, "true")
    assert r.ret != 0
    assert "CI is set, so this test may not skip: 'iperf3 is not installed'" in r.stdout.str()
    r = run(pytester, monkeypatch, None)
    r.assert_outcomes(skipped=1)
    assert r.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_every_skip_is_reported_with_its_kind_and_ci_run_sums_them_up(pytester, monkeypatch, tmp_path):
    pytester.makepyfile(test_skips=SKIPS)
    report = tmp_path / "skips"
    report.mkdir()
    run(pytester, monkeypatch, "true", EMU_SKIP_REPORT_DIR=str(report))
    (f,) = report.glob("skips-*.json")
    got = sorted((s["nodeid"].split("::")[1], s["kind"]) for s in json.loads(f.read_text())["skips"])
    assert got == [("test_boots_the_lane", "lane only"), ("test_kernel_feature", "kernel feature"),
                   ("test_only_without_the_feature", "kernel feature"), ("test_shared_missing", None),
                   ("test_tool_missing", None)]

    summary = _skip_summary()
    lines, rc = summary.summarize(report, 1)
    assert rc == 1
    assert lines[0] == "skips: 5 in 1 pytest session(s)"
    assert "    1  NOT ALLOWED: nginx is not installed (tools/setup installs nginx-light)" in lines
    assert f"    1  kernel feature: {KERNEL_SKIP}" in lines
    assert lines[-1] == "FAIL: 2 skip(s) for a reason outside the allowed list (kernel feature, lane only)"


def test_ci_run_summary_passes_on_allowed_skips_and_fails_on_a_missing_session(tmp_path):
    (tmp_path / "skips-1-a.json").write_text(json.dumps({"skips": [
        {"nodeid": "t.py::a", "reason": "this kernel has IP_VS", "kind": "kernel feature"},
        {"nodeid": "t.py::b", "reason": "boots the kernel lane's VM: not from inside the lane", "kind": "lane only"},
        {"nodeid": "t.py::c", "reason": "boots the kernel lane's VM: not from inside the lane", "kind": "lane only"}]}))
    (tmp_path / "skips-2-b.json").write_text(json.dumps({"skips": []}))
    summary = _skip_summary()
    lines, rc = summary.summarize(tmp_path, 2)
    assert (lines, rc) == (["skips: 3 in 2 pytest session(s)",
                            "    2  lane only: boots the kernel lane's VM: not from inside the lane",
                            "    1  kernel feature: this kernel has IP_VS"], 0)
    lines, rc = summary.summarize(tmp_path, 3)
    assert rc == 1 and lines[-1] == "FAIL: 3 pytest session(s) should have reported their skips, 2 did"


def _skip_summary():
    spec = importlib.util.spec_from_file_location("skip_summary", ROOT / ".ci" / "skip_summary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- nothing left behind ----------------------------------------------------------------------------------------


def _pids_in(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_session_that_leaves_a_process_fails_naming_it(pytester, monkeypatch, tmp_path):
    pids = tmp_path / "pids"
    pytester.makepyfile(test_leak=f"""
        import subprocess

        def test_leaks_a_daemon():
            p = subprocess.Popen(["sleep", "600"], start_new_session=True)
            open({str(pids)!r}, "a").write(f"{{p.pid}} ")

        def test_waits_for_its_child():
            subprocess.run(["sleep", "0"], check=True)
    """)
    try:
        r = run(pytester, monkeypatch, None)
        r.assert_outcomes(passed=2)
        assert r.ret == pytest.ExitCode.TESTS_FAILED
        (pid,) = _pids_in(pids)
        r.stdout.fnmatch_lines(["*= left behind by this test session =*", f"LEAKED process {pid} (sleep 600)",
                                "the run fails: every test removes what it creates, also when it fails"])
    finally:
        for pid in _pids_in(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_session_that_cleans_up_passes_and_a_process_from_before_is_not_blamed(pytester, monkeypatch):
    # a process of "the developer" that carries an older session tag, started before the run
    before = subprocess.Popen(["sleep", "600"], env={**os.environ, SESSION_ENV: "older"}, start_new_session=True)
    try:
        pytester.makepyfile(test_clean="""
            import subprocess

            def test_stops_its_daemon():
                p = subprocess.Popen(["sleep", "600"], start_new_session=True)
                p.kill()
                p.wait()
        """)
        r = run(pytester, monkeypatch, None)
        r.assert_outcomes(passed=1)
        assert r.ret == 0 and "LEAKED" not in r.stdout.str()
    finally:
        before.kill()
        before.wait()


@pytest.mark.integration
@pytest.mark.parametrize("with_etc", [False, True], ids=["netns", "netns-and-etc"])
def test_a_session_that_leaves_a_namespace_fails_naming_it(pytester, monkeypatch, with_etc):
    name = f"emu-leak-{secrets.token_hex(3)}"
    etc = f"os.makedirs('/etc/netns/{name}')" if with_etc else "pass"
    pytester.makepyfile(test_leak=f"""
        import os
        import subprocess

        def test_leaks_a_namespace():
            subprocess.run(["ip", "netns", "add", {name!r}], check=True)
            {etc}
    """)
    try:
        # under CI, so that another test session running now (another developer's) cannot soften the verdict
        r = run(pytester, monkeypatch, "true")
        r.assert_outcomes(passed=1)
        assert r.ret == pytest.ExitCode.TESTS_FAILED
        # other sessions running now (other developers') may add lines of their own; ours must be there
        leaked = [ln for ln in r.stdout.lines if ln.startswith("LEAKED")]
        assert f"LEAKED network namespace {name}" in leaked
        assert (f"LEAKED /etc/netns/{name}" in leaked) == with_etc
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


@pytest.mark.integration
def test_a_namespace_that_another_session_may_have_made_is_reported_but_does_not_fail_outside_ci(pytester,
                                                                                                   monkeypatch):
    name = f"emu-leak-{secrets.token_hex(3)}"
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)  # stands for another live test session
    reg = __import__("tests.conftest", fromlist=["_registry"])._registry() / str(other.pid)
    pytester.makepyfile(test_leak=f"""
        import subprocess

        def test_leaks_a_namespace():
            subprocess.run(["ip", "netns", "add", {name!r}], check=True)
    """)
    try:
        with open(f"/proc/{other.pid}/stat") as f:
            reg.write_text(f.read().rsplit(")", 1)[1].split()[19])
        r = run(pytester, monkeypatch, None)
        assert r.ret == 0
        assert f"MAYBE LEAKED network namespace {name}" in r.stdout.lines
        assert str(other.pid) in r.stdout.str()
    finally:
        reg.unlink(missing_ok=True)
        other.kill()
        other.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.parametrize("mark", ["", "@pytest.mark.kernel('ip_vs')"])
def test_in_the_lane_the_tests_the_host_ran_are_deselected(pytester, monkeypatch, mark):
    """EMU_HOST_LACKS (run-tests) keeps, in the lane, only the kernel tests that need a feature the host lacks."""
    pytester.makepyfile(test_k=textwrap.dedent(f"""
        import pytest

        @pytest.mark.kernel("sctp")
        def test_host_lacks_sctp():
            pass

        @pytest.mark.kernel("vxlan")
        def test_host_has_vxlan():
            pass

        {mark}
        def test_plain():
            pass
    """))
    r = run(pytester, monkeypatch, None, "-m", "kernel", "--co", "-q", EMU_KERNEL_LANE="1", EMU_HOST_LACKS="sctp,ip_vs")
    chosen = {ln.split("::")[1] for ln in r.stdout.lines if "::" in ln}
    assert chosen == {"test_host_lacks_sctp"} | ({"test_plain"} if mark else set())
