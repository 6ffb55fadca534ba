"""kube-proxy iptables text against the real tools: load `ensure_commands()` + `restore_text()` into a throwaway
network namespace with iptables / iptables-restore (v1.8.9, nf_tables backend) and read it back with
iptables-save.  Proves the text parses, and that `saved_form` predicts iptables-save's output line for line."""
from __future__ import annotations

import subprocess
import uuid
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest

from emu.apply import netns
from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import iptables_text as ipt_text
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort

pytestmark = pytest.mark.integration

NODE = "test-node"


def sp(ns: str, name: str, cip: str, **kw) -> ServicePort:
    kw.setdefault("port_name", "p80")
    kw.setdefault("protocol", "TCP")
    kw.setdefault("port", 80)
    return ServicePort(namespace=ns, name=name, cluster_ip=A(cip), **kw)


def ep(ip: str, port: int = 80, **kw) -> Endpoint:
    return Endpoint(ip=A(ip), port=port, **kw)


SVC5 = sp("ns5", "svc5", "172.30.0.45", node_port=3002, load_balancer_ips=(A("5.6.7.8"),),
          load_balancer_source_ranges=(N("203.0.113.0/25"), N("192.168.0.0/24")),
          session_affinity=True, affinity_timeout=600)
SVC5_EPS = (ep("10.180.0.3"), ep("10.180.0.6"), ep("10.180.0.7"))


def rich_services(with_svc5: bool = True) -> tuple:
    """Every rule shape restore_text can emit (TestOverallIPTablesRules plus UDP, SCTP, iTP/eTP=Local with local
    endpoints, terminating fallback, affinity over three endpoints, a source range containing the node IP)."""
    services = [
        (sp("ns1", "svc1", "172.30.0.41"), (ep("10.180.0.1"),)),
        (sp("ns2", "svc2", "172.30.0.42", node_port=3001, load_balancer_ips=(A("1.2.3.4"),),
            external_ips=(A("192.168.99.22"),), health_check_node_port=30000, external_policy_local=True),
         (ep("10.180.0.2"),)),
        (sp("ns3", "svc3", "172.30.0.43", node_port=3003), (ep("10.180.0.3"),)),
        (sp("ns4", "svc4", "172.30.0.44", external_ips=(A("192.168.99.33"),)),
         (ep("10.180.0.4"), ep("10.180.0.5", node=NODE))),
        (sp("ns6", "svc6", "172.30.0.46", node_port=3006, external_ips=(A("192.168.99.66"),),
            load_balancer_ips=(A("9.10.11.12"),)), ()),
        (sp("ns7", "local", "172.30.0.47", node_port=3007, load_balancer_ips=(A("9.9.9.9"),),
            external_policy_local=True, internal_policy_local=True, health_check_node_port=30007),
         (ep("10.180.1.1", node=NODE), ep("10.180.1.2", node="other"))),
        (sp("ns8", "itp", "172.30.0.48", internal_policy_local=True), (ep("10.180.2.1", node="other"),)),
        (sp("ns9", "term", "172.30.0.49", port_name=""),
         (ep("10.180.3.1", 8080, ready=False, serving=True, terminating=True),)),
        (sp("kube-system", "kube-dns", "172.30.0.10", port_name="dns", protocol="UDP", port=53),
         (ep("10.180.4.1", 53), ep("10.180.4.2", 53))),
        (sp("ns10", "sctp", "172.30.0.50", protocol="SCTP", port=9999), (ep("10.180.5.1", 9999),)),
    ]
    if with_svc5:
        services.insert(4, (SVC5, SVC5_EPS))
    return tuple(services)


def node_state(services: tuple, masquerade_all: bool = False) -> NodeProxyState:
    return NodeProxyState(node=NODE, node_ips=(A("192.168.0.2"),), cluster_cidr=N("10.0.0.0/8"),
                          service_cidrs=(N("172.30.0.0/16"),), services=services, masquerade_all=masquerade_all)


@pytest.fixture
def ns():
    name = f"kpipt-{uuid.uuid4().hex[:10]}"
    netns.create_many([name])
    try:
        yield name
    finally:
        netns.remove(name)


def run(name: str, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return netns.run_in(name, lambda: subprocess.run(argv, input=stdin, capture_output=True, text=True))


def ensure(name: str) -> list[list[str]]:
    """Run ensure_commands() as the applier does; return the -I commands that actually ran."""
    inserted = []
    cmds = ipt.ensure_commands()
    i = 0
    while i < len(cmds):
        argv = cmds[i]
        r = run(name, argv)
        if argv[4] == "-N":
            assert r.returncode in (0, 1), r.stderr
            assert r.returncode == 0 or "already exists" in r.stderr, r.stderr
        elif argv[4] == "-C":
            assert r.returncode in (0, 1), r.stderr
            insert = cmds[i + 1]
            if r.returncode == 1:
                r2 = run(name, insert)
                assert r2.returncode == 0, r2.stderr
                inserted.append(insert)
            i += 1
        i += 1
    return inserted


def restore(name: str, text: str) -> None:
    r = run(name, ["iptables-restore", "--noflush", "-w"], text)
    assert r.returncode == 0, f"iptables-restore failed: {r.stderr}\n{text}"


def save(name: str) -> str:
    r = run(name, ["iptables-save"])
    assert r.returncode == 0, r.stderr
    return r.stdout


def expected_saved(text: str) -> dict[str, dict[str, list[str]]]:
    """The KUBE-* chains iptables-save should show after ensure + restore of `text`, in saved form."""
    out: dict[str, dict[str, list[str]]] = {"mangle": {}, "nat": {}, "filter": {}}
    for table, chain in ipt.CANARY_CHAINS:
        out[table][chain] = []
    for table, chains in ipt_text.restore_chains(text).items():
        for chain, rules in chains.items():
            out[table][chain] = [ipt_text.saved_form(r) for r in rules]
    return out


def assert_kernel_matches(name: str, text: str) -> dict[str, dict[str, list[str]]]:
    got = ipt_text.saved_chains(save(name), "KUBE-")
    want = expected_saved(text)
    for table in want:
        assert sorted(got.get(table, {})) == sorted(want[table]), f"chains differ in {table}"
        for chain, rules in want[table].items():
            assert got[table][chain] == rules, f"{table}/{chain} differs"
    return got


def test_ensure_and_full_restore_load_and_read_back_identically(ns):
    inserted = ensure(ns)
    assert len(inserted) == len(ipt.JUMPS)
    assert ensure(ns) == []  # second full sync: every -C finds its rule

    # built-in chains: each jump prepended in JUMPS order, so they read back in reverse
    saved = save(ns)
    builtin = ipt_text.saved_chains(saved)
    for table in ("filter", "nat"):
        for chain in ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"):
            want = [ipt_text.saved_form(ipt.jump_rule(t, c, args)) for t, c, _, args in reversed(ipt.JUMPS)
                    if t == table and c == chain]
            assert builtin.get(table, {}).get(chain, []) == want, f"{table}/{chain}"
    assert '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS' in saved

    text = ipt_text.restore_text(node_state(rich_services()))
    restore(ns, text)
    got = assert_kernel_matches(ns, text)
    # spot checks of the canonical forms (independent of saved_form)
    nat = got["nat"]
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in nat["KUBE-MARK-MASQ"]
    assert ('-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" '
            "-m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O") in nat["KUBE-SERVICES"]
    assert ('-A KUBE-SEP-SXIVWICOYRO3J4NJ -p tcp -m comment --comment "ns1/svc1:p80" -m tcp '
            "-j DNAT --to-destination 10.180.0.1:80") in nat["KUBE-SEP-SXIVWICOYRO3J4NJ"]
    assert got["filter"]["KUBE-SERVICES"][0].endswith("-j REJECT --reject-with icmp-port-unreachable")

    # the same full sync again (existing chains = what the kernel has) is a no-op
    existing = {t: set(c) for t, c in ipt_text.saved_chains(save(ns)).items()}
    again = ipt_text.restore_text(node_state(rich_services()), existing)
    assert again == text
    restore(ns, again)
    assert_kernel_matches(ns, again)


def test_second_sync_deletes_stale_chains(ns):
    ensure(ns)
    first = ipt_text.restore_text(node_state(rich_services()))
    restore(ns, first)
    assert_kernel_matches(ns, first)

    existing = {t: set(c) for t, c in ipt_text.saved_chains(save(ns)).items()}
    stale = {ipt.service_chain(SVC5), ipt.external_chain(SVC5), ipt.firewall_chain(SVC5),
             *(ipt.endpoint_chain(SVC5, e) for e in SVC5_EPS)}
    assert stale <= existing["nat"]

    second = ipt_text.restore_text(node_state(rich_services(with_svc5=False), masquerade_all=True), existing)
    assert {line[3:] for line in second.splitlines() if line.startswith("-X ")} == stale
    restore(ns, second)
    got = assert_kernel_matches(ns, second)
    assert not stale & set(got["nat"])
    assert not any("ns5/svc5" in r for chains in got.values() for rules in chains.values() for r in rules)
    assert not any("ns5/svc5" in r for r in got["filter"]["KUBE-PROXY-FIREWALL"])
    # built-in jumps are untouched by --noflush restores
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in save(ns)
