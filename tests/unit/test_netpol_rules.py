"""The rule generator and the tools' input, as data (no root): kube-router's names, chains, marks and ipsets.

Where the expectations come from: emu's own, written beside emu/netpol from cloudnativelabs/kube-router
pkg/controllers/netpol (network_policy_controller.go, policy.go, pod.go: chain names as base32(sha256(...))[:16]
with the KUBE-NWPLCY-/KUBE-POD-FW- prefixes, the 0x10000/0x20000 marks, the KUBE-SRC-/KUBE-DST- ipsets).  kube-router's
own tests carry no whole-ruleset expectation to compare with; the names are checked here by recomputing
kube-router's hash (kube_router_hash), and the rules' effect by the packet tests in tests/integration/test_netpol_*.py.
"""
from __future__ import annotations

import base64
import hashlib

from emu.cluster import planner
from emu.alloc import ipam
from emu.addons.netpol import names, resolve, restore, rules
from emu.addons.netpol.model import Direction
from tests.unit.test_netpol_e2e import MODEL, manifests_over_model, policy

VERSION = "1700000000000000000"


def inputs(manifests: str) -> dict[str, resolve.NodeInput]:
    topo = planner.load_documents(str(MODEL), manifests_over_model(manifests))
    return resolve.node_inputs(topo, ipam.allocate(topo, ipam.Allocations.empty()))


def kube_router_hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


ALLOW_XB = policy("x", "allow-xb", """
    podSelector: {matchLabels: {pod: a}}
    ingress:
    - from: [{podSelector: {matchLabels: {pod: b}}}]
      ports: [{port: 80}, {port: serve-81-udp, protocol: UDP}]
""")


def test_names_are_kube_routers_hashes():
    assert names.pod_chain("x", "a", VERSION) == "KUBE-POD-FW-" + kube_router_hash("x" + "a" + VERSION)
    assert names.policy_chain("x", "p", VERSION, Direction.INGRESS, split=False) == \
        "KUBE-NWPLCY-" + kube_router_hash("x" + "p" + VERSION + "IPv4")
    assert names.target_set("x", "p", Direction.INGRESS) == "KUBE-DST-" + kube_router_hash("xpIPv4")
    assert names.target_set("x", "p", Direction.EGRESS) == "KUBE-SRC-" + kube_router_hash("xpIPv4")
    assert names.peer_set("x", "p", Direction.INGRESS, 0, "pod") == "KUBE-SRC-" + kube_router_hash(
        "xpingressrule0IPv4pod")
    assert names.named_port_set("x", "p", Direction.EGRESS, 1, 2) == "KUBE-DST-" + kube_router_hash(
        "xpegressrule12IPv4namedport")
    uuid = kube_router_hash("FORWARD" + "-mcomment--commentkube-router netpol-jKUBE-ROUTER-FORWARD")
    assert names.rule_uuid("FORWARD", ["-m", "comment", "--comment", "kube-router netpol", "-j",
                                       "KUBE-ROUTER-FORWARD"]) == uuid


def test_no_policy_no_input():
    assert inputs("") == {}


def test_pod_chain_layout_matches_kube_router():
    inp = inputs(ALLOW_XB)["node-1"]  # x/a, y/a, z/a live on node-1
    nr = rules.generate(inp, VERSION)
    xa = names.pod_chain("x", "a", VERSION)
    pol = names.policy_chain("x", "allow-xb", VERSION, Direction.INGRESS, split=False)
    chain = [r for r in nr.rules if r.startswith(f"-A {xa} ")]
    assert chain == [
        f'-A {xa} -m comment --comment "common netpol rules" -j KUBE-NWPLCY-COMMON',
        f'-A {xa} -m comment --comment "from local node" -m addrtype --src-type LOCAL -d 10.244.0.2 -j ACCEPT',
        f'-A {xa} -s 10.244.0.2 -m comment --comment "default egress" -j KUBE-NWPLCY-DEFAULT',
        f'-A {xa} -d 10.244.0.2 -m comment --comment "x/allow-xb policy" -j {pol}',
        f'-A {xa} -m comment --comment "x/a log-drop" -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100 '
        f'-m limit --limit 10/minute --limit-burst 10',
        f'-A {xa} -m comment --comment "x/a reject" -m mark ! --mark 0x10000/0x10000 -j REJECT',
        f"-A {xa} -j MARK --set-mark 0/0x10000",
        f'-A {xa} -m comment --comment "set netpol-ok mark" -j MARK --set-mark 0x20000/0x20000',
    ]
    forward = [r for r in nr.rules if r.startswith("-A KUBE-ROUTER-FORWARD ") and xa in r]
    assert forward == [
        f'-A KUBE-ROUTER-FORWARD -m comment --comment "x/a in" -d 10.244.0.2 -j {xa}',
        f'-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged -m comment --comment "x/a in" -d 10.244.0.2 -j {xa}',
        f'-A KUBE-ROUTER-FORWARD -m comment --comment "x/a out" -s 10.244.0.2 -j {xa}',
        f'-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged -m comment --comment "x/a out" -s 10.244.0.2 '
        f'-j {xa}']
    top = [r for r in nr.rules if r.startswith("-A KUBE-ROUTER-FORWARD ")]
    assert top[-2:] == [
        '-A KUBE-ROUTER-FORWARD -m comment --comment "rule to explicitly handle traffic for network policies '
        'ACCEPT/REJECT decision" -j KUBE-NWPLCY-TAIL',
        '-A KUBE-ROUTER-FORWARD -m comment --comment "rule to explicitly ACCEPT traffic that comply to network '
        'policies" -m mark --mark 0x20000/0x20000 -j ACCEPT']
    assert nr.index[xa] == "pod x/a" and nr.index[pol] == "policy x/allow-xb ingress"
    # unselected pods run the default chain for both directions
    ya = names.pod_chain("y", "a", VERSION)
    assert sum(f"-A {ya} " in r and "KUBE-NWPLCY-DEFAULT" in r for r in nr.rules) == 2


def test_policy_chain_marks_and_returns_with_ipsets():
    nr = rules.generate(inputs(ALLOW_XB)["node-2"], VERSION)
    pol = names.policy_chain("x", "allow-xb", VERSION, Direction.INGRESS, split=False)
    src = names.peer_set("x", "allow-xb", Direction.INGRESS, 0, "pod")
    dst = names.target_set("x", "allow-xb", Direction.INGRESS)
    named = names.named_port_set("x", "allow-xb", Direction.INGRESS, 0, 0)
    lines = [r for r in nr.rules if r.startswith(f"-A {pol} ")]
    match = f'-m comment --comment "x/allow-xb ingress pods" -m set --match-set {src} src -m set --match-set {dst} dst'
    match_np = (f'-m comment --comment "x/allow-xb ingress pods np" -m set --match-set {src} src '
                f'-m set --match-set {named} dst')
    assert lines == [
        f"-A {pol} {match} -p tcp --dport 80 -j MARK --set-xmark 0x10000/0x10000",
        f"-A {pol} {match} -p tcp --dport 80 -m mark --mark 0x10000/0x10000 -j RETURN",
        f"-A {pol} {match_np} -p udp --dport 81 -j MARK --set-xmark 0x10000/0x10000",
        f"-A {pol} {match_np} -p udp --dport 81 -m mark --mark 0x10000/0x10000 -j RETURN"]
    assert nr.ipsets[src].entries == ("10.244.1.2",)  # x/b
    assert nr.ipsets[dst].entries == ("10.244.0.2",)  # x/a
    assert nr.ipsets[named].entries == ("10.244.0.2",) and nr.ipsets[named].kind == "hash:ip"


def test_a_policy_of_both_types_gets_one_chain_per_direction():
    both = policy("x", "both", "podSelector: {}\npolicyTypes: [Ingress, Egress]\negress: [{ports: [{port: 53, "
                               "protocol: UDP}]}]")
    nr = rules.generate(inputs(both)["node-1"], VERSION)
    ing = names.policy_chain("x", "both", VERSION, Direction.INGRESS, split=True)
    egr = names.policy_chain("x", "both", VERSION, Direction.EGRESS, split=True)
    assert ing != egr and {ing, egr} <= set(nr.chains)
    xa = names.pod_chain("x", "a", VERSION)
    assert f'-A {xa} -d 10.244.0.2 -m comment --comment "x/both policy" -j {ing}' in nr.rules
    assert f'-A {xa} -s 10.244.0.2 -m comment --comment "x/both policy" -j {egr}' in nr.rules
    src = names.target_set("x", "both", Direction.EGRESS)
    assert f'-A {egr} -m comment --comment "x/both egress any" -m set --match-set {src} src -p udp --dport 53 ' \
           f'-j MARK --set-xmark 0x10000/0x10000' in nr.rules
    assert not [r for r in nr.rules if r.startswith(f"-A {ing} ")]  # no ingress rules: nothing is marked


def test_ip_blocks_use_nomatch_and_split_slash_zero():
    p = policy("x", "cidr", """
        podSelector: {}
        policyTypes: [Egress]
        egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.1.0/24]}}, {ipBlock: {cidr: 192.168.0.0/16}}]}]
    """)
    nr = rules.generate(inputs(p)["node-3"], VERSION)
    block = nr.ipsets[names.peer_set("x", "cidr", Direction.EGRESS, 0, "ipblock")]
    assert block.kind == "hash:net"
    assert block.entries == ("0.0.0.0/1", "128.0.0.0/1", "10.244.1.0/24 nomatch", "192.168.0.0/16")


def test_input_whitelist_and_jumps():
    nr = rules.generate(inputs(ALLOW_XB)["node-1"], VERSION)
    head = [r for r in nr.rules if r.startswith("-A KUBE-ROUTER-INPUT ")][:4]
    assert head[0].startswith('-A KUBE-ROUTER-INPUT -m comment --comment "allow traffic to primary/secondary cluster '
                              'IP range - ') and head[0].endswith("-d 10.96.0.0/12 -j RETURN")
    assert head[1].startswith('-A KUBE-ROUTER-INPUT -p tcp -m comment --comment "allow LOCAL TCP traffic to node ports')
    assert nr.jumps[1] == ('-I FORWARD 1 -m comment --comment "kube-router netpol - '
                           + names.rule_uuid("FORWARD", ["-m", "comment", "--comment", "kube-router netpol", "-j",
                                                         "KUBE-ROUTER-FORWARD"]) + '" -j KUBE-ROUTER-FORWARD')


def test_restore_text_replaces_the_previous_version_atomically():
    nr = rules.generate(inputs(ALLOW_XB)["node-1"], VERSION)
    old = names.pod_chain("x", "a", "1")
    saved = ("*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-ROUTER-FORWARD - [0:0]\n:" + old + " - [0:0]\n"
             ":FLANNEL-FWD - [0:0]\n"
             "-A FORWARD -m comment --comment \"kube-router netpol - X\" -j KUBE-ROUTER-FORWARD\n")
    chains, jumps = restore.parse_save(saved)
    assert chains == {"KUBE-ROUTER-FORWARD", old} and len(jumps) == 1
    text = restore.iptables_text(nr, restore.Current(chains, jumps, frozenset()))
    lines = text.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT" and f":{old} - [0:0]" in lines and lines[-2] == f"-X {old}"
    assert not any(line.startswith("-I FORWARD") for line in lines)  # present already
    assert sum(line.startswith(("-I INPUT 1", "-I OUTPUT 1")) for line in lines) == 2
    cleanup = restore.cleanup_text(restore.Current(chains, jumps, frozenset()))
    assert '-D FORWARD -m comment --comment "kube-router netpol - X" -j KUBE-ROUTER-FORWARD' in cleanup
    assert f"-X {old}" in cleanup and "-X KUBE-ROUTER-FORWARD" in cleanup


def test_ipset_restore_swaps_through_one_tmp_set_per_type():
    sets = {"KUBE-DST-B": rules.IPSet("KUBE-DST-B", "hash:ip", ("10.0.0.1",)),
            "KUBE-SRC-A": rules.IPSet("KUBE-SRC-A", "hash:net", ("10.0.0.0/8", "10.1.0.0/16 nomatch"))}
    tmp_ip, tmp_net = names.tmp_set("hash:ip timeout 0"), names.tmp_set("hash:net timeout 0")
    assert restore.ipset_text(sets).splitlines() == [
        f"create {tmp_ip} hash:ip timeout 0", f"flush {tmp_ip}", f"add {tmp_ip} 10.0.0.1 timeout 0",
        "create KUBE-DST-B hash:ip timeout 0", f"swap {tmp_ip} KUBE-DST-B", f"flush {tmp_ip}",
        f"create {tmp_net} hash:net timeout 0", f"flush {tmp_net}", f"add {tmp_net} 10.0.0.0/8 timeout 0",
        f"add {tmp_net} 10.1.0.0/16 timeout 0 nomatch", "create KUBE-SRC-A hash:net timeout 0",
        f"swap {tmp_net} KUBE-SRC-A", f"flush {tmp_net}", *sorted([f"destroy {tmp_ip}", f"destroy {tmp_net}"])]
    assert restore.parse_sets("KUBE-DST-B\nfoo\nKUBE-SRC-A\n") == {"KUBE-DST-B", "KUBE-SRC-A"}


def test_equal_inputs_make_equal_rules_up_to_the_version():
    a, b = inputs(ALLOW_XB), inputs(ALLOW_XB)
    assert a == b
    one, two = rules.generate(a["node-1"], "1"), rules.generate(a["node-1"], "2")
    assert one.ipsets == two.ipsets and one.chains != two.chains


def test_dry_run_script_for_a_plan():
    from emu.addons.netpol import desired
    from emu.plan import content

    topo = planner.load_documents(str(MODEL), manifests_over_model(ALLOW_XB))
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    text = "\n".join(content.render(desired.desired(topo, alloc, planner.build(topo, alloc))))
    assert text.count("ipset restore -exist <<'EOF'") == 3
    assert "ip netns exec netpol-model.node-1 iptables-nft-restore --noflush -w <<'EOF'\n*filter\n" in text
    bare = planner.load(str(MODEL))
    assert desired.desired(bare, ipam.allocate(bare, ipam.Allocations.empty()), planner.build(bare, alloc)) == ()
