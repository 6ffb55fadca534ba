"""The upstream Kubernetes e2e NetworkPolicy cases observed on the real dataplane: the 9-pod model
(topologies/netpol-model.yaml) up once per kube-proxy mode (iptables, nftables), every case's policies applied live
with `emu apply` (and the previous step's removed with `emu delete`), and every full 9x9 matrix probed with real
packets and compared with the upstream truth table (tests/unit/test_netpol_e2e.py) and with the policy engine.

IPVS mode runs a representative subset (IPVS_CASES: default deny, allow from a namespace, egress, a named port, an
ipBlock) with the same check: it needs IP_VS and dummy, so it runs in the kernel lane, where all 48 cases would take
too long.  Pod-to-pod traffic never meets IPVS; what IPVS mode changes is the rest of the node's filter table
(KUBE-IPVS-FILTER, KUBE-FORWARD, KUBE-PROXY-FIREWALL beside the policy chains), which must not change a verdict."""
from __future__ import annotations

import contextlib
import pathlib

import pytest
import yaml

from emu.model import loader as topology
from tests.unit.test_netpol_e2e import CASES, MODEL, Case, case_id, render, table


IPVS_CASES = [c for c in CASES if c.title in (
    "should support a 'default-deny-ingress' policy",
    "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
    "should deny egress from all pods in a namespace",
    "should allow ingress access on one named port",
    "should allow egress access to server in CIDR block",
)]


@contextlib.contextmanager
def model_cluster(emu_cluster, tmp_path_factory, mode: str):
    path = tmp_path_factory.mktemp("netpol") / f"netpol-model-{mode}.yaml"
    path.write_text(MODEL.read_text().replace("mode: iptables", f"mode: {mode}"))
    with emu_cluster(str(path)) as c:
        c.files, c.mode = tmp_path_factory.mktemp("steps"), mode
        yield c


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def model(request, emu_cluster, tmp_path_factory):
    with model_cluster(emu_cluster, tmp_path_factory, request.param) as c:
        yield c


@pytest.fixture(scope="module")
def ipvs_model(emu_cluster, tmp_path_factory):
    with model_cluster(emu_cluster, tmp_path_factory, "ipvs") as c:
        yield c


def _ident(d: topology.Document) -> tuple[str, str, str]:
    return (d.kind, "" if d.kind == "Namespace" else d.meta.get("namespace", "default"), d.meta.get("name"))


class Stepper:
    """Moves the running cluster from one step's manifests to the next as a user would: `emu apply -f` the step,
    `emu delete -f` the policies it no longer has, re-apply the model's own version of a pod or namespace a
    previous step relabelled."""

    def __init__(self, cluster, files: pathlib.Path):
        self.cluster, self.files, self.n = cluster, files, 0
        self.model = {_ident(d): d for d in topology.read_documents(str(MODEL))}
        self.current: dict[tuple[str, str, str], topology.Document] = {}

    def _file(self, docs: list[topology.Document]) -> str:
        self.n += 1
        path = self.files / f"step-{self.n}.yaml"
        path.write_text(yaml.safe_dump_all([d.body for d in docs]))
        return str(path)

    def go(self, manifests: str) -> None:
        docs = topology.read_documents("step.yaml", manifests) if manifests.strip() else []
        wanted = {_ident(d): d for d in docs}
        gone = [d for k, d in self.current.items() if k not in wanted]
        restore = [self.model[_ident(d)] for d in gone if d.kind != "NetworkPolicy"]
        if docs or restore:
            self.cluster.apply(self._file(docs + restore))
        policies = [d for d in gone if d.kind == "NetworkPolicy"]
        if policies:
            self.cluster.delete(self._file(policies))
        self.current = wanted
        # Each case starts from no UDP flows, as upstream's fresh agnhost probes do: kube-router accepts
        # ESTABLISHED first, so an earlier step's still-tracked flow whose source port the kernel happens to pick
        # again would pass a policy that now denies it (true on a real node too, and not what the table asks).
        for node in self.cluster.plan.nodes:
            self.cluster.exec(f"node/{node.name}", "conntrack", "-D", "-p", "udp", check=False)


def check_case(model, case: Case, timeout: float) -> None:
    """Step the running cluster through the case and compare every matrix with the upstream table and the engine."""
    stepper = Stepper(model, model.files)
    try:
        for i, step in enumerate(case.steps):
            stepper.go(step.manifests)
            for proto, port, key in step.checks:
                m = model.matrix(proto, port, timeout=timeout)
                want = table(key)
                where = f"{model.mode} mode, step {i}, {proto}/{port}"
                assert m["expected"] == want, f"{where}: the engine disagrees with upstream\n{render(m['expected'])}"
                assert m["observed"] == want, (f"{where}: observed\n{render(m['observed'])}\nexpected\n{render(want)}"
                                               f"\n{m['disagreements']}")
                assert m["disagreements"] == []
    finally:
        stepper.go("")  # back to the bare model: no policies, original labels
    assert model.model.network_policies == ()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_dataplane_matches_the_upstream_truth_table(model, case: Case):
    check_case(model, case, timeout=0.3)


def test_the_ipvs_subset_is_the_one_named():
    assert len(IPVS_CASES) == 5  # a title changed upstream's way would silently shrink the subset


@pytest.mark.kernel("ip_vs", "dummy")
@pytest.mark.parametrize("case", IPVS_CASES, ids=case_id)
def test_dataplane_matches_the_upstream_truth_table_in_ipvs_mode(ipvs_model, case: Case):
    # a 1 s timeout: a denial here is a REJECT (answered at once), and the lane's emulated CPU is 14-28x slower
    check_case(ipvs_model, case, timeout=1.0)
