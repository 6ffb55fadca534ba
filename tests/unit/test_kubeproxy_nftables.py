"""kube-proxy nftables mode as text, checked against upstream's expectations (no root needed).

The golden expectations are quoted from kubernetes/kubernetes pkg/proxy/nftables/proxier_test.go (`baseRules`,
TestOverallNFTablesRules, TestSyncProxyRulesRepeated), which list the ruleset the way knftables.Fake.Dump()
prints it, at kubernetes/kubernetes commit 81810de635aa13aa0a32992f6def3aa9d6025ebc: BASE_RULES and OVERALL_EXPECTED
were compared with that version line by line and are equal (TestSyncProxyRulesRepeated's texts were restated from the
same file, not re-read).  Newer versions differ: at aroradaman/kubernetes@4177b600d4b97a67b765a18ddeeb295ef757b212
(1.32 development line) the filter chains are filter-prerouting / filter-input / filter-forward / filter-output at
priority -110 plus filter-output-post-dnat at -90 (instead of filter-prerouting-pre-dnat / filter-output-pre-dnat at
-110 and the others at 0), baseRules lists chains before sets, and each service chain's masquerade rule also matches
`tcp dport 80`.  emu reproduces the 81810de6 version.  Our output is a transaction (add, flush, delete in queue
order), so both sides are replayed through
`Replay`, a small stand-in for knftables.Fake that also refuses what the kernel refuses (rules in missing
chains, references to missing chains/sets, deleting a chain or set something still points at), and the
resulting rulesets are compared: chains and their specs, rules per chain in order, sets/maps, elements.
"""
from __future__ import annotations

import dataclasses
import re
import textwrap
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest

from emu.addons.kubeproxy import nftables as nft
from emu.addons.kubeproxy import nftables_sync as nft_sync
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort

NODE = "test-node"
PREFIX = "ip kube-proxy"


# ------------------------------------------------------------------------------------------- replay

class ReplayError(AssertionError):
    pass


class Replay:
    """Applies `nft -f` lines for table ip kube-proxy to an in-memory ruleset."""

    _line = re.compile(r"^(add|flush|delete) (table|chain|rule|set|map|element) ip kube-proxy ?(.*)$")

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict  # False for upstream's Dump() text, which lists references before their targets
        self.table = False
        self.chains: dict[str, str | None] = {}
        self.rules: dict[str, list[str]] = {}
        self.sets: dict[str, tuple[str, str]] = {}
        self.elements: dict[str, set[str]] = {}

    def apply(self, text: str) -> Replay:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            m = self._line.match(line)
            if not m:
                raise ReplayError(f"unparsable: {line}")
            verb, kind, rest = m.groups()
            getattr(self, f"_{verb}_{kind}")(rest)
        return self

    # tables
    def _add_table(self, rest: str) -> None:
        self.table = True

    def _delete_table(self, rest: str) -> None:
        if not self.table:
            raise ReplayError("delete of missing table")
        self.__init__(self.strict)

    # chains
    def _add_chain(self, rest: str) -> None:
        name, _, spec = rest.partition(" ")
        spec = spec.strip("{} ") or None
        if name in self.chains:
            if spec and self.chains[name] and spec != self.chains[name]:
                raise ReplayError(f"chain {name}: cannot change {self.chains[name]!r} to {spec!r}")
            self.chains[name] = spec or self.chains[name]
            return
        self.chains[name] = spec
        self.rules[name] = []

    def _need_chain(self, name: str) -> None:
        if name not in self.chains:
            raise ReplayError(f"no such chain {name}")

    def _flush_chain(self, name: str) -> None:
        self._need_chain(name)
        self.rules[name] = []

    def _delete_chain(self, name: str) -> None:
        self._need_chain(name)
        if self.references(name):
            raise ReplayError(f"chain {name} is busy: {self.references(name)}")
        del self.chains[name], self.rules[name]

    # rules
    def _add_rule(self, rest: str) -> None:
        chain, _, rule = rest.partition(" ")
        self._need_chain(chain)
        if self.strict:
            for target in re.findall(r"(?:goto|jump) ([^ ]+?)(?: |$|,)", rule):
                self._need_chain(target.rstrip("}"))
            for s in re.findall(r"@([^ ]+)", rule):
                if s not in self.sets:
                    raise ReplayError(f"rule refers to missing set {s}")
        self.rules[chain].append(rule)

    # sets and maps
    def _add_set(self, rest: str, kind: str = "set") -> None:
        name, _, spec = rest.partition(" ")
        self.sets.setdefault(name, (kind, spec))
        self.elements.setdefault(name, set())

    def _add_map(self, rest: str) -> None:
        self._add_set(rest, "map")

    def _flush_set(self, name: str) -> None:
        if name not in self.sets:
            raise ReplayError(f"no such set {name}")
        self.elements[name] = set()

    _flush_map = _flush_set

    def _delete_set(self, name: str) -> None:
        if name not in self.sets:
            raise ReplayError(f"no such set {name}")
        users = [c for c, rules in self.rules.items() if any(f"@{name} " in r + " " for r in rules)]
        if users:
            raise ReplayError(f"set {name} is busy: {users}")
        del self.sets[name], self.elements[name]

    def _add_element(self, rest: str) -> None:
        name, _, body = rest.partition(" ")
        if name not in self.sets:
            raise ReplayError(f"no such set {name}")
        body = body.strip()[1:-1].strip()
        for target in re.findall(r"goto ([^ ]+)$", body) if self.strict else ():
            self._need_chain(target)
        self.elements[name].add(body)

    def references(self, chain: str) -> list[str]:
        pat = re.compile(rf"(?:goto|jump) {re.escape(chain)}(?: |$|,)")
        users = [c for c, rules in self.rules.items() if c != chain and any(pat.search(r) for r in rules)]
        users += [s for s, els in self.elements.items() if any(e.endswith(f"goto {chain}") for e in els)]
        return users

    def state(self) -> dict:
        return {
            "chains": dict(self.chains),
            "rules": {c: list(r) for c, r in self.rules.items()},
            "sets": dict(self.sets),
            "elements": {s: set(e) for s, e in self.elements.items()},
        }


def replay(*texts: str) -> dict:
    """Our transactions, strictly."""
    r = Replay()
    for t in texts:
        r.apply(t)
    return r.state()


def upstream(text: str) -> dict:
    """An expectation quoted from proxier_test.go (Dump() order)."""
    return Replay(strict=False).apply(text).state()


def assert_same_ruleset(got: dict, want: dict) -> None:
    assert got["chains"] == want["chains"]
    assert got["sets"] == want["sets"]
    for chain in want["rules"]:
        assert got["rules"][chain] == want["rules"][chain], chain
    assert got["rules"] == want["rules"]
    for name in want["elements"]:
        assert got["elements"][name] == want["elements"][name], name
    assert got == want


# ------------------------------------------------------------------------------- upstream fixtures

# proxier_test.go NewFakeProxier: pod CIDR 10.0.0.0/8, service CIDR 172.30.0.0/16, node IP 192.168.0.2,
# nodePortAddresses = the node IP.
def fake_state(services, masquerade_all: bool = False) -> NodeProxyState:
    return NodeProxyState(NODE, (A("192.168.0.2"),), N("10.0.0.0/8"), (N("172.30.0.0/16"),), tuple(services),
                          masquerade_all)


def sp(ns: str, name: str, cip: str, port_name: str = "p80", port: int = 80, proto: str = "TCP", **kw):
    return ServicePort(ns, name, port_name, proto, A(cip), port, **kw)


def ep(ip: str, port: int = 80, node: str | None = None, **kw) -> Endpoint:
    return Endpoint(A(ip), port, node=node, **kw)


# Source: kubernetes/kubernetes pkg/proxy/nftables/proxier_test.go `baseRules`, verbatim, at 81810de635aa.
BASE_RULES = textwrap.dedent("""\
    add table ip kube-proxy { comment "rules for kube-proxy" ; }

    add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
    add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }

    add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
    add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
    add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
    add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
    add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }

    add chain ip kube-proxy cluster-ips-check
    add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
    add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
    add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
    add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
    add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
    add chain ip kube-proxy firewall-check
    add chain ip kube-proxy mark-for-masquerade
    add chain ip kube-proxy masquerading
    add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
    add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
    add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
    add chain ip kube-proxy nodeport-endpoints-check
    add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
    add chain ip kube-proxy services
    add chain ip kube-proxy service-endpoints-check

    add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
    add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
    add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
    add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
    add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
    add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
    add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
    add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
    add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
    add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
    add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
    add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
    add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
    add rule ip kube-proxy masquerading mark set mark xor 0x4000
    add rule ip kube-proxy masquerading masquerade fully-random
    add rule ip kube-proxy nat-output jump services
    add rule ip kube-proxy nat-postrouting jump masquerading
    add rule ip kube-proxy nat-prerouting jump services
    add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
    add rule ip kube-proxy reject-chain reject
    add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
    add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports

    add element ip kube-proxy nodeport-ips { 192.168.0.2 }
    add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
    """)

# TestOverallNFTablesRules: the six services and their endpoint slices.
OVERALL_SERVICES = (
    (sp("ns1", "svc1", "172.30.0.41"), (ep("10.180.0.1"),)),
    (sp("ns2", "svc2", "172.30.0.42", node_port=3001, load_balancer_ips=(A("1.2.3.4"),),
        external_ips=(A("192.168.99.22"),), external_policy_local=True, health_check_node_port=30000),
     (ep("10.180.0.2"),)),  # no NodeName: not local, so eTP:Local has no local endpoints
    (sp("ns3", "svc3", "172.30.0.43", node_port=3003), (ep("10.180.0.3"),)),
    (sp("ns4", "svc4", "172.30.0.44", external_ips=(A("192.168.99.33"),)),
     (ep("10.180.0.4"), ep("10.180.0.5", node=NODE))),
    (sp("ns5", "svc5", "172.30.0.45", node_port=3002, load_balancer_ips=(A("5.6.7.8"),),
        load_balancer_source_ranges=(N("203.0.113.0/25"),), session_affinity=True, affinity_timeout=10800,
        health_check_node_port=30000),
     (ep("10.180.0.3"),)),
    (sp("ns6", "svc6", "172.30.0.46"), ()),
)

OVERALL_EXPECTED = textwrap.dedent("""\
    # svc1
    add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
    add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }

    add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
    add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

    add element ip kube-proxy cluster-ips { 172.30.0.41 }
    add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }

    # svc2
    add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
    add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
    add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
    add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
    add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
    add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
    add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
    add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80

    add element ip kube-proxy cluster-ips { 172.30.0.42 }
    add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
    add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
    add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
    add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }

    add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
    add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
    add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }

    # svc3
    add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
    add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
    add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
    add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
    add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
    add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

    add element ip kube-proxy cluster-ips { 172.30.0.43 }
    add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
    add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }

    # svc4
    add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
    add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
    add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
    add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
    add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
    add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
    add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
    add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
    add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80

    add element ip kube-proxy cluster-ips { 172.30.0.44 }
    add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
    add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }

    # svc5
    add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
    add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
    add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
    add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
    add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
    add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
    add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80

    add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
    add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
    add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

    add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
    add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

    add element ip kube-proxy cluster-ips { 172.30.0.45 }
    add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
    add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
    add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
    add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }

    # svc6
    add element ip kube-proxy cluster-ips { 172.30.0.46 }
    add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
    """)


def ruleset(services=(), masquerade_all: bool = False, **kw) -> dict:
    return replay(nft_sync.sync_text(fake_state(services, masquerade_all), **kw))


def rules_of(state: dict, chain: str) -> list[str]:
    return state["rules"][chain]


# ------------------------------------------------------------------------------------------- naming

def test_reference_chain_names():
    svc1 = sp("ns1", "svc1", "172.30.0.41")
    e = ep("10.180.0.1")
    assert nft.chain_name_base(svc1) == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert nft.service_chain(svc1) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert nft.local_chain(svc1) == "local-ULMVA6XW-ns1/svc1/tcp/p80"
    assert nft.external_chain(svc1) == "external-ULMVA6XW-ns1/svc1/tcp/p80"
    assert nft.firewall_chain(svc1) == "firewall-ULMVA6XW-ns1/svc1/tcp/p80"
    assert nft.endpoint_chain(svc1, e) == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    assert nft.affinity_set(svc1, e) == "affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"


@pytest.mark.parametrize("ns,name,port_name,port,expected", [
    ("ns2", "svc2", "p80", 80, "service-42NFTM6N-ns2/svc2/tcp/p80"),
    ("ns3", "svc3", "p80", 80, "service-4AT6LBPK-ns3/svc3/tcp/p80"),
    ("ns4", "svc4", "p80", 80, "service-LAUZTJTB-ns4/svc4/tcp/p80"),
    ("ns5", "svc5", "p80", 80, "service-HVFWP5L3-ns5/svc5/tcp/p80"),
    ("ns2", "svc2", "p8080", 8080, "service-MHHHYRWA-ns2/svc2/tcp/p8080"),
])
def test_service_chain_hashes_from_proxier_test(ns, name, port_name, port, expected):
    assert nft.service_chain(sp(ns, name, "172.30.0.1", port_name=port_name, port=port)) == expected


@pytest.mark.parametrize("svc,ip,port,expected", [
    (("ns2", "svc2", "p8080"), "10.0.2.1", 8080, "endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080"),
    (("ns1", "svc1", "p80"), "10.0.1.2", 80, "endpoint-ZCZBVNAZ-ns1/svc1/tcp/p80__10.0.1.2/80"),
    (("ns3", "svc3", "p80"), "10.0.3.1", 80, "endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80"),
    (("ns5", "svc5", "p80"), "10.180.0.3", 80, "endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"),
])
def test_endpoint_chain_hashes_from_proxier_test(svc, ip, port, expected):
    ns, name, port_name = svc
    s = sp(ns, name, "172.30.0.1", port_name=port_name, port=port)
    assert nft.endpoint_chain(s, ep(ip, port)) == expected


def test_unnamed_port_keeps_empty_last_part():
    s = sp("ns1", "svc1", "172.30.0.41", port_name="")
    base = nft.chain_name_base(s)
    assert base.endswith("-ns1/svc1/tcp/")
    assert base == nft.hash_and_truncate("ns1/svc1/tcp/")
    assert nft.endpoint_chain(s, ep("10.0.0.9", 8080)).endswith("-ns1/svc1/tcp/__10.0.0.9/8080")


def test_protocol_is_lowercase_in_names():
    assert nft.service_chain(sp("ns", "dns", "172.30.0.10", port_name="dns", port=53, proto="UDP")) \
        .endswith("-ns/dns/udp/dns")
    assert "/sctp/" in nft.service_chain(sp("ns", "s", "172.30.0.10", proto="SCTP"))


def test_hash_and_truncate_limits_names_to_240_plus_prefix():
    long = "n" * 63
    s = sp(long, long, "172.30.0.1", port_name="p" * 63, proto="SCTP")
    assert len(nft.chain_name_base(s)) == 8 + 1 + 63 * 3 + 4 + 3  # 205 at most: never truncated
    assert not nft.chain_name_base(s).endswith("...")
    name = "x" * 300
    out = nft.hash_and_truncate(name)
    assert len(out) == 240 and out.endswith("...") and out[8] == "-"
    # the hash covers the whole name, so names differing only past the cut stay distinct
    assert nft.hash_and_truncate(name) != nft.hash_and_truncate("x" * 299 + "z")
    assert all(len(p) <= 16 for p in ("service-", "local-", "external-", "endpoint-", "affinity-", "firewall-"))


def test_chain_and_set_name_classifiers():
    assert nft.is_service_chain_name("service-ULMVA6XW-ns1/svc1/tcp/p80")
    assert not nft.is_service_chain_name("filter-input")
    assert nft.is_affinity_set_name("affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80")
    assert not nft.is_affinity_set_name("cluster-ips")


# --------------------------------------------------------------------------------------- goldens

def test_base_rules_match_upstream():
    assert_same_ruleset(ruleset(), upstream(BASE_RULES))


def test_overall_rules_match_upstream():
    assert_same_ruleset(ruleset(OVERALL_SERVICES), upstream(BASE_RULES + OVERALL_EXPECTED))


def test_sync_repeated_expectation_two_clusterip_services():
    """TestSyncProxyRulesRepeated, first expectation."""
    services = (
        (sp("ns1", "svc1", "172.30.0.41"), (ep("10.0.1.1"),)),
        (sp("ns2", "svc2", "172.30.0.42", port_name="p8080", port=8080), (ep("10.0.2.1", 8080),)),
    )
    expected = textwrap.dedent("""\
        add element ip kube-proxy cluster-ips { 172.30.0.41 }
        add element ip kube-proxy cluster-ips { 172.30.0.42 }
        add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
        add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }

        add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
        add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
        add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 }
        add chain ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80
        add rule ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 ip saddr 10.0.1.1 jump mark-for-masquerade
        add rule ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 meta l4proto tcp dnat to 10.0.1.1:80

        add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
        add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
        add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 numgen random mod 1 vmap { 0 : goto endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 }
        add chain ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080
        add rule ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 ip saddr 10.0.2.1 jump mark-for-masquerade
        add rule ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 meta l4proto tcp dnat to 10.0.2.1:8080
        """)
    assert_same_ruleset(ruleset(services), upstream(BASE_RULES + expected))


# ------------------------------------------------------------------------------ transaction shape

def test_transaction_order_follows_setup_then_services_then_stale():
    text = nft_sync.sync_text(fake_state(OVERALL_SERVICES), {"service-OLDOLDOL-ns9/gone/tcp/p80"})
    lines = text.splitlines()
    assert lines[0] == 'add table ip kube-proxy { comment "rules for kube-proxy" ; }'
    # first sync: add+delete each base chain, then re-create and flush it with its hook
    assert lines[1:3] == ["add chain ip kube-proxy filter-prerouting-pre-dnat",
                          "delete chain ip kube-proxy filter-prerouting-pre-dnat"]
    i = lines.index("add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }")
    assert lines[i + 1] == "flush chain ip kube-proxy filter-input"
    # ensureChain: a jump target is added and flushed before the jump to it
    j = lines.index("add chain ip kube-proxy nodeport-endpoints-check")
    assert lines[j + 1:j + 3] == ["flush chain ip kube-proxy nodeport-endpoints-check",
                                  "add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check"]
    # the containers are flushed once, after setup, before any service element
    flush = lines.index("flush map ip kube-proxy service-ips")
    first_elem = lines.index("add element ip kube-proxy cluster-ips { 172.30.0.41 }")
    assert flush < first_elem and text.count("flush map ip kube-proxy service-ips") == 1
    # a chain is created before any map element points at it
    assert lines.index("add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80") < \
        lines.index("add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : "
                    "goto service-ULMVA6XW-ns1/svc1/tcp/p80 }")
    # the affinity set exists before the rules that use it
    aff = "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    assert lines.index(next(x for x in lines if x.startswith(f"add set ip kube-proxy {aff}"))) < \
        lines.index(next(x for x in lines if f"@{aff}" in x))
    assert lines[-2:] == ["flush chain ip kube-proxy service-OLDOLDOL-ns9/gone/tcp/p80",
                          "delete chain ip kube-proxy service-OLDOLDOL-ns9/gone/tcp/p80"]
    assert text.endswith("\n")


def test_later_full_sync_skips_base_chain_recreation_and_reloads_cleanly():
    state = fake_state(OVERALL_SERVICES)
    later = nft_sync.sync_text(state, nft_sync.managed_names(state), first_sync=False)
    assert "delete chain ip kube-proxy filter-input" not in later
    assert_same_ruleset(replay(nft_sync.sync_text(state), later), upstream(BASE_RULES + OVERALL_EXPECTED))


def test_no_masquerade_mark_other_than_0x4000():
    text = nft_sync.sync_text(fake_state(OVERALL_SERVICES))
    assert set(re.findall(r"0x[0-9a-f]+", text)) == {"0x4000"}


def test_cleanup_text_tolerates_a_missing_table():
    assert nft.cleanup_text() == "add table ip kube-proxy\ndelete table ip kube-proxy\n"
    r = Replay().apply(nft_sync.sync_text(fake_state(OVERALL_SERVICES))).apply(nft.cleanup_text())
    assert not r.table and not r.chains
    Replay().apply(nft.cleanup_text())  # nothing there: still fine


# ----------------------------------------------------------------------------------- table-driven

def elements(state: dict, name: str) -> set[str]:
    return state["elements"][name]


def test_no_endpoints_rejects_on_every_address():
    """TestNoEndpointsReject: ClusterIP, externalIP, LB IP and NodePort all go to reject-chain."""
    s = sp("ns1", "svc1", "172.30.0.41", node_port=3001, external_ips=(A("192.168.99.11"),),
           load_balancer_ips=(A("1.2.3.4"),))
    st = ruleset([(s, ())])
    c = 'comment "ns1/svc1:p80" : goto reject-chain'
    assert elements(st, "no-endpoint-services") == {
        f"172.30.0.41 . tcp . 80 {c}", f"192.168.99.11 . tcp . 80 {c}", f"1.2.3.4 . tcp . 80 {c}"}
    assert elements(st, "no-endpoint-nodeports") == {f"tcp . 3001 {c}"}
    assert elements(st, "service-ips") == set() and elements(st, "service-nodeports") == set()
    assert elements(st, "cluster-ips") == {"172.30.0.41"}
    assert not [c for c in st["chains"] if nft.is_service_chain_name(c)]


def test_internal_traffic_policy_local_without_local_endpoints_drops():
    s = sp("ns1", "svc1", "172.30.0.41", internal_policy_local=True)
    st = ruleset([(s, (ep("10.180.2.1", node="node2"),))])
    assert elements(st, "no-endpoint-services") == {'172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : drop'}
    assert not [c for c in st["chains"] if nft.is_service_chain_name(c)]


def test_internal_traffic_policy_local_uses_the_local_chain():
    s = sp("ns1", "svc1", "172.30.0.41", internal_policy_local=True)
    local, remote = ep("10.180.0.1", node=NODE), ep("10.180.2.1", node="node2")
    st = ruleset([(s, (local, remote))])
    lc = nft.local_chain(s)
    assert elements(st, "service-ips") == {f"172.30.0.41 . tcp . 80 : goto {lc}"}
    assert rules_of(st, lc) == [
        "ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        f"numgen random mod 1 vmap {{ 0 : goto {nft.endpoint_chain(s, local)} }}"]
    assert nft.service_chain(s) not in st["chains"]
    assert nft.endpoint_chain(s, remote) not in st["chains"]


def test_numgen_over_three_endpoints():
    s = sp("ns1", "svc1", "172.30.0.41", port_name="http", port=80)
    eps = (ep("10.180.0.1", 8080), ep("10.180.1.1", 8080), ep("10.180.2.1", 8080))
    st = ruleset([(s, eps)])
    chains = [nft.endpoint_chain(s, e) for e in eps]
    assert rules_of(st, nft.service_chain(s))[-1] == (
        f"numgen random mod 3 vmap {{ 0 : goto {chains[0]} , 1 : goto {chains[1]} , 2 : goto {chains[2]} }}")
    for e, chain in zip(eps, chains):
        assert rules_of(st, chain) == [f"ip saddr {e.ip} jump mark-for-masquerade",
                                       f"meta l4proto tcp dnat to {e.ip}:8080"]


def test_session_affinity_sets_and_rules():
    s = sp("ns1", "svc1", "172.30.0.41", session_affinity=True, affinity_timeout=600)
    eps = (ep("10.180.0.1"), ep("10.180.0.2"))
    st = ruleset([(s, eps)])
    sets = [nft.affinity_set(s, e) for e in eps]
    for name in sets:
        assert st["sets"][name] == ("set", "{ type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; }")
    chains = [nft.endpoint_chain(s, e) for e in eps]
    assert rules_of(st, nft.service_chain(s)) == [
        "ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        f"ip saddr @{sets[0]} goto {chains[0]}",
        f"ip saddr @{sets[1]} goto {chains[1]}",
        f"numgen random mod 2 vmap {{ 0 : goto {chains[0]} , 1 : goto {chains[1]} }}"]
    assert rules_of(st, chains[1]) == ["ip saddr 10.180.0.2 jump mark-for-masquerade",
                                       f"update @{sets[1]} {{ ip saddr }}",
                                       "meta l4proto tcp dnat to 10.180.0.2:80"]


@pytest.mark.parametrize("case,endpoints,expected", [
    ("ready preferred over terminating",
     (ep("10.0.1.1", node=NODE), ep("10.0.1.3", node="other", ready=False, terminating=True),
      ep("10.0.1.4", node="other", ready=False, serving=False, terminating=True), ep("10.0.1.5", node="other")),
     ["10.0.1.1", "10.0.1.5"]),
    ("only serving+terminating endpoints",
     (ep("10.0.1.2", node=NODE, ready=False, terminating=True),
      ep("10.0.1.4", node="other", ready=False, serving=False, terminating=True),
      ep("10.0.1.5", node="other", ready=False, terminating=True)),
     ["10.0.1.2", "10.0.1.5"]),
    ("nothing serving", (ep("10.0.1.5", node=NODE, ready=False, serving=False, terminating=True),), []),
])
def test_terminating_endpoint_fallback(case, endpoints, expected):
    """TestEndpointSliceWithTerminatingEndpointsTrafficPolicyCluster, as rules."""
    s = sp("ns1", "svc1", "172.30.1.1", port_name="", load_balancer_ips=(A("1.2.3.4"),), node_port=30001)
    st = ruleset([(s, endpoints)])
    if not expected:
        assert "172.30.1.1 . tcp . 80 comment \"ns1/svc1\" : goto reject-chain" in elements(st, "no-endpoint-services")
        return
    targets = re.findall(r"goto (endpoint-[^ ]+)", rules_of(st, nft.service_chain(s))[-1])
    assert targets == [nft.endpoint_chain(s, ep(ip)) for ip in expected]


def test_external_traffic_policy_local_with_a_local_endpoint():
    s = sp("ns1", "svc1", "172.30.0.41", node_port=3001, external_ips=(A("192.168.99.11"),),
           load_balancer_ips=(A("1.2.3.4"),), external_policy_local=True, health_check_node_port=30000)
    local, remote = ep("10.180.2.1", node=NODE), ep("10.180.0.1")
    st = ruleset([(s, (remote, local))])
    ext, cl, lc = nft.external_chain(s), nft.service_chain(s), nft.local_chain(s)
    assert rules_of(st, ext) == [
        f'ip saddr 10.0.0.0/8 goto {cl} comment "short-circuit pod traffic"',
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'fib saddr type local goto {cl} comment "short-circuit local traffic"',
        f"goto {lc}"]
    assert rules_of(st, lc) == [f"numgen random mod 1 vmap {{ 0 : goto {nft.endpoint_chain(s, local)} }}"]
    assert rules_of(st, cl)[-1] == (f"numgen random mod 2 vmap {{ 0 : goto {nft.endpoint_chain(s, remote)} , "
                                    f"1 : goto {nft.endpoint_chain(s, local)} }}")
    assert elements(st, "no-endpoint-services") == set() and elements(st, "no-endpoint-nodeports") == set()
    assert elements(st, "service-nodeports") == {f"tcp . 3001 : goto {ext}"}
    assert "30000" not in nft_sync.sync_text(fake_state([(s, (remote, local))]))  # no health-check rule in nft mode


def test_masquerade_all_marks_every_clusterip_connection():
    s = sp("ns1", "svc1", "172.30.0.41")
    st = ruleset([(s, (ep("10.180.0.1"),))], masquerade_all=True)
    assert rules_of(st, nft.service_chain(s))[0] == "ip daddr 172.30.0.41 jump mark-for-masquerade"


def test_source_ranges_admit_the_lb_ips_when_they_contain_the_node_ip():
    """TestLoadBalancer: 192.168.0.0/24 holds the node IP, so traffic SNATed to the LB IP is allowed."""
    s = sp("ns1", "svc1", "172.30.0.41", node_port=3001, load_balancer_ips=(A("1.2.3.4"), A("5.6.7.8")),
           load_balancer_source_ranges=(N("192.168.0.0/24"), N("203.0.113.0/25")))
    st = ruleset([(s, (ep("10.180.0.1"),))])
    fw = nft.firewall_chain(s)
    assert rules_of(st, fw) == ["ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 1.2.3.4 , 5.6.7.8 } drop"]
    assert elements(st, "firewall-ips") == {f"1.2.3.4 . tcp . 80 : goto {fw}", f"5.6.7.8 . tcp . 80 : goto {fw}"}


def test_firewall_chain_exists_even_without_endpoints():
    s = sp("ns1", "svc1", "172.30.0.41", load_balancer_ips=(A("1.2.3.4"),),
           load_balancer_source_ranges=(N("203.0.113.0/25"),))
    st = ruleset([(s, ())])
    assert rules_of(st, nft.firewall_chain(s)) == ["ip saddr != { 203.0.113.0/25 } drop"]
    assert '1.2.3.4 . tcp . 80 comment "ns1/svc1:p80" : goto reject-chain' in elements(st, "no-endpoint-services")


def test_udp_and_sctp_dnat():
    for proto in ("UDP", "SCTP"):
        s = sp("kube-system", "dns", "172.30.0.10", port_name="dns", port=53, proto=proto)
        st = ruleset([(s, (ep("10.180.0.7", 53),))])
        p = proto.lower()
        assert elements(st, "service-ips") == {f"172.30.0.10 . {p} . 53 : goto {nft.service_chain(s)}"}
        dnat = rules_of(st, nft.endpoint_chain(s, ep("10.180.0.7", 53)))[-1]
        assert dnat == f"meta l4proto {p} dnat to 10.180.0.7:53"


def test_several_service_cidrs_and_nodeport_ips():
    state = NodeProxyState(NODE, (A("192.168.0.2"), A("192.168.1.2")), N("10.0.0.0/8"),
                           (N("172.30.0.0/16"), N("172.31.0.0/16")))
    st = replay(nft_sync.sync_text(state))
    assert rules_of(st, "cluster-ips-check")[1] == \
        'ip daddr { 172.30.0.0/16,172.31.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"'
    assert elements(st, "nodeport-ips") == {"192.168.0.2"}  # the primary node IP only


# ----------------------------------------------------------------------------------- stale objects

def test_stale_chains_and_affinity_sets_are_removed():
    state1 = fake_state(OVERALL_SERVICES)
    gone = {"ns4", "ns5"}
    state2 = dataclasses.replace(state1, services=tuple(x for x in OVERALL_SERVICES if x[0].namespace not in gone))
    existing = nft_sync.managed_names(state1) | {b.name for b in nft.BASE_CHAINS}
    text = nft_sync.sync_text(state2, existing, first_sync=False)
    stale = sorted(n for n in nft_sync.managed_names(state1) - nft_sync.managed_names(state2)
                   if not n.startswith("affinity-"))
    assert stale == nft_sync.stale_names(state2, existing)
    assert {n.split("/")[0].split("-", 2)[-1] for n in stale} == gone
    tail = text.splitlines()[-(2 * len(stale) + 1):]
    assert tail == ([f"flush chain ip kube-proxy {n}" for n in stale]
                    + ["delete set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"]
                    + [f"delete chain ip kube-proxy {n}" for n in stale])
    # replayed on top of the first sync, nothing of ns4/ns5 is left and the result equals a fresh sync
    assert_same_ruleset(replay(nft_sync.sync_text(state1), text), replay(nft_sync.sync_text(state2)))


def test_deferred_stale_deletion_flushes_now_and_deletes_later():
    svc2 = sp("ns2", "svc2", "172.30.0.42", port_name="p8080", port=8080)
    state1 = fake_state([(sp("ns1", "svc1", "172.30.0.41"), (ep("10.0.1.1"),)), (svc2, (ep("10.0.2.1", 8080),))])
    state2 = dataclasses.replace(state1, services=state1.services[:1])
    text = nft_sync.sync_text(state2, nft_sync.managed_names(state1), defer_stale_deletion=True)
    assert "delete chain" not in text.split("flush map ip kube-proxy service-nodeports")[1]
    st = replay(nft_sync.sync_text(state1), text)
    # TestSyncProxyRulesRepeated: "its chains will be flushed, but not immediately deleted"
    assert st["rules"]["service-MHHHYRWA-ns2/svc2/tcp/p8080"] == []
    assert st["rules"]["endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080"] == []
    later = nft.delete_chains_text(nft_sync.stale_names(state2, nft_sync.managed_names(state1)))
    assert later == ("delete chain ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080\n"
                     "delete chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080\n")
    assert_same_ruleset(replay(nft_sync.sync_text(state1), text, later), replay(nft_sync.sync_text(state2)))


def test_existing_names_that_are_still_wanted_or_not_ours_are_left_alone():
    state = fake_state(OVERALL_SERVICES)
    existing = nft_sync.managed_names(state) | {"filter-input", "services", "cluster-ips"}
    text = nft_sync.sync_text(state, existing)
    assert "delete" not in text.split("flush map ip kube-proxy service-nodeports")[1]
    assert nft_sync.sync_text(state, None) == nft_sync.sync_text(state, set())


def test_managed_names():
    names = nft_sync.managed_names(fake_state(OVERALL_SERVICES))
    assert "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80" in names
    assert "firewall-HVFWP5L3-ns5/svc5/tcp/p80" in names
    assert "external-42NFTM6N-ns2/svc2/tcp/p80" in names
    assert not any("ns6/svc6" in n for n in names)  # no endpoints: no chains
    assert all(nft.is_service_chain_name(n) for n in names)


def test_listed_names_parses_nft_list_output():
    listing = textwrap.dedent("""\
        table ip kube-proxy {
        \tcomment "rules for kube-proxy"
        \tset cluster-ips {
        \t\ttype ipv4_addr
        \t}
        \tmap service-ips {
        \t\ttype ipv4_addr . inet_proto . inet_service : verdict
        \t}
        \tset affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 {
        \t\ttype ipv4_addr
        \t}
        \tchain filter-input {
        \t\ttype filter hook input priority filter; policy accept;
        \t}
        \tchain service-ULMVA6XW-ns1/svc1/tcp/p80 {
        \t\tnumgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
        \t}
        }
        """)
    assert nft.listed_names(listing) == {"cluster-ips", "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80",
                                         "filter-input", "service-ULMVA6XW-ns1/svc1/tcp/p80"}


# ----------------------------------------------------------------------------------- the replay itself

def test_replay_refuses_what_the_kernel_refuses():
    with pytest.raises(ReplayError, match="busy"):
        Replay().apply(nft_sync.sync_text(fake_state(OVERALL_SERVICES))).apply(
            "delete chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80")
    with pytest.raises(ReplayError, match="no such chain"):
        Replay().apply("add table ip kube-proxy\nadd rule ip kube-proxy nowhere accept")
    with pytest.raises(ReplayError, match="cannot change"):
        Replay().apply(nft_sync.sync_text(fake_state(()))).apply(
            "add chain ip kube-proxy filter-input { type filter hook input priority -110 ; }")
