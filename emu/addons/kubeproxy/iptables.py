"""kube-proxy's iptables proxier as pure data: the chain names, jump rules and `iptables-restore` input that
`pkg/proxy/iptables/proxier.go` (syncProxyRules, writeServiceToEndpointRules, iptablesJumpChains) writes for one
node, re-implemented in Python.  No subprocess, no kernel access.

Two textual forms of a rule exist and both matter:

* the **written form** -- exactly what kube-proxy puts into `iptables-restore` (`restore_text` emits this, byte for
  byte as upstream's `proxier_test.go` expects it, e.g.
  ``-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j X``);
* the **saved form** -- what `iptables-save` (v1.8.9, nf_tables backend, checked on a real kernel) prints back for
  the same rule: ``-A KUBE-SERVICES -d 172.30.0.44/32 -p tcp -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp
  --dport 80 -j X``.  `saved_form` maps the first to the second (see its docstring for the exact rules).
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import math
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Union

from emu.addons.kubeproxy.model import MASQUERADE_MARK, Endpoint, NodeProxyState, ServicePort, categorize

# Chains kube-proxy owns (proxier.go constants).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's chain; kube-proxy keeps a duplicate of its localnet rule

SVC_PREFIX, SVL_PREFIX, EXT_PREFIX = "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-"
FW_PREFIX, SEP_PREFIX = "KUBE-FW-", "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX)  # isServiceChainName

LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000  # largeClusterEndpointsThreshold
LOCALNET = "127.0.0.0/8"
NFACCT_CT_INVALID = "ct_state_invalid_dropped_pkts"  # metrics.IPTablesCTStateInvalidDroppedNFAcctCounter
NFACCT_LOCALHOST_NP = "localhost_nps_accepted_pkts"  # metrics.LocalhostNodePortAcceptedNFAcctCounter


# --------------------------------------------------------------------------------------------- chain names


def port_proto_hash(port_string: str, proto: str) -> str:
    """portProtoHash: first 16 characters of base32(sha256(servicePortName + lowercase protocol))."""
    digest = hashlib.sha256((port_string + proto).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def service_chain(svc: ServicePort) -> str:
    """KUBE-SVC-<hash>: the "Cluster" traffic-policy chain dispatching to all usable endpoints
    (servicePortPolicyClusterChain)."""
    return SVC_PREFIX + port_proto_hash(svc.port_string, svc.proto)


def local_chain(svc: ServicePort) -> str:
    """KUBE-SVL-<hash>: the "Local" traffic-policy chain dispatching to this node's endpoints only
    (servicePortPolicyLocalChainName)."""
    return SVL_PREFIX + port_proto_hash(svc.port_string, svc.proto)


def external_chain(svc: ServicePort) -> str:
    """KUBE-EXT-<hash>: entered by NodePort / external IP / LoadBalancer traffic; masquerades or short-circuits,
    then jumps to the external policy chain (serviceExternalChainName)."""
    return EXT_PREFIX + port_proto_hash(svc.port_string, svc.proto)


def firewall_chain(svc: ServicePort) -> str:
    """KUBE-FW-<hash>: loadBalancerSourceRanges filtering for LoadBalancer IPs (serviceFirewallChainName)."""
    return FW_PREFIX + port_proto_hash(svc.port_string, svc.proto)


def endpoint_chain(svc: ServicePort, ep: Endpoint) -> str:
    """KUBE-SEP-<hash>: one endpoint's DNAT chain; the hash covers servicePortName + protocol + "IP:port"
    (servicePortEndpointChainName)."""
    return SEP_PREFIX + port_proto_hash(svc.port_string + svc.proto, ep.host_port)


def is_service_chain_name(chain: str) -> bool:
    """isServiceChainName: the per-service chains that stale-chain cleanup may delete."""
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def probability(n: int) -> str:
    """computeProbability: 1/n printed with Go's "%0.10f" (same correctly rounded decimal as Python's)."""
    if n < 1:
        raise ValueError(f"probability needs n >= 1, got {n}")
    return "%0.10f" % (1.0 / n)


# --------------------------------------------------------------------------------------------- jump rules


def _jump(table: str, builtin: str, target: str, comment: str, extra: tuple[str, ...] = ()):
    args = [*extra]
    if comment:
        args += ["-m", "comment", "--comment", comment]
    return (table, builtin, target, args + ["-j", target])


_NEW = ("-m", "conntrack", "--ctstate", "NEW")

JUMPS: tuple[tuple[str, str, str, list[str]], ...] = (
    # iptablesJumpChains, in upstream order; each rule is EnsureRule(Prepend)ed on a full sync.
    _jump("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    _jump("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    _jump("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
    _jump("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _NEW),
    _jump("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _NEW),
    _jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    _jump("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    _jump("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    _jump("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    _jump("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    _jump("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    _jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    # iptablesKubeletJumpChains: kubelet's KUBE-FIREWALL hooks, duplicated by kube-proxy (no comment).
    _jump("filter", "INPUT", KUBE_FIREWALL, ""),
    _jump("filter", "OUTPUT", KUBE_FIREWALL, ""),
)
"""The jump rules kube-proxy ensures in built-in chains: (table, builtin_chain, target_chain, rule_args)."""

CANARY_CHAINS: tuple[tuple[str, str], ...] = (
    ("mangle", KUBE_PROXY_CANARY),
    ("nat", KUBE_PROXY_CANARY),
    ("filter", KUBE_PROXY_CANARY),
)
"""ipt.Monitor's empty canary chains (table, chain); if one disappears kube-proxy forces a full resync.
They have no jump rule, so they are not in JUMPS; `ensure_commands` creates them."""


class EnsureStep(NamedTuple):
    """One EnsureChain + EnsureRule(Prepend): run `new_chain` (exit 1 = already exists, fine), then `check`;
    run `insert` only if `check` fails (rule missing)."""

    table: str
    chain: str
    target: str
    new_chain: list[str]
    check: list[str]
    insert: list[str]


def _ipt(table: str, *args: str) -> list[str]:
    return ["iptables", "-w", "-t", table, *args]


def ensure_steps() -> list[EnsureStep]:
    """The JUMPS as structured ensure steps, in kube-proxy's order (each prepends, so the last one ends up first)."""
    return [
        EnsureStep(table, chain, target, _ipt(table, "-N", target),
                   _ipt(table, "-C", chain, *args), _ipt(table, "-I", chain, "1", *args))
        for table, chain, target, args in JUMPS
    ]


def ensure_commands() -> list[list[str]]:
    """Flat argv list an applier runs in order, before `iptables-restore`:

    * ``iptables -w -t T -N CHAIN`` for the canary chains and each jump target (each chain once; exit status 1,
      "Chain already exists", is success);
    * per jump rule, ``iptables -w -t T -C BUILTIN <args>`` immediately followed by
      ``iptables -w -t T -I BUILTIN 1 <args>``, which must run only if that `-C` failed (rule missing).

    (kube-proxy itself runs ``iptables -w 5 -W 100000 -C BUILTIN -t T <args>`` / ``-I BUILTIN -t T <args>``;
    the argv differs, the resulting kernel rule does not.)
    """
    out: list[list[str]] = []
    made: set[tuple[str, str]] = set()

    def new(table: str, chain: str) -> None:
        if (table, chain) not in made:
            made.add((table, chain))
            out.append(_ipt(table, "-N", chain))

    for table, chain in CANARY_CHAINS:
        new(table, chain)
    for step in ensure_steps():
        new(step.table, step.target)
        out.extend((step.check, step.insert))
    return out


def jump_rule(table: str, builtin: str, args: list[str]) -> str:
    """A JUMPS entry as an ``-A BUILTIN ...`` line in written form (comment quoted when it has spaces)."""
    return " ".join(["-A", builtin, *(_quote_written(a) for a in args)])


def _quote_written(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


# --------------------------------------------------------------------------------------------- restore text


@dataclass(frozen=True, slots=True)
class Options:
    """Proxier settings that change the text; the defaults are this emulator's node (iptables 1.8.9 has
    --random-fully; localhostNodePorts on; nf_conntrack_tcp_be_liberal=0; no nfacct counters)."""

    random_fully: bool = True  # ipt.HasRandomFully()
    localhost_nodeports: bool = True  # --iptables-localhost-nodeports (IPv4, nodePortAddresses unset)
    conntrack_tcp_be_liberal: bool = False  # sysctl nf_conntrack_tcp_be_liberal != 0 -> no INVALID drop
    nfacct: bool = False  # both nfacct counters exist (adds -m nfacct matches, as in upstream's fake proxier)
    large_cluster_threshold: int = LARGE_CLUSTER_ENDPOINTS_THRESHOLD


Part = Union[str, Iterable[str]]


@dataclass
class _Builder:
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
class _Ctx:
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


def _sorted_endpoints(eps: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """EndpointsMap order: one entry per "IP:port", sorted by that string (endpointsMapFromEndpointInfo, byEndpoint)."""
    seen: dict[str, Endpoint] = {}
    for ep in eps:
        seen.setdefault(ep.host_port, ep)
    return tuple(sorted(seen.values(), key=lambda e: e.host_port))


def _plan(svc: ServicePort, eps: tuple[Endpoint, ...], ctx: _Ctx) -> _Plan:
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


def _capture_cluster_ip(b: _Builder, p: _Plan) -> None:
    svc = p.svc
    if p.has_internal:
        b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{p.name} cluster IP"',
              p.match(str(svc.cluster_ip), svc.port), "-j", p.internal_chain)
    else:
        target, comment = p.internal_filter  # type: ignore[misc]
        b.filter("-A", KUBE_SERVICES, "-m", "comment", "--comment", comment,
                 p.match(str(svc.cluster_ip), svc.port), "-j", target)


def _capture_external_ips(b: _Builder, p: _Plan) -> None:
    svc = p.svc
    for eip in svc.external_ips:
        if p.has_endpoints:
            b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{p.name} external IP"',
                  p.match(str(eip), svc.port), "-j", external_chain(svc))
        if not p.has_external:
            target, comment = p.external_filter  # type: ignore[misc]
            b.filter("-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", comment,
                     p.match(str(eip), svc.port), "-j", target)


def _capture_lb_ips(b: _Builder, p: _Plan) -> None:
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


def _capture_node_port(b: _Builder, p: _Plan, ctx: _Ctx) -> None:
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


def _capture_health_check(b: _Builder, p: _Plan) -> None:
    hc = p.svc.health_check_node_port
    if hc:
        b.filter("-A", KUBE_NODEPORTS, "-m", "comment", "--comment", f'"{p.name} health check node port"',
                 "-m", "tcp", "-p", "tcp", "--dport", str(hc), "-j", "ACCEPT")


def _internal_masquerade(b: _Builder, p: _Plan, ctx: _Ctx) -> None:
    if not p.has_internal:
        return
    args = ["-m", "comment", "--comment", f'"{p.name} cluster IP"', *p.match(str(p.svc.cluster_ip), p.svc.port)]
    if ctx.masquerade_all:
        b.nat("-A", p.internal_chain, args, "-j", KUBE_MARK_MASQ)
    elif ctx.local_cidr:
        b.nat("-A", p.internal_chain, args, "!", "-s", ctx.local_cidr, "-j", KUBE_MARK_MASQ)


def _external_chain_rules(b: _Builder, p: _Plan, ctx: _Ctx) -> None:
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


def _firewall_chain_rules(b: _Builder, p: _Plan, ctx: _Ctx) -> None:
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


def _service_to_endpoint_rules(b: _Builder, p: _Plan, chain: str, eps: tuple[Endpoint, ...], ctx: _Ctx) -> None:
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


def _policy_chains(b: _Builder, p: _Plan, ctx: _Ctx) -> None:
    if p.uses_cluster_chain:
        b.nat_chain(service_chain(p.svc))
        _service_to_endpoint_rules(b, p, service_chain(p.svc), p.cluster, ctx)
    if p.uses_local_chain:
        b.nat_chain(local_chain(p.svc))
        _service_to_endpoint_rules(b, p, local_chain(p.svc), p.local, ctx)


def _endpoint_chains(b: _Builder, p: _Plan, ctx: _Ctx) -> None:
    for ep in p.reachable:
        sep = endpoint_chain(p.svc, ep)
        b.nat_chain(sep)
        head = ["-A", sep, *ctx.comment(p.name)]
        b.nat(head, "-s", str(ep.ip), "-j", KUBE_MARK_MASQ)
        affinity = ["-m", "recent", "--name", sep, "--set"] if p.svc.session_affinity else []
        b.nat(head, affinity, "-m", p.proto, "-p", p.proto, "-j", "DNAT", "--to-destination", ep.host_port)


def _service_rules(b: _Builder, svc: ServicePort, eps: tuple[Endpoint, ...], ctx: _Ctx) -> None:
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


def _fixed_head(b: _Builder, ctx: _Ctx) -> None:
    """Top-level chain lines, KUBE-POSTROUTING, KUBE-MARK-MASQ and the KUBE-FIREWALL localnet rule."""
    for chain in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL):
        b.filter_chain(chain)
    for chain in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ):
        b.nat_chains.append(f":{chain} - [0:0]")
    mark = ctx.mark
    b.nat("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN")
    b.nat("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark)
    b.nat("-A", KUBE_POSTROUTING, "-m", "comment", "--comment", '"kubernetes service traffic requiring SNAT"',
          "-j", "MASQUERADE", ["--random-fully"] if ctx.opts.random_fully else [])
    b.nat("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark)
    if ctx.opts.localhost_nodeports:
        b.filter_chain(KUBE_FIREWALL)
        b.filter("-A", KUBE_FIREWALL, "-m", "comment", "--comment", '"block incoming localnet connections"',
                 "-d", LOCALNET, "!", "-s", LOCALNET,
                 "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP")


def _delete_stale(b: _Builder, existing: Mapping[str, Iterable[str]] | None) -> None:
    """Flush (chain line) and delete (-X) nat service chains present in the kernel but not written this sync.
    Upstream walks a Go set (random order); here they are sorted."""
    if not existing:
        return
    for chain in sorted(set(existing.get("nat", ())) - b.active_nat):
        if is_service_chain_name(chain):
            b.nat_chains.append(f":{chain} - [0:0]")
            b.nat("-X", chain)


def _fixed_tail(b: _Builder, ctx: _Ctx) -> None:
    """The "must be the last rule" KUBE-SERVICES jump and the KUBE-FORWARD rules."""
    dest = ["-m", "addrtype", "--dst-type", "LOCAL"]
    if not ctx.opts.localhost_nodeports:
        dest += ["!", "-d", LOCALNET]
    b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment",
          '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"', dest, "-j", KUBE_NODEPORTS)
    if not ctx.opts.conntrack_tcp_be_liberal:
        acct = ["-m", "nfacct", "--nfacct-name", NFACCT_CT_INVALID] if ctx.opts.nfacct else []
        b.filter("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", acct, "-j", "DROP")
    mark = ctx.mark
    b.filter("-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding rules"',
             "-m", "mark", "--mark", f"{mark}/{mark}", "-j", "ACCEPT")
    b.filter("-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding conntrack rule"',
             "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")


def restore_text(state: NodeProxyState, existing_chains: dict[str, set[str]] | None = None, *,
                 options: Options = Options()) -> str:
    """The complete ``iptables-restore --noflush`` input of one full syncProxyRules, in written form.

    `existing_chains` maps table -> chains currently in the kernel (as iptables-save lists them); nat chains with
    a KUBE-SVC/SVL/EXT/FW/SEP prefix that this sync does not write are declared (flushing them) and deleted with
    ``-X``, exactly as upstream.  Services are processed in `state.services` order (upstream: Go map order);
    each service's endpoints are de-duplicated by "IP:port" and sorted by that string, as the EndpointsMap is.
    """
    services = [(svc, _sorted_endpoints(eps)) for svc, eps in state.services]
    ctx = _Ctx(
        node=state.node,
        node_ip=state.node_ips[0] if state.node_ips else None,
        local_cidr=str(state.cluster_cidr) if state.cluster_cidr is not None else None,
        masquerade_all=state.masquerade_all,
        mark=MASQUERADE_MARK,
        opts=options,
        large_cluster=sum(len(eps) for _, eps in services) > options.large_cluster_threshold,
    )
    b = _Builder()
    _fixed_head(b, ctx)
    for svc, eps in services:
        _service_rules(b, svc, eps, ctx)
    _delete_stale(b, existing_chains)
    _fixed_tail(b, ctx)
    return b.text()


# --------------------------------------------------------------------------------------------- saved form

_HEADER = {"-s": "s", "--source": "s", "-d": "d", "--destination": "d", "-i": "i", "--in-interface": "i",
           "-o": "o", "--out-interface": "o", "-p": "p", "--protocol": "p"}
_HEADER_ORDER = ("s", "d", "i", "o", "p")  # nft_ipv4_save_rule: addresses, then interfaces, then protocol
_RECENT_CMDS = ("--set", "--rcheck", "--update", "--remove")
_STAT_SCALE = 0x80000000  # libxt_statistic stores lround(p * 2^31), prints "%.11f" of it / 2^31


def _save_string(s: str) -> str:
    """xtables_save_string: always double-quoted, with backslash and double quote escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _save_addr(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=False))


def _opts(tokens: list[str]) -> list[tuple[bool, str, list[str]]]:
    """Split a match/target's tokens into (negated, --option, values)."""
    out: list[tuple[bool, str, list[str]]] = []
    neg = False
    for tok in tokens:
        if tok == "!":
            neg = True
        elif tok.startswith("--"):
            out.append((neg, tok, []))
            neg = False
        elif out:
            out[-1][2].append(tok)
    return out


def _fmt(opts: list[tuple[bool, str, list[str]]]) -> list[str]:
    words: list[str] = []
    for neg, opt, vals in opts:
        words += (["!"] if neg else []) + [opt, *vals]
    return words


def _save_match(name: str, tokens: list[str]) -> list[str]:
    opts = _opts(tokens)
    if name == "comment":
        return ["-m", "comment", "--comment", _save_string(opts[0][2][0])]
    if name == "statistic":
        opts = [(n, o, ["%.11f" % (math.floor(float(v[0]) * _STAT_SCALE + 0.5) / _STAT_SCALE)])
                if o == "--probability" else (n, o, v) for n, o, v in opts]
    elif name == "recent":
        opts = _save_recent(opts)
    elif name == "nfacct":
        opts = [(n, o, [" " + v[0]] if o == "--nfacct-name" else v) for n, o, v in opts]  # prints a double space
    return ["-m", name, *_fmt(opts)]


def _save_recent(opts: list[tuple[bool, str, list[str]]]) -> list[tuple[bool, str, list[str]]]:
    """libxt_recent save order: command, --seconds, --reap, --hitcount, --rttl, --name, --mask, --rsource/--rdest."""
    by = {o: (n, o, v) for n, o, v in opts}
    out = [by[c] for c in _RECENT_CMDS if c in by]
    out += [by[o] for o in ("--seconds", "--reap", "--hitcount", "--rttl") if o in by]
    out.append(by.get("--name", (False, "--name", ["DEFAULT"])))
    out.append(by.get("--mask", (False, "--mask", ["255.255.255.255"])))
    out.append((False, "--rdest", []) if "--rdest" in by else (False, "--rsource", []))
    return out


def _save_target(target: str, tokens: list[str]) -> list[str]:
    opts = _opts(tokens)
    if target == "MARK":
        opts = [_save_mark(o, v[0]) if o in ("--or-mark", "--xor-mark", "--and-mark", "--set-mark")
                else (n, o, v) for n, o, v in opts]
    elif target == "REJECT" and not opts:
        opts = [(False, "--reject-with", ["icmp-port-unreachable"])]
    return ["-j", target, *_fmt(opts)]


def _save_mark(opt: str, value: str) -> tuple[bool, str, list[str]]:
    """libxt_MARK (revision 2) prints every form as --set-xmark value/mask."""
    v, _, m = value.partition("/")
    x = int(v, 0)
    form = {"--or-mark": (x, x), "--xor-mark": (x, 0), "--and-mark": (0, (~x) & 0xFFFFFFFF),
            "--set-mark": (x, int(m, 0) if m else 0xFFFFFFFF)}[opt]
    return (False, "--set-xmark", [f"{form[0]:#x}/{form[1]:#x}"])


def saved_form(rule: str) -> str:
    """Map a rule line in kube-proxy's written form to the line iptables-save v1.8.9 (nf_tables) prints for it.

    Established against this kernel by loading every rule shape `restore_text` emits and reading it back:

    * ``-s``/``-d`` (with ``!``), ``-i``/``-o`` and ``-p`` move to the front in that order; addresses gain
      their prefix length (``172.30.0.44`` -> ``172.30.0.44/32``);
    * the ``-m`` matches keep the order they were written in (so ``-m tcp`` stays where kube-proxy put it, now
      holding ``--dport``); options of a match follow the match in written order, except:
      comments are always double-quoted (``--comment "ns4/svc4:p80"``); ``recent`` prints
      ``--set|--rcheck [--seconds N] [--reap] --name X --mask 255.255.255.255 --rsource``; ``statistic`` prints
      ``--probability`` as ``%.11f`` of the kernel's fixed-point value (0.5000000000 -> 0.50000000000,
      0.3333333333 -> 0.33333333349);
    * targets: ``MARK --or-mark M`` -> ``--set-xmark M/M``, ``--xor-mark M`` -> ``--set-xmark M/0x0``;
      a bare ``REJECT`` gains ``--reject-with icmp-port-unreachable``; DNAT, MASQUERADE (--random-fully), DROP,
      ACCEPT, RETURN and chain jumps print as written;
    * ``-X CHAIN`` and chain lines are not rules and are returned unchanged.
    """
    if not rule.startswith(("-A ", "-I ")):
        return rule
    words = shlex.split(rule)
    head, chain, rest = words[0], words[1], words[2:]
    header: dict[str, list[str]] = {}
    matches: list[tuple[str, list[str]]] = []
    target: tuple[str, list[str]] | None = None
    neg = False
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok == "!" and i + 1 < len(rest) and rest[i + 1] in _HEADER:
            neg = True
        elif tok in _HEADER and target is None:
            value = rest[i + 1]
            key = _HEADER[tok]
            value = _save_addr(value) if key in "sd" else value
            header[key] = (["!"] if neg else []) + [f"-{key}", value]
            neg = False
            i += 1
        elif tok in ("-m", "--match"):
            matches.append((rest[i + 1], []))
            i += 1
        elif tok in ("-j", "--jump"):
            target = (rest[i + 1], [])
            i += 1
        elif target is not None:
            target[1].append(tok)
        elif matches:
            matches[-1][1].append(tok)
        i += 1
    out = [head, chain]
    for key in _HEADER_ORDER:
        out += header.get(key, [])
    for name, toks in matches:
        out += _save_match(name, toks)
    if target is not None:
        out += _save_target(*target)
    return " ".join(out)


# --------------------------------------------------------------------------------------------- parsing helpers


def restore_chains(text: str) -> dict[str, dict[str, list[str]]]:
    """What an ``iptables-restore --noflush`` of `text` leaves in the chains it declares: table -> chain ->
    rule lines (written form), in order; chains deleted with ``-X`` are absent.  Pure text processing."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current[line[1:].split()[0]] = []
        elif line.startswith("-A "):
            current.setdefault(line.split()[1], []).append(line)
        elif line.startswith("-X "):
            current.pop(line.split()[1], None)
    return tables


def saved_chains(save_output: str, prefix: str = "") -> dict[str, dict[str, list[str]]]:
    """Parse iptables-save output into table -> chain -> rule lines (keeping only chains starting with `prefix`)."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in save_output.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith(prefix):
                current[name] = []
        elif line.startswith("-A "):
            name = line.split()[1]
            if name.startswith(prefix):
                current.setdefault(name, []).append(line)
    return tables
