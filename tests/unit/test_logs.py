"""`emu logs`: which pods have a log, and kubectl's -l selectors (emu.report.logs, emu.addons.kubeproxy.systempods).

Where the expectations come from: emu's own; the selector grammar is k8s.io/apimachinery pkg/labels
(selector.go Parse: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`), restated here case by case.
"""
from __future__ import annotations

import os

import pytest

from emu.cluster import lifecycle as clusters
from emu.report import logs
from emu.apply import state
from emu.addons.kubeproxy import systempods
from emu.errors import NotFound
from tests.conftest import TOPOLOGIES


def seed_guide(tmp_path, monkeypatch) -> clusters.Cluster:
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    path = str(TOPOLOGIES / "seed-guide.yaml")
    topo, alloc, plan = clusters.plan_file(path)
    return clusters.Cluster(state.Record(topo.cluster.name, path), topo, alloc, plan)


@pytest.mark.parametrize("text,labels,match", [
    ("k8s-app=kube-dns", {"k8s-app": "kube-dns"}, True),
    ("k8s-app==kube-dns", {"k8s-app": "kube-proxy"}, False),
    ("k8s-app!=kube-dns,tier", {"k8s-app": "x", "tier": "a"}, True),
    ("!tier", {"tier": "a"}, False),
    ("app=a,tier=b", {"app": "a"}, False),
    ("", {"anything": "x"}, True),
])
def test_equality_selectors(text, labels, match):
    assert logs._matches(labels, logs.parse_selector(text)) is match


def test_set_based_selectors_are_refused_clearly():
    with pytest.raises(logs.BadSelector, match="set-based"):
        logs.parse_selector("env in (a,b)")


def test_kube_proxy_pods_one_per_node_with_stable_daemonset_names(tmp_path, monkeypatch):
    cl = seed_guide(tmp_path, monkeypatch)
    pods = systempods.kube_proxy(cl)
    assert [(p.node, p.ip, p.netns) for p in pods] == [(n.name, str(n.ip), n.netns) for n in cl.plan.nodes]
    assert all(p.name.startswith("kube-proxy-") and len(p.name) == len("kube-proxy-") + 5 for p in pods)
    assert len({p.name for p in pods}) == len(pods) and pods == systempods.kube_proxy(cl)


def printed(kp: systempods.SystemPod, text: str) -> None:
    """What the kube-proxy pod has printed so far."""
    os.makedirs(os.path.dirname(kp.log), exist_ok=True)
    with open(kp.log, "w") as f:
        f.write(text)


def test_logs_by_name_selector_and_tail(tmp_path, monkeypatch):
    cl = seed_guide(tmp_path, monkeypatch)
    kp = systempods.kube_proxy(cl)[1]
    printed(kp, "one\ntwo\nthree\n")
    assert logs.logs(cl, "kube-system", kp.name)[0].lines == ("one", "two", "three")
    assert logs.logs(cl, "kube-system", f"pod/{kp.name}", tail=1)[0].lines == ("three",)
    assert logs.logs(cl, "kube-system", kp.name, tail=0)[0].lines == ()
    found = logs.logs(cl, "kube-system", selector="k8s-app=kube-proxy")
    assert [p.pod for p in found] == sorted(p.key for p in systempods.kube_proxy(cl))
    assert {p.container for p in found} == {"kube-proxy"}
    dns = logs.logs(cl, "kube-system", selector="k8s-app=kube-dns")
    assert len(dns) == 2 and {p.container for p in dns} == {"coredns"} and all(p.lines == () for p in dns)
    assert logs.logs(cl, "default", "nginx")[0].lines == ()  # the agent prints nothing for an application pod
    with pytest.raises(NotFound, match='^Error from server \\(NotFound\\): pods "nope" not found$'):
        logs.logs(cl, "default", "nope")
    assert logs.logs(cl, "default", selector="k8s-app=kube-dns") == []  # kubectl: "No resources found", exit 0


def test_follow_yields_each_new_line_once_per_file(tmp_path, monkeypatch):
    cl = seed_guide(tmp_path, monkeypatch)
    kp = systempods.kube_proxy(cl)[0]
    printed(kp, "old\n")
    found = logs.logs(cl, "kube-system", kp.name)
    rounds = iter(["new 1\nnew 2\n", "", "new 3\n"])

    def sleep(_: float) -> None:  # each poll, the proxier prints some more
        with open(kp.log, "a") as f:
            f.write(next(rounds, ""))
    polls = iter([True] * 4 + [False])
    got = list(logs.follow(cl, found, lambda: next(polls), sleep))
    assert got == [(kp.key, "new 1"), (kp.key, "new 2"), (kp.key, "new 3")]
