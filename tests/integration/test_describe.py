"""`emu describe` on the seed guide's live cluster, through the real command line: what the guide's troubleshooting
steps (`kubectl describe service|pod|networkpolicy`) show is what the dataplane does."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from emu.cluster import lifecycle as clusters
from emu.cli.commands import main
from emu.testing import NETWORK_POLICY_DENIAL
from tests.conftest import TOPOLOGIES


@pytest.fixture(scope="module")
def sg(emu_cluster):  # type: ignore[no-untyped-def]
    with emu_cluster(str(TOPOLOGIES / "seed-guide.yaml")) as c:
        yield c


def emu_describe(c, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    r = CliRunner().invoke(main, ["describe", *args, "--cluster", c.name])
    return r.exit_code, r.stdout, r.stderr


def field(text: str, label: str) -> list[str]:
    """The values of `label:` lines, alignment stripped."""
    return [m.group(1) for m in re.finditer(rf"^{re.escape(label)}:\s+(.*?)\s*$", text, re.M)]


def test_describe_service_shows_the_live_endpoints(sg) -> None:  # type: ignore[no-untyped-def]
    cl = clusters.open_cluster(sg.name)
    pods = sorted(p.key for p in cl.topology.pods if p.namespace == "default" and p.labels.get("app") == "MyApp")
    code, out, _ = emu_describe(sg, "svc", "my-service")
    assert code == 0
    assert field(out, "IP") == [sg.cluster_ip("default/my-service")]
    assert field(out, "TargetPort") == ["9376/TCP"]
    assert sorted(field(out, "Endpoints")[0].split(",")) == sorted(f"{sg.pod_ip(k)}:9376" for k in pods)
    # a pod that stops being ready leaves the Service's endpoints and moves to the Endpoints' NotReadyAddresses
    sg.mark(pods[0], "not-ready")
    try:
        code, out, _ = emu_describe(sg, "svc", "my-service")
        assert field(out, "Endpoints") == [f"{sg.pod_ip(pods[1])}:9376"]
        code, out, err = emu_describe(sg, "ep", "my-service")
        assert code == 0 and err.startswith("Warning: v1 Endpoints is deprecated")
        assert field(out, "  NotReadyAddresses") == [sg.pod_ip(pods[0])]
        assert field(out, "  Addresses") == [sg.pod_ip(pods[1])]
    finally:
        sg.mark(pods[0], "ready")
    code, out, err = emu_describe(sg, "svc", "nope")
    assert (code, out, err) == (1, "", 'Error from server (NotFound): services "nope" not found\n')


def test_describe_pod_shows_where_it_was_scheduled(sg) -> None:  # type: ignore[no-untyped-def]
    cl = clusters.open_cluster(sg.name)
    pod = next(p for p in cl.topology.pods if p.namespace == "default" and p.name.startswith("test-"))
    pp = cl.plan.pod(pod.key)
    assert pp is not None
    node_ip = next(n.ip for n in cl.plan.nodes if n.name == pp.node)
    code, out, _ = emu_describe(sg, "pod", pod.name)
    assert code == 0
    assert field(out, "Node") == [f"{pp.node}/{node_ip}"] and field(out, "IP") == [sg.pod_ip(pod.key)]
    assert field(out, "Controlled By") == [pod.owner]
    assert re.search(rf"^  Normal  Scheduled  \S+\s+default-scheduler  Successfully assigned default/{pod.name} "
                     rf"to {pp.node}$", out, re.M), out


def test_describe_networkpolicy_shows_the_rules_the_dataplane_enforces(sg) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = emu_describe(sg, "netpol", "allow-ns-policy", "-n", "policy-ns")
    assert code == 0
    assert ("  PodSelector:     app=db\n"
            "  Allowing ingress traffic:\n"
            "    To Port: <any> (traffic allowed to all ports)\n"
            "    From:\n"
            "      NamespaceSelector: project=myproject\n"
            "  Not affecting egress traffic\n") in out
    assert sg.probe("myproject/client", "policy-ns/db", port=5432, timeout=3.0)["ok"]
    sg.assert_blocked("policy-ns/neighbour", "policy-ns/db", port=5432, by=NETWORK_POLICY_DENIAL)
    code, out, _ = emu_describe(sg, "networkpolicy", "allow-external", "-n", "policy-cidr")
    assert "      IPBlock:\n        CIDR: 172.17.0.0/16\n        Except: 172.17.1.0/24\n" in out
