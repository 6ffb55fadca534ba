"""One node's NetworkPolicy dataplane as data: the ipsets and the filter-table chains kube-router's iptables network
policy controller writes (cloudnativelabs/kube-router pkg/controllers/netpol, npc_iptables.go, pod.go, policy.go).

Layout (per node):

* INPUT, FORWARD and OUTPUT jump first (`-I ... 1`) to KUBE-ROUTER-INPUT / -FORWARD / -OUTPUT, comment
  "kube-router netpol - <uuid>".  KUBE-ROUTER-INPUT starts with kube-router's RETURNs for the Service CIDR, the
  NodePort range and the load-balancer range.
* Every local pod gets KUBE-POD-FW-<hash>, jumped to for traffic to it (`-d IP` in FORWARD and OUTPUT, and
  `-m physdev --physdev-is-bridged -d IP` in FORWARD: same-node traffic crosses cni0 as bridged traffic, which
  br_netfilter hands to FORWARD) and from it (`-s IP` in all three, and the bridged form).  The chain runs
  KUBE-NWPLCY-COMMON (INVALID dropped, RELATED,ESTABLISHED accepted: stateful, so replies and connections that
  existed before a policy keep flowing, ICMP echo/unreachable/time-exceeded accepted), accepts traffic from the
  node itself (addrtype LOCAL), then jumps to each policy that selects the pod, or to KUBE-NWPLCY-DEFAULT (which
  just marks) for a direction no policy selects it in.
* A policy chain KUBE-NWPLCY-<hash> marks 0x10000 and RETURNs for every packet a rule allows, matching peers and
  the policy's pods with ipsets: KUBE-DST-<hash> / KUBE-SRC-<hash> (hash:ip) for pods, hash:net with `nomatch`
  entries for an ipBlock and its excepts.
* Back in the pod chain: NFLOG (group 100) and REJECT whatever is not marked ("<ns>/<pod> reject": the rule a
  trace names), clear 0x10000, set 0x20000; the top-level chain ends with KUBE-NWPLCY-TAIL and an explicit ACCEPT
  of 0x20000.

Where emu differs from kube-router, on purpose:

* kube-router keeps both directions of a policy in one chain and jumps to it without a direction match when the
  policy has both types; a packet between two pods the policy selects can then be allowed in one pod's chain by
  a rule of the other direction.  emu writes the egress half of such a policy to a chain of its own and always
  jumps with `-d IP` (ingress) or `-s IP` (egress).
* A rule whose ports are all names that resolve to nothing matches no port (kube-router then writes the rule
  without a port match, allowing every port).
* An egress rule's named port is a set of every pod naming it, matched together with the rule's peer set (kube-
  router resolves names over the peers' pods and replaces the peer set with it, so a rule without peers matches
  any destination on the number and an ipBlock rule drops the name).
* Rules are regenerated whole on every sync (like kube-router's full sync), but only while the cluster has a
  NetworkPolicy: without one, no chain, jump or ipset is installed (see sync.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from emu.addons.netpol import names
from emu.addons.netpol.model import Direction
from emu.addons.netpol.resolve import LocalPod, NodeInput, PolicyInfo, RuleInfo

LAYER = "plan"

MARK_MATCHED = "0x10000/0x10000"  # a policy (or the default chain) allowed the packet
MARK_OK = "0x20000/0x20000"  # the packet passed a pod's firewall chain
MAX_COMMENT = 120  # kube-router's clampComment (nftables rejects comments over 128 bytes)
NFLOG = "-j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10"
ICMP_ACCEPTS = (("echo-request", "allow icmp echo requests"),
                ("destination-unreachable", "allow icmp destination unreachable messages"),
                ("time-exceeded", "allow icmp time exceeded messages"))
HASH_IP, HASH_NET = "hash:ip", "hash:net"


@dataclass(frozen=True, slots=True)
class IPSet:
    name: str
    kind: str  # hash:ip | hash:net
    entries: tuple[str, ...]  # "10.244.0.2" or "10.0.0.0/8" or "10.0.1.0/24 nomatch"

    @property
    def options(self) -> str:
        return f"{self.kind} timeout 0"


@dataclass
class NodeRules:
    """A node's generated state.  `rules` are iptables-restore lines for the filter table in order; `jumps` the
    built-in chains' jump rules (written only where missing); `index` says what each chain and set is for."""

    node: str
    version: str
    chains: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    jumps: list[str] = field(default_factory=list)
    ipsets: dict[str, IPSet] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)

    def chain(self, name: str, what: str) -> str:
        if name not in self.chains:
            self.chains.append(name)
            self.index[name] = what
        return name

    def add(self, chain: str, *parts: str) -> None:
        self.rules.append(" ".join(["-A", chain, *[p for p in parts if p]]))

    def ipset(self, name: str, kind: str, entries: tuple[str, ...], what: str) -> str:
        self.ipsets[name] = IPSet(name, kind, entries)
        self.index[name] = what
        return name


def comment(text: str) -> str:
    """`-m comment --comment "..."`, clamped and stripped of quotes and control characters."""
    clean = "".join(ch for ch in text if ch.isprintable() and ch != '"')[:MAX_COMMENT]
    return f'-m comment --comment "{clean}"'


def generate(inp: NodeInput, version: str) -> NodeRules:
    """The whole filter-table state and ipsets for one node (kube-router's fullPolicySync, as data)."""
    out = NodeRules(inp.node, version)
    for name in names.FIXED_CHAINS:
        out.chain(name, "kube-router " + name)
    _jumps(out)
    _input_whitelist(out, inp)
    _fixed_chains(out)
    for pol in inp.policies:
        _policy(out, pol, version)
    for pod in inp.pods:
        _pod(out, pod, inp.policies, version)
    for _builtin, chain in names.TOP_LEVEL:
        out.add(chain, comment("rule to explicitly handle traffic for network policies ACCEPT/REJECT decision"),
                f"-j {names.TAIL}")
        out.add(chain, comment("rule to explicitly ACCEPT traffic that comply to network policies"),
                f"-m mark --mark {MARK_OK}", "-j ACCEPT")
    return out


def _uuid_comment(chain: str, text: str, spec_rest: list[str]) -> str:
    """A comment carrying ensureTopLevelChains' rule uuid: "<text> - <uuid>"."""
    uuid = names.rule_uuid(chain, ["-m", "comment", "--comment", text, *spec_rest])
    return comment(f"{text} - {uuid}")


def _jumps(out: NodeRules) -> None:
    for builtin, chain in names.TOP_LEVEL:
        c = _uuid_comment(builtin, "kube-router netpol", ["-j", chain])
        out.jumps.append(f"-I {builtin} 1 {c} -j {chain}")


def _input_whitelist(out: NodeRules, inp: NodeInput) -> None:
    """ensureTopLevelChains' RETURNs at the head of KUBE-ROUTER-INPUT: ClusterIPs, NodePorts and LB addresses are
    the service proxy's business, not the policy controller's."""
    text = "allow traffic to primary/secondary cluster IP range"
    spec = ["-d", inp.service_cidr, "-j", "RETURN"]
    out.add(names.INPUT, _uuid_comment(names.INPUT, text, spec), *spec)
    for proto in ("tcp", "udp", "sctp"):
        text = f"allow LOCAL {proto.upper()} traffic to node ports"
        rest = ["-m", "addrtype", "--dst-type", "LOCAL", "-m", "multiport", "--dports", inp.node_port_range,
                "-j", "RETURN"]
        uuid = names.rule_uuid(names.INPUT, ["-p", proto, "-m", "comment", "--comment", text, *rest])
        out.add(names.INPUT, f"-p {proto}", comment(f"{text} - {uuid}"), *rest)
    for lb in inp.lb_ranges:
        text = f"allow traffic to load balancer IP range: {lb}"
        spec = ["-d", lb, "-j", "RETURN"]
        out.add(names.INPUT, _uuid_comment(names.INPUT, text, spec), *spec)


def _fixed_chains(out: NodeRules) -> None:
    """KUBE-NWPLCY-DEFAULT (mark), KUBE-NWPLCY-COMMON (state, ICMP) and KUBE-NWPLCY-TAIL (accept marked)."""
    out.add(names.DEFAULT, "-j MARK", comment("rule to mark traffic matching a network policy"),
            f"--set-xmark {MARK_MATCHED}")
    # The NAT engine ignores INVALID packets, so they must not leak (netfilter bugzilla 693).
    out.add(names.COMMON, comment("rule to drop invalid state for pod"), "-m conntrack --ctstate INVALID", "-j DROP")
    # Stateful: replies, and every connection that existed before a policy started denying it, flow on.
    out.add(names.COMMON, comment("rule for stateful firewall for pod"),
            "-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT")
    for icmp_type, text in ICMP_ACCEPTS:
        out.add(names.COMMON, comment(text), f"-p icmp --icmp-type {icmp_type}", "-j ACCEPT")
    out.add(names.TAIL, comment("accept netpol-ok"), f"-m mark --mark {MARK_OK}", "-j ACCEPT")


# --- policies --------------------------------------------------------------------------------------------------------


def policy_chain_name(pol: PolicyInfo, direction: Direction, version: str) -> str:
    split = Direction.INGRESS in pol.directions and Direction.EGRESS in pol.directions
    return names.policy_chain(pol.namespace, pol.name, version, direction, split)


def _policy(out: NodeRules, pol: PolicyInfo, version: str) -> None:
    """syncNetworkPolicyChains for one policy: a target set and a chain per direction it isolates."""
    for d in (Direction.INGRESS, Direction.EGRESS):
        if d not in pol.directions:
            continue
        chain = out.chain(policy_chain_name(pol, d, version), f"policy {pol.key} {d.lower}")
        targets = out.ipset(names.target_set(pol.namespace, pol.name, d), HASH_IP, pol.target_ips,
                            f"pods selected by {pol.key} ({d.lower})")
        for rule in pol.rules(d):
            _rule(out, pol, d, chain, targets, rule)


def _rule(out: NodeRules, pol: PolicyInfo, d: Direction, chain: str, targets: str, rule: RuleInfo) -> None:
    """processIngressRules / processEgressRules for one rule: a MARK/RETURN pair per kind of peer (pods, every
    peer, ipBlock) and port.  Ingress: the peer is the source, the policy's pods (or those naming the port) the
    destination.  Egress: the policy's pods are the source, the peer the destination, and a named port adds the
    set of pods naming it."""
    ing = d is Direction.INGRESS
    tag = d.lower
    named = [(np, out.ipset(names.named_port_set(pol.namespace, pol.name, d, rule.index, j), HASH_IP, np.ips,
                            f"pods naming port {np.name} ({np.protocol}/{np.port}) for {pol.key} {tag}[{rule.index}]"))
             for j, np in enumerate(rule.named_ports)]
    peers: list[tuple[str, str]] = []
    if rule.has_pod_peers:
        peers.append(("pods", out.ipset(names.peer_set(pol.namespace, pol.name, d, rule.index, "pod"), HASH_IP,
                                        rule.peer_ips, f"pod peers of {pol.key} {tag}[{rule.index}]")))
    if rule.match_all_peers:
        peers.append(("any", ""))
    if rule.ip_blocks:
        peers.append(("cidr", out.ipset(names.peer_set(pol.namespace, pol.name, d, rule.index, "ipblock"), HASH_NET,
                                        rule.ip_blocks, f"ipBlock peers of {pol.key} {tag}[{rule.index}]")))
    for kind, peer in peers:
        text = f"{pol.key} {tag} {kind}"
        if rule.match_all_ports:
            _append(out, chain, text, *_ends(ing, targets, peer, ""), None)
            continue
        for p in rule.ports:
            _append(out, chain, text, *_ends(ing, targets, peer, ""), (p.protocol, p.port, p.end_port))
        for np, npset in named:
            _append(out, chain, text + " np", *_ends(ing, targets, peer, npset), (np.protocol, np.port, None))


def _ends(ingress: bool, targets: str, peer: str, named: str) -> tuple[list[str], list[str]]:
    """(source sets, destination sets) of one rule line."""
    if ingress:
        return [peer] if peer else [], [named or targets]
    return [targets], [s for s in (peer, named) if s]


def _append(out: NodeRules, chain: str, text: str, src: list[str], dst: list[str],
            port: tuple[str, int | None, int | None] | None) -> None:
    """appendRuleToPolicyChain: a MARK rule and a RETURN-if-marked rule with the same match."""
    match = [comment(text)]
    match += [f"-m set --match-set {s} src" for s in src]
    match += [f"-m set --match-set {s} dst" for s in dst]
    if port is not None:
        proto, number, end = port
        match.append(f"-p {proto}")
        if number is not None:
            match.append(f"--dport {number}:{end}" if end is not None else f"--dport {number}")
    out.add(chain, *match, f"-j MARK --set-xmark {MARK_MATCHED}")
    out.add(chain, *match, f"-m mark --mark {MARK_MATCHED}", "-j RETURN")


# --- pods ------------------------------------------------------------------------------------------------------------


def _pod(out: NodeRules, pod: LocalPod, policies: tuple[PolicyInfo, ...], version: str) -> None:
    """syncPodFirewallChains for one local pod: its chain, then the jumps into it."""
    chain = out.chain(names.pod_chain(pod.namespace, pod.name, version), f"pod {pod.key}")
    selecting = [(p, d) for p in policies if pod.ip in p.target_ips for d in (Direction.INGRESS, Direction.EGRESS)
                 if d in p.directions]
    # setupPodNetpolRules inserts each of these at position 1, so they end up in the reverse of this order.
    head = [f"-A {chain} -d {pod.ip} {comment(f'{p.namespace}/{p.name} policy')} -j {policy_chain_name(p, d, version)}"
            if d is Direction.INGRESS else
            f"-A {chain} -s {pod.ip} {comment(f'{p.namespace}/{p.name} policy')} -j {policy_chain_name(p, d, version)}"
            for p, d in selecting]
    if not any(d is Direction.INGRESS for _, d in selecting):
        head.append(f"-A {chain} -d {pod.ip} {comment('default ingress')} -j {names.DEFAULT}")
    if not any(d is Direction.EGRESS for _, d in selecting):
        head.append(f"-A {chain} -s {pod.ip} {comment('default egress')} -j {names.DEFAULT}")
    head.append(f"-A {chain} {comment('from local node')} -m addrtype --src-type LOCAL -d {pod.ip} -j ACCEPT")
    head.append(f"-A {chain} {comment('common netpol rules')} -j {names.COMMON}")
    out.rules.extend(reversed(head))
    not_marked = f"-m mark ! --mark {MARK_MATCHED}"
    out.add(chain, comment(f"{pod.key} log-drop"), not_marked, NFLOG)
    out.add(chain, comment(f"{pod.key} reject"), not_marked, "-j REJECT")
    out.add(chain, "-j MARK --set-mark 0/0x10000")
    out.add(chain, comment("set netpol-ok mark"), f"-j MARK --set-mark {MARK_OK}")
    _intercept(out, pod, chain)


def _intercept(out: NodeRules, pod: LocalPod, chain: str) -> None:
    """interceptPodInboundTraffic and interceptPodOutboundTraffic: routed traffic (FORWARD), the node's own
    (OUTPUT for inbound, INPUT for outbound), and bridged traffic between pods of this node (physdev)."""
    into, out_of = comment(f"{pod.key} in"), comment(f"{pod.key} out")
    out.add(names.FORWARD, into, f"-d {pod.ip}", f"-j {chain}")
    out.add(names.OUTPUT, into, f"-d {pod.ip}", f"-j {chain}")
    out.add(names.FORWARD, "-m physdev --physdev-is-bridged", into, f"-d {pod.ip}", f"-j {chain}")
    for _builtin, top in names.TOP_LEVEL:
        out.add(top, out_of, f"-s {pod.ip}", f"-j {chain}")
    out.add(names.FORWARD, "-m physdev --physdev-is-bridged", out_of, f"-s {pod.ip}", f"-j {chain}")
