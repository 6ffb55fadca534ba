"""kube-proxy's iptables proxier, one service port: the rules syncProxyRules' per-service-port loop writes
(`pkg/proxy/iptables/proxier.go`: the capture rules in KUBE-SERVICES, KUBE-EXTERNAL-SERVICES and KUBE-NODEPORTS, the
KUBE-EXT and KUBE-FW chains, writeServiceToEndpointRules' KUBE-SVC/KUBE-SVL cascade and the KUBE-SEP DNAT chains),
into the four line buffers `iptables_text.restore_text` assembles.  Pure: no subprocess, no kernel access."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from emu.addons.kubeproxy.iptables import (KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL,
    KUBE_SERVICES, LOCALNET, NFACCT_LOCALHOST_NP, Options, endpoint_chain, external_chain, firewall_chain, local_chain,
    probability, service_chain)
from emu.addons.kubeproxy.model import Endpoint, ServicePort, categorize

LAYER = "plan"

Part = Union[str, Iterable[str]]


@dataclass
class Builder:
    """Accumulates the four LineBuffers of syncProxyRules (filterChains, filterRules, natChains, natRules)."""

    filter_chains: list[str] = field(default_factory=list)
    filter_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)
    active_nat: set[str] = field(default_factory=set)

    @staticmethod
    def _line(parts: tuple[Part, ...]) -> str:
        words: list[str] = []
        for p in parts:
            words.extend([p] if isinstance(p, str) else p)
        return " ".join(words)

    def filter(self, *parts: Part) -> None:
        self.filter_rules.append(self._line(parts))

    def nat(self, *parts: Part) -> None:
        self.nat_rules.append(self._line(parts))

    def filter_chain(self, chain: str) -> None:
        self.filter_chains.append(f":{chain} - [0:0]")

    def nat_chain(self, chain: str) -> None:
        self.nat_chains.append(f":{chain} - [0:0]")
        self.active_nat.add(chain)

    def text(self) -> str:
        lines = ["*filter", *self.filter_chains, *self.filter_rules, "COMMIT",
                 "*nat", *self.nat_chains, *self.nat_rules, "COMMIT"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Ctx:
    node: str
    node_ip: ipaddress.IPv4Address | None  # proxier.nodeIP (the first node IP)
    local_cidr: str | None  # LocalTrafficDetector by cluster CIDR; None = not implemented
    masquerade_all: bool
    mark: str
    opts: Options
    large_cluster: bool

    def comment(self, text: str) -> list[str]:
        """appendServiceCommentLocked: comments on SVC->SEP and SEP rules vanish in large-cluster mode."""
        return [] if self.large_cluster else ["-m", "comment", "--comment", text]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The per-service-port decisions at the top of syncProxyRules' loop."""

    svc: ServicePort
    name: str  # svcPortNameString
    proto: str
    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    reachable: tuple[Endpoint, ...]
    has_endpoints: bool
    has_internal: bool
    has_external: bool
    internal_chain: str  # internalTrafficChain (SVC, or SVL with iTP=Local)
    external_policy_chain: str  # SVC, or SVL with eTP=Local
    uses_cluster_chain: bool
    uses_local_chain: bool
    uses_external_chain: bool
    uses_fw_chain: bool
    lb_chain: str  # loadBalancerTrafficChain (EXT, or FW with source ranges)
    internal_filter: tuple[str, str] | None  # (target, quoted comment) for filter rules, if any
    external_filter: tuple[str, str] | None

    def match(self, dst: str | None, port: int) -> list[str]:
        """`-m proto -p proto [-d dst] --dport port`, as kube-proxy orders it."""
        return ["-m", self.proto, "-p", self.proto, *(["-d", dst] if dst else []), "--dport", str(port)]


def sorted_endpoints(eps: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """EndpointsMap order: one entry per "IP:port", sorted by that string (endpointsMapFromEndpointInfo, byEndpoint)."""
    seen: dict[str, Endpoint] = {}
    for ep in eps:
        seen.setdefault(ep.host_port, ep)
    return tuple(sorted(seen.values(), key=lambda e: e.host_port))


def _plan(svc: ServicePort, eps: tuple[Endpoint, ...], ctx: Ctx) -> _Plan:
    cat = categorize(eps, svc, ctx.node)
    name, has = svc.port_string, cat.has_any
    internal_chain, has_internal = service_chain(svc), has
    if svc.internal_policy_local:
        internal_chain, has_internal = local_chain(svc), has and bool(cat.local)
    ext_policy, has_external = service_chain(svc), has
    if svc.external_local:
        ext_policy, has_external = local_chain(svc), has and bool(cat.local)
    uses_fw = has and bool(svc.load_balancer_ips) and bool(svc.load_balancer_source_ranges)
    int_f = ext_f = None
    if not has:
        int_f = ext_f = ("REJECT", f'"{name} has no endpoints"')
    else:
        if not has_internal:
            int_f = ("DROP", f'"{name} has no local endpoints"')
        if not has_external:
            ext_f = ("DROP", f'"{name} has no local endpoints"')
    return _Plan(
        svc=svc, name=name, proto=svc.proto, cluster=cat.cluster, local=cat.local, reachable=cat.all_reachable,
        has_endpoints=has, has_internal=has_internal, has_external=has_external,
        internal_chain=internal_chain, external_policy_chain=ext_policy,
        uses_cluster_chain=bool(cat.cluster) and svc.uses_cluster_endpoints,
        uses_local_chain=bool(cat.local) and svc.uses_local_endpoints,
        uses_external_chain=has and svc.externally_accessible,
        uses_fw_chain=uses_fw, lb_chain=firewall_chain(svc) if uses_fw else external_chain(svc),
        internal_filter=int_f, external_filter=ext_f,
    )


def _capture_cluster_ip(b: Builder, p: _Plan) -> None:
    svc = p.svc
    if p.has_internal:
        b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{p.name} cluster IP"',
              p.match(str(svc.cluster_ip), svc.port), "-j", p.internal_chain)
    else:
        target, comment = p.internal_filter  # type: ignore[misc]
        b.filter("-A", KUBE_SERVICES, "-m", "comment", "--comment", comment,
                 p.match(str(svc.cluster_ip), svc.port), "-j", target)


def _capture_external_ips(b: Builder, p: _Plan) -> None:
    svc = p.svc
    for eip in svc.external_ips:
        if p.has_endpoints:
            b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{p.name} external IP"',
                  p.match(str(eip), svc.port), "-j", external_chain(svc))
        if not p.has_external:
            target, comment = p.external_filter  # type: ignore[misc]
            b.filter("-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", comment,
                     p.match(str(eip), svc.port), "-j", target)


def _capture_lb_ips(b: Builder, p: _Plan) -> None:
    svc = p.svc
    for lbip in svc.load_balancer_ips:
        if p.has_endpoints:
            b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{p.name} loadbalancer IP"',
                  p.match(str(lbip), svc.port), "-j", p.lb_chain)
        if p.uses_fw_chain:
            b.filter("-A", KUBE_PROXY_FIREWALL, "-m", "comment", "--comment",
                     f'"{p.name} traffic not accepted by {firewall_chain(svc)}"',
                     p.match(str(lbip), svc.port), "-j", "DROP")
    if not p.has_external:
        target, comment = p.external_filter  # type: ignore[misc]
        for lbip in svc.load_balancer_ips:
            b.filter("-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", comment,
                     p.match(str(lbip), svc.port), "-j", target)


def _capture_node_port(b: Builder, p: _Plan, ctx: Ctx) -> None:
    svc = p.svc
    if not svc.node_port:
        return
    if p.has_endpoints:
        if ctx.opts.localhost_nodeports and ctx.opts.nfacct:
            b.nat("-A", KUBE_NODEPORTS, "-m", "comment", "--comment", p.name, p.match(LOCALNET, svc.node_port),
                  "-m", "nfacct", "--nfacct-name", NFACCT_LOCALHOST_NP, "-j", external_chain(svc))
        b.nat("-A", KUBE_NODEPORTS, "-m", "comment", "--comment", p.name, p.match(None, svc.node_port),
              "-j", external_chain(svc))
    if not p.has_external:
        target, comment = p.external_filter  # type: ignore[misc]
        b.filter("-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", comment,
                 "-m", "addrtype", "--dst-type", "LOCAL", p.match(None, svc.node_port), "-j", target)


def _capture_health_check(b: Builder, p: _Plan) -> None:
    hc = p.svc.health_check_node_port
    if hc:
        b.filter("-A", KUBE_NODEPORTS, "-m", "comment", "--comment", f'"{p.name} health check node port"',
                 "-m", "tcp", "-p", "tcp", "--dport", str(hc), "-j", "ACCEPT")


def _internal_masquerade(b: Builder, p: _Plan, ctx: Ctx) -> None:
    if not p.has_internal:
        return
    args = ["-m", "comment", "--comment", f'"{p.name} cluster IP"', *p.match(str(p.svc.cluster_ip), p.svc.port)]
    if ctx.masquerade_all:
        b.nat("-A", p.internal_chain, args, "-j", KUBE_MARK_MASQ)
    elif ctx.local_cidr:
        b.nat("-A", p.internal_chain, args, "!", "-s", ctx.local_cidr, "-j", KUBE_MARK_MASQ)


def _external_chain_rules(b: Builder, p: _Plan, ctx: Ctx) -> None:
    if not p.uses_external_chain:
        return
    ext, svc_chain = external_chain(p.svc), service_chain(p.svc)
    b.nat_chain(ext)
    if not p.svc.external_local:
        b.nat("-A", ext, "-m", "comment", "--comment", f'"masquerade traffic for {p.name} external destinations"',
              "-j", KUBE_MARK_MASQ)
    else:
        if ctx.local_cidr:
            b.nat("-A", ext, "-m", "comment", "--comment", f'"pod traffic for {p.name} external destinations"',
                  "-s", ctx.local_cidr, "-j", svc_chain)
        b.nat("-A", ext, "-m", "comment", "--comment",
              f'"masquerade LOCAL traffic for {p.name} external destinations"',
              "-m", "addrtype", "--src-type", "LOCAL", "-j", KUBE_MARK_MASQ)
        b.nat("-A", ext, "-m", "comment", "--comment", f'"route LOCAL traffic for {p.name} external destinations"',
              "-m", "addrtype", "--src-type", "LOCAL", "-j", svc_chain)
    if p.has_external:
        b.nat("-A", ext, "-j", p.external_policy_chain)


def _firewall_chain_rules(b: Builder, p: _Plan, ctx: Ctx) -> None:
    if not p.uses_fw_chain:
        return
    fw, ext = firewall_chain(p.svc), external_chain(p.svc)
    b.nat_chain(fw)
    head = ["-A", fw, "-m", "comment", "--comment", f'"{p.name} loadbalancer IP"']
    allow_from_node = False
    for cidr in p.svc.load_balancer_source_ranges:
        b.nat(head, "-s", str(cidr), "-j", ext)
        allow_from_node = allow_from_node or (ctx.node_ip is not None and ctx.node_ip in cidr)
    if allow_from_node:
        for lbip in p.svc.load_balancer_ips:
            b.nat(head, "-s", str(lbip), "-j", ext)
    b.nat("-A", fw, "-m", "comment", "--comment", f'"other traffic to {p.name} will be dropped by KUBE-PROXY-FIREWALL"')


def _service_to_endpoint_rules(b: Builder, p: _Plan, chain: str, eps: tuple[Endpoint, ...], ctx: Ctx) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the probability cascade."""
    svc = p.svc
    if svc.session_affinity:
        for ep in eps:
            sep = endpoint_chain(svc, ep)
            b.nat("-A", chain, ctx.comment(f'"{p.name} -> {ep.host_port}"'), "-m", "recent", "--name", sep,
                  "--rcheck", "--seconds", str(svc.affinity_timeout), "--reap", "-j", sep)
    n = len(eps)
    for i, ep in enumerate(eps):
        stat = ["-m", "statistic", "--mode", "random", "--probability", probability(n - i)] if i < n - 1 else []
        b.nat("-A", chain, ctx.comment(f'"{p.name} -> {ep.host_port}"'), stat, "-j", endpoint_chain(svc, ep))


def _policy_chains(b: Builder, p: _Plan, ctx: Ctx) -> None:
    if p.uses_cluster_chain:
        b.nat_chain(service_chain(p.svc))
        _service_to_endpoint_rules(b, p, service_chain(p.svc), p.cluster, ctx)
    if p.uses_local_chain:
        b.nat_chain(local_chain(p.svc))
        _service_to_endpoint_rules(b, p, local_chain(p.svc), p.local, ctx)


def _endpoint_chains(b: Builder, p: _Plan, ctx: Ctx) -> None:
    for ep in p.reachable:
        sep = endpoint_chain(p.svc, ep)
        b.nat_chain(sep)
        head = ["-A", sep, *ctx.comment(p.name)]
        b.nat(head, "-s", str(ep.ip), "-j", KUBE_MARK_MASQ)
        affinity = ["-m", "recent", "--name", sep, "--set"] if p.svc.session_affinity else []
        b.nat(head, affinity, "-m", p.proto, "-p", p.proto, "-j", "DNAT", "--to-destination", ep.host_port)


def service_rules(b: Builder, svc: ServicePort, eps: tuple[Endpoint, ...], ctx: Ctx) -> None:
    """One iteration of syncProxyRules' per-service-port loop, in upstream order."""
    p = _plan(svc, eps, ctx)
    _capture_cluster_ip(b, p)
    _capture_external_ips(b, p)
    _capture_lb_ips(b, p)
    _capture_node_port(b, p, ctx)
    _capture_health_check(b, p)
    _internal_masquerade(b, p, ctx)
    _external_chain_rules(b, p, ctx)
    _firewall_chain_rules(b, p, ctx)
    _policy_chains(b, p, ctx)
    _endpoint_chains(b, p, ctx)
