"""kube-proxy nftables text loaded into a real kernel (root): one throw-away network namespace per test, the
real `nft -f -`, and the kernel's own listing read back.  The root namespace is never touched."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import uuid
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest

from emu.apply import netns
from emu.addons.kubeproxy import nftables as nft
from emu.addons.kubeproxy import nftables_sync as nft_sync
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort

pytestmark = pytest.mark.integration

NODE = "node-1"


@pytest.fixture
def ns():
    name = f"emu-nfttest-{uuid.uuid4().hex[:10]}"
    netns.create_many([name])
    try:
        yield name
    finally:
        netns.remove(name)


def run(ns: str, *args: str, text: str | None = None) -> subprocess.CompletedProcess:
    return netns.run_in(ns, lambda: subprocess.run(["nft", *args], input=text, capture_output=True, text=True))


def load(ns: str, text: str) -> None:
    r = run(ns, "-f", "-", text=text)
    assert r.returncode == 0, r.stderr


def listing(ns: str) -> str:
    r = run(ns, "list", "table", "ip", "kube-proxy")
    assert r.returncode == 0, r.stderr
    return r.stdout


def flat(text: str) -> str:
    return " ".join(text.split())


def sp(ns_: str, name: str, cip: str, port_name: str = "http", port: int = 80, proto: str = "TCP", **kw):
    return ServicePort(ns_, name, port_name, proto, A(cip), port, **kw)


def ep(ip: str, port: int = 8080, node: str | None = "node-2", **kw) -> Endpoint:
    return Endpoint(A(ip), port, node=node, **kw)


WEB = sp("default", "web", "10.96.0.10", node_port=30080)
DNS = sp("kube-system", "dns", "10.96.0.53", port_name="dns", port=53, proto="UDP")
LB = sp("shop", "front", "10.96.1.1", port_name="", node_port=30443, port=443,
        load_balancer_ips=(A("203.0.113.10"),), load_balancer_source_ranges=(N("198.51.100.0/24"),),
        session_affinity=True, affinity_timeout=600)
LOCAL = sp("shop", "edge", "10.96.1.2", node_port=30081, external_ips=(A("192.0.2.50"),),
           external_policy_local=True, health_check_node_port=32000)
ITP = sp("shop", "cache", "10.96.1.3", internal_policy_local=True)
EMPTY = sp("shop", "empty", "10.96.1.4", node_port=30082)

STATE = NodeProxyState(
    NODE, (A("172.18.0.2"),), N("10.244.0.0/16"), (N("10.96.0.0/12"),),
    services=(
        (WEB, (ep("10.244.1.2"), ep("10.244.2.2"), ep("10.244.0.5", node=NODE))),
        (DNS, (ep("10.244.1.3", 53), ep("10.244.2.3", 53, ready=False, terminating=True))),
        (LB, (ep("10.244.1.4", 8443), ep("10.244.2.4", 8443))),
        (LOCAL, (ep("10.244.0.6", node=NODE), ep("10.244.1.6"))),
        (ITP, (ep("10.244.2.7", 6379),)),  # no local endpoint: ClusterIP traffic dropped
        (EMPTY, ()),
    ),
)
GONE = {"front", "edge"}
STATE2 = dataclasses.replace(STATE, services=tuple(s for s in STATE.services if s[0].name not in GONE))

FIXED_CHAINS = {b.name for b in nft.BASE_CHAINS} | {
    "nodeport-endpoints-check", "service-endpoints-check", "firewall-check", "services", "masquerading",
    "cluster-ips-check", "mark-for-masquerade", "reject-chain"}
FIXED_SETS = {"cluster-ips", "nodeport-ips"}
MAPS = ("service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports", "firewall-ips")


def test_full_sync_loads_and_the_kernel_holds_kube_proxys_ruleset(ns):
    load(ns, nft_sync.sync_text(STATE))
    text = listing(ns)
    assert nft.listed_names(text) == FIXED_CHAINS | FIXED_SETS | nft_sync.managed_names(STATE)
    for name in MAPS:
        assert f"map {name} {{" in text
    assert 'comment "rules for kube-proxy"' in text

    js = json.loads(run(ns, "-j", "list", "table", "ip", "kube-proxy").stdout)["nftables"]
    hooks = {o["chain"]["name"]: (o["chain"]["type"], o["chain"]["hook"], o["chain"]["prio"])
             for o in js if "chain" in o and "hook" in o["chain"]}
    assert hooks == {b.name: (b.type, b.hook, b.priority) for b in nft.BASE_CHAINS}
    aff = {o["set"]["name"]: o["set"] for o in js if "set" in o and o["set"]["name"].startswith("affinity-")}
    assert set(aff) == {nft.affinity_set(LB, e) for e in STATE.services[2][1]}
    assert all(s["timeout"] == 600 and "timeout" in s["flags"] for s in aff.values())
    for name in aff:
        assert flat(run(ns, "list", "set", "ip", "kube-proxy", name).stdout).startswith(
            f"table ip kube-proxy {{ set {name} {{ type ipv4_addr size 65535 flags dynamic,timeout timeout 10m")

    f = flat(text)
    web_eps = STATE.services[0][1]
    assert (f"numgen random mod 3 vmap {{ 0 : goto {nft.endpoint_chain(WEB, web_eps[0])}, "
            f"1 : goto {nft.endpoint_chain(WEB, web_eps[1])}, 2 : goto {nft.endpoint_chain(WEB, web_eps[2])} }}") in f
    assert f"10.96.0.10 . tcp . 80 : goto {nft.service_chain(WEB)}" in f
    assert f"tcp . 30080 : goto {nft.external_chain(WEB)}" in f
    assert f"10.96.0.53 . udp . 53 : goto {nft.service_chain(DNS)}" in f
    assert "meta l4proto udp dnat to 10.244.1.3:53" in f
    assert "dnat to 10.244.2.3:53" not in f  # terminating while a ready endpoint exists
    assert f"203.0.113.10 . tcp . 443 : goto {nft.firewall_chain(LB)}" in f
    assert "ip saddr != 198.51.100.0/24 drop" in f
    assert f"ip saddr @{nft.affinity_set(LB, STATE.services[2][1][0])} goto" in f
    assert f"goto {nft.local_chain(LOCAL)}" in f and 'comment "short-circuit pod traffic"' in f
    assert f"192.0.2.50 . tcp . 80 : goto {nft.external_chain(LOCAL)}" in f
    assert '10.96.1.3 . tcp . 80 comment "shop/cache:http" : drop' in f
    assert '10.96.1.4 . tcp . 80 comment "shop/empty:http" : goto reject-chain' in f
    assert 'tcp . 30082 comment "shop/empty:http" : goto reject-chain' in f
    assert "elements = { 172.18.0.2 }" in f  # nodeport-ips
    assert "ip daddr 10.96.0.0/12 drop" in f
    assert "ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade" in f
    assert "masquerade fully-random" in f

    # the same full sync again, onto the existing table, leaves the same ruleset (a first sync re-creates the
    # base chains, so they move to the end of the listing; a later full sync leaves even the order alone)
    load(ns, nft_sync.sync_text(STATE, nft.listed_names(text)))
    assert sorted(listing(ns).splitlines()) == sorted(text.splitlines())
    load(ns, nft.cleanup_text())
    load(ns, nft_sync.sync_text(STATE))
    text = listing(ns)
    load(ns, nft_sync.sync_text(STATE, nft.listed_names(text), first_sync=False))
    assert listing(ns) == text


def test_second_sync_drops_stale_chains_in_one_atomic_transaction(ns):
    load(ns, nft_sync.sync_text(STATE))
    before = listing(ns)
    existing = nft.listed_names(before)  # as kube-proxy lists them from the kernel
    text2 = nft_sync.sync_text(STATE2, existing, first_sync=False)
    stale = nft_sync.stale_names(STATE2, existing)
    assert stale and all(any(f"/{g}/" in n for g in GONE) for n in stale)

    # a transaction that fails anywhere changes nothing, even after its stale-chain deletes
    broken = text2 + "add rule ip kube-proxy no-such-chain accept\n"
    assert run(ns, "-f", "-", text=broken).returncode != 0
    assert listing(ns) == before

    load(ns, text2)
    after = listing(ns)
    assert nft.listed_names(after) == FIXED_CHAINS | FIXED_SETS | nft_sync.managed_names(STATE2)
    for g in GONE:
        assert f"/{g}/" not in after
    assert "affinity-" not in after and "203.0.113.10" not in after
    assert nft.firewall_chain(LB) not in after

    # and the result is what a fresh sync of STATE2 gives
    load(ns, nft.cleanup_text())
    load(ns, nft_sync.sync_text(STATE2))
    assert sorted(listing(ns).splitlines()) == sorted(after.splitlines())


def test_deferred_stale_deletion_like_kube_proxy(ns):
    load(ns, nft_sync.sync_text(STATE))
    existing = nft.listed_names(listing(ns))
    load(ns, nft_sync.sync_text(STATE2, existing, first_sync=False, defer_stale_deletion=True))
    flushed = nft_sync.stale_names(STATE2, existing)
    text = listing(ns)
    for name in flushed:
        assert f"chain {name} {{\n\t}}" in text  # still there, empty
    load(ns, nft.delete_chains_text(flushed))  # kube-proxy's later transaction
    assert nft.listed_names(listing(ns)) == FIXED_CHAINS | FIXED_SETS | nft_sync.managed_names(STATE2)


def test_first_sync_recreates_base_chains_from_an_older_layout(ns):
    load(ns, "add table ip kube-proxy\n"
             "add chain ip kube-proxy filter-input { type filter hook input priority -110 ; }\n"
             "add rule ip kube-proxy filter-input ct state new accept\n")
    r = run(ns, "-f", "-", text=nft_sync.sync_text(STATE, first_sync=False))
    assert r.returncode != 0  # a base chain's priority cannot be changed in place
    load(ns, nft_sync.sync_text(STATE))
    assert "type filter hook input priority filter;" in listing(ns)


def test_cleanup_removes_the_table_and_tolerates_its_absence(ns):
    load(ns, nft_sync.sync_text(STATE))
    load(ns, nft.cleanup_text())
    assert run(ns, "list", "table", "ip", "kube-proxy").returncode != 0
    assert run(ns, "list", "ruleset").stdout.strip() == ""
    load(ns, nft.cleanup_text())  # nothing left to delete: still succeeds
