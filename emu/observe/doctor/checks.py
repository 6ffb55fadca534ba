"""The checks that judge the model and probe results: Service endpoints, NetworkPolicy selection, conntrack
pressure, pod-to-pod connectivity and cluster DNS.  Pure: given the model and what `gather` brought back, they
return Findings (the kernel-state checks live in `state`, `mtu` and `rulesets`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence, Set as AbstractSet
from typing import Any

from emu.cluster.daemons import Daemon
from emu.alloc.endpoints import all_services
from emu.alloc.ipam import Allocations
from emu.model.types import Service, Topology
from emu.observe.doctor import findings as f
from emu.observe.doctor.findings import Finding
from emu.observe.doctor.pairs import Probe, result_text

CONNTRACK_WARN = 0.75
CONNTRACK_FAIL = 0.90


# --- services -----------------------------------------------------------------------------------------------------


def _selector(sel: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sel.items()) or "{} (all)"


def _why_no_endpoints(topo: Topology, svc: Service, port_label: str, endpoints: Sequence[Any],
                      target: object) -> list[str]:
    if svc.selector is None:
        slices = [s for s in topo.endpoint_slices if s.namespace == svc.namespace and s.service == svc.name]
        if not slices:
            return [f"port {port_label}: selector-less, and no EndpointSlice or Endpoints names {svc.key}"]
        return [f"port {port_label}: its EndpointSlices ({', '.join(s.name for s in slices)}) have no ready "
                f"endpoint for it"]
    sel = dict(svc.selector)
    pods = [p for p in topo.pods if p.namespace == svc.namespace and all(p.labels.get(k) == v for k, v in sel.items())]
    if not pods:
        return [f"port {port_label}: selector {_selector(sel)} matches no pod in namespace {svc.namespace}"]
    if not endpoints:
        names = ", ".join(p.key for p in pods[:5]) + (" ..." if len(pods) > 5 else "")
        return [f"port {port_label}: targetPort {target!r} is not a containerPort of the selected pods ({names})"]
    out = []
    for e in endpoints:
        state = "terminating" + ("" if e.serving else ", not serving") if e.terminating else "not ready"
        out.append(f"port {port_label}: endpoint {e.ip}:{e.port} ({e.pod}) is {state}")
    return out


def services(topo: Topology, alloc: Allocations) -> list[Finding]:
    """Every Service that routes to endpoints has a ready one on every port; ExternalName Services need none."""
    check = "services"
    eps = all_services(topo, alloc)
    out = []
    for svc in topo.services:
        if svc.type == "ExternalName":
            out.append(f.ok(check, svc.key, f"ExternalName {svc.external_name}: needs no endpoints"))
            continue
        ready_lines, why = [], []
        for pe in eps[svc.key]:
            label = f"{pe.spec.name or pe.spec.port}/{pe.spec.protocol.value}"
            ready = [e for e in pe.endpoints if e.ready]
            if ready:
                ready_lines.append(f"port {label}: " + ", ".join(f"{e.ip}:{e.port}" + (f" ({e.pod})" if e.pod else "")
                                                                  for e in ready))
            else:
                target = pe.spec.target_port if pe.spec.target_port is not None else pe.spec.port
                why += _why_no_endpoints(topo, svc, label, pe.endpoints, target)
        if not svc.ports:
            out.append(f.ok(check, svc.key, "no ports (nothing to route)"))
        elif not why:
            out.append(f.ok(check, svc.key, f"ready endpoints on all {len(ready_lines)} ports", ready_lines))
        else:
            cip = alloc.services.get(svc.key)
            consequence = []
            if not svc.headless and cip is not None and cip.cluster_ip is not None:
                consequence = [f"kube-proxy rejects connections to {cip.cluster_ip} on those ports "
                               f"(ICMP port unreachable)"]
            bad = sorted({line.split(":", 1)[0] for line in why})
            out.append(f.warn(check, svc.key, f"no ready endpoints for {', '.join(bad)}",
                              why + ready_lines + consequence))
    if not topo.services:
        out.append(f.skip(check, "services", "the cluster has no Services"))
    return out


# --- policies -----------------------------------------------------------------------------------------------------


def policies(topo: Topology, host_network: AbstractSet[str] = frozenset()) -> list[Finding]:
    """Which pods each NetworkPolicy selects; one that selects none is a warning (a typo in a label, a policy in
    the wrong namespace).  hostNetwork pods are never selected: policies do not apply to them."""
    check = "policies"
    if not topo.network_policies:
        return [f.skip(check, "policies", "the cluster has no NetworkPolicies")]
    out = []
    for pol in topo.network_policies:
        pods = [p.key for p in topo.pods if p.namespace == pol.namespace and p.key not in host_network
                and pol.pod_selector.matches(p.labels)]
        types = ", ".join(t.value for t in pol.policy_types)
        if pods:
            names = ", ".join(pods[:5]) + (f" ... ({len(pods)} in all)" if len(pods) > 5 else "")
            out.append(f.ok(check, pol.key, f"selects {len(pods)} pods for {types}: {names}", pods))
        else:
            out.append(f.warn(check, pol.key, f"selects no pods: podSelector {pol.pod_selector} matches no pod in "
                                              f"namespace {pol.namespace}",
                              [f"podSelector {pol.pod_selector}, policyTypes {types}",
                               f"pods in namespace {pol.namespace}: " +
                               (", ".join(f"{p.name} ({_selector(dict(p.labels))})" for p in topo.pods
                                          if p.namespace == pol.namespace) or "none")]))
    return out


# --- emu's daemons ------------------------------------------------------------------------------------------------


def daemons(found: Sequence[Daemon], cluster: str) -> list[Finding]:
    """Each daemon the record expects runs; a dead one fails, naming what stops working without it (every other
    check that sends packets would blame the network for it)."""
    if not found:
        return [f.skip("daemons", "cluster", "the cluster is not up: no daemon is expected yet")]
    out = []
    for d in found:
        subj = f"daemon/{d.name}"
        if d.running:
            out.append(f.ok("daemons", subj, f"running (pid {', '.join(map(str, d.pids))})"))
        else:
            out.append(f.fail("daemons", subj, f"not running: {d.what} do not answer; emu up --repair {cluster} "
                                               "starts it again", [f"no live process of ours for {d.name}"]))
    return out


# --- conntrack ----------------------------------------------------------------------------------------------------


def conntrack(node: str, counts: tuple[int, int] | None) -> Finding:
    """nf_conntrack_count against nf_conntrack_max: warn from 75%, fail from 90% (at 100% the kernel drops new
    connections: "nf_conntrack: table full, dropping packet")."""
    check, subj = "conntrack", f"node/{node}"
    if counts is None:
        return f.skip(check, subj, "no connection tracking in the node's namespace (nf_conntrack not loaded)")
    count, limit = counts
    if limit <= 0:
        return f.skip(check, subj, f"nf_conntrack_max is {limit} (no limit)")
    share = count / limit
    evidence = [f"nf_conntrack_count {count}", f"nf_conntrack_max {limit}", f"{share:.1%} full"]
    msg = f"{count} of {limit} entries ({share:.1%})"
    if share >= CONNTRACK_FAIL:
        return f.fail(check, subj, msg + f": at or above {CONNTRACK_FAIL:.0%}, new connections will be dropped "
                                        "when it fills", evidence)
    if share >= CONNTRACK_WARN:
        return f.warn(check, subj, msg + f": at or above {CONNTRACK_WARN:.0%}", evidence)
    return f.ok(check, subj, msg, evidence)


# --- pod to pod ---------------------------------------------------------------------------------------------------


def connectivity(results: Sequence[tuple[Probe, Mapping[str, Any]]], skipped: Sequence[tuple[str, str]],
                 nodes: int, notes: Mapping[str, Sequence[str]] | None = None) -> list[Finding]:
    """One finding per ordered node pair: the probe between one pod on each got its answer, or not.  `notes`
    adds evidence to a failed pair (the route its source node picks, beside the planned one)."""
    check = "pod-to-pod"
    if nodes < 2:
        return [f.skip(check, "nodes", "one node: there is no node pair to probe across")]
    out = []
    for p, r in results:
        line = result_text(p, r)
        if r.get("ok"):
            out.append(f.ok(check, p.pair, f"{p.what} {p.src} -> {p.dst}: {r.get('verdict')}", [line]))
        else:
            tries = r.get("tries", 1)
            out.append(f.fail(check, p.pair, f"{p.what} {p.src} -> {p.dst} ({p.dst_ip}): {r.get('verdict')}",
                              [line] + ([f"failed {tries} times"] if tries > 1 else []) +
                              list((notes or {}).get(p.pair, ()))))
    out += [f.skip(check, pair, why) for pair, why in skipped]
    return out


# --- dns ----------------------------------------------------------------------------------------------------------


def _query_line(q: Mapping[str, Any]) -> str:
    answers = ", ".join(str(a.get("data")) for a in q.get("answers", [])) or "-"
    return f"{q.get('ms', 0):.1f} ms  {q.get('server')}  {q.get('type')} {q.get('name')}  {q.get('rcode')}  {answers}"


def dns(results: Sequence[tuple[str, str | None, Mapping[str, Any] | None]], name: str,
        expected: str | None) -> list[Finding]:
    """Per node, one pod that uses the cluster DNS resolves `name`, and gets `expected` (the kube-dns ClusterIP)."""
    check = "dns"
    out = []
    for node, pod, res in results:
        subj = f"node/{node}"
        if pod is None or res is None:
            out.append(f.skip(check, subj, f"no pod on {node} uses the cluster DNS (dnsPolicy ClusterFirst)"))
            continue
        lines = [_query_line(q) for q in res.get("queries", [])]
        addrs = [str(a) for a in res.get("addresses", [])]
        if not res.get("ok"):
            last = res["queries"][-1]["rcode"] if res.get("queries") else "no query sent"
            servers = ", ".join(res.get("nameservers", []))
            out.append(f.fail(check, subj, f"{pod} cannot resolve {name}: {last} (nameservers {servers})", lines))
        elif expected is not None and expected not in addrs:
            out.append(f.fail(check, subj, f"{pod} resolved {name} to {', '.join(addrs)}, expected {expected}",
                              lines))
        else:
            out.append(f.ok(check, subj, f"{pod} resolved {name} -> {', '.join(addrs)} in "
                                         f"{res.get('total_ms', 0):.1f} ms", lines))
    return out
