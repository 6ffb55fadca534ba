"""`emu doctor`'s checks on hand-made data (no root): the plan read back as if the kernel held it exactly, then one
fault at a time, each of which must be found and named with its evidence.

Where the expectations come from: emu's own.  The "want" texts are emu's renderers' kind of output written by hand;
the "live" texts imitate what the tools print (iptables-nft-save 1.8.9, nft list) and were written by hand, not
captured, so a test checks that doctor tells two texts apart as a reader would, not the tools' exact spelling.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

import pytest
from click.testing import CliRunner

from emu.cluster import lifecycle as clusters
from emu.cluster import daemons
from emu.alloc import ipam
from emu.cluster import planner
from emu.apply import state
from emu.model import loader as topology
from emu.observe.doctor import checks, mtu, pairs, render, rulesets
from emu.observe.doctor import run as doctor_run
from emu.observe.doctor import state as kstate
from emu.observe.doctor.findings import Status
from emu.observe.readback import Observed, ObservedLink
from emu.plan.objects import ClusterPlan, Route
from tests.conftest import TOPOLOGIES

NET = ipaddress.IPv4Network
IP = ipaddress.IPv4Address


# --- fixtures: a cluster's plan, and the kernel holding exactly that -------------------------------------------------


def load(text: str) -> clusters.Cluster:
    topo = planner.load("t.yaml", text=text)
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    return clusters.Cluster(state.Record(topo.cluster.name, "t.yaml"), topo, alloc, planner.build(topo, alloc))


def load_file(name: str) -> clusters.Cluster:
    path = str(TOPOLOGIES / name)
    topo, alloc, plan = clusters.plan_file(path)
    return clusters.Cluster(state.Record(topo.cluster.name, path), topo, alloc, plan)


def observed_from_plan(plan: ClusterPlan) -> dict[str, Observed]:
    """What observe.read would return if the kernel held exactly the plan."""
    links: dict[str, dict[str, ObservedLink]] = {}
    infra = list(plan.infra)

    def add(ns: str, link: ObservedLink) -> None:
        links.setdefault(ns, {"lo": ObservedLink("lo", None, 65536, "00:00:00:00:00:00", True, None, None, None)})
        links[ns][link.name] = link

    for ns in [*infra, *(p.netns for p in plan.pods if not p.host_network)]:
        add(ns.name, ObservedLink("lo", None, 65536, "00:00:00:00:00:00", True, None, None, None))
    all_links = [(ns.name, link) for ns in infra for link in ns.links]
    all_links += [(p.node_netns, p.host_link) for p in plan.pods if not p.host_network]
    for ns_name, link in all_links:
        vx = None
        if link.vxlan:
            v = link.vxlan
            vx = (v.vni, v.port, str(v.local), v.dev, v.learning)
        add(ns_name, ObservedLink(link.name, link.kind, link.mtu or 1500, link.mac or "02:00:00:00:00:01", True,
                                  link.master, True if link.hairpin else (False if link.master else None), vx))
        if link.peer and link.peer_netns:
            add(link.peer_netns, ObservedLink(link.peer, "veth", link.peer_mtu or 1500, "02:00:00:00:00:02", True,
                                              None, None, None))
    out = {}
    for ns in [*infra, *(p.netns for p in plan.pods if not p.host_network)]:
        ls = links.get(ns.name, {})
        for dev, value in ns.mtu:
            if dev in ls:
                ls[dev] = dataclasses.replace(ls[dev], mtu=value)
        out[ns.name] = Observed(ls, frozenset(ns.addresses), frozenset(ns.routes), frozenset(ns.neighbours),
                                frozenset(ns.fdb))
    return out


def node_ns(plan: ClusterPlan, node: str) -> str:
    return next(n.netns for n in plan.nodes if n.name == node)


def with_link_mtu(obs: dict[str, Observed], ns: str, dev: str, value: int) -> dict[str, Observed]:
    got = obs[ns]
    links = dict(got.links)
    links[dev] = dataclasses.replace(links[dev], mtu=value)
    return {**obs, ns: dataclasses.replace(got, links=links)}


def by_status(found, status: Status):
    return [x for x in found if x.status is status]


VXLAN = load_file("flannel-vxlan.yaml")


# --- routes ----------------------------------------------------------------------------------------------------------


def test_a_kernel_holding_the_plan_is_ok_everywhere():
    found = kstate.check(VXLAN.plan, observed_from_plan(VXLAN.plan))
    assert found and all(x.status is Status.OK for x in found)
    assert {x.subject for x in found} >= {"underlay", "external", "node/node-1", "default/web-0", "shop/" +
                                          next(p.name for p in VXLAN.topology.pods if p.namespace == "shop")}


def test_missing_route_is_named_with_namespace_destination_gateway_and_device():
    obs = observed_from_plan(VXLAN.plan)
    ns = node_ns(VXLAN.plan, "node-1")
    gone = Route(NET("10.244.1.0/24"), "flannel.1", IP("10.244.1.0"), True)
    assert gone in obs[ns].routes
    obs[ns] = dataclasses.replace(obs[ns], routes=obs[ns].routes - {gone})
    (bad,) = by_status(kstate.check(VXLAN.plan, obs), Status.FAIL)
    assert bad.subject == "node/node-1" and ns in bad.message
    assert bad.evidence == ("missing route: 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",)


def test_a_route_rewritten_is_wrong_not_missing_and_unexpected():
    obs = observed_from_plan(VXLAN.plan)
    ns = node_ns(VXLAN.plan, "node-1")
    gone = Route(NET("10.244.1.0/24"), "flannel.1", IP("10.244.1.0"), True)
    other = Route(NET("10.244.1.0/24"), "eth0", IP("172.18.0.3"))
    obs[ns] = dataclasses.replace(obs[ns], routes=(obs[ns].routes - {gone}) | {other})
    (bad,) = by_status(kstate.check(VXLAN.plan, obs), Status.FAIL)
    assert bad.evidence == ("wrong route: 10.244.1.0/24 via 172.18.0.3 dev eth0, planned "
                            "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",)


def test_extra_entries_warn_only_on_planned_interfaces():
    obs = observed_from_plan(VXLAN.plan)
    pod = VXLAN.plan.pod("default/web-0")
    got = obs[pod.netns.name]
    extra = Route(NET("192.0.2.0/24"), "eth0", IP("10.244.0.1"))
    net1 = kstate.Address("net1", ipaddress.IPv4Interface("192.168.50.2/24"))  # a secondary network's: not ours
    obs[pod.netns.name] = dataclasses.replace(got, routes=got.routes | {extra}, addresses=got.addresses | {net1})
    (w,) = by_status(kstate.check(VXLAN.plan, obs), Status.WARN)
    assert w.subject == "default/web-0" and w.evidence == ("unexpected route: 192.0.2.0/24 via 10.244.0.1 dev eth0",)


def test_neighbour_fdb_link_and_namespace_faults():
    obs = observed_from_plan(VXLAN.plan)
    ns = node_ns(VXLAN.plan, "node-2")
    got = obs[ns]
    nb = next(iter(got.neighbours))
    fdb = next(iter(got.fdb))
    links = dict(got.links)
    links["cni0"] = dataclasses.replace(links["cni0"], up=False)
    del links["flannel.1"]
    obs[ns] = dataclasses.replace(got, links=links, neighbours=(got.neighbours - {nb}) |
                                  {dataclasses.replace(nb, lladdr="02:de:ad:be:ef:00")}, fdb=got.fdb - {fdb})
    pod = VXLAN.plan.pod("default/web-2").netns.name
    obs[pod] = None
    bad = {x.subject: x for x in by_status(kstate.check(VXLAN.plan, obs), Status.FAIL)}
    ev = "\n".join(bad["node/node-2"].evidence)
    assert "missing link flannel.1: vxlan" in ev and "wrong link cni0: down, planned up" in ev
    assert f"wrong neighbour: {nb.ip} dev flannel.1 lladdr 02:de:ad:be:ef:00 PERMANENT, planned" in ev
    assert f"missing fdb entry: {fdb.lladdr} dev flannel.1 dst {fdb.dst} self permanent" in ev
    assert bad["default/web-2"].message == f"network namespace {pod} does not exist"


def test_kernel_forms_of_planned_entries_are_not_differences():
    cl = load_file("seed-guide.yaml")
    obs = observed_from_plan(cl.plan)
    ext = next(ns for ns in cl.plan.infra if ns.role == "external")
    one_hop = [r for r in ext.routes if len(r.nexthops) == 1]
    lo = [a for a in ext.addresses if a.dev == "lo"]
    assert one_hop and lo  # a LoadBalancer announced by one node; the external clients' addresses
    got = obs[ext.name]
    obs[ext.name] = dataclasses.replace(  # as observe.read returns them: `via`, and no lo addresses
        got, routes=(got.routes - set(one_hop)) | {Route(r.dst, r.dev, r.nexthops[0]) for r in one_hop},
        addresses=got.addresses - set(lo))
    found = kstate.check(cl.plan, obs)
    assert all(x.status is Status.OK for x in found), [x for x in found if x.status is not Status.OK]
    assert kstate.route_matches(one_hop[0], f"{one_hop[0].dst.network_address} via {one_hop[0].nexthops[0]} dev eth0")


def test_route_get_output_against_the_planned_route():
    n1 = next(ns for ns in VXLAN.plan.infra if ns.owner == "node-1")
    want = kstate.planned_route(n1, "10.244.1.2")
    assert kstate.route_text(want) == "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink"
    assert kstate.route_matches(want, "10.244.1.2 via 10.244.1.0 dev flannel.1 src 10.244.0.0")
    assert not kstate.route_matches(want, "10.244.1.2 via 172.18.0.1 dev eth0 src 172.18.0.2")
    assert kstate.route_text(kstate.planned_route(n1, "8.8.8.8")) == "default via 172.18.0.1 dev eth0"


# --- mtu -------------------------------------------------------------------------------------------------------------


def test_mtu_as_planned_is_ok_with_every_hop_as_evidence():
    found = mtu.check(VXLAN.plan, VXLAN.topology.cluster, observed_from_plan(VXLAN.plan))
    assert all(x.status is Status.OK for x in found)
    path = next(x for x in found if x.subject == "node-1 -> node-2")
    assert path.message == "path MTU 1450 carries the pods' 1450"
    assert "node/node-1 flannel.1: 1450" in path.evidence
    assert "node/node-1 eth0: 1500 - 50 VXLAN = 1450" in path.evidence


def test_wrong_flannel_mtu_is_named_with_expected_and_observed_and_limits_its_paths():
    obs = with_link_mtu(observed_from_plan(VXLAN.plan), node_ns(VXLAN.plan, "node-2"), "flannel.1", 1400)
    found = mtu.check(VXLAN.plan, VXLAN.topology.cluster, obs)
    link = next(x for x in found if x.subject == "node/node-2")
    assert link.status is Status.FAIL and "flannel.1" in link.message and "MTU 1400, planned 1450" in link.message
    assert link.evidence == ("flannel.1 mtu 1400, planned 1450 (node MTU 1500 - 50 VXLAN overhead)",)
    paths = {x.subject: x for x in found if "->" in x.subject}
    assert paths["node-2 -> node-1"].status is Status.FAIL
    assert paths["node-2 -> node-1"].message.endswith("carries 1400: limited by node/node-2 flannel.1")
    assert paths["node-1 -> node-2"].status is Status.OK  # a VXLAN device does not limit what it receives


def test_path_verdict_follows_the_df_probe():
    obs = observed_from_plan(VXLAN.plan)
    probe = pairs.Probe("default/web-0", "default/web-1", "node-1", "node-2", "10.244.0.2", "10.244.1.2", "icmp",
                        size=1422, df=True)
    small = dataclasses.replace(probe, size=56, df=False)

    def path(r: dict[str, Any]):
        found = mtu.check(VXLAN.plan, VXLAN.topology.cluster, obs, [(probe, r)])
        return next(x for x in found if x.subject == "node-1 -> node-2")

    ok = path({"ok": True, "verdict": "connected"})
    assert ok.status is Status.OK and "a DF echo of 1422 bytes got through" in ok.message
    hole = path({"ok": False, "verdict": "timeout", "small": (small, {"ok": True, "verdict": "connected"})})
    assert hole.status is Status.FAIL and hole.message.startswith("MTU black hole")
    gone = path({"ok": False, "verdict": "timeout", "small": (small, {"ok": False, "verdict": "timeout"})})
    assert gone.status is Status.WARN and "not an MTU problem" in gone.message
    frag = path({"ok": False, "verdict": "frag-needed",
                 "icmp": {"type": 3, "code": 4, "sender": "10.244.0.1", "sender_name": "node/node-1", "mtu": 1400}})
    assert frag.status is Status.FAIL and "frag-needed from node/node-1, mtu 1400" in frag.message
    assert "ICMP type 3 code 4 from 10.244.0.1 (node/node-1), mtu 1400" in frag.evidence[-1]


def test_heterogeneous_node_mtus_warn_when_path_mtu_discovery_works():
    cl = load_file("node-tuning.yaml")  # node-2 has jumbo frames (9000), node-1 the underlay's 1500
    obs = observed_from_plan(cl.plan)
    found = {x.subject: x for x in mtu.check(cl.plan, cl.topology.cluster, obs)}
    assert found["links"].status is Status.OK and found["node-1 -> node-2"].status is Status.OK
    big = found["node-2 -> node-1"]
    assert big.status is Status.FAIL
    assert big.message == "default/b sends up to 8950 bytes but the path to node-1 carries 1450: limited by " \
                          "underlay to-node-1"
    p = pairs.Probe("default/b", "default/a", "node-2", "node-1", "10.244.1.2", "10.244.0.2", "icmp", size=8922,
                    df=True)
    frag = {"ok": False, "verdict": "frag-needed", "icmp": {"type": 3, "code": 4, "sender": "10.244.0.0",
                                                            "mtu": 1450}}
    again = {x.subject: x for x in mtu.check(cl.plan, cl.topology.cluster, obs, [(p, frag)])}
    assert again["node-2 -> node-1"].status is Status.WARN
    assert again["node-2 -> node-1"].message.endswith("(path MTU discovery works: frag-needed came back)")


# --- kube-proxy rules ------------------------------------------------------------------------------------------------

# emu's own: a desired iptables-restore text, written by hand.
WANT_IPT = """\
*mangle
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-BBB - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAA
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-AAA -m comment --comment "default/web:http -> 10.244.1.2:80" -j KUBE-SEP-BBB
-A KUBE-SEP-BBB -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80
COMMIT
"""

# Shaped as iptables-nft-save v1.8.9 prints it (header line, counters), written by hand, not captured.
LIVE_IPT = """\
# Generated by iptables-nft-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [12:3400]
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [5:300]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-BBB - [0:0]
[3:180] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j KUBE-ROUTER-INPUT
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -j RETURN
-A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAA
-A KUBE-SERVICES  -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-AAA -m comment --comment "default/web:http -> 10.244.1.2:80" -j KUBE-SEP-BBB
-A KUBE-SEP-BBB -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80
COMMIT
"""


def test_iptables_in_sync_ignores_counters_whitespace_and_other_components():
    d = rulesets.diff_iptables(WANT_IPT, LIVE_IPT)
    assert d.in_sync and not d.reordered, d
    f = rulesets.finding("node-1", "iptables", d)
    assert f.status is Status.OK and f.message.startswith("in sync with the model (iptables mode)")


def test_a_rule_deleted_by_hand_is_found_with_its_text():
    rule = ('-A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp '
            '--dport 80 -j KUBE-SVC-AAA')
    d = rulesets.diff_iptables(WANT_IPT, LIVE_IPT.replace(rule + "\n", ""))
    assert d.missing == [f"missing rule nat: {rule}"] and not d.unexpected
    f = rulesets.finding("node-1", "iptables", d)
    assert f.status is Status.FAIL and f.subject == "node/node-1" and rule in f.message


def test_missing_jump_extra_chain_and_reorder():
    live = LIVE_IPT.replace('[3:180] -A PREROUTING -m comment --comment "kubernetes service portals" -j '
                            'KUBE-SERVICES\n', "")
    live = live.replace("COMMIT\n", ":KUBE-SEP-STALE - [0:0]\n-A KUBE-SEP-STALE -j DNAT --to-destination "
                                     "10.244.9.9:80\nCOMMIT\n")
    d = rulesets.diff_iptables(WANT_IPT, live)
    assert 'missing rule nat: -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' \
        in d.missing
    assert "unexpected chain nat KUBE-SEP-STALE (1 rules)" in d.unexpected
    assert "unexpected chain mangle KUBE-SEP-STALE (1 rules)" in d.unexpected  # declared in every table
    lines = LIVE_IPT.splitlines()
    i = next(n for n, line in enumerate(lines) if "KUBE-SERVICES -d 10.96.0.5" in line)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    d = rulesets.diff_iptables(WANT_IPT, "\n".join(lines))
    assert d.in_sync and d.reordered == ["rule order differs in nat KUBE-SERVICES"]
    assert rulesets.finding("node-1", "iptables", d).status is Status.WARN


# emu's own: a kube-proxy nftables ruleset as `nft list table` prints it, written by hand.
WANT_NFT = """\
table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 10.96.0.5, 10.96.0.6,
			     10.96.0.7 }
	}

	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
		elements = { 10.96.0.5 . tcp . 80 : goto service-AAA-default/web/tcp/http,
			     10.96.0.6 . udp . 53 : goto service-BBB-kube-system/kube-dns/udp/dns }
	}

	set affinity-XYZ-default/sticky/tcp/__10.244.0.2/80 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 3h
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}

	chain service-AAA-default/web/tcp/http {
		ip daddr 10.96.0.5 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 2 vmap { 0 : goto endpoint-1, 1 : goto endpoint-2 }
	}
}
"""


def test_nft_in_sync_ignores_element_order_counters_and_dynamic_set_contents():
    live = WANT_NFT.replace("10.96.0.5, 10.96.0.6,\n\t\t\t     10.96.0.7", "10.96.0.7, 10.96.0.5, 10.96.0.6")
    live = live.replace("jump services", "counter packets 12 bytes 720 jump services")
    live = live.replace("\t\ttimeout 3h\n", "\t\ttimeout 3h\n\t\telements = { 10.244.1.9 timeout 3h expires 2h59m }\n")
    want = WANT_NFT.replace("jump services", "counter packets 0 bytes 0 jump services")
    d = rulesets.diff_nft(want, live)
    assert d.in_sync and not d.reordered, d
    assert d.chains == 2 and d.rules == 3


def test_nft_missing_element_rule_and_extra_rule():
    live = WANT_NFT.replace(",\n\t\t\t     10.96.0.6 . udp . 53 : goto service-BBB-kube-system/kube-dns/udp/dns", "")
    live = live.replace("\t\tjump services\n", "\t\tjump services\n\t\tdrop\n")
    live = live.replace("\t\tnumgen random mod 2 vmap { 0 : goto endpoint-1, 1 : goto endpoint-2 }\n", "")
    d = rulesets.diff_nft(WANT_NFT, live)
    assert sorted(d.missing) == [
        "missing element in map service-ips: 10.96.0.6 . udp . 53 : goto service-BBB-kube-system/kube-dns/udp/dns",
        "missing rule in chain service-AAA-default/web/tcp/http: numgen random mod 2 vmap { 0 : goto endpoint-1, "
        "1 : goto endpoint-2 }",
    ]
    assert d.unexpected == ["unexpected rule in chain nat-prerouting: drop"]
    gone = "\n".join(line for line in WANT_NFT.splitlines() if "service-AAA" not in line)
    assert "missing chain service-AAA-default/web/tcp/http (2 rules)" in rulesets.diff_nft(WANT_NFT, gone).missing


# --- services, policies, conntrack -----------------------------------------------------------------------------------


def test_services_without_ready_endpoints_warn_with_the_reason():
    cl = load("""\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: svc}
spec: {nodes: 2}
---
kind: Pod
metadata: {name: a, labels: {app: a}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
---
kind: Pod
metadata: {name: b, labels: {app: b}, annotations: {emu.dev/ready: "false"}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
---
kind: Service
metadata: {name: ok}
spec: {selector: {app: a}, ports: [{name: http, port: 80, targetPort: http}]}
---
kind: Service
metadata: {name: typo}
spec: {selector: {app: nope}, ports: [{port: 80}]}
---
kind: Service
metadata: {name: notready}
spec: {selector: {app: b}, ports: [{port: 80}]}
---
kind: Service
metadata: {name: badport}
spec: {selector: {app: a}, ports: [{port: 80, targetPort: grpc}]}
---
kind: Service
metadata: {name: manual}
spec: {ports: [{port: 80}]}
---
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com}
""")
    found = {x.subject: x for x in checks.services(cl.topology, cl.allocations)}
    assert found["default/ok"].status is Status.OK and found["default/ext"].status is Status.OK
    assert {k for k, x in found.items() if x.status is Status.WARN} == {
        "default/typo", "default/notready", "default/badport", "default/manual"}
    assert found["default/typo"].evidence[0] == "port 80/TCP: selector app=nope matches no pod in namespace default"
    assert "is not ready" in found["default/notready"].evidence[0]
    assert "targetPort 'grpc' is not a containerPort" in found["default/badport"].evidence[0]
    assert "selector-less" in found["default/manual"].evidence[0]
    assert found["default/typo"].evidence[-1].startswith("kube-proxy rejects connections to ")


def test_policies_list_what_they_select_and_warn_when_nothing():
    cl = load_file("netpol-model.yaml")
    assert checks.policies(cl.topology)[0].status is Status.SKIP
    pol = planner.load("t.yaml", text=(TOPOLOGIES / "netpol-model.yaml").read_text() + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: typo, namespace: y}
spec: {podSelector: {matchLabels: {pod: zz}}}
""")
    found = {x.subject: x for x in checks.policies(pol)}
    assert found["x/deny"].status is Status.OK and found["x/deny"].evidence == ("x/a", "x/b", "x/c")
    assert found["x/deny"].message == "selects 3 pods for Ingress: x/a, x/b, x/c"
    assert found["y/typo"].status is Status.WARN and "pod=zz" in found["y/typo"].message


@pytest.mark.parametrize("counts, status", [
    ((10, 1000), Status.OK), ((749, 1000), Status.OK), ((750, 1000), Status.WARN), ((899, 1000), Status.WARN),
    ((900, 1000), Status.FAIL), ((1000, 1000), Status.FAIL), (None, Status.SKIP),
])
def test_conntrack_pressure_thresholds(counts, status):
    found = checks.conntrack("node-1", counts)
    assert found.status is status and found.subject == "node/node-1"
    if counts:
        assert f"nf_conntrack_count {counts[0]}" in found.evidence


# --- probes: pairs, connectivity, dns --------------------------------------------------------------------------------


def test_one_probe_per_ordered_node_pair_across_nodes():
    probes, skipped = pairs.connectivity(VXLAN.topology, VXLAN.allocations, VXLAN.plan)
    assert not skipped and len(probes) == 6
    assert {(p.src_node, p.dst_node) for p in probes} == {(a, b) for a in ("node-1", "node-2", "node-3")
                                                        for b in ("node-1", "node-2", "node-3") if a != b}
    assert all(p.proto == "tcp" and p.port == 80 for p in probes)
    assert all(VXLAN.plan.pod(p.src).node == p.src_node and VXLAN.plan.pod(p.dst).node == p.dst_node for p in probes)
    sizes = pairs.mtu(VXLAN.topology, VXLAN.allocations, VXLAN.plan, {p.key: 1450 for p in VXLAN.plan.pods})
    assert len(sizes) == 6 and all(p.size == 1422 and p.df and p.proto == "icmp" for p in sizes)


def test_probe_pairs_avoid_pods_the_policies_isolate():
    topo = planner.load("t.yaml", text=(TOPOLOGIES / "netpol-model.yaml").read_text() + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
""")
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    plan = planner.build(topo, alloc)
    probes, skipped = pairs.connectivity(topo, alloc, plan)
    assert len(probes) == 6 and not skipped
    assert not any(p.src.startswith("x/") or p.dst.startswith("x/") for p in probes)


def test_connectivity_findings():
    p = pairs.Probe("default/web-0", "default/web-1", "node-1", "node-2", "10.244.0.2", "10.244.1.2", "tcp", 80)
    found = checks.connectivity(
        [(p, {"ok": False, "verdict": "timeout", "detail": "no answer to the SYN within 1s", "tries": 2})],
        [("node-1 -> node-3", "no pod with its own network namespace on node-3")], 3,
        {"node-1 -> node-2": ["route on node/node-1 to 10.244.1.2: none"]})
    bad, skipped = found
    assert bad.status is Status.FAIL and bad.subject == "node-1 -> node-2"
    assert bad.message == "tcp/80 default/web-0 -> default/web-1 (10.244.1.2): timeout"
    assert bad.evidence == ("probe tcp/80 default/web-0 (node-1) -> default/web-1 (10.244.1.2, node-2): timeout "
                            "(no answer to the SYN within 1s)", "failed 2 times",
                            "route on node/node-1 to 10.244.1.2: none")
    assert skipped.status is Status.SKIP
    assert checks.connectivity([], [], 1)[0].status is Status.SKIP


def test_dns_findings():
    q = {"name": "kube-dns.kube-system.svc.cluster.local.", "type": "A", "server": "10.96.0.10", "ms": 0.4,
         "rcode": "NOERROR", "answers": [{"type": "A", "data": "10.96.0.10"}]}
    good = {"ok": True, "addresses": ["10.96.0.10"], "queries": [q], "total_ms": 0.5, "nameservers": ["10.96.0.10"]}
    lost = {"ok": False, "addresses": [], "queries": [{**q, "rcode": "TIMEOUT", "answers": []}],
            "nameservers": ["10.96.0.10"]}
    wrong = {**good, "addresses": ["10.96.0.99"]}
    found = checks.dns([("node-1", "default/a", good), ("node-2", "default/b", lost), ("node-3", "default/c", wrong),
                        ("node-4", None, None)], q["name"], "10.96.0.10")
    assert [x.status for x in found] == [Status.OK, Status.FAIL, Status.FAIL, Status.SKIP]
    assert found[1].message.endswith("TIMEOUT (nameservers 10.96.0.10)")
    assert "TIMEOUT" in found[1].evidence[0] and "expected 10.96.0.10" in found[2].message


# --- a whole run against a fake kernel, its rendering and the CLI ----------------------------------------------------


class FakeKernel:
    """The kernel holding exactly the plan, answering every probe; tests break one thing at a time."""

    def __init__(self, cl: clusters.Cluster):
        self.observed = observed_from_plan(cl.plan)
        self.live = WANT_IPT
        self.probes: list[pairs.Probe] = []
        self.agent_pids: tuple[int, ...] = (4242,)
        self.rendered: list = []

    def observe(self, names):
        return {n: self.observed.get(n) for n in names}

    def ruleset(self, ns, mode, backend):
        return self.live

    def render(self, node, objects, mode, backend):
        self.rendered.append((node, objects))
        return WANT_IPT

    def route_get(self, ns, ip):
        return f"{ip} via 172.18.0.1 dev eth0"

    def conntrack(self, ns):
        return (12, 262144)

    def probe(self, cl, p, timeout):
        self.probes.append(p)
        return {"ok": True, "verdict": "connected", "answered_by": p.dst, "rtt_ms": 0.2}

    def dns(self, cl, pod, name, timeout):
        raise AssertionError("no cluster DNS in this topology")

    def daemons(self, cl):
        return [daemons.Daemon("agent", "every pod's TCP/UDP servers", self.agent_pids)]


def test_a_healthy_cluster_passes_every_check():
    k = FakeKernel(VXLAN)
    rep = doctor_run.run(VXLAN, kernel=k)
    assert rep.ok and rep.checks == tuple(doctor_run.CHECKS)
    assert not [x for x in rep.findings if x.status in (Status.FAIL, Status.WARN)]
    assert {x.check for x in rep.findings} == set(doctor_run.CHECKS)
    assert len(k.probes) == 12  # 6 node pairs: a connectivity probe and a DF probe each
    text = render.text(rep)
    assert text.splitlines()[-1].startswith("summary: 0 failed, 0 warnings,")
    doc = json.loads(json.dumps(rep.to_json()))
    assert doc["ok"] is True and doc["summary"]["fail"] == 0 and len(doc["findings"]) == len(rep.findings)


def test_kube_proxy_compares_the_dry_runs_objects_through_one_diff():
    from emu.addons.kubeproxy import desired
    from emu.plan.content import by_owner

    k = FakeKernel(VXLAN)
    (good, *rest) = doctor_run.run(VXLAN, only=["kube-proxy"], kernel=k).findings
    want = by_owner(desired.desired(VXLAN.topology, VXLAN.allocations, VXLAN.plan))
    assert k.rendered == [(n.name, want[n.name]) for n in VXLAN.plan.nodes]  # what `emu up --dry-run` prints
    assert good.status is Status.OK and all(x.status is Status.OK for x in rest)
    assert rulesets.compare("n", "iptables", "iptables-save", "x", WANT_IPT, WANT_IPT) == \
        rulesets.finding("n", "iptables", rulesets.diff_iptables(WANT_IPT, WANT_IPT))
    assert rulesets.compare("n", "iptables", "iptables-save", "x", WANT_IPT, None) == \
        rulesets.missing_table("n", "iptables", "x", WANT_IPT)


def test_a_run_names_the_fault_and_renders_its_evidence():
    k = FakeKernel(VXLAN)
    ns = node_ns(VXLAN.plan, "node-1")
    k.observed[ns] = dataclasses.replace(
        k.observed[ns], routes=frozenset(r for r in k.observed[ns].routes if str(r.dst) != "10.244.1.0/24"))
    rep = doctor_run.run(VXLAN, only=["routes", "conntrack"], kernel=k)
    assert not rep.ok and rep.checks == ("routes", "conntrack")
    (bad,) = [x for x in rep.findings if x.status is Status.FAIL]
    assert bad.check == "routes" and bad.subject == "node/node-1"
    text = render.text(rep)
    assert "  FAIL    node/node-1: netns " in text
    assert "          missing route: 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in text
    assert text.splitlines()[-1] == "summary: 1 failed, 0 warnings, 13 ok, 0 skipped (exit status 1)"
    with pytest.raises(ValueError):
        doctor_run.run(VXLAN, only=["nope"], kernel=k)


def test_a_dead_daemon_fails_the_daemons_check_and_says_how_to_repair():
    k = FakeKernel(VXLAN)
    k.agent_pids = ()  # the agent died
    rep = doctor_run.run(VXLAN, only=["daemons"], kernel=k)
    (bad,) = rep.findings
    assert not rep.ok and bad.status is Status.FAIL and bad.subject == "daemon/agent"
    assert "emu up --repair " in bad.message and "every pod's TCP/UDP servers" in bad.message
    k.agent_pids = (4242,)
    (good,) = doctor_run.run(VXLAN, only=["daemons"], kernel=k).findings
    assert good.status is Status.OK and "4242" in good.message


def test_cli_json_and_exit_status(tmp_path, monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    path = str(TOPOLOGIES / "flannel-vxlan.yaml")
    docs = topology.read_documents(path)
    topo = planner.load_documents(path, docs, "doc1")
    rec, lock = state.claim("doc1", path)
    lock.release()
    rec.documents = [{"file": d.file, "index": d.index, "body": d.body} for d in docs]
    rec.allocations = ipam.allocate(topo, ipam.Allocations.empty()).to_json()
    rec.status = "up"
    rec.save()
    kernels: list[FakeKernel] = []

    def fake() -> FakeKernel:
        kernels.append(FakeKernel(clusters.open_cluster("doc1")))
        return kernels[-1]

    monkeypatch.setattr(doctor_run, "LiveKernel", fake)
    from emu.cli.commands import main

    r = CliRunner().invoke(main, ["doctor", "-o", "json", "--check", "kube-proxy", "--check", "services"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["cluster"] == "doc1" and doc["checks"] == ["services", "kube-proxy"]
    assert {f["check"] for f in doc["findings"]} == {"services", "kube-proxy"}

    monkeypatch.setattr(FakeKernel, "ruleset", lambda self, ns, mode, backend: WANT_IPT.replace(
        "-A KUBE-SEP-BBB -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80\n", ""))
    r = CliRunner().invoke(main, ["doctor", "doc1", "--check", "kube-proxy"])
    assert r.exit_code == 1
    assert "missing rule nat: -A KUBE-SEP-BBB -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:80" in r.output
    r = CliRunner().invoke(main, ["doctor", "--check", "bogus"])
    assert r.exit_code == 2
