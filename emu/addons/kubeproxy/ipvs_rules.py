"""kube-proxy's IPVS proxier, its iptables part: createAndLinkKubeChain's jump rules and writeIptablesRules'
`iptables-restore` input (`pkg/proxy/ipvs/proxier.go`), which match the proxier's ipsets rather than list each
service.  Pure: no subprocess, no kernel access."""
from __future__ import annotations

from dataclasses import dataclass

from emu.addons.kubeproxy.ipvs_names import (CHAINS, CLUSTER_IP, EXTERNAL_IP, EXTERNAL_IP_LOCAL, HEALTH_CHECK_NODE_PORT,
    IPSET_COMMENTS, IPSET_JUMPS, IPVS_IPS, JUMPS, KUBE_FORWARD, KUBE_IPVS_FILTER, KUBE_IPVS_OUT_FILTER,
    KUBE_LOAD_BALANCER, KUBE_MARK_MASQ, KUBE_NODE_PORT, KUBE_POSTROUTING, KUBE_SERVICES, KUBE_SOURCE_RANGES_FIREWALL,
    LOAD_BALANCER, LOCALNET, Options)

LAYER = "plan"


def first_sync_jumps() -> str:
    """createAndLinkKubeChain for a namespace that has none of them yet: every chain of CHAINS declared, then each
    jump of JUMPS as `-I BUILTIN 1`, in upstream order -- the same rules in the same order as its
    `iptables -C || iptables -I` calls leave."""
    out = []
    for table in ("nat", "filter"):
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for t, chain in CHAINS if t == table]
        out += [f'-I {builtin} 1 -m comment --comment "{comment}" -j {target}'
                for t, builtin, target, comment in JUMPS if t == table]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class Text:
    """What writeIptablesRules reads: the settings, the local traffic detector, the sets' entries (a rule that
    matches a set is written only when the set has entries) and the LoadBalancer IPs the node may not reach."""

    opts: Options
    local_cidr: str | None
    masquerade_all: bool
    sets: dict[str, tuple[str, ...]]
    lb_no_node_access: tuple[tuple[str, str, int], ...]

    def empty(self, name: str) -> bool:
        return not self.sets[name]


def _comment(name: str) -> str:
    """IPSet.getComment(): the set's comment, always double-quoted."""
    return f'"{IPSET_COMMENTS[name]}"'


def _ipset_jump_rules(t: Text, nat: list[str], flt: list[str]) -> None:
    for name, table, src, to, match, proto in IPSET_JUMPS:
        if t.empty(name):
            continue
        words = ["-A", src, *(["-p", proto] if proto else []), "-m", "comment", "--comment", _comment(name),
                 "-m", "set", "--match-set", name, match, "-j", to]
        (flt if table == "filter" else nat).append(" ".join(words))


def _cluster_ip_masquerade(t: Text, nat: list[str]) -> None:
    if t.empty(CLUSTER_IP):
        return
    head = f"-A {KUBE_SERVICES} -m comment --comment {_comment(CLUSTER_IP)} -m set --match-set {CLUSTER_IP}"
    if t.masquerade_all:
        nat.append(f"{head} dst,dst -j {KUBE_MARK_MASQ}")
    elif t.local_cidr:  # LocalTrafficDetector.IfNotLocal(): off-cluster traffic to a service VIP
        nat.append(f"{head} dst,dst ! -s {t.local_cidr} -j {KUBE_MARK_MASQ}")
    else:  # no detector: masquerade node-originated traffic whose source is a VIP
        nat.append(f"{head} src,dst -j {KUBE_MARK_MASQ}")


def _external_ip_rules(t: Text, nat: list[str]) -> None:
    """Masquerade for external IPs, and ACCEPT traffic to them from off-machine or to a local address."""
    for name, masquerade in ((EXTERNAL_IP, True), (EXTERNAL_IP_LOCAL, False)):
        if t.empty(name):
            continue
        head = f"-A {KUBE_SERVICES} -m comment --comment {_comment(name)} -m set --match-set {name} dst,dst"
        if masquerade:
            nat.append(f"{head} -j {KUBE_MARK_MASQ}")
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")


def _accept_ipvs_traffic(t: Text, nat: list[str]) -> None:
    """acceptIPVSTraffic: must be at the end of KUBE-SERVICES."""
    for name in (CLUSTER_IP, LOAD_BALANCER):
        if not t.empty(name):
            nat.append(f"-A {KUBE_SERVICES} -m set --match-set {name} dst,dst -j ACCEPT")


def _ipvs_filter_rules(flt: list[str]) -> None:
    """KUBE-IPVS-FILTER: no new connections to ports on the host through a VIP (kubernetes#72236)."""
    for name, match in ((LOAD_BALANCER, "dst,dst"), (CLUSTER_IP, "dst,dst"), (EXTERNAL_IP, "dst,dst"),
                        (EXTERNAL_IP_LOCAL, "dst,dst"), (HEALTH_CHECK_NODE_PORT, "dst")):
        flt.append(f"-A {KUBE_IPVS_FILTER} -m set --match-set {name} {match} -j RETURN")
    flt.append(f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set {IPVS_IPS} dst -j REJECT")


def _masquerade_rules(t: Text, nat: list[str]) -> None:
    """KUBE-POSTROUTING and KUBE-MARK-MASQ, the same rules as iptables mode."""
    mark = t.opts.masquerade_mark
    nat.append(f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN")
    nat.append(f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}")
    nat.append(f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
               + (" --random-fully" if t.opts.random_fully else ""))
    nat.append(f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}")


def _forward_rules(t: Text, flt: list[str]) -> None:
    mark = t.opts.masquerade_mark
    flt.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" '
               f"-m mark --mark {mark}/{mark} -j ACCEPT")
    flt.append(f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
               "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")


def iptables_text(t: Text) -> str:
    """writeIptablesRules after createAndLinkKubeChain, concatenated as syncProxyRules does: natChains, natRules,
    filterChains, filterRules."""
    nat: list[str] = [f"-A {KUBE_SERVICES} -s {LOCALNET} -j RETURN"]  # dismiss connects to localhost early
    flt: list[str] = []
    _ipset_jump_rules(t, nat, flt)
    _cluster_ip_masquerade(t, nat)
    _external_ip_rules(t, nat)
    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    flt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for ip, proto, port in t.lb_no_node_access:  # for IPVS the source and destination are both the LB IP
        flt.append(f"-A {KUBE_IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP")
    _accept_ipvs_traffic(t, nat)
    _forward_rules(t, flt)
    flt.append(f"-A {KUBE_NODE_PORT} -m comment --comment {_comment(HEALTH_CHECK_NODE_PORT)} "
               f"-m set --match-set {HEALTH_CHECK_NODE_PORT} dst -j ACCEPT")
    _ipvs_filter_rules(flt)
    _masquerade_rules(t, nat)
    lines = ["*nat", *(f":{c} - [0:0]" for tb, c in CHAINS if tb == "nat"), *nat, "COMMIT",
             "*filter", *(f":{c} - [0:0]" for tb, c in CHAINS if tb == "filter"), *flt, "COMMIT"]
    return "\n".join(lines) + "\n"
