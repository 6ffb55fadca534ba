"""One doctor run: gather what each selected check needs (through the `Kernel`), hand it to the pure checks, and
collect their findings in check order."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.addons.kubeproxy import desired as kube_proxy_desired
from emu.addons.kubeproxy import modes
from emu.network import table as networks
from emu.observe.readback import Observed
from emu.observe.doctor import checks, mtu, pairs, rulesets, state
from emu.observe.doctor import findings as f
from emu.observe.doctor.findings import Finding, Report
from emu.observe.doctor.gather import Kernel, LiveKernel
from emu.observe.doctor.pairs import Probe
from emu.plan.content import by_owner

if TYPE_CHECKING:
    from emu.cluster.lifecycle import Cluster

Progress = Callable[[str, int, int], None]

CHECKS: dict[str, str] = {
    "daemons": "emu's daemons of the cluster run (the pods' servers, cluster DNS, ingress nginx)",
    "routes": "links, addresses, routes, neighbours and FDB entries of every namespace, as planned",
    "mtu": "every link's MTU as planned, and the MTU along each node-to-node pod path",
    "pod-to-pod": "a probe between pods across every ordered pair of nodes",
    "services": "every Service has ready endpoints",
    "dns": "cluster DNS resolves from a pod on every node",
    "policies": "the pods each NetworkPolicy selects",
    "kube-proxy": "each node's kube-proxy rules against the rules the model gives",
    "conntrack": "connection-tracking table pressure on each node",
}
"""The checklist, in the order it runs and prints (`--check NAME` picks some)."""

PROBE_WORKERS = 16


def _quiet(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class _Ctx:
    cl: "Cluster"
    kernel: Kernel
    progress: Progress
    timeout: float
    _observed: Mapping[str, Observed | None] | None = field(default=None)

    @property
    def unplanned_pods(self) -> str | None:
        """Why the pods are not the plan's (the pod network says: cni.plugin cni), or None."""
        return networks.for_cluster(self.cl.topology.cluster).unplanned_pods

    def observed(self) -> Mapping[str, Observed | None]:
        if self._observed is None:
            self._observed = self.kernel.observe(self.cl.plan.all_netns())
        return self._observed

    def send(self, stage: str, probes: Sequence[Probe]) -> list[tuple[Probe, dict[str, Any]]]:
        """Every probe in parallel, the results in the probes' order."""
        if not probes:
            return []
        done = 0

        def one(p: Probe) -> dict[str, Any]:
            return self.kernel.probe(self.cl, p, self.timeout)

        out = []
        with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(probes))) as ex:
            for p, r in zip(probes, ex.map(one, probes)):
                out.append((p, r))
                done += 1
                self.progress(stage, done, len(probes))
        return out


def _routes(ctx: _Ctx) -> list[Finding]:
    return state.check(ctx.cl.plan, ctx.observed(), ctx.unplanned_pods)


def _mtu(ctx: _Ctx) -> list[Finding]:
    cl, observed = ctx.cl, ctx.observed()
    results: list[tuple[Probe, dict[str, Any]]] = []
    if ctx.unplanned_pods is None:
        pod_mtu = {}
        for p in cl.plan.pods:
            got = observed.get(p.netns.name)
            link = got.links.get(p.host_link.peer or "eth0") if got is not None and not p.host_network else None
            if link is not None:
                pod_mtu[p.key] = link.mtu
        results = ctx.send("mtu", pairs.mtu(cl.topology, cl.allocations, cl.plan, pod_mtu))
        failed = [(p, r) for p, r in results if not r.get("ok") and r.get("verdict") != "frag-needed"]
        small = [dataclasses.replace(p, size=pairs.SMALL_ECHO, df=False) for p, _ in failed]
        for (_, r), answer in zip(failed, ctx.send("mtu", small)):
            r["small"] = answer  # lost whatever its size (no route), or only when large (a black hole)?
    return mtu.check(cl.plan, cl.topology.cluster, observed, results)


def _pod_to_pod(ctx: _Ctx) -> list[Finding]:
    cl = ctx.cl
    probes, skipped = pairs.connectivity(cl.topology, cl.allocations, cl.plan)
    results = ctx.send("pod-to-pod", probes)
    notes = {p.pair: _route_notes(ctx, p.src_node, p.dst_ip, "to") + _route_notes(ctx, p.dst_node, p.src_ip, "back to")
             for p, r in results if not r.get("ok")}
    return checks.connectivity(results, skipped, len(cl.plan.nodes), notes)


def _route_notes(ctx: _Ctx, node: str, ip: str, how: str) -> list[str]:
    """The route a node's kernel picks for an address, beside the plan's (for a pair that failed: both ways)."""
    info = next(n for n in ctx.cl.plan.nodes if n.name == node)
    plan_ns = next((ns for ns in ctx.cl.plan.infra if ns.name == info.netns), None)
    want = state.planned_route(plan_ns, ip) if plan_ns is not None else None
    got = ctx.kernel.route_get(info.netns, ip)
    return [f"route on node/{node} {how} {ip}: {got or 'none'}" +
            (f" (differs from the plan: {state.route_text(want)})" if want and not state.route_matches(want, got)
             else " (as planned)" if want else " (the plan has none)")]


def _services(ctx: _Ctx) -> list[Finding]:
    return checks.services(ctx.cl.topology, ctx.cl.allocations)


def _dns(ctx: _Ctx) -> list[Finding]:
    from emu.addons.dns import addon

    cl = ctx.cl
    cfg = addon.config(cl)
    dns_ip = addon.cluster_dns_ip(cl)
    if cfg is None or dns_ip is None:
        return [f.skip("dns", "cluster", "no cluster DNS (the kube-system/coredns ConfigMap brings it)")]
    name = f"kube-dns.kube-system.svc.{cfg.cluster_domain}"
    if not name.endswith("."):
        name += "."  # absolute: one query, no search path
    per_node: list[tuple[str, str | None]] = []
    for node, pods in pairs.node_pods(cl.topology, cl.plan).items():
        pod = next((p.key for p in pods if dns_ip in addon.pod_dns_config(cl, p.key, cfg).servers), None)
        per_node.append((node, pod))
    asked = [(n, p) for n, p in per_node if p is not None]
    answers: dict[str, dict[str, Any]] = {}

    def ask(item: tuple[str, str]) -> tuple[str, dict[str, Any]]:
        return item[0], ctx.kernel.dns(cl, item[1], name, ctx.timeout)

    if asked:
        with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(asked))) as ex:
            for i, (node, res) in enumerate(ex.map(ask, asked), start=1):
                answers[node] = res
                ctx.progress("dns", i, len(asked))
    return checks.dns([(n, p, answers.get(n)) for n, p in per_node], name, dns_ip)


def _policies(ctx: _Ctx) -> list[Finding]:
    host = {p.key for p in ctx.cl.plan.pods if p.host_network}
    return checks.policies(ctx.cl.topology, host)


def _kube_proxy(ctx: _Ctx) -> list[Finding]:
    cl = ctx.cl
    c = cl.topology.cluster
    mode, backend = c.proxy.mode, c.iptables_backend
    proxier = modes.for_mode(mode)
    if proxier.compared_as is None:
        return [f.skip("kube-proxy", "nodes", proxier.not_compared)]
    # the plan objects the dry run prints for each node, not a second rendering
    objects = by_owner(kube_proxy_desired.desired(cl.topology, cl.allocations, cl.plan))
    what = proxier.listing_what.format(backend=backend)
    out = []
    for i, n in enumerate(cl.plan.nodes, start=1):
        try:
            desired = ctx.kernel.render(n.name, objects.get(n.name, ()), mode, backend)
        except RuntimeError as e:
            out.append(f.fail("kube-proxy", f"node/{n.name}", str(e)))
            continue
        live = ctx.kernel.ruleset(n.netns, mode, backend)
        out.append(rulesets.compare(n.name, mode.value, proxier.compared_as, what, desired, live))
        ctx.progress("kube-proxy", i, len(cl.plan.nodes))
    return out


def _daemons(ctx: _Ctx) -> list[Finding]:
    return checks.daemons(ctx.kernel.daemons(ctx.cl), ctx.cl.name)


def _conntrack(ctx: _Ctx) -> list[Finding]:
    return [checks.conntrack(n.name, ctx.kernel.conntrack(n.netns)) for n in ctx.cl.plan.nodes]


RUNNERS: dict[str, Callable[[_Ctx], list[Finding]]] = {
    "daemons": _daemons, "routes": _routes, "mtu": _mtu, "pod-to-pod": _pod_to_pod, "services": _services, "dns": _dns,
    "policies": _policies, "kube-proxy": _kube_proxy, "conntrack": _conntrack,
}


def run(cl: "Cluster", only: Iterable[str] = (), kernel: Kernel | None = None, progress: Progress = _quiet,
        timeout: float = 1.0) -> Report:
    """Run the checklist (or the checks named in `only`) on a live cluster."""
    wanted = set(only)
    unknown = wanted - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks: {', '.join(sorted(unknown))}")
    selected = tuple(c for c in CHECKS if not wanted or c in wanted)
    ctx = _Ctx(cl, kernel if kernel is not None else LiveKernel(), progress, timeout)
    t0 = time.monotonic()
    found: list[Finding] = []
    for i, name in enumerate(selected):
        progress(name, 0, 1)
        found += RUNNERS[name](ctx)
        progress(name, 1, 1)
    return Report(cl.name, selected, tuple(found), time.monotonic() - t0, dict(CHECKS))
