"""Every command the CLI table of docs/reference/commands.md documents, and every option of every `emu` command,
run as a user runs it: through click's CliRunner on `emu.cli.commands.main`, or (for the commands that exec a tool in the
namespace, and for `-f` and `capture`, which must run beside something else) the installed `emu` entry point as a
subprocess. Each test asserts what the command printed, not only its exit status.

Inventory (docs/reference/commands.md "## The commands" row -> the tests here that run it; ROWS below is the same
table as data, and test_every_readme_row_and_option_has_a_test fails when a row or an option has none, or names a
test that is gone):

  emu up FILE [--name NAME] [--dry-run] ............ test_up_status_repair_down_lifecycle,
                                                     test_up_dry_run_changes_nothing
  emu up --repair NAME ............................. test_up_status_repair_down_lifecycle
  emu down [NAME | --all] .......................... test_up_status_repair_down_lifecycle
  emu status [NAME] ................................ test_up_status_repair_down_lifecycle
  emu get nodes|pods|namespaces ... ................ test_get_nodes_pods_namespaces
  emu get networkpolicies|netpol ... ............... test_get_netpol
  emu get events ... --field-selector .............. test_get_events_field_selector
  emu logs ... ..................................... test_logs_of_system_pods, test_logs_follow
  emu apply -f FILE / emu delete -f FILE ........... test_apply_delete
  emu exec TARGET -- CMD ........................... test_exec_in_pod_node_external
  emu probe FROM TO [...] .......................... test_probe_pod_forms, test_probe_service_targets
  emu probe --pmtu FROM TO ......................... test_probe_pmtu_and_traceroute
  emu matrix [...] ................................. test_matrix_with_policies, test_matrix_udp_options
  emu explain FROM TO [...] ........................ test_explain
  emu trace FROM TO [...] .......................... test_trace_options
  emu capture TARGET[:IFACE] [...] ................. test_capture
  emu probe FROM http(s)://HOST[:PORT]/PATH ........ test_probe_url
  emu get ingress [...] ............................ test_get_ingress
  emu create secret tls NAME ... ................... test_create_secret_tls
  emu probe FROM --dns NAME [--dns-type T] ......... test_probe_dns
  emu probe --traceroute [--max-hops N] FROM TO .... test_probe_pmtu_and_traceroute, test_probe_fragmentation
  emu demo [FILE] .................................. test_demo
  emu get svc|endpoints [...] ...................... test_get_svc, test_get_endpoints_and_mark
  emu describe svc|pod|netpol|node|ing|ep [...] .... test_describe_every_kind
  emu rules node/NAME [-t TABLE] ................... test_rules_iptables_mode, test_rules_nftables_mode
  emu conntrack node/NAME [-p PROTO] ............... test_conntrack_shows_service_nat
  emu doctor [NAME] [--check CHECK ...] [...] ...... test_doctor
  emu mark NS/POD ready|not-ready|... .............. test_get_endpoints_and_mark
  emu cni log [NS/POD] [-o wide|json] .............. test_cni_log_on_a_builtin_cluster
  emu kernel-features [-o json] .................... test_kernel_features
  emu kernel-lane run [...] -- CMD ... ............. test_kernel_lane_run (lane only: boots the VM)
  emu kernel-lane info [-o json] ................... test_kernel_lane_info

OPTIONS maps every option of every command (read from the click tree, so `--help` cannot grow an option no test
runs) to its tests the same way; `-o table` (`-o text`) is the default, so a test that gives no -o runs it.
test_kernel_lane_run boots the lane's VM (about 7 s here): like the `lane` tests of tests/kernel it runs only with
EMU_LANE_TESTS=1 (tools/kernel-lane/run-tests).
"""
from __future__ import annotations

import ast
import base64
import json
import os
import pathlib
import re
import secrets
import select
import signal
import subprocess
import sys
import time

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from emu.cli.commands import main
from tests.conftest import ROOT, TOPOLOGIES
from tests.waiting import wait_until

SEED = str(TOPOLOGIES / "seed-guide.yaml")
VXLAN = str(TOPOLOGIES / "flannel-vxlan.yaml")
EMU = str(pathlib.Path(sys.executable).parent / "emu")  # the installed console script (pyproject [project.scripts])

# --- the inventory as data -------------------------------------------------------------------------------------------

ROWS: dict[str, list[str]] = {
    "emu up FILE [--name NAME] [--dry-run]": ["test_up_status_repair_down_lifecycle",
                                               "test_up_dry_run_changes_nothing"],
    "emu up --repair NAME": ["test_up_status_repair_down_lifecycle"],
    "emu down [NAME \\| --all]": ["test_up_status_repair_down_lifecycle"],
    "emu status [NAME]": ["test_up_status_repair_down_lifecycle"],
    "emu get nodes\\|pods\\|namespaces [NAME] [-n NS \\| -A] [-o wide\\|json]": ["test_get_nodes_pods_namespaces"],
    "emu get networkpolicies\\|netpol [NAME] [-n NS \\| -A] [-o wide\\|json]": ["test_get_netpol"],
    "emu get events [-n NS \\| -A] [--field-selector S] [-o wide\\|json]": ["test_get_events_field_selector"],
    "emu logs POD \\| -l SELECTOR [-n NS] [--tail N] [--prefix] [-f] [-o json]": ["test_logs_of_system_pods",
                                                                                 "test_logs_follow"],
    "emu apply -f FILE": ["test_apply_delete"],
    "emu exec TARGET -- CMD ...": ["test_exec_in_pod_node_external"],
    "emu probe FROM TO [--proto tcp\\|udp\\|icmp] [--port N] [--size BYTES] [--df] [--count N]": [
        "test_probe_pod_forms", "test_probe_service_targets"],
    "emu probe --pmtu FROM TO": ["test_probe_pmtu_and_traceroute"],
    "emu matrix [--port N] [--proto tcp\\|udp] [--namespaces NS,NS]": ["test_matrix_with_policies",
                                                                      "test_matrix_udp_options"],
    "emu explain FROM TO [--port N] [--proto P]": ["test_explain"],
    "emu trace FROM TO [--proto tcp\\|udp\\|icmp] [--port N] [--size BYTES] [--df] [--no-rules] [--pcap DIR] "
    "[--svg FILE] [-o wide\\|json]": ["test_trace_options"],
    "emu capture TARGET[:IFACE] [--filter BPF] [-w FILE] [--count N] [--seconds S]": ["test_capture"],
    "emu probe FROM http(s)://HOST[:PORT]/PATH": ["test_probe_url"],
    "emu get ingress [-n NS \\| -A] [-o wide\\|json]": ["test_get_ingress"],
    "emu create secret tls NAME [-n NS] (--self-signed --host H ... \\| --cert F --key F)": [
        "test_create_secret_tls"],
    "emu probe FROM --dns NAME [--dns-type T]": ["test_probe_dns"],
    "emu probe --traceroute [--max-hops N] FROM TO": ["test_probe_pmtu_and_traceroute", "test_probe_fragmentation"],
    "emu demo [FILE]": ["test_demo"],
    "emu get svc\\|endpoints [-n NS \\| -A] [-o wide\\|json]": ["test_get_svc", "test_get_endpoints_and_mark"],
    "emu describe svc\\|pod\\|netpol\\|node\\|ing\\|ep [NAME] [-n NS \\| -A] [--show-events=false] [-o json]": [
        "test_describe_every_kind"],
    "emu rules node/NAME [-t TABLE]": ["test_rules_iptables_mode", "test_rules_nftables_mode"],
    "emu conntrack node/NAME [-p PROTO]": ["test_conntrack_shows_service_nat"],
    "emu doctor [NAME] [--check CHECK ...] [-o wide\\|json]": ["test_doctor"],
    "emu mark NS/POD ready\\|not-ready\\|terminating\\|terminating-not-serving": ["test_get_endpoints_and_mark"],
    "emu cni log [NS/POD] [-o wide\\|json]": ["test_cni_log_on_a_builtin_cluster"],
    "emu kernel-features [-o json]": ["test_kernel_features"],
    "emu kernel-lane run [--kernel debian-stable\\|PATH] [--mem 4G] [--cpus N] [--timeout S] -- CMD ...": [
        "test_kernel_lane_run"],
    "emu kernel-lane info [-o json]": ["test_kernel_lane_info"],
}
# the row "`emu apply -f FILE` / `emu delete -f FILE`" has two commands in its first cell: both are keys
ROWS["emu delete -f FILE"] = ["test_apply_delete"]

# `COMMAND OPTION` (its longest spelling) for every option; `COMMAND -o VALUE` for each output format
OPTIONS: dict[str, list[str]] = {
    "up --name": ["test_up_status_repair_down_lifecycle"],
    "up --dry-run": ["test_up_dry_run_changes_nothing"],
    "up --repair": ["test_up_status_repair_down_lifecycle"],
    "up -o table": ["test_up_status_repair_down_lifecycle"],
    "up -o wide": ["test_up_status_repair_down_lifecycle"],
    "up -o json": ["test_up_status_repair_down_lifecycle"],
    "down --all": ["test_up_status_repair_down_lifecycle"],
    "down -o table": ["test_up_status_repair_down_lifecycle"],
    "down -o wide": ["test_up_status_repair_down_lifecycle"],
    "down -o json": ["test_up_status_repair_down_lifecycle"],
    "status -o table": ["test_up_status_repair_down_lifecycle"],
    "status -o wide": ["test_up_status_repair_down_lifecycle"],
    "status -o json": ["test_up_status_repair_down_lifecycle"],
    "get --namespace": ["test_get_nodes_pods_namespaces", "test_get_netpol", "test_get_svc"],
    "get --all-namespaces": ["test_get_nodes_pods_namespaces", "test_get_netpol", "test_get_svc"],
    "get --field-selector": ["test_get_events_field_selector"],
    "get --cluster": ["test_get_nodes_pods_namespaces"],
    "get -o table": ["test_get_nodes_pods_namespaces", "test_get_svc"],
    "get -o wide": ["test_get_nodes_pods_namespaces", "test_get_netpol", "test_get_events_field_selector",
                    "test_get_svc", "test_get_ingress", "test_get_endpoints_and_mark"],
    "get -o json": ["test_get_nodes_pods_namespaces", "test_get_netpol", "test_get_events_field_selector",
                    "test_get_svc", "test_get_ingress", "test_get_endpoints_and_mark"],
    "logs --namespace": ["test_logs_of_system_pods"],
    "logs --selector": ["test_logs_of_system_pods"],
    "logs --tail": ["test_logs_of_system_pods", "test_logs_follow"],
    "logs --prefix": ["test_logs_of_system_pods"],
    "logs --follow": ["test_logs_follow"],
    "logs --cluster": ["test_logs_of_system_pods"],
    "logs -o text": ["test_logs_of_system_pods"],
    "logs -o json": ["test_logs_of_system_pods"],
    "apply --filename": ["test_apply_delete"],
    "apply --cluster": ["test_apply_delete"],
    "apply -o table": ["test_apply_delete"],
    "apply -o wide": ["test_apply_delete"],
    "apply -o json": ["test_apply_delete"],
    "delete --filename": ["test_apply_delete"],
    "delete --cluster": ["test_apply_delete"],
    "delete -o table": ["test_apply_delete"],
    "delete -o wide": ["test_apply_delete"],
    "delete -o json": ["test_apply_delete"],
    "exec --cluster": ["test_exec_in_pod_node_external"],
    "mark --cluster": ["test_get_endpoints_and_mark"],
    "rules --table": ["test_rules_iptables_mode"],
    "rules --cluster": ["test_rules_iptables_mode", "test_rules_nftables_mode"],
    "conntrack --proto": ["test_conntrack_shows_service_nat"],
    "conntrack --cluster": ["test_conntrack_shows_service_nat"],
    "probe --dns": ["test_probe_dns"],
    "probe --dns-type": ["test_probe_dns"],
    "probe --proto": ["test_probe_pod_forms"],
    "probe --port": ["test_probe_pod_forms", "test_probe_service_targets"],
    "probe --size": ["test_probe_pod_forms", "test_probe_fragmentation"],
    "probe --df": ["test_probe_pod_forms"],
    "probe --count": ["test_probe_pod_forms"],
    "probe --timeout": ["test_probe_pod_forms"],
    "probe --pmtu": ["test_probe_pmtu_and_traceroute"],
    "probe --traceroute": ["test_probe_pmtu_and_traceroute"],
    "probe --max-hops": ["test_probe_pmtu_and_traceroute"],
    "probe --cluster": ["test_probe_pod_forms"],
    "probe -o table": ["test_probe_pod_forms"],
    "probe -o wide": ["test_probe_pod_forms"],
    "probe -o json": ["test_probe_pod_forms", "test_probe_service_targets", "test_probe_url", "test_probe_dns",
                      "test_probe_pmtu_and_traceroute"],
    "matrix --proto": ["test_matrix_with_policies", "test_matrix_udp_options"],
    "matrix --port": ["test_matrix_with_policies", "test_matrix_udp_options"],
    "matrix --namespaces": ["test_matrix_with_policies", "test_matrix_udp_options"],
    "matrix --timeout": ["test_matrix_udp_options"],
    "matrix --retries": ["test_matrix_udp_options"],
    "matrix --workers": ["test_matrix_udp_options"],
    "matrix --cluster": ["test_matrix_with_policies"],
    "matrix -o table": ["test_matrix_with_policies"],
    "matrix -o wide": ["test_matrix_udp_options"],
    "matrix -o json": ["test_matrix_with_policies"],
    "explain --proto": ["test_explain"],
    "explain --port": ["test_explain"],
    "explain --cluster": ["test_explain"],
    "explain -o table": ["test_explain"],
    "explain -o wide": ["test_explain"],
    "explain -o json": ["test_explain"],
    "demo --name": ["test_demo"],
    "demo -o table": ["test_demo"],
    "demo -o wide": ["test_demo"],
    "demo -o json": ["test_demo"],
    "kernel-lane run --kernel": ["test_kernel_lane_run"],
    "kernel-lane run --modules": ["test_kernel_lane_run"],
    "kernel-lane run --mem": ["test_kernel_lane_run"],
    "kernel-lane run --cpus": ["test_kernel_lane_run"],
    "kernel-lane run --timeout": ["test_kernel_lane_run"],
    "kernel-lane run --env": ["test_kernel_lane_run"],
    "kernel-lane info --kernel": ["test_kernel_lane_info"],
    "kernel-lane info -o table": ["test_kernel_lane_info"],
    "kernel-lane info -o json": ["test_kernel_lane_info"],
    "kernel-features -o table": ["test_kernel_features"],
    "kernel-features -o json": ["test_kernel_features"],
    "trace --proto": ["test_trace_options"],
    "trace --port": ["test_trace_options"],
    "trace --size": ["test_trace_options"],
    "trace --df": ["test_trace_options"],
    "trace --timeout": ["test_trace_options"],
    "trace --no-rules": ["test_trace_options"],
    "trace --pcap": ["test_trace_options"],
    "trace --svg": ["test_trace_options"],
    "trace --cluster": ["test_trace_options"],
    "trace -o table": ["test_trace_options"],
    "trace -o wide": ["test_trace_options"],
    "trace -o json": ["test_trace_options"],
    "capture --filter": ["test_capture"],
    "capture -w": ["test_capture"],
    "capture --count": ["test_capture"],
    "capture --seconds": ["test_capture"],
    "capture --cluster": ["test_capture"],
    "cni log --cluster": ["test_cni_log_on_a_builtin_cluster"],
    "cni log -o table": ["test_cni_log_on_a_builtin_cluster"],
    "cni log -o wide": ["test_cni_log_on_a_builtin_cluster"],
    "cni log -o json": ["test_cni_log_on_a_builtin_cluster"],
    "create secret tls --namespace": ["test_create_secret_tls"],
    "create secret tls --cert": ["test_create_secret_tls"],
    "create secret tls --key": ["test_create_secret_tls"],
    "create secret tls --self-signed": ["test_create_secret_tls"],
    "create secret tls --host": ["test_create_secret_tls"],
    "doctor --check": ["test_doctor"],
    "doctor --timeout": ["test_doctor"],
    "doctor --cluster": ["test_doctor"],
    "doctor -o table": ["test_doctor"],
    "doctor -o wide": ["test_doctor"],
    "doctor -o json": ["test_doctor"],
    "describe --namespace": ["test_describe_every_kind"],
    "describe --all-namespaces": ["test_describe_every_kind"],
    "describe --show-events": ["test_describe_every_kind"],
    "describe --cluster": ["test_describe_every_kind"],
    "describe -o text": ["test_describe_every_kind"],
    "describe -o json": ["test_describe_every_kind"],
}


COMMANDS_PAGE = ROOT / "docs" / "reference" / "commands.md"


def readme_cli_rows() -> list[str]:
    """The first cells of the command table in docs/reference/commands.md ("## The commands"): each `emu ...` in
    backticks (a cell may hold two)."""
    text = COMMANDS_PAGE.read_text()
    section = text.split("\n## The commands\n", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `emu "):
            cell = re.match(r"\| (.*?) \| ", line)
            assert cell, line
            rows += re.findall(r"`(emu [^`]*)`", cell.group(1))
    return rows


def click_options() -> list[str]:
    """`COMMAND OPTION` for every option of every command of `emu` (its longest spelling), `COMMAND -o VALUE` for
    each choice of -o/--output."""
    out = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for n, c in cmd.commands.items():
                walk(c, path + [n])
            return
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.name == "help":
                continue
            if p.name == "output":
                assert isinstance(p.type, click.Choice)
                out.extend(f"{' '.join(path)} -o {v}" for v in p.type.choices)
            else:
                out.append(f"{' '.join(path)} {max(p.opts, key=len)}")

    walk(main, [])
    return out


def test_every_readme_row_and_option_has_a_test() -> None:
    here = {n.name for n in ast.parse(pathlib.Path(__file__).read_text()).body if isinstance(n, ast.FunctionDef)}
    rows = readme_cli_rows()
    assert len(rows) >= 30, rows  # the table was found
    assert sorted(set(rows) - set(ROWS)) == [], "docs/reference/commands.md rows no test here runs: add them to ROWS"
    assert sorted(set(ROWS) - set(rows)) == [], "ROWS names rows docs/reference/commands.md no longer has"
    opts = click_options()
    assert sorted(set(opts) - set(OPTIONS)) == [], "options no test here runs: add them to OPTIONS"
    assert sorted(set(OPTIONS) - set(opts)) == [], "OPTIONS names options the CLI no longer has"
    named = {t for tests in [*ROWS.values(), *OPTIONS.values()] for t in tests}
    assert sorted(named - here) == [], "ROWS/OPTIONS name tests this module does not have"
    assert sorted(t for t in here if t.startswith("test_") and t not in named
                  and t != "test_every_readme_row_and_option_has_a_test") == [], "tests the inventory omits"


# --- how a user runs emu ---------------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """`emu ARGS` in this process (click's runner); stdout and stderr apart. A traceback fails the test."""
    r = CliRunner().invoke(main, list(args), env=env)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def sh(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed `emu` entry point as a subprocess (for the commands that exec a tool)."""
    return subprocess.run([EMU, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def table(text: str) -> list[list[str]]:
    """A kubectl-shaped table as rows of cells (columns are separated by 3 or more spaces; cells may hold one)."""
    return [re.split(r"\s{3,}", line.strip()) for line in text.splitlines() if line.strip()]


def row(text: str, first: str) -> list[str]:
    found = [r for r in table(text) if r[0] == first]
    assert len(found) == 1, f"no single row {first!r} in:\n{text}"
    return found[0]


def two_node_topology(path: pathlib.Path, name: str, extra: str = "") -> str:
    """A cluster of two nodes with one pod each (web-a on node-1, web-b on node-2, TCP/UDP 80); EXTRA goes into
    the Cluster's spec."""
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {p}, labels: {{app: web}}}}
spec:
  nodeName: {n}
  containers: [{{name: c, ports: [{{containerPort: 80}}, {{containerPort: 80, protocol: UDP}}]}}]
""" for p, n in (("web-a", "node-1"), ("web-b", "node-2")))
    path.write_text(f"""apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  nodes: 2
  cni: {{plugin: flannel, backend: vxlan}}
{extra}{pods}""")
    return str(path)


@pytest.fixture(scope="module")
def sg(emu_cluster):  # type: ignore[no-untyped-def]
    """The seed guide's cluster: Services of every type, Ingresses with TLS, cluster DNS, NetworkPolicies."""
    with emu_cluster(SEED) as c:
        yield c


@pytest.fixture(scope="module")
def vx(emu_cluster):  # type: ignore[no-untyped-def]
    """flannel-vxlan as shipped: web-0..2 one per node (TCP/UDP 80 and 81), MTU 1450."""
    with emu_cluster(VXLAN) as c:
        yield c


def kube_proxy_pods(c) -> list[str]:  # type: ignore[no-untyped-def]
    pods = json.loads(cli("get", "pods", "-n", "kube-system", "-o", "json", "--cluster", c.name).stdout)
    return sorted(p["name"] for p in pods if p["name"].startswith("kube-proxy-"))


def pods_of(c, namespace: str, app: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p.key for p in c.model.pods if p.namespace == namespace and p.labels.get("app") == app)


# --- lifecycle -------------------------------------------------------------------------------------------------------


def test_up_dry_run_changes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = f"dry{secrets.token_hex(3)}"
    r = cli("up", VXLAN, "--dry-run", "--name", name)
    assert r.exit_code == 0, r.output
    # the namespaces and the flannel route as the plan's `ip` commands, and nothing made
    assert f"ip netns add {name}.node-1" in r.stdout
    assert re.search(r"10\.244\.1\.0/24 via 10\.244\.1\.0 dev flannel\.1 onlink", r.stdout)
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(name + ".")]
    assert cli("status", name).exit_code == 1


def test_up_status_repair_down_lifecycle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """up (table and json), status, up --repair (nothing to do; then a killed agent), down NAME, down, down --all,
    all in a state directory of its own, so --all removes only what this test made."""
    env = {"EMU_STATE_DIR": str(tmp_path / "state")}
    a, b = f"lca{secrets.token_hex(3)}", f"lcb{secrets.token_hex(3)}"
    topo = two_node_topology(tmp_path / "two.yaml", "two")
    try:
        r = cli("up", topo, "--name", a, "-o", "wide", env=env)  # wide prints what the table does
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert re.fullmatch(rf"cluster {a} is up: 2 nodes, 2 pods, flannel vxlan \(pod MTU 1450\), in [\d.]+s",
                            lines[0])
        assert table("\n".join(lines[1:4])) == [["NODE", "INTERNAL-IP", "POD-CIDR", "PODS"],
                                                 ["node-1", "172.18.0.2", "10.244.0.0/24", "1"],
                                                 ["node-2", "172.18.0.3", "10.244.1.0/24", "1"]]
        assert lines[4] == f"next: emu get pods -A -o wide | emu matrix | emu down {a}"
        r = cli("up", topo, "--name", b, "-o", "json", env=env)
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert (d["name"], d["status"], d["nodes"], d["pods"], d["warnings"]) == (b, "up", 2, 2, [])
        r = cli("up", topo, "--name", b, env=env)  # the name is taken: refused in one line, the cluster untouched
        assert r.exit_code != 0 and r.stdout == "" and b in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        st = cli("status", env=env)
        t = table(st.stdout)
        assert t[0][:2] == ["NAME", "STATUS"] and sorted(x[:2] for x in t[1:]) == sorted([[a, "up"], [b, "up"]])
        assert table(cli("status", a, "-o", "wide", env=env).stdout)[1][:4] == [a, "up", "2", "2"]
        r = cli("up", "--repair", a, env=env)
        assert r.stdout == f"cluster {a}: every daemon is running (nothing to repair)\n"
        # the agent (the daemon answering every pod's ports) dies: status says so, --repair restarts it
        pid = json.loads(cli("status", a, "-o", "json", env=env).stdout)[0]["agentPid"]
        os.kill(pid, signal.SIGKILL)
        d = wait_until(lambda: (s := json.loads(cli("status", a, "-o", "json", env=env).stdout)[0])["status"]
                       == "degraded" and s, what="status to say degraded")
        assert d["down"] == ["agent"]
        assert row(cli("status", a, env=env).stdout, a)[1] == "degraded (agent down)"
        r = cli("up", "--repair", a, "-o", "json", env=env)
        assert json.loads(r.stdout) == {"name": a, "restarted": ["agent"]}
        r = cli("probe", "default/web-a", "default/web-b", "--cluster", a, env=env)
        assert r.exit_code == 0 and ": connected, answered by default/web-b" in r.stdout
        assert cli("down", a, env=env).stdout == f"cluster {a} removed\n"
        assert cli("down", a, env=env).stdout == f"cluster {a} not found (nothing to remove)\n"  # idempotent
        assert json.loads(cli("down", a, "-o", "json", env=env).stdout) == {"removed": [], "absent": [a]}
        assert cli("down", "-o", "wide", env=env).stdout == f"cluster {b} removed\n"  # the one up is implied
        assert cli("status", env=env).stdout == "no clusters (emu up FILE)\n"
        assert cli("up", topo, "--name", a, "-o", "table", env=env).exit_code == 0
        assert json.loads(cli("down", "--all", "-o", "json", env=env).stdout) == {"removed": [a], "absent": []}
        assert cli("down", "--all", "-o", "table", env=env).stdout == ""
    finally:
        cli("down", "--all", env=env)
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith((a + ".", b + "."))]


def test_demo(tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = f"demo{secrets.token_hex(3)}"
    r = cli("demo", VXLAN, "--name", name, "-o", "wide")  # wide and table print the same
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.startswith(f"cluster {name} up: 3 nodes, 6 pods, flannel vxlan\n")
    assert "36 probes, 0 failures" in out and out.count("36 probes, 0 failures") == 2  # TCP and UDP matrices
    assert "icmp size=1422 DF: connected" in out and "icmp size=1423 DF: frag-needed" in out
    assert "udp/80 size=4000: connected" in out and "4000 bytes arrived" in out
    assert re.search(r"path MTU default/web-0 -> default/web-1 \(10\.244\.1\.2\): 1450", out)
    assert out.endswith(f"result: every check passed\ncluster {name} removed\n")
    assert cli("status", name).exit_code == 1  # torn down
    old = os.getcwd()
    os.chdir(ROOT)  # FILE defaults to topologies/flannel-vxlan.yaml, relative to where emu runs
    try:
        r = cli("demo", "--name", name, "-o", "json")
    finally:
        os.chdir(old)
    d = json.loads(r.stdout)
    assert r.exit_code == 0 and d["ok"] is True and d["cluster"] == name
    assert [c["check"] for c in d["checks"]] == ["matrix tcp/80", "matrix udp/80", "icmp DF size 1422",
                                                 "icmp DF size 1423", "udp 4000 bytes fragmented", "path MTU"]
    assert all(c["ok"] for c in d["checks"])


# --- kubectl-shaped views --------------------------------------------------------------------------------------------


def test_get_nodes_pods_namespaces(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("get", "nodes", "--cluster", sg.name)
    assert [x[:3] for x in table(r.stdout)] == [["NAME", "STATUS", "ROLES"], ["node-1", "Ready", "control-plane"],
                                                  ["node-2", "Ready", "<none>"], ["node-3", "Ready", "<none>"]]
    r = cli("get", "nodes", "node-2", "-o", "wide", "--cluster", sg.name)
    hdr, n2 = table(r.stdout)
    assert dict(zip(hdr, n2, strict=True)) | {"AGE": "-"} == {
        "NAME": "node-2", "STATUS": "Ready", "ROLES": "<none>", "AGE": "-", "VERSION": "v1.33.0-emu",
        "INTERNAL-IP": "172.18.0.3", "POD-CIDR": "10.244.1.0/24", "MTU": "1500", "POD-MTU": "1450",
        "CNI": "flannel/vxlan", "PODS": n2[hdr.index("PODS")], "NETNS": f"{sg.name}.node-2",
        "SYSCTLS": n2[hdr.index("SYSCTLS")]}
    assert "net.core.netdev_max_backlog=16384(machine-wide,not-applied:" in n2[hdr.index("SYSCTLS")]
    r = cli("get", "pods", "-n", "policy-frontend", "--cluster", sg.name)
    assert [x[:3] for x in table(r.stdout)] == [["NAME", "READY", "STATUS"], ["backend", "1/1", "Running"],
                                                  ["frontend", "1/1", "Running"], ["other", "1/1", "Running"]]
    r = cli("get", "pods", "backend", "-n", "policy-frontend", "-o", "wide", "--cluster", sg.name)
    hdr, be = table(r.stdout)
    assert (be[hdr.index("IP")], be[hdr.index("NODE")], be[hdr.index("NETNS")]) == (
        sg.pod_ip("policy-frontend/backend"), "node-1", f"{sg.name}.policy-frontend.backend")
    every = json.loads(cli("get", "pods", "-A", "-o", "json", "--cluster", sg.name).stdout)
    assert {p["namespace"] for p in every} >= {"default", "kube-system", "ingress-nginx", "policy-ns", "myproject"}
    assert sorted(p["node"] for p in every if p["name"].startswith("kube-proxy-")) == ["node-1", "node-2", "node-3"]
    r = cli("get", "namespaces", "-A", "--cluster", sg.name)
    assert ["myproject", "Active"] == row(r.stdout, "myproject")[:2]
    ns = json.loads(cli("get", "ns", "myproject", "-o", "json", "--cluster", sg.name).stdout)
    assert ns == [{"name": "myproject", "status": "Active", "pods": 1,
                   "labels": {"project": "myproject", "kubernetes.io/metadata.name": "myproject"}}]
    r = cli("get", "pods", "nope", "--cluster", sg.name)
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", 'Error from server (NotFound): pods "nope" not found\n')


def test_get_netpol(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("get", "networkpolicies", "-A", "--cluster", sg.name)
    assert sorted(tuple(x[:3]) for x in table(r.stdout)[1:]) == sorted([
        ("policy-deny", "default-deny-ingress", "<none>"), ("policy-frontend", "allow-frontend", "app=backend"),
        ("policy-ns", "allow-ns-policy", "app=db"), ("policy-cidr", "allow-external", "app=web"),
        ("policy-allow-all", "default-allow-all", "<none>"), ("policy-deny-all", "default-deny-all", "<none>")])
    r = cli("get", "netpol", "-n", "policy-frontend", "-o", "wide", "--cluster", sg.name)
    hdr, pol = table(r.stdout)
    assert hdr == ["NAME", "POD-SELECTOR", "AGE", "POLICY-TYPES", "PODS"]
    assert (pol[0], pol[1], pol[3], pol[4]) == ("allow-frontend", "app=backend", "Ingress", "1")
    d = json.loads(cli("get", "netpol", "allow-frontend", "-n", "policy-frontend", "-o", "json",
                       "--cluster", sg.name).stdout)
    assert d == [{"namespace": "policy-frontend", "name": "allow-frontend", "podSelector": "app=backend",
                  "policyTypes": ["Ingress"], "selectedPods": ["policy-frontend/backend"], "ingressRules": 1,
                  "egressRules": 0}]


def test_get_events_field_selector(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("get", "events", "-A", "--field-selector", "involvedObject.kind=Service,reason!=Type",
            "--cluster", sg.name)
    t = table(r.stdout)
    assert t[0] == ["NAMESPACE", "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert {(x[0], x[3], x[4]) for x in t[1:]} >= {("lb-demo", "EnsuredLoadBalancer", "service/my-service"),
                                                     ("policy-cidr", "EnsuredLoadBalancer", "service/web")}
    assert all(x[4].startswith("service/") and x[3] != "Type" for x in t[1:])
    r = cli("get", "events", "-n", "lb-demo", "-o", "wide", "--cluster", sg.name)
    hdr = table(r.stdout)[0]
    assert hdr[-4:] == ["SOURCE", "FIRST SEEN", "COUNT", "NAME"]
    ev = json.loads(cli("get", "events", "-n", "lb-demo", "--field-selector", "reason=EnsuredLoadBalancer",
                        "-o", "json", "--cluster", sg.name).stdout)
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"], e["type"]) for e in ev] == [
        ("Service", "my-service", "EnsuredLoadBalancer", "Normal")]
    r = cli("get", "events", "--field-selector", "foo=bar", "--cluster", sg.name)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("Error from server (BadRequest): ") and "field label not supported: foo" in r.stderr


def test_get_svc(sg) -> None:  # type: ignore[no-untyped-def]
    lb = json.loads(cli("get", "svc", "my-service", "-n", "lb-demo", "-o", "json", "--cluster", sg.name).stdout)
    assert len(lb) == 1 and lb[0]["type"] == "LoadBalancer" and lb[0]["clusterIP"] == sg.cluster_ip(
        "lb-demo/my-service")
    node_port = lb[0]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    r = cli("get", "svc", "-n", "lb-demo", "--cluster", sg.name)
    hdr, svc = table(r.stdout)
    assert hdr == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert svc[:5] == ["my-service", "LoadBalancer", sg.cluster_ip("lb-demo/my-service"), lb[0]["loadBalancerIP"],
                       f"80:{node_port}/TCP"]
    r = cli("get", "services", "-A", "-o", "wide", "--cluster", sg.name)
    rows = {(x[0], x[1]): x for x in table(r.stdout)[1:]}
    assert rows[("nodeport-demo", "my-service")][2:4] == ["NodePort", sg.cluster_ip("nodeport-demo/my-service")]
    assert rows[("nodeport-demo", "my-service")][5] == "80:30007/TCP"  # the guide's explicit nodePort
    assert rows[("kube-system", "kube-dns")][3:6] == ["10.96.0.10", "<none>", "53/UDP,53/TCP,9153/TCP"]
    assert rows[("default", "my-service")][-1] == "app=MyApp"  # -o wide: SELECTOR
    r = cli("get", "svc", "nope", "--cluster", sg.name)
    assert (r.exit_code, r.stderr) == (1, 'Error from server (NotFound): services "nope" not found\n')


def test_get_endpoints_and_mark(sg) -> None:  # type: ignore[no-untyped-def]
    a, b = pods_of(sg, "default", "MyApp")
    ips = {a: sg.pod_ip(a), b: sg.pod_ip(b)}
    r = cli("get", "endpoints", "my-service", "--cluster", sg.name)
    assert sorted(row(r.stdout, "my-service")[1].split(",")) == sorted(f"{ip}:9376" for ip in ips.values())

    def conditions() -> dict[str, dict[str, bool]]:
        ep = json.loads(cli("get", "ep", "my-service", "-o", "json", "--cluster", sg.name).stdout)
        return {e["pod"]: e["conditions"] for e in ep[0]["ports"][0]["endpoints"]}

    assert conditions()[a] == {"ready": True, "serving": True, "terminating": False}
    # the EndpointSlice controller's conditions for each mark (pkg/controller/endpointslice/util: ready = ready and
    # not terminating, serving = ready)
    want = {"not-ready": {"ready": False, "serving": False, "terminating": False},
            "terminating": {"ready": False, "serving": True, "terminating": True},
            "terminating-not-serving": {"ready": False, "serving": False, "terminating": True},
            "ready": {"ready": True, "serving": True, "terminating": False}}
    try:
        for cond, conds in want.items():
            r = cli("mark", a, cond, "--cluster", sg.name)
            assert (r.exit_code, r.stdout) == (0, f"pod/{a} marked {cond}\n")
            got = conditions()
            assert got.get(a, {"ready": False, "serving": False, "terminating": cond.startswith("terminating")}) \
                == conds, (cond, got)
            if cond == "not-ready":
                r = cli("get", "endpoints", "my-service", "-o", "wide", "--cluster", sg.name)
                hdr, ep = table(r.stdout)
                assert ep[1] == f"{ips[b]}:9376" and ep[hdr.index("NOT-READY")] == f"{ips[a]}:9376(not-ready)"
    finally:
        sg.mark(a, "ready")


def test_get_ingress(sg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = cli("get", "ingress", "--cluster", sg.name)
    lb = json.loads(cli("get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json",
                        "--cluster", sg.name).stdout)[0]["loadBalancerIP"]
    assert table(r.stdout) == [["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
                               ["minimal-ingress", "nginx", "*", lb, "80", table(r.stdout)[1][5]],
                               ["tls-example-ingress", "nginx", "https-example.foo.com", lb, "80, 443",
                                table(r.stdout)[2][5]]]
    assert r.stderr == ""  # the guide's Ingresses have their Secret and Services: nothing to warn about
    r = cli("get", "ing", "-A", "-o", "wide", "--cluster", sg.name)
    rules = {x[1]: x[-1] for x in table(r.stdout)[1:]}
    assert rules == {"minimal-ingress": "*/testpath(Prefix)->test:80",
                     "tls-example-ingress": "https-example.foo.com/(Prefix)->service1:80"}
    d = json.loads(cli("get", "ingress", "minimal-ingress", "-o", "json", "--cluster", sg.name).stdout)
    assert d[0]["rules"] == [{"host": "", "paths": [{"path": "/testpath", "pathType": "Prefix", "service": "test",
                                                     "port": 80}]}]
    # an Ingress naming a Secret and a Service that do not exist: ingress-nginx's warnings go to stderr
    bad = tmp_path / "bad-ingress.yaml"
    bad.write_text("""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: default}
spec:
  tls: [{hosts: [broken.example.com], secretName: no-such-tls}]
  rules:
  - host: broken.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: no-such-svc, port: {number: 80}}}}]}
""")
    sg.apply(str(bad))
    try:
        r = cli("get", "ingress", "broken", "--cluster", sg.name)
        assert row(r.stdout, "broken")[2] == "broken.example.com"
        warnings = r.stderr.splitlines()
        assert warnings and all(w.startswith("Warning: ") for w in warnings)
        assert any("no-such-tls" in w for w in warnings) and any("no-such-svc" in w for w in warnings)
        assert "Warning" not in cli("get", "ingress", "broken", "-o", "json", "--cluster", sg.name).stderr
    finally:
        sg.delete(str(bad))


def test_describe_every_kind(sg) -> None:  # type: ignore[no-untyped-def]
    backend = "policy-frontend/backend"
    for args, name in ((["svc", "my-service"], "my-service"), (["pod", "backend", "-n", "policy-frontend"], "backend"),
                       (["netpol", "allow-frontend", "-n", "policy-frontend"], "allow-frontend"),
                       (["node", "node-1"], "node-1"), (["ing", "minimal-ingress"], "minimal-ingress"),
                       (["ep", "my-service"], "my-service")):
        r = cli("describe", *args, "--cluster", sg.name)
        assert r.exit_code == 0, r.output
        assert re.match(rf"Name:\s+{re.escape(name)}\n", r.stdout), r.stdout
        assert ("Warning: v1 Endpoints is deprecated" in r.stderr) == (args[0] == "ep")
    r = cli("describe", "pod", "backend", "-n", "policy-frontend", "--cluster", sg.name)
    assert re.search(rf"^IP:\s+{re.escape(sg.pod_ip(backend))}$", r.stdout, re.M)
    r = cli("describe", "svc", "my-service", "-n", "lb-demo", "--cluster", sg.name)
    assert re.search(r"^Events:\n.*EnsuredLoadBalancer", r.stdout, re.M | re.S)
    r = cli("describe", "svc", "my-service", "-n", "lb-demo", "--show-events=false", "--cluster", sg.name)
    assert r.exit_code == 0 and "Name:" in r.stdout and "Events:" not in r.stdout
    r = cli("describe", "netpol", "-A", "-o", "text", "--cluster", sg.name)
    assert len(re.findall(r"^Name:", r.stdout, re.M)) == 6
    d = json.loads(cli("describe", "svc", "my-service", "-n", "lb-demo", "-o", "json", "--cluster", sg.name).stdout)
    assert [(o["kind"], o["namespace"], o["name"]) for o in d] == [("Service", "lb-demo", "my-service")]
    assert d[0]["text"].startswith("Name:") and "EnsuredLoadBalancer" in {e["reason"] for e in d[0]["events"]}
    r = cli("describe", "pod", "nope", "--cluster", sg.name)
    assert (r.exit_code, r.stderr) == (1, 'Error from server (NotFound): pods "nope" not found\n')


def test_logs_of_system_pods(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("logs", "-n", "kube-system", "-l", "k8s-app=kube-dns", "--prefix", "--tail", "2", "--cluster", sg.name)
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and all(re.match(r"\[pod/coredns-[0-9a-f]+-[0-9a-z]{5}/coredns\] ", x) for x in lines)
    assert [x.split("] ", 1)[1] for x in lines[:2]] == ["CoreDNS-1.11.1", "linux/amd64, go1.20.7, ae2bbc2"]
    proxies = kube_proxy_pods(sg)
    r = cli("logs", proxies[0], "-n", "kube-system", "--tail", "1", "-o", "text", "--cluster", sg.name)
    assert re.fullmatch(r"\S+ \"SyncProxyRules complete\" elapsed=\"[\d.]+m?s\"\n", r.stdout), r.stdout
    d = json.loads(cli("logs", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "-o", "json",
                       "--cluster", sg.name).stdout)
    assert sorted(p["pod"] for p in d) == [f"kube-system/{n}" for n in proxies]
    assert all(p["container"] == "kube-proxy" and 0 < len(p["lines"]) <= 10 for p in d)  # -l: the last 10 lines
    r = cli("logs", "client", "--cluster", sg.name)
    assert (r.exit_code, r.stdout) == (0, "")  # application pods print nothing
    r = cli("logs", "-l", "app=nothing", "--cluster", sg.name)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "No resources found in default namespace.\n")


def test_logs_follow(sg) -> None:  # type: ignore[no-untyped-def]
    """-f --tail 0 prints only what a kube-proxy pod logs after it started: here the sync an `emu mark` causes.

    Nothing says when `emu logs -f` has reached the end of the log, so the pod is marked again (one more sync)
    until the first line arrives, within a generous bound; the read never blocks."""
    proxy = kube_proxy_pods(sg)
    a = pods_of(sg, "default", "MyApp")[0]
    f = subprocess.Popen([EMU, "logs", "-f", "--tail", "0", "-n", "kube-system", proxy[0], "--cluster", sg.name],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert f.stdout is not None
    got = b""
    try:
        deadline = time.monotonic() + 60
        while b"\n" not in got:
            assert time.monotonic() < deadline and f.poll() is None, (got, f.poll())
            sg.mark(a, "not-ready")
            sg.mark(a, "ready")
            if select.select([f.stdout], [], [], 1.0)[0]:
                got += os.read(f.stdout.fileno(), 65536)
    finally:
        f.send_signal(signal.SIGINT)
        _, err = f.communicate(timeout=30)
    assert f.returncode == 0, err
    first = got.decode().splitlines()[0]
    # a sync logs "Reloading service iptables data" then "SyncProxyRules complete" (-f may start between the two)
    assert re.fullmatch(r'\S+ "(Reloading service iptables data|SyncProxyRules complete)" .*', first), first


def test_apply_delete(vx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A pod added to a running cluster answers at once; the other pods are not touched; delete removes it."""
    f = tmp_path / "extra.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: extra, labels: {app: extra}}\n"
                 "spec: {nodeName: node-3, containers: [{name: c, ports: [{containerPort: 8080}]}]}\n")
    before = len(vx.model.pods)
    try:
        r = cli("apply", "-f", str(f), "--cluster", vx.name)
        assert (r.exit_code, r.stdout) == (0, f"pod/default/extra created\n1 added, 0 removed, {before} unchanged\n")
        r = cli("probe", "default/web-0", "default/extra", "--port", "8080", "--cluster", vx.name)
        assert r.exit_code == 0 and "answered by default/extra" in r.stdout, r.output
        r = cli("apply", "--filename", str(f), "-o", "json", "--cluster", vx.name)  # again: nothing changes
        assert json.loads(r.stdout) == {"added": [], "removed": [], "unchanged": before + 1}
        r = cli("delete", "-f", str(f), "-o", "wide", "--cluster", vx.name)
        assert (r.exit_code, r.stdout) == (0, f"pod/default/extra deleted\n0 added, 1 removed, {before} unchanged\n")
        assert cli("get", "pods", "extra", "--cluster", vx.name).exit_code == 1
        r = cli("delete", "--filename", str(f), "-o", "json", "--cluster", vx.name)
        assert json.loads(r.stdout) == {"added": [], "removed": [], "unchanged": before}
        r = cli("apply", "-f", str(f), "-o", "table", "--cluster", vx.name)
        assert r.stdout.startswith("pod/default/extra created\n")
        r = cli("delete", "-f", str(f), "-o", "table", "--cluster", vx.name)
        assert r.stdout.startswith("pod/default/extra deleted\n")
        assert cli("apply", "-f", str(f), "-o", "wide", "--cluster", vx.name).stdout.startswith("pod/default/extra")
    finally:
        vx.delete(str(f))
    assert len(vx.model.pods) == before


def test_create_secret_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What `kubectl create secret tls --dry-run=client -o yaml` prints; a self-signed certificate covers every
    --host (checked with openssl), --cert/--key are carried byte for byte."""
    r = cli("create", "secret", "tls", "web-tls", "-n", "shop", "--self-signed", "--host", "a.example.com",
            "--host", "b.example.com")
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(r.stdout)
    assert {k: doc[k] for k in ("apiVersion", "kind", "type", "metadata")} == {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "web-tls", "namespace": "shop"}}
    crt = tmp_path / "crt.pem"
    crt.write_bytes(base64.b64decode(doc["data"]["tls.crt"]))
    key = tmp_path / "key.pem"
    key.write_bytes(base64.b64decode(doc["data"]["tls.key"]))
    text = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:a.example.com" in text and "DNS:b.example.com" in text
    mod = [subprocess.run(["openssl", kind, "-in", str(p), "-noout", "-modulus"], capture_output=True, text=True,
                          check=True).stdout for kind, p in (("x509", crt), ("rsa", key))]
    assert mod[0] == mod[1]  # the key belongs to the certificate
    r = cli("create", "secret", "tls", "mine", "--cert", str(crt), "--key", str(key))
    doc = yaml.safe_load(r.stdout)
    assert doc["metadata"] == {"name": "mine", "namespace": "default"}
    assert base64.b64decode(doc["data"]["tls.crt"]) == crt.read_bytes()
    assert base64.b64decode(doc["data"]["tls.key"]) == key.read_bytes()
    r = cli("create", "secret", "tls", "nohost", "--self-signed")
    assert r.exit_code == 2 and r.stdout == "" and "--self-signed needs at least one --host NAME" in r.stderr


def test_exec_in_pod_node_external(sg) -> None:  # type: ignore[no-untyped-def]
    r = sh("exec", "default/client", "--cluster", sg.name, "--", "sh", "-c",
           "ip -4 -o addr show eth0; cat /etc/resolv.conf; exit 7")
    assert r.returncode == 7  # CMD's status
    assert f"inet {sg.pod_ip('default/client')}/24" in r.stdout
    assert "nameserver 10.96.0.10" in r.stdout.splitlines()  # kubelet's resolv.conf for ClusterFirst
    r = sh("exec", "node/node-2", "--cluster", sg.name, "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "inet 172.18.0.3/24" in r.stdout
    r = sh("exec", "external", "--cluster", sg.name, "--", "ip", "-4", "-o", "addr", "show")
    assert "inet 172.18.0.1/24" in r.stdout


# --- probes ----------------------------------------------------------------------------------------------------------


def test_probe_pod_forms(vx) -> None:  # type: ignore[no-untyped-def]
    r = cli("probe", "default/web-0", "default/web-1", "--port", "81", "--cluster", vx.name)
    assert r.exit_code == 0
    assert re.fullmatch(r"default/web-0 -> default/web-1 \(10\.244\.1\.2\) tcp/81: connected, answered by "
                        r"default/web-1, client IP seen 10\.244\.0\.2, rtt [\d.]+ ms\n", r.stdout), r.stdout
    r = cli("probe", "default/web-0", "default/web-2", "--proto", "udp", "--port", "80", "-o", "json",
            "--cluster", vx.name)
    d = json.loads(r.stdout)
    assert (d["ok"], d["verdict"], d["answered_by"], d["client_ip_seen"]) == (True, "connected", "default/web-2",
                                                                              "10.244.0.2")
    r = cli("probe", "default/web-0", "default/web-1", "--proto", "icmp", "--size", "1422", "--df", "--count", "3",
            "--timeout", "2", "-o", "wide", "--cluster", vx.name)
    assert r.exit_code == 0 and r.stdout.count("icmp size=1422 DF: connected, answered by default/web-1") == 3
    assert r.stdout.count("    echo reply from 10.244.1.2\n") == 3 and r.stdout.endswith("3/3 ok\n"), r.stdout
    d = json.loads(cli("probe", "default/web-0", "default/web-1", "--proto", "icmp", "--size", "1422", "--df",
                       "--count", "3", "-o", "json", "--cluster", vx.name).stdout)
    assert d["ok"] and [x["verdict"] for x in d["results"]] == ["connected"] * 3
    r = cli("probe", "default/web-0", "default/web-1", "--proto", "icmp", "--size", "1423", "--df", "-o", "table",
            "--cluster", vx.name)
    assert r.exit_code == 1 and r.stdout.endswith("frag-needed; ICMP type 3 code 4 from local, mtu 1450\n")
    r = cli("probe", "default/web-0", "default/web-1", "--port", "82", "--timeout", "0.5", "--cluster", vx.name)
    assert r.exit_code == 1 and "tcp/82: refused" in r.stdout  # nothing listens there: the pod's kernel resets


def test_probe_fragmentation(vx) -> None:  # type: ignore[no-untyped-def]
    """--size without --df: the datagram is fragmented by the sender and reassembled by the receiver."""
    r = cli("probe", "default/web-0", "default/web-1", "--proto", "udp", "--port", "80", "--size", "4000",
            "--cluster", vx.name)
    assert r.exit_code == 0, r.output
    first, *rest = r.stdout.splitlines()
    assert "udp/80 size=4000: connected" in first and "4000 bytes arrived" in first
    assert rest[0].startswith("fragments: 3 left default/web-0 eth0 (1424 bytes at offset 0, 1424 bytes at offset "
                              "1424, 1160 bytes at offset 2848)"), rest
    assert rest[0].endswith("reassembled at default/web-1 (the destination)")


def test_probe_pmtu_and_traceroute(vx) -> None:  # type: ignore[no-untyped-def]
    r = cli("probe", "--pmtu", "default/web-0", "default/web-2", "--cluster", vx.name)
    assert r.stdout.startswith("path MTU default/web-0 -> default/web-2 (10.244.2.2): 1450, limited by"), r.stdout
    d = json.loads(cli("probe", "--pmtu", "default/web-0", "default/web-2", "-o", "json", "--cluster", vx.name).stdout)
    assert d["path_mtu"] == 1450
    r = cli("probe", "--traceroute", "--max-hops", "5", "default/web-0", "default/web-2", "--cluster", vx.name)
    assert r.exit_code == 0, r.output
    # two routers: the source node's cni0 gateway, then the destination node's flannel.1 (<subnet>.0)
    hops = re.findall(r"^\s*(\d+)\s+(\d+\.\d+\.\d+\.\d+)", r.stdout, re.M)
    assert [h[1] for h in hops] == ["10.244.0.1", "10.244.2.0", "10.244.2.2"], r.stdout
    d = json.loads(cli("probe", "--traceroute", "--max-hops", "1", "default/web-0", "default/web-2", "-o", "json",
                       "--cluster", vx.name).stdout)
    assert d["reached"] is False


def test_probe_service_targets(sg) -> None:  # type: ignore[no-untyped-def]
    myapp = pods_of(sg, "default", "MyApp")
    d = json.loads(cli("probe", "default/client", "svc/default/my-service", "-o", "json", "--cluster",
                       sg.name).stdout)
    assert d["ok"] and d["answered_by"] in myapp
    np = pods_of(sg, "nodeport-demo", "MyApp")
    d = json.loads(cli("probe", "external", "nodeport/node-1:30007", "-o", "json", "--cluster", sg.name).stdout)
    assert d["ok"] and d["answered_by"] in np
    d = json.loads(cli("probe", "external", "lb/lb-demo/my-service", "--port", "80", "-o", "json",
                       "--cluster", sg.name).stdout)
    assert d["ok"] and d["answered_by"] in pods_of(sg, "lb-demo", "MyApp")
    ip = sg.cluster_ip("default/my-service")
    d = json.loads(cli("probe", "default/client", f"{ip}:80", "-o", "json", "--cluster", sg.name).stdout)
    assert d["ok"] and d["answered_by"] in myapp


def test_probe_url(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("probe", "default/client", "http://https-example.foo.com/", "--cluster", sg.name)
    assert r.exit_code == 0, r.output
    assert re.search(r"HTTP\s+308 Permanent Redirect", r.stdout) and \
        re.search(r"Location\s+https://https-example\.foo\.com/", r.stdout)
    r = cli("probe", "default/client", "https://https-example.foo.com/", "--cluster", sg.name)
    assert r.exit_code == 0, r.output
    assert "SNI https-example.foo.com" in r.stdout and "from Secret default/testsecret-tls; valid for the host" \
        in r.stdout
    assert re.search(r"HTTP\s+200 OK", r.stdout) and "saw GET / Host https-example.foo.com" in r.stdout
    lb = json.loads(cli("get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json",
                        "--cluster", sg.name).stdout)[0]["loadBalancerIP"]
    d = json.loads(cli("probe", "default/client", f"http://{lb}/testpath/x", "-o", "json", "--cluster",
                       sg.name).stdout)
    # the guide's rewrite-target: / sends every URI under /testpath to the backend as /
    assert (d["ok"], d["status"], d["backend"]["uri"]) == (True, 200, "/"), d
    assert d["backend"]["pod"] in pods_of(sg, "default", "test")


def test_probe_dns(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("probe", "default/client", "--dns", "my-service", "--cluster", sg.name)
    assert r.exit_code == 0
    ip = sg.cluster_ip("default/my-service")
    assert r.stdout.splitlines()[-1].startswith(f"my-service -> {ip} (as my-service.default.svc.cluster.local.): "
                                               "1 queries in ")
    d = json.loads(cli("probe", "default/client", "--dns", "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
                       "--dns-type", "SRV", "-o", "json", "--cluster", sg.name).stdout)
    # kube-dns's named port dns/UDP 53, as CoreDNS's kubernetes plugin answers it (priority 0, weight 100)
    assert (d["ok"], d["addresses"]) == (True, [[0, 100, 53, "kube-dns.kube-system.svc.cluster.local."]]), d
    r = cli("probe", "default/client", "--dns", "_dns._udp.kube-dns.kube-system.svc.cluster.local.", "--dns-type",
            "SRV", "--cluster", sg.name)
    assert r.stdout.splitlines()[-1].startswith(  # SRV data as dig prints it, not a Python list
        "_dns._udp.kube-dns.kube-system.svc.cluster.local. -> 0 100 53 kube-dns.kube-system.svc.cluster.local. ")
    r = cli("probe", "default/client", "--dns", "nope-nothing", "--cluster", sg.name)
    assert r.exit_code == 1 and "nope-nothing: not resolved" in r.stdout


def test_matrix_with_policies(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("matrix", "--namespaces", "policy-frontend", "--port", "80", "--proto", "tcp", "--cluster", sg.name)
    assert r.exit_code == 0, r.output  # no disagreement
    lines = r.stdout.splitlines()
    assert lines[0] == "tcp/80: '.' allowed, 'X' denied; '!' the dataplane differs from the policies"
    assert table("\n".join(lines[3:6])) == [["1", "policy-frontend/backend", ".  .  .", ".  .  ."],
                                             ["2", "policy-frontend/frontend", ".  .  .", ".  .  ."],
                                             ["3", "policy-frontend/other", "X  .  .", "X  .  ."]]
    assert re.fullmatch(r"9 probes, 1 failures, 0 disagreements, [\d.]+s", lines[6])
    d = json.loads(cli("matrix", "--namespaces", "policy-frontend", "-o", "json", "--cluster", sg.name).stdout)
    assert d["observed"]["policy-frontend/other"]["policy-frontend/backend"] is False
    assert d["expected"]["policy-frontend/frontend"]["policy-frontend/backend"] is True
    assert d["disagreements"] == []


def test_matrix_udp_options(vx) -> None:  # type: ignore[no-untyped-def]
    r = cli("matrix", "--proto", "udp", "--port", "81", "--namespaces", "default", "--timeout", "1", "--retries",
            "2", "--workers", "4", "-o", "wide", "--cluster", vx.name)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("udp/81: '.' answered, 'X' failed\n")
    assert re.search(r"^9 probes, 0 failures, [\d.]+s$", r.stdout, re.M)


def test_explain(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("explain", "policy-frontend/other", "policy-frontend/backend", "--port", "80", "--proto", "tcp",
            "--cluster", sg.name)
    assert r.stdout.splitlines()[0] == "policy-frontend/other -> policy-frontend/backend tcp/80: DENIED"
    assert "isolated by policy-frontend/allow-frontend and no rule allows it" in r.stdout
    for fmt in ("wide", "table"):
        r = cli("explain", "policy-frontend/frontend", "policy-frontend/backend", "--port", "80", "-o", fmt,
                "--cluster", sg.name)
        assert r.stdout.splitlines()[0] == "policy-frontend/frontend -> policy-frontend/backend tcp/80: ALLOWED"
    d = json.loads(cli("explain", "policy-frontend/frontend", "policy-frontend/backend", "--port", "81", "-o",
                       "json", "--cluster", sg.name).stdout)
    assert d["allowed"] is False


def test_trace_options(vx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = cli("trace", "default/web-0", "default/web-1", "--proto", "tcp", "--port", "80", "--cluster", vx.name)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == ("trace default/web-0 -> default/web-1 (10.244.1.2) tcp/80: connected, answered by "
                        "default/web-1, client IP seen 10.244.0.2")
    assert "VXLAN encapsulation on eth0: outer 172.18.0.2 -> 172.18.0.3 udp/8472 vni 1" in r.stdout
    assert re.search(r'ip filter FLANNEL-FWD: -A FLANNEL-FWD -s 10\.244\.0\.0/16 .*-j ACCEPT  => accept', r.stdout)
    assert re.fullmatch(r"\d+ packets of the flow, \d+ frames captured; \d+ more packets in -o wide / -o json; "
                        r"[\d.]+s", lines[-1]), lines[-1]
    wide = cli("trace", "default/web-0", "default/web-1", "--port", "80", "-o", "wide", "--cluster", vx.name)
    assert wide.exit_code == 0 and "more packets in -o wide" not in wide.stdout  # wide: every packet of the flow
    assert len(wide.stdout.splitlines()) > len(lines)
    pcap, svg = tmp_path / "pcap", tmp_path / "path.svg"
    bare = cli("trace", "default/web-0", "default/web-1", "--no-rules", "--pcap", str(pcap), "--svg", str(svg),
               "--cluster", vx.name)
    assert bare.exit_code == 0 and "flannel.1" in bare.stdout and "rules  " not in bare.stdout
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    # one pcap per interface crossed; node-1's eth0 holds the VXLAN packets to node-2
    eth0 = pcap / f"{vx.name}.node-1_eth0.pcap"
    assert eth0 in pcap.iterdir(), sorted(pcap.iterdir())
    dump = subprocess.run(["tcpdump", "-nr", str(eth0)], capture_output=True, text=True).stdout
    assert re.search(r"IP 172\.18\.0\.2\.\d+ > 172\.18\.0\.3\.8472: ", dump), dump
    r = cli("trace", "default/web-0", "default/web-1", "--proto", "icmp", "--size", "1423", "--df", "--timeout", "1",
            "-o", "json", "--cluster", vx.name)
    d = json.loads(r.stdout)
    assert r.exit_code == 1 and d["ok"] is False  # frag-needed: the sender's own kernel refuses (EMSGSIZE)
    assert "frag" in json.dumps(d).lower()


def test_capture(vx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """tcpdump on node-1's eth0 sees the VXLAN packets (UDP 8472) of a probe to a pod on node-2."""
    out = tmp_path / "vxlan.pcap"
    p = subprocess.Popen([EMU, "capture", "node/node-1:eth0", "--filter", "udp port 8472", "-w", str(out),
                          "--count", "2", "--seconds", "60", "--cluster", vx.name],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def listening() -> bool:  # tcpdump wrote the pcap header: it listens
            assert p.poll() is None, p.stderr.read() if p.stderr else "emu capture ended"
            return out.exists() and out.stat().st_size >= 24
        wait_until(listening, what="emu capture to listen")
        assert vx.probe("default/web-0", "default/web-1", port=80)["ok"]
        _, err = p.communicate(timeout=70)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert "2 packets captured" in err
    dump = subprocess.run(["tcpdump", "-nr", str(out)], capture_output=True, text=True).stdout
    # each packet is the outer UDP line and the inner TCP line: SYN one way, SYN-ACK the other
    outer = re.findall(r"IP (172\.18\.0\.[23])\.\d+ > (172\.18\.0\.[23])\.8472: ", dump)
    assert outer == [("172.18.0.2", "172.18.0.3"), ("172.18.0.3", "172.18.0.2")], dump
    assert re.search(r"IP 10\.244\.0\.2\.\d+ > 10\.244\.1\.2\.80: Flags \[S\]", dump), dump
    # --seconds ends a capture that sees nothing; without -w the packets are printed
    r = sh("capture", "default/web-2", "--filter", "tcp port 9", "--seconds", "0.5", "--cluster", vx.name)
    assert r.returncode == 0 and r.stdout.strip() == "" and "0 packets captured" in r.stderr


# --- node state: rules and conntrack ---------------------------------------------------------------------------------


def test_rules_iptables_mode(sg) -> None:  # type: ignore[no-untyped-def]
    ip = sg.cluster_ip("default/my-service")
    r = sh("rules", "node/node-1", "-t", "nat", "--cluster", sg.name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Generated by iptables-nft-save") and "\n*nat\n" in r.stdout
    assert "*filter" not in r.stdout
    assert re.search(rf'^-A KUBE-SERVICES -d {re.escape(ip)}/32 -p tcp -m comment --comment '
                     rf'"default/my-service cluster IP" -m tcp --dport 80 -j KUBE-SVC-\w+$', r.stdout, re.M), r.stdout
    r = sh("rules", "node/node-1", "--cluster", sg.name)
    assert "\n*filter\n" in r.stdout and "\n*nat\n" in r.stdout and "KUBE-POD-FW-" in r.stdout  # kube-router's
    r = cli("rules", "default/client", "--cluster", sg.name)  # refused before anything is exec'd
    assert r.exit_code == 2 and r.stderr == "error: default/client: rules lives on nodes (node/NAME)\n"


def test_rules_nftables_mode(tmp_path, emu_cluster) -> None:  # type: ignore[no-untyped-def]
    topo = two_node_topology(tmp_path / "nft.yaml", "nft", "  proxy: {mode: nftables}\n")
    svc = tmp_path / "svc.yaml"
    with emu_cluster(topo) as c:
        svc.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                       "spec: {selector: {app: web}, ports: [{port: 8080, targetPort: 80}]}\n")
        c.apply(str(svc))
        r = sh("rules", "node/node-2", "--cluster", c.name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("table ") and "table ip kube-proxy {" in r.stdout
        assert re.search(rf"{re.escape(c.cluster_ip('default/web'))} \. tcp \. 8080 : goto service-\w+-default/web/"
                         r"tcp/", r.stdout), r.stdout


def test_conntrack_shows_service_nat(sg) -> None:  # type: ignore[no-untyped-def]
    """A connection to a ClusterIP is recorded on the client's node with its DNAT: the reply comes from the endpoint."""
    ip = sg.cluster_ip("default/my-service")
    res = sg.probe("default/client", "svc/default/my-service")
    assert res["ok"], res
    endpoint = sg.pod_ip(res["answered_by"])
    node = sg.plan.pod("default/client").node
    r = sh("conntrack", f"node/{node}", "-p", "tcp", "--cluster", sg.name)
    assert r.returncode == 0, r.stderr
    mine = [x for x in r.stdout.splitlines() if f"dst={ip} " in x and f"src={endpoint} " in x]
    assert mine and all(x.startswith("tcp ") and "dport=80 " in x and "sport=9376 " in x for x in mine), r.stdout
    assert "flow entries have been shown" in r.stderr  # conntrack -L's own summary
    r = sh("conntrack", f"node/{node}", "-p", "udp", "--cluster", sg.name)
    assert r.returncode == 0 and not [x for x in r.stdout.splitlines() if x.startswith("tcp ")]


# --- checks and the CNI log ------------------------------------------------------------------------------------------


def test_doctor(sg) -> None:  # type: ignore[no-untyped-def]
    r = cli("doctor", sg.name, "--check", "daemons", "--check", "routes", "--timeout", "1")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"emu doctor: cluster {sg.name}, 2 checks in ")
    assert re.search(r"^  ok\s+daemon/agent, daemon/dns, daemon/ingress-nginx$", r.stdout, re.M)
    assert re.search(r"^summary: 0 failed, 0 warnings, \d+ ok, 0 skipped \(no check failed\)$", r.stdout, re.M)
    r = cli("doctor", "--cluster", sg.name, "--check", "daemons", "-o", "wide")
    assert re.search(r"daemon/agent.*running \(pid \d+\)", r.stdout), r.stdout
    d = json.loads(cli("doctor", "--cluster", sg.name, "--check", "daemons", "-o", "json").stdout)
    assert d["ok"] is True and d["checks"] == ["daemons"]
    assert sorted(f["subject"] for f in d["findings"]) == ["daemon/agent", "daemon/dns", "daemon/ingress-nginx"]
    assert {f["status"] for f in d["findings"]} == {"ok"} and set(d["findings"][0]) >= {
        "check", "status", "subject", "message", "evidence"}
    r = cli("doctor", sg.name, "-o", "table", "--check", "policies")
    assert "policies:" in r.stdout


def test_cni_log_on_a_builtin_cluster(sg) -> None:  # type: ignore[no-untyped-def]
    """A built-in cluster runs no plugin binary; the log says so and where the wiring is shown (a plugin: cni
    cluster's log is asserted in test_cni_runtime.py and test_cni_ips_mac.py)."""
    r = cli("cni", "log", "--cluster", sg.name)
    assert r.stdout.startswith(f"no CNI calls recorded in cluster {sg.name}: it is wired by emu's built-in flannel")
    r = cli("cni", "log", "default/client", "-o", "wide", "--cluster", sg.name)
    assert r.stdout.startswith(f"no CNI calls recorded for default/client in cluster {sg.name}")
    r = cli("cni", "log", "-o", "table", "--cluster", sg.name)
    assert r.stdout.startswith("no CNI calls recorded")
    assert json.loads(cli("cni", "log", "-o", "json", "--cluster", sg.name).stdout) == []


# --- the kernel, and the kernel lane ---------------------------------------------------------------------------------


def test_kernel_features() -> None:
    r = cli("kernel-features")
    assert r.exit_code == 0, r.output
    t = table(r.stdout)
    assert t[0] == ["FEATURE", "PRESENT", "DETAIL"]
    rows = {x[0]: x for x in t[1:]}
    # this suite builds VXLAN devices, bridges and nftables tables on this kernel, so these must be present
    for name in ("vxlan", "bridge", "nftables"):
        assert rows[name][1] == "yes", rows[name]
    assert all(x[1] in ("yes", "no") and len(x) == 3 for x in rows.values())
    assert cli("kernel-features", "-o", "table").stdout == r.stdout
    d = json.loads(cli("kernel-features", "-o", "json").stdout)
    assert {n: ("yes" if f["present"] else "no") for n, f in d.items()} == {n: x[1] for n, x in rows.items()}
    assert set(d) >= {"vxlan", "bridge", "macvlan", "dummy", "ipip", "gre", "vlan", "vrf", "wireguard", "ip_vs",
                      "sctp", "netem"}


def _fake_lane_kernel(cache: pathlib.Path, version: str, config: str) -> pathlib.Path:
    """A cached lane kernel as emu.lane.kernels leaves one after its download (the stamp, boot/, lib/modules/)."""
    d = cache / f"linux-image-{version}_1"
    (d / "root" / "lib" / "modules" / version).mkdir(parents=True)
    (d / "root" / "boot").mkdir()
    (d / "root" / "boot" / f"vmlinuz-{version}").write_bytes(b"")
    (d / "root" / "boot" / f"config-{version}").write_text(config)
    (d / ".emu-kernel-ready").write_text(json.dumps({"package": f"linux-image-{version}", "version": "1",
                                                     "kernel": version}) + "\n")
    return d


def test_kernel_lane_info(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What `info` reads from the cache (never downloading): nothing cached, then a kernel whose config has IPVS as
    a module, VXLAN built in and no dummy."""
    version = "6.1.0-99-amd64"  # a package apt does not know: info looks in the cache only
    env = {"EMU_KERNEL_CACHE": str(tmp_path / "empty")}
    r = cli("kernel-lane", "info", "--kernel", f"linux-image-{version}", env=env)
    assert r.stdout.startswith(f"no kernel cached in {tmp_path / 'empty'}: nothing cached yet: "
                               "`emu kernel-lane run -- true` downloads and boots it\n"), r.stdout
    d = _fake_lane_kernel(tmp_path / "cache", version,
                          "CONFIG_IP_VS=m\nCONFIG_VXLAN=y\n# CONFIG_DUMMY is not set\n")
    env = {"EMU_KERNEL_CACHE": str(tmp_path / "cache")}
    r = cli("kernel-lane", "info", "--kernel", f"linux-image-{version}", "-o", "table", env=env)
    assert r.exit_code == 0, r.output
    head, feats = r.stdout.split("\n\n", 1)
    assert table(head) == [["KERNEL", "SOURCE", "VMLINUZ"],
                           [version, f"linux-image-{version}", str(d / "root" / "boot" / f"vmlinuz-{version}")]]
    rows = {x[0]: x for x in table(feats)[1:] if len(x) == 3}
    assert rows["ip_vs"] == ["ip_vs", "yes", "CONFIG_IP_VS=m"]
    assert rows["vxlan"] == ["vxlan", "yes", "CONFIG_VXLAN=y"]
    assert rows["dummy"] == ["dummy", "no", "CONFIG_DUMMY=n"]
    assert rows["sctp"] == ["sctp", "no", "CONFIG_IP_SCTP=n"]  # not in the config at all
    j = json.loads(cli("kernel-lane", "info", "--kernel", f"linux-image-{version}", "-o", "json", env=env).stdout)
    assert (j["cached"], j["version"], j["features"]["ip_vs"], j["features"]["dummy"]) == (True, version, True, False)


@pytest.mark.lane  # tests/conftest.py: runs only with EMU_LANE_TESTS=1, never inside the lane
def test_kernel_lane_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The command runs under the lane's kernel (not this one), sees -e variables, and its status is emu's."""
    from emu.lane import kernels

    k = kernels.ensure_kernel()
    r = sh("kernel-lane", "run", "--kernel", str(k.vmlinuz), "--modules", str(k.modules), "--mem", "1G", "--cpus",
           "1", "--timeout", "300", "-e", "GREETING=from-the-guest", "--",
           "sh", "-c", 'echo "$GREETING $(uname -r)"; exit 3', timeout=400)
    assert r.returncode == 3, r.stderr
    assert f"from-the-guest {k.version}" in r.stdout.splitlines()
