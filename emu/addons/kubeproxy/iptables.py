"""kube-proxy's iptables proxier, its chains: the names of the chains it owns, the jump rules it ensures in the
built-in chains and the settings that change its text, as `pkg/proxy/iptables/proxier.go` (servicePortPolicyClusterChain
and friends, iptablesJumpChains, iptablesKubeletJumpChains) has them.  Pure: no subprocess, no kernel access.

The rest of the proxier is split by job: `iptables_rules` writes one service port's rules (syncProxyRules' loop,
writeServiceToEndpointRules), `iptables_text` assembles the whole `iptables-restore` input and maps it to the form
`iptables-save` prints back.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from emu.addons.kubeproxy.model import Endpoint, ServicePort

LAYER = "plan"

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


def first_sync_jumps() -> str:
    """kube-proxy's EnsureChain + EnsureRule(Prepend) for its jump rules and canary chains, for a namespace we just
    created (so none exist yet): as iptables-restore lines, one `-I CHAIN 1` per jump in kube-proxy's order, which
    leaves the same rules in the same order as its `iptables -C || iptables -I` calls, in one exec instead of ~40."""
    tables: dict[str, list[str]] = {}
    for table, chain in CANARY_CHAINS:
        tables.setdefault(table, []).append(f":{chain} - [0:0]")
    for step in ensure_steps():
        lines = tables.setdefault(step.table, [])
        decl = f":{step.target} - [0:0]"
        if decl not in lines:
            lines.append(decl)
    for step in ensure_steps():
        args = step.insert[step.insert.index("-I") + 3:]  # after "-I CHAIN 1"
        rule = jump_rule(step.table, step.chain, args)
        tables[step.table].append(rule.replace(f"-A {step.chain} ", f"-I {step.chain} 1 ", 1))
    return "".join(f"*{t}\n" + "\n".join(lines) + "\nCOMMIT\n" for t, lines in tables.items())


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Options:
    """Proxier settings that change the text; the defaults are this emulator's node (iptables 1.8.9 has
    --random-fully; localhostNodePorts on; nf_conntrack_tcp_be_liberal=0; no nfacct counters)."""

    random_fully: bool = True  # ipt.HasRandomFully()
    localhost_nodeports: bool = True  # --iptables-localhost-nodeports (IPv4, nodePortAddresses unset)
    conntrack_tcp_be_liberal: bool = False  # sysctl nf_conntrack_tcp_be_liberal != 0 -> no INVALID drop
    nfacct: bool = False  # both nfacct counters exist (adds -m nfacct matches, as in upstream's fake proxier)
    large_cluster_threshold: int = LARGE_CLUSTER_ENDPOINTS_THRESHOLD
