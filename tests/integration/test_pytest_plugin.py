"""The pytest plugin (emu.testing) used the way a CNI developer uses it: small test files run by `pytester` in a
child pytest, whose outcomes and failure messages are checked here.

Four small clusters are brought up in all: `two` (this module's, from data/plugin-two-pods.yaml; the child runs
wrap it with `ClusterHandle(name)` or try to take its name), one by a child's `cluster` fixture (relative path) and
the two of the documented example (docs/how-to/ci-pytest-plugin.md)."""
from __future__ import annotations

import pathlib
import re
import shutil
import textwrap
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from emu.apply import netns
from emu.observe import probing
from emu.apply import state
from emu.testing import topology_path

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).resolve().parent / "data"
TOPOLOGY = DATA / "plugin-two-pods.yaml"
UNSERVED_PORT = 8080  # web serves TCP 80 only: a probe to 8080 meets what a dead server leaves, no listener


def run_child(pytester: pytest.Pytester, source: str, *args: str, **names: str) -> dict[str, tuple[str, str]]:
    """Run one child test file (with pytest `args`); each test's outcome ("passed", "failed", "error") and its
    failure text."""
    pytester.makepyfile(test_child=textwrap.dedent(source).format(**names))
    xml = pytester.path / "out.xml"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={xml}", *args)
    out: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        outcome = "passed" if bad is None else bad.tag.replace("failure", "failed")
        out[case.get("name", "")] = (outcome, "" if bad is None else (bad.text or ""))
    assert out, result.stdout.str()
    return out


# --- paths ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ("two-pods.yaml", "/src/tests/two-pods.yaml"),
    ("data/x.yaml", "/src/tests/data/x.yaml"),
    ("../topologies/x.yaml", "/src/tests/../topologies/x.yaml"),
    ("/abs/x.yaml", "/abs/x.yaml"),
    (pathlib.Path("/abs/y.yaml"), "/abs/y.yaml"),
])
def test_topology_path_is_relative_to_the_test_file(given, expected):
    request = SimpleNamespace(path=pathlib.Path("/src/tests/test_mine.py"))
    assert topology_path(request, given) == expected  # type: ignore[arg-type]


def test_marker_path_is_read_beside_the_test_file_not_the_working_directory(pytester):
    # the child's working directory is pytester.path; its test file and topology live one level down, so only a
    # path read relative to the test file finds the topology
    suite = pytester.mkdir("suite")
    shutil.copy(TOPOLOGY, suite / "two-pods.yaml")
    (suite / "test_user.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.emu_topology("two-pods.yaml")
        def test_up(cluster):
            cluster.assert_reachable("default/client", "default/web")
    """))
    before = set(state.names())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert set(state.names()) == before  # the child's cluster is down again


PLUGIN_PAGE = ROOT / "docs" / "how-to" / "ci-pytest-plugin.md"


def readme_example() -> str:
    """The first python block of the pytest plugin's how-to page (docs/how-to/ci-pytest-plugin.md)."""
    found = re.search(r"```python\n(.*?)```", PLUGIN_PAGE.read_text(), re.S)
    assert found, f"{PLUGIN_PAGE} has no python example"
    return found.group(1)


def test_the_readme_example_runs_as_written(pytester):
    example = pytester.mkdir("example")
    (example / "topologies").mkdir()
    shutil.copy(ROOT / "topologies" / "flannel-vxlan.yaml", example / "topologies")
    (example / "test_readme.py").write_text(readme_example())
    before = set(state.names())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert set(state.names()) == before


# --- ownership -----------------------------------------------------------------------------------------------------


def test_a_taken_name_errors_and_leaves_the_other_cluster_up(pytester, two):
    out = run_child(pytester, """
        import pytest

        @pytest.mark.emu_topology({topology!r}, name={name!r})
        def test_taken(cluster):
            pass
    """, topology=str(TOPOLOGY), name=two.name)
    outcome, text = out["test_taken"]
    assert outcome == "error"
    assert two.name in text and "already exists" in text
    rec = state.load(two.name)
    assert rec is not None and rec.status == "up"
    assert all(netns.exists(ns) for ns in rec.netns)
    assert two.probe("default/client", "default/web")["ok"]


# --- assert_reachable / assert_blocked -----------------------------------------------------------------------------

CHILD = """
    from emu.testing import ClusterHandle

    c = ClusterHandle({name!r})

    def test_reachable():
        r = c.assert_reachable("default/client", "default/web")
        assert r["answered_by"] == "default/web"

    def test_blocked():
        c.assert_blocked("default/client", "default/web")

    def test_blocked_by_drop():
        c.assert_blocked("default/client", "default/web", by="drop")

    def test_blocked_server_down():
        c.assert_blocked("default/client", "default/web", port={port})
"""


def test_allowed_pair(pytester, two):
    out = run_child(pytester, CHILD, "-k", "not drop", name=two.name, port=str(UNSERVED_PORT))
    assert out["test_reachable"] == ("passed", "")
    outcome, text = out["test_blocked"]
    assert outcome == "failed"
    assert "default/client -> default/web tcp/80" in text
    assert "expected: blocked by a reject: a TCP RST or an ICMP destination unreachable" in text
    assert "happened: default/client -> default/web (" in text and ": connected, answered by default/web" in text
    assert "control:  default/web -> default/web tcp/80: answered" in text
    assert "explain:  default/client -> default/web tcp/80: ALLOWED" in text
    assert "trace:    default/client -> default/web (" in text and "request: default/client (eth0 out)" in text
    assert "reply: default/web (eth0 out)" in text
    # no policy, nothing listens: the kernel's RST is a "reject", and only the control shows the server is down
    outcome, text = out["test_blocked_server_down"]
    assert outcome == "failed"
    assert f"happened: default/client -> default/web (" in text and "refused" in text
    assert (f"control:  default/web -> default/web tcp/{UNSERVED_PORT}: FAILED: the destination does not answer"
            in text)
    assert "stopped at default/web: TCP RST" in text  # the trace of the control says why


def test_denied_pair(pytester, denied):
    out = run_child(pytester, CHILD, name=denied.name, port=str(UNSERVED_PORT))
    assert out["test_blocked"] == ("passed", "")
    outcome, text = out["test_reachable"]
    assert outcome == "failed"
    assert "expected: reachable: the destination answers" in text
    assert "happened: default/client -> default/web (" in text and ": refused, rtt " in text
    assert "; ICMP type 3 code 3 from " in text and "(node/node-2)" in text  # the REJECT on web's node
    assert "explain:  default/client -> default/web tcp/80: DENIED" in text and "default/deny-web" in text
    assert "trace:    default/client -> default/web (" in text and "request: default/client (eth0 out)" in text
    assert "ICMP error (" in text and "stopped at node/node-2: dest-unreachable port-unreachable" in text
    assert 'by ip filter KUBE-POD-FW-' in text and '"default/web reject"' in text and "-j REJECT" in text
    outcome, text = out["test_blocked_by_drop"]
    assert outcome == "failed"
    assert "expected: blocked by a drop: nothing comes back (timeout)" in text
    assert ": refused, rtt " in text and "; ICMP type 3 code 3 from" in text
    # the policy rejects port 8080 too, but nothing listens there: a denial that proves nothing
    outcome, text = out["test_blocked_server_down"]
    assert outcome == "failed"
    assert ": refused, rtt " in text and "; ICMP type 3 code 3 from" in text
    assert f"control:  default/web -> default/web tcp/{UNSERVED_PORT}: FAILED" in text


# --- probing.denial: the verdicts assert_blocked tells apart -------------------------------------------------------

ICMP_PORT_UNREACH = {"type": 3, "code": 3, "sender": "10.244.1.0", "mtu": None}


@pytest.mark.parametrize("result, kind", [
    ({"proto": "tcp", "verdict": "timeout", "rtt_ms": None}, "drop"),
    ({"proto": "tcp", "verdict": "timeout", "rtt_ms": 0.2}, None),  # connected, then silent: no firewall did that
    ({"proto": "udp", "verdict": "timeout", "rtt_ms": None}, "drop"),
    ({"proto": "tcp", "verdict": "refused", "rtt_ms": 0.1, "icmp": None}, "reset"),
    ({"proto": "tcp", "verdict": "refused", "rtt_ms": 0.1, "icmp": ICMP_PORT_UNREACH}, "icmp-unreachable"),
    ({"proto": "udp", "verdict": "refused", "rtt_ms": 0.1, "icmp": ICMP_PORT_UNREACH}, "icmp-unreachable"),
    ({"proto": "icmp", "verdict": "unreachable", "icmp": dict(ICMP_PORT_UNREACH, code=13)}, "icmp-unreachable"),
    ({"proto": "udp", "verdict": "unreachable", "icmp": {"type": 3, "code": 1, "sender": "local"}}, None),
    ({"proto": "udp", "verdict": "frag-needed", "icmp": dict(ICMP_PORT_UNREACH, code=4, mtu=1450)}, None),
    ({"proto": "tcp", "verdict": "error", "detail": "cannot open a tcp socket"}, None),
    ({"proto": "tcp", "verdict": "connected", "rtt_ms": 0.1}, None),
])
def test_denial_kinds(result, kind):
    assert probing.denial(result) == kind
