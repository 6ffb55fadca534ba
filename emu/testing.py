"""A pytest plugin for CNI developers' CI (loaded automatically once cni-emu is installed).

    @pytest.mark.emu_topology("topologies/flannel-vxlan.yaml")   # relative to this test file
    def test_cross_node(cluster):
        r = cluster.assert_reachable("default/web-0", "default/web-1", port=80)
        assert r["client_ip_seen"] == cluster.pod_ip("default/web-0")

`cluster` brings the topology up under a unique name (or the marker's `name=`) and tears down only a cluster it
created; `emu_cluster` is a factory for fixtures of wider scope (`with emu_cluster(path) as c: ...`).  Needs root.
"""
from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from emu.cluster import lifecycle as clusters
from emu.cluster import converge
from emu.observe import probing, targets
from emu.addons.netpol import explain as netpol_explain
from emu.observe.trace import run as trace_run

# What assert_blocked(by=...) accepts, as probing.denial names the verdicts.  A NetworkPolicy in emu is enforced
# as kube-router enforces it: what no policy allows hits "-j REJECT" (iptables' default --reject-with
# icmp-port-unreachable), so "reject" is the default; Calico's and Cilium's default deny is a drop.
DENIALS: dict[str, frozenset[str]] = {
    "drop": frozenset({"drop"}),
    "reject": frozenset({"reset", "icmp-unreachable"}),
    "reset": frozenset({"reset"}),
    "icmp-unreachable": frozenset({"icmp-unreachable"}),
}
# How emu's own NetworkPolicies deny (emu/addons/netpol/rules.py, kube-router's layout): the pod chain's "-j REJECT" with
# iptables' default --reject-with icmp-port-unreachable, for TCP too (ipt_REJECT sends no RST unless told to), so a
# denial of emu's policies is an ICMP port unreachable from the enforcing node, never a RST.
NETWORK_POLICY_DENIAL = "icmp-unreachable"
DENIAL_TEXT = {
    "drop": "a drop: nothing comes back (timeout)",
    "reject": "a reject: a TCP RST or an ICMP destination unreachable",
    "reset": "a reject with a TCP RST",
    "icmp-unreachable": "a reject with an ICMP destination unreachable",
}


class ClusterHandle:
    """A running cluster for a test: the model, and the verbs a test needs.  `ClusterHandle(name)` wraps any
    cluster that is up (the `cluster` fixture and `emu_cluster` yield one)."""

    def __init__(self, name: str):
        self.name = name

    @property
    def _cl(self) -> clusters.Cluster:
        return clusters.open_cluster(self.name)  # re-read: apply/delete change it

    @property
    def model(self):  # type: ignore[no-untyped-def]
        """The cluster's model (emu.model.types.Topology) as it is now, applied manifests included."""
        return self._cl.topology

    @property
    def plan(self):  # type: ignore[no-untyped-def]
        """The cluster's plan (emu.plan.objects.ClusterPlan): namespaces, links, addresses and routes per node and pod."""
        return self._cl.plan

    def netns(self, target: str) -> str:
        """The network namespace of NS/POD, node/NAME or external (for `ip netns exec`)."""
        ns = targets.resolve(self._cl, target).netns
        assert ns is not None
        return ns

    def pod_ip(self, key: str) -> str:
        """The IP address of NS/POD (or of any other target `emu probe` takes)."""
        return targets.resolve(self._cl, key).ip

    def cluster_ip(self, key: str) -> str:
        """A Service's ClusterIP ("ns/name")."""
        return str(self._cl.allocations.services[key].cluster_ip)

    def mark(self, pod: str, condition: str) -> converge.Change:
        """`emu mark`: ready | not-ready | terminating | terminating-not-serving."""
        return converge.mark(self.name, pod, condition)

    def probe(self, src: str, dst: str, proto: str = "tcp", port: int | None = None, size: int | None = None,
              df: bool = False, count: int = 1, timeout: float = 1.0) -> dict[str, Any]:
        """`emu probe -o json`: real packets from SRC to DST; the dict has ok, verdict, answered_by,
        client_ip_seen, icmp, detail and one entry per packet in results."""
        return probing.probe_many(self._cl, src, dst, proto, port, size, df, count, timeout)

    def pmtu(self, src: str, dst: str, timeout: float = 1.0) -> dict[str, Any]:
        """`emu pmtu -o json`: the path MTU from SRC to DST and the hop that limits it."""
        return probing.pmtu(self._cl, src, dst, timeout)

    def matrix(self, proto: str = "tcp", port: int = 80, timeout: float = 1.0) -> dict[str, Any]:
        """`emu matrix -o json`: every pod to every pod, beside what the NetworkPolicies allow."""
        return probing.matrix(self._cl, proto, port, timeout)

    def explain(self, src: str, dst: str, proto: str = "tcp", port: int | None = None) -> dict[str, Any]:
        """`emu explain -o json`: what the NetworkPolicies decide for SRC -> DST, and which rules decide it."""
        return probing.explain(self._cl, src, dst, proto, port)

    def trace(self, src: str, dst: str, proto: str = "tcp", port: int | None = None,
              timeout: float = 1.0) -> dict[str, Any]:
        """`emu trace -o json`: one probe followed hop by hop, with the rules it met and where it stopped."""
        return trace_run.trace(self._cl, src, dst, proto, port, None, False, timeout)

    def exec(self, target: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`emu exec`: run a command in a pod's (or node's) namespace; output captured as text."""
        from emu.observe import podexec

        cl = self._cl
        return subprocess.run(podexec.argv(cl, targets.resolve(cl, target), cmd), capture_output=True, text=True,
                              check=check)

    def apply(self, path: str) -> converge.Change:
        """`emu apply -f PATH`: add or change the manifests' objects on the running cluster."""
        return converge.apply_file(self.name, path)

    def delete(self, path: str) -> converge.Change:
        """`emu delete -f PATH`: remove the manifests' objects from the running cluster."""
        return converge.delete_file(self.name, path)

    def assert_reachable(self, src: str, dst: str, proto: str = "tcp", port: int | None = None,
                         timeout: float = 1.0, retries: int = 1) -> dict[str, Any]:
        """Assert that a probe from SRC gets DST's answer; returns the probe's result (see `expect_reachable`)."""
        __tracebackhide__ = True
        return expect_reachable(self._cl, src, dst, proto, port, timeout, retries)

    def assert_blocked(self, src: str, dst: str, proto: str = "tcp", port: int | None = None, by: str = "reject",
                       control: Control = None, timeout: float = 1.0, retries: int = 1) -> dict[str, Any]:
        """Assert that SRC -> DST is denied the way `by` says, beside a positive control in the same step, so a
        dead server or a failed probe never passes for a denial (see `expect_blocked`).  Returns the probe's
        result."""
        __tracebackhide__ = True
        return expect_blocked(self._cl, src, dst, proto, port, by, control, timeout, retries)

    def assert_matrix(self, res: dict[str, Any], by: str = "reject", timeout: float = 1.0,
                      retries: int = 1) -> dict[str, Any]:
        """Assert a `matrix()` result pair by pair (see `expect_matrix`); returns it."""
        __tracebackhide__ = True
        return expect_matrix(self._cl, res, by, timeout, retries)


# A positive control: None (DST answers itself), "SRC" (SRC reaches DST on the same protocol and port), or
# (SRC, DST[, PORT]) for a denial whose destination cannot answer on that path (a Service without a local endpoint
# answers through another node; a closed port is controlled by an open one of the same pod).
Control = str | tuple[str, str] | tuple[str, str, int] | None
Clusterish = clusters.Cluster | ClusterHandle | str


def _open(c: Clusterish) -> clusters.Cluster:
    """The cluster as it is now, from an emu.cluster.lifecycle.Cluster, a ClusterHandle or a cluster name."""
    if isinstance(c, clusters.Cluster):
        return c
    return clusters.open_cluster(c.name if isinstance(c, ClusterHandle) else c)


def expect_reachable(c: Clusterish, src: str, dst: str, proto: str = "tcp", port: int | None = None,
                     timeout: float = 1.0, retries: int = 1) -> dict[str, Any]:
    """Assert that a probe from SRC gets DST's answer; returns the probe's result.  A probe that times out is sent
    again (`retries` times): a slow first answer on a cold path is not a failure.  On failure the AssertionError
    says what was expected, what happened, and why (`emu explain`, `emu trace`)."""
    __tracebackhide__ = True
    cl = _open(c)
    res = _probe(cl, src, dst, proto, port, timeout, retries, lambda r: r["verdict"] == "timeout")
    if res["ok"]:
        return res
    raise AssertionError(_message(cl, res, "reachable: the destination answers", None, timeout))


def expect_blocked(c: Clusterish, src: str, dst: str, proto: str = "tcp", port: int | None = None,
                   by: str = "reject", control: Control = None, timeout: float = 1.0,
                   retries: int = 1) -> dict[str, Any]:
    """Assert that SRC -> DST is denied the way `by` says, and that a positive control answers in the same step, so
    a dead server or a failed probe never passes for a denial.  Returns the probe's result.

    by: "reject" (a TCP RST or an ICMP destination unreachable), "drop" (nothing comes back: a timeout),
        "reset" (a TCP RST only), "icmp-unreachable" (ICMP only: what emu's NetworkPolicies answer, as
        kube-router's `-j REJECT` does, TCP included).
    control: None (default): DST itself, from its own namespace (traffic that never leaves the pod, so no policy
        applies; DST must be a pod); "SRC": SRC must reach DST on the same protocol and port; (SRC, DST) or
        (SRC, DST, PORT): SRC must reach that destination on the same protocol (PORT, or the port `emu probe`
        picks for it), for a denial whose own destination cannot answer on that path.
    A reject that times out is sent again (`retries` times): the kernel's ICMP rate limit
    (net.ipv4.icmp_ratelimit, per destination host: a burst of 6, then one a second) can swallow a REJECT's answer.
    """
    __tracebackhide__ = True
    want = _want(by)
    cl = _open(c)
    csrc, cdst, cport = _control(cl, dst, proto, control)
    res = _probe(cl, src, dst, proto, port, timeout, retries,
                 lambda r: r["verdict"] == "timeout" and "drop" not in want, pause=ICMP_REFILL)
    if cport is None and cdst == dst:
        cport = res["port"]
    ctl = _probe(cl, csrc, cdst, proto, cport, timeout, retries, lambda r: r["verdict"] == "timeout")
    return expect_denial(cl, res, ctl, by, timeout)


def expect_denial(c: Clusterish, res: dict[str, Any], ctl: dict[str, Any], by: str = "reject",
                  timeout: float = 1.0) -> dict[str, Any]:
    """Assert that a probe result the caller already holds (`probe()`, `emu probe -o json`) was denied the way `by`
    says (as `expect_blocked`), and that `ctl`, the positive control's result taken in the same step, answered.
    Returns `res`.  The check `expect_blocked` and `expect_matrix` make: use it for probes a test must send
    itself (through a Service, in a loop)."""
    __tracebackhide__ = True
    want = _want(by)
    cl = _open(c)
    expected = f"blocked by {DENIAL_TEXT[by]}"
    if probing.denial(res) not in want:
        raise AssertionError(_message(cl, res, expected, ctl, timeout))
    if not ctl["ok"]:
        raise AssertionError(_message(cl, res, expected, ctl, timeout, control_failed=True))
    return res


def expect_matrix(c: Clusterish, res: dict[str, Any], by: str = "reject", timeout: float = 1.0,
                  retries: int = 1) -> dict[str, Any]:
    """Assert an `emu matrix` result (`probing.matrix`, or `emu matrix -o json` parsed) pair by pair: the dataplane
    agrees with the policy engine, every pair the engine denies was denied the way `by` says, and every denied
    destination answered its own positive control in the same matrix (the pod to itself, which never leaves the
    pod; checked first, because a dead server explains every other failure).  A denied pair whose verdict was not
    the one expected is probed again (as `expect_blocked`, retries included): the node's ICMP rate limit swallows
    REJECTs when many pairs are denied at once.  Returns `res`."""
    __tracebackhide__ = True
    want = _want(by)
    cl = _open(c)
    proto, port, pods = res["proto"], res["port"], res["pods"]
    denied = [(a, b) for a in pods for b in pods if not res["expected"][a][b]]
    for b in dict.fromkeys(b for _, b in denied):  # first the controls: a dead server explains all else
        if res["observed"][b][b]:
            continue
        ctl = _probe(cl, b, b, proto, port, timeout, retries, lambda r: r["verdict"] == "timeout")
        if not ctl["ok"]:
            a = next(a for a, d in denied if d == b)
            r = _probe(cl, a, b, proto, port, timeout, 0, lambda r: False)
            raise AssertionError(_message(cl, r, f"blocked by {DENIAL_TEXT[by]}", ctl, timeout, control_failed=True))
    if res["disagreements"]:
        lines = [f"{d['from']} -> {d['to']} {proto}/{port}: expected {'allowed' if d['expected'] else 'denied'}, "
                 f"observed {d['verdict']}" for d in res["disagreements"]]
        raise AssertionError("the dataplane differs from the NetworkPolicies:\n  " + "\n  ".join(lines))
    for a, b in denied:
        if res["denials"][a][b] in want:
            continue
        r = _probe(cl, a, b, proto, port, timeout, max(retries, 3),
                   lambda r: r["verdict"] == "timeout" and "drop" not in want, pause=ICMP_REFILL)
        ctl = _probe(cl, b, b, proto, port, timeout, retries, lambda r: r["verdict"] == "timeout")
        expect_denial(cl, r, ctl, by, timeout)
    return res


def _want(by: str) -> frozenset[str]:
    if by not in DENIALS:
        raise ValueError(f"by={by!r} is not one of {', '.join(DENIALS)}")
    return DENIALS[by]


def _control(cl: clusters.Cluster, dst: str, proto: str, control: Control) -> tuple[str, str, int | None]:
    """The positive control's source, destination and port (None: the denied probe's port when the destination is
    the same, else the one `emu probe` picks)."""
    if control is None:
        target = targets.resolve(cl, dst, proto)
        if target.kind != "pod":
            raise ValueError(f"{dst} is not a pod, so it cannot be its own positive control: name a source that "
                             f"may reach it with control=")
        return target.label, dst, None
    if isinstance(control, str):
        return control, dst, None
    if len(control) == 2:
        return control[0], control[1], None
    return control[0], control[1], control[2]  # type: ignore[misc]


# The kernel answers a REJECT's ICMP only while the per-peer token bucket allows: one token per
# net.ipv4.icmp_ratelimit (1000 ms by default) and a burst of six (inet_peer_xrlim_allow, XRLIM_BURST_FACTOR).  A
# matrix that sends many denied probes from one source empties it, so a reject probed again too soon is a timeout.
ICMP_REFILL = 1.1


def _probe(cl: clusters.Cluster, src: str, dst: str, proto: str, port: int | None, timeout: float, retries: int,
           again: Callable[[dict[str, Any]], bool], pause: float = 0.0) -> dict[str, Any]:
    """One probe, sent again up to `retries` times (`pause` seconds apart) while `again(result)` says so."""
    res = probing.probe_many(cl, src, dst, proto, port, None, False, 1, timeout)
    for _ in range(retries):
        if not again(res):
            break
        time.sleep(pause)
        res = probing.probe_many(cl, src, dst, proto, port, None, False, 1, timeout)
    return res


def _said(res: dict[str, Any]) -> str:
    """`emu probe`'s line for a one-packet probe, with the probe's detail when the line does not already say it
    (a TCP RST, a timeout: which packet went unanswered)."""
    line, _, rest = probing.probe_text(res).partition("\n")  # a note may follow (a daemon of the cluster is down)
    detail = res.get("detail") or ""
    if detail not in line:
        line += f"; {detail}"
    return line + (f"\n    {_indent(rest)}" if rest else "")


def _indent(text: str) -> str:
    return text.replace("\n", "\n    ")


def _message(cl: clusters.Cluster, res: dict[str, Any], expected: str, ctl: dict[str, Any] | None, timeout: float,
             control_failed: bool = False) -> str:
    """The failure: the pair, what was expected, what happened, the positive control, and why (explain and trace
    of the probe that did not do what was expected)."""
    what = res["proto"] + (f"/{res['port']}" if res.get("port") else "")
    lines = [f"{res['from']} -> {res['to']} {what}",
             f"  expected: {expected}",
             f"  happened: {_said(res)}"]
    if ctl is not None:
        verdict = "answered" if ctl["ok"] else \
            "FAILED: the destination does not answer, so the denial proves nothing"
        cwhat = ctl["proto"] + (f"/{ctl['port']}" if ctl.get("port") else "")
        lines.append(f"  control:  {ctl['from']} -> {ctl['to']} {cwhat}: {verdict}")
        lines.append(f"            {_said(ctl)}")
    why = ctl if control_failed and ctl is not None else res
    lines.append(f"  explain:  {_indent(_explain_text(cl, why))}")
    lines.append(f"  trace:    {_indent(_trace_text(cl, why, timeout))}")
    return "\n".join(lines)


def _explain_text(cl: clusters.Cluster, res: dict[str, Any]) -> str:
    if res["to"].split("/", 1)[0] in ("svc", "nodeport", "lb"):  # policies judge a Service's endpoints, not it
        return (f"{res['to']} is a Service: NetworkPolicies apply to the endpoint kube-proxy picks "
                f"(emu explain {res['from']} NS/POD for one of them)")
    try:
        d = probing.explain(cl, res["from"], res["to"], res["proto"], res.get("port"))
    except Exception as e:  # the assertion's message must survive whatever explain cannot say
        return f"not available ({type(e).__name__}: {e})"
    return netpol_explain.explain_text(d)


def _trace_text(cl: clusters.Cluster, res: dict[str, Any], timeout: float) -> str:
    try:
        t = trace_run.trace(cl, res["from"], res["to"], res["proto"], res.get("port"), None, False, timeout)
    except Exception as e:  # as above: the failure being reported matters more than the trace's own
        return f"not available ({type(e).__name__}: {e})"
    return trace_summary(t)


def _hops(pkt: dict[str, Any]) -> str:
    """The interfaces a packet crossed, grouped by namespace: `x/a (eth0 out) > node-1 (veth1 in, cni0 in)`."""
    groups: list[tuple[str, list[str]]] = []
    for h in pkt["hops"]:
        step = f"{h['iface']} {h['dir']}"
        if groups and groups[-1][0] == h["where"]:
            groups[-1][1].append(step)
        else:
            groups.append((h["where"], [step]))
    return " > ".join(f"{where} ({', '.join(steps)})" for where, steps in groups)


def trace_summary(t: dict[str, Any]) -> str:
    """An `emu trace` report in a few lines: the probe's verdict, the hops of the request, of any ICMP error and of
    the reply, and where and why the flow stopped (the rule that dropped or rejected it, when one did)."""
    lines = [f"{t['from']} -> {t['to']} ({t['to_ip']}): {t['verdict']}"]
    if t.get("request") is None:
        lines.append("no packet of the probe was seen on any interface")
    else:
        lines.append(f"request: {_hops(t['request'])}")
    for e in t.get("icmp_errors", []):
        lines.append(f"ICMP error ({e['text']}) generated in {e['generated_in']} by {e['sender']}: {_hops(e['path'])}")
    if t.get("reply"):
        lines.append(f"reply: {_hops(t['reply'])}")
    drop = t.get("drop")
    if drop:
        lines.append(f"stopped at {drop['where']}: {drop['detail']}")
        rule = drop.get("rule")  # the traced rule that dropped or rejected it ({"table", "chain", "rule", ...})
        if rule:
            lines.append(f"  by {rule['table']} {rule['chain']}: {rule.get('iptables') or rule.get('rule')}")
    lines.extend(f"note: {n}" for n in t.get("notes", []))
    return "\n".join(lines)


@contextmanager
def running(path: str | os.PathLike[str], name: str | None = None) -> Iterator[ClusterHandle]:
    """Bring a topology up under `name` (default: a unique one) and `down` it afterwards, also when the test fails.

    Only a cluster this call created is taken down.  When `up` fails (the name or a namespace is taken, bad input,
    a build that failed and that `emu.cluster.lifecycle.up` has already rolled back), its error propagates and nothing is
    removed: a fixture that uses this errors, and a cluster someone else owns stays up.  A relative `path` is read
    as `open()` reads it (from the current directory)."""
    if os.geteuid() != 0:
        pytest.skip("emu clusters need root (network namespaces)")
    cl = clusters.up(os.fspath(path), name or f"t{secrets.token_hex(3)}")
    try:
        yield ClusterHandle(cl.name)
    finally:
        clusters.down(cl.name)


def topology_path(request: pytest.FixtureRequest, path: str | os.PathLike[str]) -> str:
    """A marker's or param's topology path: relative to the requesting test's file; an absolute path unchanged."""
    p = pathlib.Path(os.fspath(path))
    return str(p if p.is_absolute() else request.path.parent / p)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emu_topology(path, name=None): the topology the `cluster` fixture brings up "
                                       "(a relative path is relative to the test file)")


@pytest.fixture(scope="session")
def emu_cluster():  # type: ignore[no-untyped-def]
    """Factory: `with emu_cluster(path) as c:` in a fixture of any scope (see `running`)."""
    return running


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    """The cluster of `@pytest.mark.emu_topology(PATH, name=None)` or of an indirect param (PATH), up for one test."""
    mark = request.node.get_closest_marker("emu_topology")
    path = getattr(request, "param", None) or (mark.args[0] if mark and mark.args else None)
    if path is None:
        raise pytest.UsageError("the `cluster` fixture needs @pytest.mark.emu_topology(PATH) or indirect params")
    name = mark.kwargs.get("name") if mark else None
    with running(topology_path(request, path), name) as handle:
        yield handle
