"""Cluster DNS without root: Corefile, records as CoreDNS's kubernetes plugin gives them, kubelet's resolv.conf,
the wire codec and the stub resolver's search order.

Where the expectations come from:
- test_upstream_coredns_cases / test_upstream_coredns_pod_modes: upstream's own expected answers, transcribed in
  tests/unit/upstream_coredns.py (coredns/coredns plugin/kubernetes/handler_test.go@01c32383ad96, with the
  differences written there).
- The answers over topologies/dns.yaml (test_service_a ... test_externalname_cname_and_forward): emu's own, written
  beside the code from the kubernetes/dns specification (docs/specification.md) and CoreDNS's record formats; they
  are believed because the same shapes (SOA fields and TTL, SRV weight, PTR names) are the ones the upstream cases
  pin, and tests/integration/test_dns.py asks them of the running server with dig.
- The resolv.conf texts: emu's own, from kubelet's pkg/kubelet/network/dns/dns.go (GetPodDNS: search list order,
  the 3-nameserver limit, ClusterFirst on hostNetwork falling back to Default).
"""
from __future__ import annotations

import pytest

from emu.cluster import planner
from emu.cluster import lifecycle as clusters
from emu.addons.dns import addon, corefile, records, resolvconf, validation, wire
from emu.addons.dns import probe as dns_probe
from emu.errors import ValidationError
from emu.model import loader as topology

from . import upstream_coredns

TOPO = "topologies/dns.yaml"


class _Rec:
    def __init__(self, docs):
        self.documents = docs
        self.topology_file = TOPO


class _Cl:
    """Just what records.snapshot and addon need from a running cluster."""

    def __init__(self):
        docs = topology.read_documents(TOPO)
        self.topology, self.allocations, self.plan = clusters.plan_file(TOPO)
        self.record = _Rec([{"file": d.file, "index": d.index, "body": d.body} for d in docs])


@pytest.fixture(scope="module")
def cl():
    return _Cl()


@pytest.fixture(scope="module")
def snap(cl):
    return records.snapshot(cl, addon.config(cl), serial=1700000000)


def ask(snap, name, qtype="A"):
    what, r = records.resolve(snap, wire.decode(wire.query(name, qtype, 7)))
    if what == "forward":
        return "forward", [], []
    return r.rcode_name, r.answer, r.authority


def test_corefile_seed():
    cfg = addon.config(_Cl())
    assert cfg.zones == ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
    assert cfg.pods == "insecure" and cfg.ttl == 5 and cfg.fallthrough == ["in-addr.arpa.", "ip6.arpa."]
    assert cfg.forward == ["/etc/resolv.conf"] and cfg.loadbalance and cfg.port == 53


def test_corefile_errors():
    with pytest.raises(corefile.CorefileError, match="unknown plugin"):
        corefile.parse(".:53 {\n  kubernetes cluster.local\n  bogus\n}\n")
    with pytest.raises(corefile.CorefileError, match="unbalanced"):
        corefile.parse(".:53 {\n  errors\n")
    assert corefile.parse(corefile.DEFAULT_COREFILE).ttl == 30


def test_bad_corefile_is_a_validation_error(tmp_path):
    text = open(TOPO).read().replace("        loadbalance\n", "        loadbalancer\n")
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValidationError, match="data.Corefile.*unknown plugin 'loadbalancer'"):
        planner.load(str(p))


def test_addon_objects(cl):
    keys = [p.key for p in cl.topology.pods if p.namespace == "kube-system"]
    assert len(keys) == 2 and all(k.startswith("kube-system/coredns-") for k in keys)
    svc = next(s for s in cl.topology.services if s.key == "kube-system/kube-dns")
    assert [(p.name, p.port, p.protocol.value) for p in svc.ports] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    assert str(cl.allocations.services["kube-system/kube-dns"].cluster_ip) == "10.96.0.10"


def test_no_addon_without_configmap():
    topo, _, _ = clusters.plan_file("topologies/flannel-vxlan.yaml")
    assert not any(p.namespace == "kube-system" for p in topo.pods)
    assert not any(s.name == "kube-dns" for s in topo.services)


def test_service_a(cl, snap):
    rcode, ans, _ = ask(snap, "web.default.svc.cluster.local")
    assert rcode == "NOERROR"
    assert [(a.type, a.ttl, a.data) for a in ans] == [
        ("A", 5, str(cl.allocations.services["default/web"].cluster_ip))]


def test_headless_one_a_per_ready_pod(cl, snap):
    rcode, ans, _ = ask(snap, "web-headless.default.svc.cluster.local")
    ips = sorted(str(cl.allocations.pods[p.key].ip) for p in cl.topology.pods if p.labels.get("app") == "web")
    assert rcode == "NOERROR" and sorted(a.data for a in ans) == ips and len(ips) == 2
    ep = ips[0].replace(".", "-")
    assert ask(snap, f"{ep}.web-headless.default.svc.cluster.local")[1][0].data == ips[0]


def test_srv_named_ports(cl, snap):
    cip = str(cl.allocations.services["default/web"].cluster_ip)
    what, r = records.resolve(snap, wire.decode(wire.query("_http._tcp.web.default.svc.cluster.local", "SRV")))
    assert [a.data for a in r.answer] == [(0, 100, 80, "web.default.svc.cluster.local.")]
    assert [(a.name, a.data) for a in r.additional] == [("web.default.svc.cluster.local.", cip)]
    _, ans, _ = ask(snap, "_dns-alt._udp.web.default.svc.cluster.local", "SRV")
    assert [a.data[2] for a in ans] == [5353]
    _, ans, _ = ask(snap, "_http._tcp.web-headless.default.svc.cluster.local", "SRV")
    assert sorted(a.data[1] for a in ans) == [50, 50] and all(
        a.data[3].endswith(".web-headless.default.svc.cluster.local.") for a in ans)
    assert ask(snap, "_nope._tcp.web.default.svc.cluster.local", "SRV")[0] == "NXDOMAIN"


def test_ptr(cl, snap):
    ip = str(cl.allocations.services["kube-system/kube-dns"].cluster_ip)
    _, ans, _ = ask(snap, records.reverse_name(ip), "PTR")
    assert [a.data for a in ans] == ["kube-dns.kube-system.svc.cluster.local."]
    pod_ip = str(next(cl.allocations.pods[p.key].ip for p in cl.topology.pods if p.labels.get("app") == "web"))
    _, ans, _ = ask(snap, records.reverse_name(pod_ip), "PTR")
    names = sorted(a.data for a in ans)
    dashed = pod_ip.replace(".", "-")
    assert names == [f"{dashed}.web-headless.default.svc.cluster.local.", f"{dashed}.web.default.svc.cluster.local."]
    # an address no Service knows: fallthrough in-addr.arpa -> forward (the upstream says NXDOMAIN)
    assert ask(snap, records.reverse_name("10.244.1.250"), "PTR")[0] == "forward"


def test_pods_insecure(snap):
    _, ans, _ = ask(snap, "10-244-9-9.default.pod.cluster.local")
    assert [a.data for a in ans] == ["10.244.9.9"]
    assert ask(snap, "10-244-9-9.nonexistent.pod.cluster.local")[0] == "NXDOMAIN"
    verified = dict(snap, pods="verified")
    assert ask(verified, "10-244-9-9.default.pod.cluster.local")[0] == "NXDOMAIN"
    disabled = dict(snap, pods="disabled")
    assert ask(disabled, "10-244-9-9.default.pod.cluster.local")[0] == "NXDOMAIN"


def test_nxdomain_with_soa(snap):
    rcode, ans, auth = ask(snap, "nope.default.svc.cluster.local")
    assert rcode == "NXDOMAIN" and ans == []
    assert [(a.name, a.type, a.ttl, a.data) for a in auth] == [
        ("cluster.local.", "SOA", 5, ("ns.dns.cluster.local.", "hostmaster.cluster.local.", 1700000000,
                                      7200, 1800, 86400, 5))]
    # NODATA: the name exists (a namespace, an AAAA for an IPv4 Service): NOERROR, empty, the SOA
    for name, qtype in (("default.svc.cluster.local", "A"), ("web.default.svc.cluster.local", "AAAA")):
        rcode, ans, auth = ask(snap, name, qtype)
        assert rcode == "NOERROR" and ans == [] and auth[0].type == "SOA"
    assert ask(snap, "web.nonexistent.svc.cluster.local")[0] == "NXDOMAIN"


def test_externalname_cname_and_forward(snap):
    _, ans, _ = ask(snap, "ext.ns1.svc.cluster.local")
    assert [(a.type, a.data) for a in ans] == [("CNAME", "example.com.")]
    assert ask(snap, "example.com")[0] == "forward"
    _, ans, _ = ask(snap, "dns-version.cluster.local", "TXT")
    assert ans[0].data == "1.1.0"


def test_wire_roundtrip():
    m = wire.Message(id=9, qr=True, aa=True, ra=True, rcode=3, question=[("a.b.", "A")],
                     answer=[wire.RR("x.", "SRV", 5, (0, 100, 53, "t.example."))],
                     authority=[wire.RR("b.", "SOA", 5, ("ns.dns.b.", "hostmaster.b.", 1, 2, 3, 4, 5))],
                     additional=[wire.RR("t.example.", "A", 5, "192.0.2.1")])
    d = wire.decode(wire.encode(m))
    assert (d.id, d.qr, d.aa, d.rcode, d.question) == (9, True, True, 3, [("a.b.", "A")])
    assert d.answer == m.answer and d.authority == m.authority and d.additional == m.additional


HOST = resolvconf.DNSConfig(servers=["172.18.0.1"])


@pytest.mark.parametrize("spec, ns, expected", [
    ({}, "ns1", "search ns1.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n"
                "options ndots:5\n"),
    ({"dnsPolicy": "ClusterFirst", "dnsConfig": {"nameservers": ["8.8.8.8"], "searches": ["ns1.svc.cluster.local"],
                                                 "options": [{"name": "ndots", "value": "5"}]}}, "default",
     "search default.svc.cluster.local svc.cluster.local cluster.local ns1.svc.cluster.local\n"
     "nameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n"),
    ({"dnsPolicy": "Default"}, "default", "nameserver 172.18.0.1\n"),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.b"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     "default", "search a.b\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"),
    ({"hostNetwork": True}, "default", "nameserver 172.18.0.1\n"),  # ClusterFirst on hostNetwork: Default
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, "kube-system",
     "search kube-system.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n"
     "options ndots:5\n"),
])
def test_resolv_conf(spec, ns, expected):
    assert resolvconf.pod_dns(spec, ns, ["10.96.0.10"], "cluster.local.", HOST).render() == expected


def test_resolv_conf_limits_and_validation():
    c = resolvconf.pod_dns({"dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"]}}, "d",
                           ["10.96.0.10"], "cluster.local.", HOST)
    assert c.servers == ["10.96.0.10", "1.1.1.1", "2.2.2.2"] and "Nameserver limits" in c.warnings[0]
    assert validation.validate({"dnsPolicy": "None"})[0][0] == "dnsConfig.nameservers"
    assert validation.validate({"dnsPolicy": "Sometimes"})[0][0] == "dnsPolicy"
    assert validation.validate({"dnsConfig": {"nameservers": ["x"]}})[0][0] == "dnsConfig.nameservers[0]"


def test_resolv_confs_per_pod(cl):
    confs = addon.resolv_confs(cl)
    assert confs["dns.default.nginx"] == ("search default.svc.cluster.local svc.cluster.local cluster.local "
                                          "ns1.svc.cluster.local\nnameserver 10.96.0.10\nnameserver 8.8.8.8\n"
                                          "options ndots:5\n")
    assert confs["dns.ns1.default-policy"] == "nameserver 172.18.0.1\n"
    assert confs["dns.node-1"] == confs["dns.external"] == "nameserver 172.18.0.1\n"
    coredns = [k for k in confs if k.startswith("dns.kube-system.coredns-")]
    assert len(coredns) == 2 and all(confs[k] == "nameserver 172.18.0.1\n" for k in coredns)


def test_search_order():
    s = ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert dns_probe.candidates("web", s, 5) == ["web.ns1.svc.cluster.local.", "web.svc.cluster.local.",
                                             "web.cluster.local.", "web."]
    assert dns_probe.candidates("a.b.c.d.e", s, 5)[-1] == "a.b.c.d.e."
    assert dns_probe.candidates("a.b.c.d.e.f", s, 5)[0] == "a.b.c.d.e.f."
    assert dns_probe.candidates("web.default.svc.cluster.local.", s, 5) == ["web.default.svc.cluster.local."]


# --- upstream's expected answers (tests/unit/upstream_coredns.py) ------------------------------------------------

def _rr(text: str) -> tuple[str, int, str, tuple[str, ...]]:
    """A record in presentation format as upstream's SortAndCheck compares it: name, TTL, type, data; an SOA's
    serial is left out (upstream's comes from its fake's Modified(), emu's from the snapshot)."""
    name, ttl, _cls, rtype, *data = text.split()
    if rtype == "TXT":
        data = [" ".join(data).strip('"')]
    if rtype == "SOA":
        data[2] = "*"
    return name.lower() if name.endswith(".") else name.lower() + ".", int(ttl), rtype, tuple(data)


def _section(rrs) -> list[tuple[str, int, str, tuple[str, ...]]]:
    return sorted(_rr(r.text() if isinstance(r, wire.RR) else r) for r in rrs)


def _ask_as_the_server_does(snap, qname, qtype):
    """records.resolve, then what emu.addons.dns.server's Server.chase adds for an in-zone CNAME target."""
    what, r = records.resolve(snap, wire.decode(wire.query(qname, qtype, 7)))
    assert what == "answer", f"{qname} {qtype}: emu forwards, upstream answers"
    if r.answer and r.answer[-1].type == "CNAME" and qtype in ("A", "AAAA"):
        inner = records.resolve(snap, wire.Message(id=7, question=[(str(r.answer[-1].data), qtype)]))[1]
        r.answer += inner.answer if inner else []
    return r


@pytest.mark.parametrize("qname, qtype, rcode, answer, ns, extra", upstream_coredns.DNS_CASES,
                         ids=[f"{c[0]}{c[1]}" for c in upstream_coredns.DNS_CASES])
def test_upstream_coredns_cases(qname, qtype, rcode, answer, ns, extra):
    r = _ask_as_the_server_does(upstream_coredns.snapshot(), qname, qtype)
    assert r.rcode_name == rcode
    assert _section(r.answer) == _section(answer)
    assert _section(r.authority) == _section(ns)
    assert _section(r.additional) == _section(extra)


@pytest.mark.parametrize("mode, qname, qtype, rcode, answer", upstream_coredns.POD_CASES)
def test_upstream_coredns_pod_modes(mode, qname, qtype, rcode, answer):
    r = _ask_as_the_server_does(upstream_coredns.snapshot(pods=mode), qname, qtype)
    assert (r.rcode_name, _section(r.answer)) == (rcode, _section(answer))
