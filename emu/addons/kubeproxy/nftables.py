"""kube-proxy's nftables proxier as text: the `nft -f` input of one full-sync transaction.  This module holds its
names, base chains and the transaction's text form; `nftables_sync` builds the sync itself.

Re-implements what `pkg/proxy/nftables/proxier.go` (setupNFTables, syncProxyRules, writeServiceToEndpointRules)
queues into its knftables transaction, rendered the way `sigs.k8s.io/knftables` writes a transaction for
`nft -f -` (one command a line, objects in queue order).  The target is the layout that
`pkg/proxy/nftables/proxier_test.go` (`baseRules`, TestOverallNFTablesRules) expects after
kubernetes/kubernetes#132456 (filter-*-pre-dnat chains at dstnat-10, the other filter chains at priority 0) and
#131492 (the ClusterIP masquerade rule matches only `ip daddr` and `ip saddr`), before #135800 inlined
mark-for-masquerade.

Pure: no subprocess, no kernel access.  The caller loads the text with `nft -f -` in a node's namespace.

Where this differs from a running kube-proxy (each is documented at its function):

* every call is a *full* sync; the six element containers are flushed and refilled (kube-proxy's
  `nftElementStorage.readOrReset` takes that path when it cannot list them; the resulting ruleset is the same);
* stale per-service chains are flushed *and deleted in the same transaction* (kube-proxy flushes them and
  deletes them >= 1 s later in a separate transaction, because kernels before 6.2 notice only asynchronously
  that a chain is no longer referenced from a map element).  `defer_stale_deletion=True` restores upstream's
  two-step behaviour, with `delete_chains_text()` as the second transaction;
* services are written in the order of `NodeProxyState.services` (kube-proxy iterates a Go map), endpoints in
  the order `categorize` returns them;
* IPv4 only (table `ip kube-proxy`); the model has no IPv6 services.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from emu.addons.kubeproxy.model import Endpoint, ServicePort

LAYER = "plan"

TABLE = "kube-proxy"
FAMILY = "ip"
TABLE_COMMENT = "rules for kube-proxy"

# knftables.NameLengthMax, and the proxier's chainNamePrefixLengthMax / chainNameBaseLengthMax.
NAME_LENGTH_MAX = 256
CHAIN_NAME_PREFIX_LENGTH_MAX = 16
CHAIN_NAME_BASE_LENGTH_MAX = NAME_LENGTH_MAX - CHAIN_NAME_PREFIX_LENGTH_MAX

# Fixed chains, sets and maps (the proxier's constants).
SERVICES_CHAIN = "services"
SERVICE_IPS_MAP = "service-ips"
SERVICE_NODEPORTS_MAP = "service-nodeports"
NODEPORT_IPS_SET = "nodeport-ips"
CLUSTER_IPS_SET = "cluster-ips"
SERVICE_ENDPOINTS_CHECK_CHAIN = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK_CHAIN = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES_MAP = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS_MAP = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK_CHAIN = "cluster-ips-check"
FIREWALL_IPS_MAP = "firewall-ips"
FIREWALL_CHECK_CHAIN = "firewall-check"
MARK_MASQ_CHAIN = "mark-for-masquerade"
MASQUERADING_CHAIN = "masquerading"

# Per-service-port name prefixes.
SERVICE_PREFIX = "service-"
LOCAL_PREFIX = "local-"
EXTERNAL_PREFIX = "external-"
ENDPOINT_PREFIX = "endpoint-"
AFFINITY_PREFIX = "affinity-"
FIREWALL_PREFIX = "firewall-"



@dataclass(frozen=True, slots=True)
class BaseChain:
    """A chain hooked into netfilter; `priority` is numeric, as knftables writes it (ParsePriority)."""

    name: str
    type: str
    hook: str
    priority: int


# nftablesBaseChains: filter chains that must see pre-DNAT addresses run at dstnat-10 (-110), the others at
# filter (0); nat chains at dstnat (-100) and srcnat (100).
BASE_CHAINS: tuple[BaseChain, ...] = (
    BaseChain("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    BaseChain("filter-output-pre-dnat", "filter", "output", -110),
    BaseChain("filter-input", "filter", "input", 0),
    BaseChain("filter-forward", "filter", "forward", 0),
    BaseChain("filter-output", "filter", "output", 0),
    BaseChain("nat-prerouting", "nat", "prerouting", -100),
    BaseChain("nat-output", "nat", "output", -100),
    BaseChain("nat-postrouting", "nat", "postrouting", 100),
)

# nftablesJumpChains: (destination, source base chain, extra match).
JUMP_CHAINS: tuple[tuple[str, str, str], ...] = (
    (NODEPORT_ENDPOINTS_CHECK_CHAIN, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK_CHAIN, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK_CHAIN, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK_CHAIN, "filter-output", "ct state new"),
    (FIREWALL_CHECK_CHAIN, "filter-prerouting-pre-dnat", "ct state new"),
    (FIREWALL_CHECK_CHAIN, "filter-output-pre-dnat", "ct state new"),
    (SERVICES_CHAIN, "nat-output", ""),
    (SERVICES_CHAIN, "nat-prerouting", ""),
    (MASQUERADING_CHAIN, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK_CHAIN, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK_CHAIN, "filter-output", "ct state new"),
)


# --------------------------------------------------------------------------------------------- naming

def hash_and_truncate(name: str) -> str:
    """hashAndTruncate: prefix `name` with the first 8 characters of base32(sha256(name)) and a hyphen, then cut
    the result to 240 characters (CHAIN_NAME_BASE_LENGTH_MAX), ending in "..." when cut."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    out = f"{digest[:8]}-{name}"
    if len(out) > CHAIN_NAME_BASE_LENGTH_MAX:
        out = out[: CHAIN_NAME_BASE_LENGTH_MAX - 3] + "..."
    return out


def chain_name_base(svc: ServicePort) -> str:
    """servicePortChainNameBase: "HASH-ns/svc/proto/portname".  An unnamed port keeps its empty last part, so the
    name ends in "/" (Go's "%s/%s/%s/%s" with Port == "")."""
    return hash_and_truncate(f"{svc.namespace}/{svc.name}/{svc.proto}/{svc.port_name}")


def endpoint_chain_name_base(svc: ServicePort, ep: Endpoint) -> str:
    """servicePortEndpointChainNameBase: "HASH-ns/svc/proto/portname__IP/port" (an IPv6 IP has ":" -> ".")."""
    ip = str(ep.ip).replace(":", ".")
    return hash_and_truncate(f"{svc.namespace}/{svc.name}/{svc.proto}/{svc.port_name}__{ip}/{ep.port}")


def service_chain(svc: ServicePort) -> str:
    """The Cluster-policy chain: all usable endpoints (clusterPolicyChainName)."""
    return SERVICE_PREFIX + chain_name_base(svc)


def local_chain(svc: ServicePort) -> str:
    """The Local-policy chain: this node's endpoints only (localPolicyChainName)."""
    return LOCAL_PREFIX + chain_name_base(svc)


def external_chain(svc: ServicePort) -> str:
    """Where NodePort, externalIP and LoadBalancer traffic goes first (externalChainName)."""
    return EXTERNAL_PREFIX + chain_name_base(svc)


def firewall_chain(svc: ServicePort) -> str:
    """LoadBalancerSourceRanges enforcement, reached from @firewall-ips (firewallChainName)."""
    return FIREWALL_PREFIX + chain_name_base(svc)


def endpoint_chain(svc: ServicePort, ep: Endpoint) -> str:
    """The per-endpoint DNAT chain (endpointInfo.chainName)."""
    return ENDPOINT_PREFIX + endpoint_chain_name_base(svc, ep)


def affinity_set(svc: ServicePort, ep: Endpoint) -> str:
    """The per-endpoint ClientIP affinity set (endpointInfo.affinitySetName)."""
    return AFFINITY_PREFIX + endpoint_chain_name_base(svc, ep)


def is_service_chain_name(name: str) -> bool:
    """isServiceChainName: only per-service/endpoint chains contain "/"."""
    return "/" in name


def is_affinity_set_name(name: str) -> bool:
    """isAffinitySetName."""
    return name.startswith(AFFINITY_PREFIX)


# ---------------------------------------------------------------------------------- the transaction

def _q(text: str) -> str:
    """Go's %q for the plain ASCII comments kube-proxy writes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Transaction:
    """Collects operations and renders them as knftables' Transaction.String() does (table `ip kube-proxy`)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._where = f"{FAMILY} {TABLE}"

    def _op(self, text: str) -> None:
        self.lines.append(text)

    def add_table(self, comment: str | None = None) -> None:
        self._op(f"add table {self._where}" + (f" {{ comment {_q(comment)} ; }}" if comment else ""))

    def delete_table(self) -> None:
        self._op(f"delete table {self._where}")

    def add_chain(self, name: str, base: BaseChain | None = None, comment: str | None = None) -> None:
        spec = ""
        if base is not None:
            spec += f" type {base.type} hook {base.hook} priority {base.priority} ;"
        if comment is not None:
            spec += f" comment {_q(comment)} ;"
        self._op(f"add chain {self._where} {name}" + (f" {{{spec} }}" if spec else ""))

    def flush_chain(self, name: str) -> None:
        self._op(f"flush chain {self._where} {name}")

    def delete_chain(self, name: str) -> None:
        self._op(f"delete chain {self._where} {name}")

    def add_rule(self, chain: str, rule: str, comment: str | None = None) -> None:
        self._op(f"add rule {self._where} {chain} {rule}" + (f" comment {_q(comment)}" if comment else ""))

    def add_set(self, name: str, type_: str, *, flags: Iterable[str] = (), timeout: int | None = None,
                comment: str | None = None, kind: str = "set") -> None:
        spec = f" type {type_} ;"
        flags = list(flags)
        if flags:
            spec += f" flags {','.join(flags)} ;"
        if timeout is not None:
            spec += f" timeout {timeout}s ;"
        if comment is not None:
            spec += f" comment {_q(comment)} ;"
        self._op(f"add {kind} {self._where} {name} {{{spec} }}")

    def add_map(self, name: str, type_: str, comment: str | None = None) -> None:
        self.add_set(name, type_, comment=comment, kind="map")

    def flush_set(self, name: str, kind: str = "set") -> None:
        self._op(f"flush {kind} {self._where} {name}")

    def delete_set(self, name: str) -> None:
        self._op(f"delete set {self._where} {name}")

    def add_element(self, name: str, key: Iterable[str], value: Iterable[str] = (),
                    comment: str | None = None) -> None:
        text = f"add element {self._where} {name} {{ {' . '.join(key)}"
        if comment is not None:
            text += f" comment {_q(comment)}"
        value = list(value)
        if value:
            text += f" : {' . '.join(value)}"
        self._op(text + " }")

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


# ---------------------------------------------------------------------------- other transactions

def delete_chains_text(chains: Iterable[str]) -> str:
    """kube-proxy's separate stale-chain transaction: `delete chain` for chains flushed >= 1 s ago."""
    tx = Transaction()
    for name in chains:
        tx.delete_chain(name)
    return tx.text()


def cleanup_text() -> str:
    """CleanupLeftovers: remove the whole table; `add table` first so that a missing table is not an error."""
    tx = Transaction()
    tx.add_table()
    tx.delete_table()
    return tx.text()


def listed_names(listing: str) -> set[str]:
    """Chain and set names in `nft list table ip kube-proxy` output (to rebuild `existing_chains` from the
    kernel); names nft prints quoted are unquoted."""
    names: set[str] = set()
    for line in listing.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in ("chain", "set") and words[-1] == "{":
            names.add(words[1].strip('"'))
    return names


__all__ = [
    "TABLE", "FAMILY", "BASE_CHAINS", "JUMP_CHAINS", "BaseChain", "Transaction", "hash_and_truncate",
    "chain_name_base", "endpoint_chain_name_base", "service_chain", "local_chain", "external_chain", "firewall_chain",
    "endpoint_chain", "affinity_set", "is_service_chain_name", "is_affinity_set_name", "delete_chains_text",
    "cleanup_text", "listed_names",
]
