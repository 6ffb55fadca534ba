"""kube-proxy IPVS mode on a real kernel.

* The `kernel`-marked tests bring a cluster up with `proxy: {mode: ipvs}` and check what kube-proxy's IPVS proxier
  leaves on a node -- kube-ipvs0 (a dummy link, down) holding the VIPs, the ipsets, the virtual servers -- and that
  ClusterIP and NodePort traffic reaches the endpoints through IPVS (its connection table shows the connections).
  They need IP_VS and the dummy link type: on a kernel without them they skip; run them with
  tools/kernel-lane/run-tests.
* The `integration`-only tests run on any kernel: they load the ipset and iptables text of
  `emu.addons.kubeproxy.ipvs_desired` into a namespace they create, and read it back with ipset/iptables-save.

Every namespace is created by the test (the cluster's by `emu up`) and removed afterwards.
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
import textwrap
import time
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest

from emu.apply import kernel, netns
from emu.addons.kubeproxy import ipvs, ipvs_desired, ipvs_names
from emu.addons.kubeproxy import iptables_text as ipt_text
from emu.addons.kubeproxy import sync as kpsync
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort

from .conftest import in_ns, ip

pytestmark = pytest.mark.integration

NEEDS_IPVS = pytest.mark.kernel("ip_vs", "dummy")

TOPOLOGY = textwrap.dedent("""\
    # kube-proxy IPVS mode: web-0..2 spread over two nodes, a client pod on node-1.
    apiVersion: emu.dev/v1alpha1
    kind: Cluster
    metadata:
      name: ipvs
    spec:
      nodes: 2
      podCIDR: 10.244.0.0/16
      serviceCIDR: 10.96.0.0/12
      nodeNetwork: 172.18.0.0/24
      proxy:
        mode: ipvs
      cni: {plugin: flannel, backend: vxlan}
    """) + "".join(textwrap.dedent(f"""\
    ---
    apiVersion: v1
    kind: Pod
    metadata: {{name: {name}, labels: {{app: {app}}}}}
    spec:
      nodeName: {node}
      containers:
      - name: server
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        ports: [{{name: http, containerPort: 80, protocol: TCP}}, {{name: dns, containerPort: 80, protocol: UDP}}]
    """) for name, app, node in (("web-0", "web", "node-1"), ("web-1", "web", "node-2"), ("web-2", "web", "node-1"),
                                 ("client-0", "client", "node-1"))) + textwrap.dedent("""\
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      selector: {app: web}
      ports:
      - {name: http, port: 80, targetPort: 80, protocol: TCP}
      - {name: dns, port: 53, targetPort: 80, protocol: UDP}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web-np}
    spec:
      type: NodePort
      selector: {app: web}
      ports: [{port: 80, targetPort: 80, nodePort: 30080}]
    """)
WEB = {"default/web-0", "default/web-1", "default/web-2"}


# ----------------------------------------------------------------------------------------------- a cluster in IPVS mode


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, emu_cluster):
    if not (kernel.has("ip_vs") and kernel.has("dummy")):  # the `kernel` marker skips first; this is a safety net
        pytest.skip("needs ip_vs and dummy, which this kernel lacks: run it in the kernel lane "
                    "(tools/kernel-lane/run-tests)")
    path = tmp_path_factory.mktemp("ipvs") / "ipvs.yaml"
    path.write_text(TOPOLOGY)
    with tempfile.TemporaryDirectory(prefix="emu-test-state-") as state_dir:
        old = os.environ.get("EMU_STATE_DIR")
        os.environ["EMU_STATE_DIR"] = state_dir  # never see or touch a user's clusters
        try:
            with emu_cluster(str(path)) as c:
                yield c
        finally:
            if old is None:
                os.environ.pop("EMU_STATE_DIR", None)
            else:
                os.environ["EMU_STATE_DIR"] = old


def node_ns(c, node: str = "node-1") -> str:
    return c.netns(f"node/{node}")


def answers(c, src: str, dst: str, n: int, proto: str = "tcp") -> collections.Counter:
    return collections.Counter(c.probe(src, dst, proto=proto)["answered_by"] for _ in range(n))


def ipvs_connections(ns: str) -> list[dict]:
    """/proc/net/ip_vs_conn of namespace NS: one dict per connection (addresses in hex, as the kernel prints)."""
    out = []
    for line in in_ns(ns, "cat", "/proc/net/ip_vs_conn").stdout.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        h = lambda x: str(A(int(x, 16)))  # noqa: E731
        out.append({"proto": f[0], "client": h(f[1]), "client_port": int(f[2], 16), "vip": h(f[3]),
                    "vport": int(f[4], 16), "dest": h(f[5]), "dport": int(f[6], 16), "state": f[7]})
    return out


@NEEDS_IPVS
def test_cluster_ip_reaches_every_endpoint_round_robin(cluster):
    seen = answers(cluster, "default/client-0", "svc/default/web:http", 12)
    assert set(seen) == WEB
    assert sorted(seen.values()) == [4, 4, 4]  # scheduler rr: strictly in turn
    r = cluster.probe("default/client-0", "svc/default/web:http")
    assert r["client_ip_seen"] == cluster.pod_ip("default/client-0")  # pod traffic is not masqueraded


@NEEDS_IPVS
def test_cluster_ip_udp(cluster):
    r = cluster.probe("default/client-0", "svc/default/web:dns", proto="udp")
    assert r["ok"] and r["answered_by"] in WEB and r["answer"]["port"] == 80


@NEEDS_IPVS
def test_node_port_from_external_and_from_a_pod(cluster):
    for node in ("node-1", "node-2"):
        seen = answers(cluster, "external", f"nodeport/{node}:30080", 6)
        assert set(seen) == WEB, node
    r = cluster.probe("external", "nodeport/node-2:30080")
    assert r["client_ip_seen"] != cluster.pod_ip("default/client-0") and r["ok"]
    assert set(answers(cluster, "default/client-0", "nodeport/node-2:30080", 6)) == WEB


@NEEDS_IPVS
def test_hairpin_through_the_cluster_ip(cluster):
    """KUBE-LOOP-BACK: a pod reaching itself via the VIP comes back masqueraded."""
    for _ in range(12):
        r = cluster.probe("default/web-0", "svc/default/web:http")
        assert r["ok"]
        if r["answered_by"] == "default/web-0":
            assert r["client_ip_seen"] != cluster.pod_ip("default/web-0")
            return
    pytest.fail("web-0 never reached itself through its Service")


@NEEDS_IPVS
def test_kube_ipvs0_holds_the_vips(cluster):
    vips = {cluster.cluster_ip("default/web"), cluster.cluster_ip("default/web-np")}
    for node in ("node-1", "node-2"):
        ns = node_ns(cluster, node)
        link = json.loads(ip(ns, "-d", "-j", "link", "show", "kube-ipvs0").stdout)[0]
        assert link["linkinfo"]["info_kind"] == "dummy"
        assert "UP" not in link["flags"]  # kube-proxy never sets it up
        addrs = json.loads(ip(ns, "-j", "addr", "show", "kube-ipvs0").stdout)[0]["addr_info"]
        assert {(a["local"], a["prefixlen"]) for a in addrs} == {(v, 32) for v in vips}


@NEEDS_IPVS
def test_ipsets_are_populated(cluster):
    ns = node_ns(cluster)
    cip, np_cip = cluster.cluster_ip("default/web"), cluster.cluster_ip("default/web-np")

    def members(name: str) -> set[str]:
        text = in_ns(ns, "ipset", "list", name).stdout
        return {line.strip() for line in text.split("Members:\n", 1)[1].splitlines() if line.strip()}

    assert members("KUBE-CLUSTER-IP") == {f"{cip},tcp:80", f"{cip},udp:53", f"{np_cip},tcp:80"}
    assert members("KUBE-NODE-PORT-TCP") == {"30080"}
    assert members("KUBE-IPVS-IPS") == {cip, np_cip}
    local = {cluster.pod_ip(p) for p in ("default/web-0", "default/web-2")}  # node-1's endpoints
    assert members("KUBE-LOOP-BACK") == {f"{a},{p}:80,{a}" for a in local for p in ("tcp", "udp")}


@NEEDS_IPVS
def test_virtual_servers_match_the_desired_state(cluster):
    ns = node_ns(cluster)

    def table():
        from pyroute2 import IPVS

        with IPVS() as s:
            return {svc.key: sorted((str(d.ip), d.port, d.weight) for d in ipvs.applied_dests(s, svc.key))
                    for svc in ipvs.applied_services(s).values()}

    got = netns.run_in(ns, table)
    eps = sorted((cluster.pod_ip(p), 80, 1) for p in WEB)
    cip, np_cip = A(cluster.cluster_ip("default/web")), A(cluster.cluster_ip("default/web-np"))
    assert got[(cip, "TCP", 80)] == eps and got[(cip, "UDP", 53)] == eps and got[(np_cip, "TCP", 80)] == eps
    # NodePorts listen on every node address but kube-ipvs0's (node IP, cni0, flannel.1), never on a VIP
    node_ports = {k[0] for k in got if k[2] == 30080}
    assert A(cluster.pod_ip("node/node-1")) in node_ports and not node_ports & {cip, np_cip}
    assert all(got[(a, "TCP", 30080)] == eps for a in node_ports)
    assert set(got) == {(cip, "TCP", 80), (cip, "UDP", 53), (np_cip, "TCP", 80)} | {
        (a, "TCP", 30080) for a in node_ports}


@NEEDS_IPVS
def test_connection_table_shows_the_connections(cluster):
    """Assert on IPVS connections (made now, kept in TIME_WAIT), not on the stats counters (they lag ~2 s)."""
    ns = node_ns(cluster)
    client = cluster.pod_ip("default/client-0")
    cip = cluster.cluster_ip("default/web")
    r = cluster.probe("default/client-0", "svc/default/web:http")
    assert r["ok"]
    answered = cluster.pod_ip(r["answered_by"])
    conns = [c for c in ipvs_connections(ns) if c["client"] == client and c["vip"] == cip and c["vport"] == 80]
    assert conns, ipvs_connections(ns)
    assert any(c["proto"] == "TCP" and c["dest"] == answered and c["dport"] == 80 for c in conns)
    r = cluster.probe("default/client-0", "svc/default/web:dns", proto="udp")
    assert r["ok"]
    assert any(c["proto"] == "UDP" and c["vport"] == 53 and c["client"] == client for c in ipvs_connections(ns))
    r = cluster.probe("external", "nodeport/node-1:30080")
    assert r["ok"]
    ext_ip, node_ip = cluster.pod_ip("external"), cluster.pod_ip("node/node-1")
    assert any(c["vip"] == node_ip and c["vport"] == 30080 and c["client"] == ext_ip and
               c["dest"] == cluster.pod_ip(r["answered_by"]) for c in ipvs_connections(ns))


@NEEDS_IPVS
def test_resync_removes_what_is_stale(cluster):
    """A second sync without the NodePort Service: its VIP leaves kube-ipvs0, its virtual servers and set entries
    go.  Then the full state is synced back."""
    from emu.cluster import lifecycle as clusters
    from emu.addons.kubeproxy import inputs

    cl = clusters.open_cluster(cluster.name)
    ns = node_ns(cluster)
    full = inputs.node_states(cl.topology, cl.allocations)["node-1"]
    reduced = NodeProxyState(full.node, full.node_ips, full.cluster_cidr, full.service_cidrs,
                             tuple((s, e) for s, e in full.services if s.name != "web-np"), full.masquerade_all)
    np_cip = cluster.cluster_ip("default/web-np")
    try:
        ipvs.sync_node(ns, reduced, first=False, backend=cl.topology.cluster.iptables_backend)
        addrs = json.loads(ip(ns, "-j", "addr", "show", "kube-ipvs0").stdout)[0]["addr_info"]
        assert np_cip not in {a["local"] for a in addrs}
        assert "30080" not in in_ns(ns, "ipset", "list", "KUBE-NODE-PORT-TCP").stdout
        assert f"{np_cip}," not in in_ns(ns, "ipset", "list", "KUBE-CLUSTER-IP").stdout
        # node-1 no longer knows the NodePort: nothing there listens on 30080, so its kernel resets the SYN, while
        # node-2, still synced, serves it (the positive control)
        cluster.assert_blocked("external", "nodeport/node-1:30080", by="reset", timeout=0.5,
                               control=("external", "nodeport/node-2:30080"))
    finally:
        ipvs.sync_node(ns, full, first=False, backend=cl.topology.cluster.iptables_backend)
    assert cluster.probe("external", "nodeport/node-1:30080")["ok"]


# ----------------------------------------------------------------------------------------------- any kernel


def sp(ns: str, name: str, cip: str, **kw) -> ServicePort:
    kw.setdefault("port_name", "p80")
    kw.setdefault("protocol", "TCP")
    kw.setdefault("port", 80)
    return ServicePort(namespace=ns, name=name, cluster_ip=A(cip), **kw)


def node_state(*services) -> NodeProxyState:
    return NodeProxyState("test-node", (A("172.18.0.2"),), N("10.244.0.0/16"), (N("10.96.0.0/12"),),
                          tuple(services))


# Every rule shape writeIptablesRules emits except the `-m ipvs` drop (xt_ipvs needs IP_VS): the source range of
# the LB service contains the node IP, so no KUBE-IPVS-OUT-FILTER rule is written.
RICH = node_state(
    (sp("ns1", "web", "10.96.0.41"), (Endpoint(A("10.244.1.2"), 80, "test-node"), Endpoint(A("10.244.2.2"), 80))),
    (sp("ns2", "np", "10.96.0.42", node_port=30001, external_ips=(A("192.168.99.2"),)),
     (Endpoint(A("10.244.2.3"), 80),)),
    (sp("ns3", "lb", "10.96.0.43", node_port=30003, load_balancer_ips=(A("192.168.240.3"),),
        load_balancer_source_ranges=(N("172.18.0.0/24"),), external_policy_local=True, health_check_node_port=32000,
        session_affinity=True), (Endpoint(A("10.244.1.3"), 80, "test-node"),)),
    (sp("ns4", "dns", "10.96.0.10", port_name="dns", protocol="UDP", port=53, node_port=30053,
        external_ips=(A("192.168.99.10"),), external_policy_local=True),
     (Endpoint(A("10.244.1.10"), 53, "test-node"),)),
    (sp("ns5", "empty", "10.96.0.45"), ()),
)


@pytest.fixture
def scratch():
    name = f"emu-kt-ipvs-{os.getpid()}-{time.monotonic_ns() % 100000}"
    netns.create_many([name])
    try:
        ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        netns.remove(name)


def ipset_members(ns: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for block in in_ns(ns, "ipset", "list").stdout.split("Name: ")[1:]:
        name = block.splitlines()[0].strip()
        members = block.split("Members:\n", 1)[1] if "Members:\n" in block else ""
        out[name] = tuple(sorted(line.strip() for line in members.splitlines() if line.strip()))
    return out


def test_ipsets_load_with_one_ipset_restore(scratch):
    want = ipvs_desired.desired(RICH)
    netns.run_in(scratch, lambda: ipvs.load_ipsets(want))
    assert ipset_members(scratch) == {s.name: tuple(sorted(s.entries)) for s in want.ipsets}
    headers = in_ns(scratch, "ipset", "list", "-t").stdout
    assert "Name: KUBE-NODE-PORT-TCP\nType: bitmap:port" in headers and "Header: range 0-65535" in headers
    assert "Header: family inet hashsize 1024 maxelem 65536" in headers

    # a later sync with fewer services: the same restore leaves exactly the new entries (stale ones flushed)
    smaller = ipvs_desired.desired(node_state(RICH.services[0]))
    netns.run_in(scratch, lambda: ipvs.load_ipsets(smaller))
    assert ipset_members(scratch) == {s.name: tuple(sorted(s.entries)) for s in smaller.ipsets}
    assert ipset_members(scratch)["KUBE-CLUSTER-IP"] == ("10.96.0.41,tcp:80",)


def test_iptables_text_loads_and_reads_back(scratch):
    """The restore text (with the first-sync jumps) loads with iptables-restore --noflush and iptables-save prints
    every rule back as `saved_form` predicts, in order; a second sync leaves the jumps alone."""
    want = ipvs_desired.desired(RICH)
    assert "-m ipvs" not in want.iptables
    backend = "nft"

    def load(first: bool):
        return netns.run_in(scratch, lambda: (ipvs.load_ipsets(want), ipvs.load_iptables(want, first, backend)))

    load(True)
    load(False)
    saved = in_ns(scratch, f"iptables-{backend}-save").stdout
    got = ipt_text.saved_chains(saved, prefix="KUBE-")
    expected = ipt_text.restore_chains(want.iptables)
    for table in ("nat", "filter"):
        assert set(got[table]) == set(expected[table]), table
        for name, rules in expected[table].items():
            assert got[table][name] == [ipt_text.saved_form(r) for r in rules], name
    builtin = ipt_text.saved_chains(saved)
    assert builtin["filter"]["INPUT"] == [
        '-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
        '-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT']
    assert builtin["filter"]["OUTPUT"] == [
        '-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER']
    assert builtin["nat"]["PREROUTING"] == [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']
    assert builtin["nat"]["POSTROUTING"] == [
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']


def test_kube_ipvs0_addresses_are_reconciled(scratch):
    """Bind and unbind on kube-ipvs0.  Without the dummy link type a bridge stands in (created by the test; the
    code only creates kube-ipvs0 when it is missing)."""
    from pyroute2 import IPRoute

    ip(scratch, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    ip(scratch, "addr", "add", "172.18.0.2/24", "dev", "eth0")
    if not kernel.has("dummy"):
        ip(scratch, "link", "add", ipvs_names.DUMMY_DEVICE, "type", "bridge")

    def work():
        with IPRoute() as ipr:
            index = ipvs.ensure_dummy_device(ipr)
            added = ipvs.bind_addresses(ipr, index, [A("10.96.0.1"), A("10.96.0.10"), A("192.168.99.2")])
            again = ipvs.bind_addresses(ipr, index, [A("10.96.0.1")])
            removed = ipvs.unbind_superfluous(ipr, index, [A("10.96.0.1"), A("10.96.0.10")])
            return added, again, removed, ipvs.bound_addresses(ipr, index), ipvs._local_addresses(ipr, index)

    added, again, removed, bound, node_addrs = netns.run_in(scratch, work)
    assert added == [A("10.96.0.1"), A("10.96.0.10"), A("192.168.99.2")] and again == []
    assert removed == [A("192.168.99.2")] and bound == [A("10.96.0.1"), A("10.96.0.10")]
    assert node_addrs == [A("172.18.0.2")]  # nodeAddressSet: neither loopback nor kube-ipvs0's
    addrs = json.loads(ip(scratch, "-j", "addr", "show", ipvs_names.DUMMY_DEVICE).stdout)[0]
    assert {(a["local"], a["prefixlen"]) for a in addrs["addr_info"]} == {("10.96.0.1", 32), ("10.96.0.10", 32)}
    assert "UP" not in addrs["flags"]
    local = ip(scratch, "route", "show", "table", "local").stdout
    assert "local 10.96.0.10 dev kube-ipvs0" in local  # a down link's /32 is still a local address


def test_sync_node_without_ip_vs_fails_in_one_line(scratch):
    if kernel.has("ip_vs"):
        pytest.skip("this kernel has IP_VS")
    with pytest.raises(kpsync.SyncError) as e:
        ipvs.sync_node(scratch, RICH, first=True)
    assert str(e.value) == ("ipvs sync of test-node failed: the kernel has no IP_VS "
                            "(no IPVS generic netlink family)")
    # nothing was half-built: IPVS is checked before anything is touched
    assert ipvs_names.DUMMY_DEVICE not in ip(scratch, "link").stdout
    assert in_ns(scratch, "ipset", "list", "-n").stdout.strip() == ""


@NEEDS_IPVS
def test_sync_node_in_a_scratch_namespace(scratch):
    """The whole sync on a kernel with IP_VS and dummy, twice, without a cluster around it."""
    ip(scratch, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    ip(scratch, "addr", "add", "172.18.0.2/24", "dev", "eth0")
    state = node_state(*RICH.services)
    ipvs.sync_node(scratch, state, first=True)
    r = ipvs.sync_node(scratch, state, first=False)
    want = ipvs_desired.desired(state, [A("172.18.0.2")])
    assert r.node == "test-node" and r.rules > 0

    def table():
        from pyroute2 import IPVS

        with IPVS() as s:
            applied = ipvs.applied_services(s)
            return {k: (a, sorted((d.ip, d.port, d.weight) for d in ipvs.applied_dests(s, k)))
                    for k, a in applied.items()}

    got = netns.run_in(scratch, table)
    assert set(got) == {vs.key for vs in want.virtual_servers}
    for vs in want.virtual_servers:
        applied, dests = got[vs.key]
        assert applied.matches(vs), vs
        assert dests == sorted((r.ip, r.port, r.weight) for r in vs.real_servers), vs
    assert ipset_members(scratch) == {s.name: tuple(sorted(s.entries)) for s in want.ipsets}
    sysctl = in_ns(scratch, "sysctl", "-n", "net.ipv4.vs.conntrack", "net.ipv4.vs.expire_nodest_conn").stdout
    assert sysctl.split() == ["1", "1"]

    smaller = node_state(RICH.services[0])
    ipvs.sync_node(scratch, smaller, first=False)
    got = netns.run_in(scratch, table)
    assert set(got) == {(A("10.96.0.41"), "TCP", 80)}
    addrs = json.loads(ip(scratch, "-j", "addr", "show", ipvs_names.DUMMY_DEVICE).stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs] == ["10.96.0.41"]
