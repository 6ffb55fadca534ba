"""Upstream's expected answers for CoreDNS's kubernetes plugin, carried as test data.

Source: coredns/coredns plugin/kubernetes/handler_test.go at commit 01c32383ad9695326d3ae029d9f9a41ba27b679e
(`dnsTestCases`, served by `TestServeDNS` over the fake API `APIConnServeTest`: `svcIndex`, `epsIndex`), and
plugin/kubernetes/handler_pod_insecure_test.go / handler_pod_verified_test.go at commit
08045eb46a6f800b0bedaf29fe1fbdc51f50a5a1 (`podModeInsecureCases`, `podModeVerifiedCases`).  Upstream compares with
plugin/test/helpers.go `SortAndCheck`: each section sorted by its text, then name, TTL, type and data per record (for
an SOA only the NS field, so the serial, which comes from the fake's Modified(), is not part of the expectation).

The fake API is transcribed into emu's zone snapshot (emu.addons.dns.records.snapshot's shape).  Cases are transcribed
verbatim except where a line says `adapted` or `deviation` and why; the IPv6 parts of the fake (svc6, the
5678:abcd:: endpoints of hdls1, the second family of svc-dual-stack) are left out because emu's clusters are IPv4
only, and their cases with them.
"""
from __future__ import annotations

from typing import Any

UPSTREAM = "coredns/coredns plugin/kubernetes/handler_test.go@01c32383ad9695326d3ae029d9f9a41ba27b679e"
SOA = "cluster.local.\t5\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local. 1499347823 7200 1800 86400 5"


def _svc(name: str, ns: str, cluster_ip: str | None, ports: list[tuple[str, int]], *, headless: bool = False,
         type_: str = "ClusterIP", external_name: str | None = None,
         endpoints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"namespace": ns, "name": name, "type": type_, "headless": headless, "cluster_ip": cluster_ip,
            "external_name": external_name, "external_ips": [],
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports], "endpoints": endpoints or []}


def _ep(ip: str, hostname: str | None = None, port: int | None = 80) -> dict[str, Any]:
    # object/endpoint.go: an address without a hostname is named by its dashed IP; port -1 (no ports) has none
    return {"ip": ip, "hostname": hostname or ip.replace(".", "-"),
            "ports": {} if port is None else {"http/TCP": port}}


def snapshot(pods: str = "disabled") -> dict[str, Any]:
    """svcIndex/epsIndex of handler_test.go as an emu zone snapshot: `New([]string{"cluster.local."})` with its
    defaults (ttl 5, no fallthrough) and `k.Namespaces = {"testns"}`; `podns` for the pod-mode tests, whose fake
    PodIndex knows one pod, podns/foo at 10.240.0.1."""
    return {
        "serial": 1499347823, "zones": ["cluster.local."], "domain": "cluster.local.", "pods": pods, "ttl": 5,
        "fallthrough": None, "loadbalance": False, "dns_ip": "10.0.0.10",
        "namespaces": ["podns", "testns"] if pods != "disabled" else ["testns"],
        "services": [
            _svc("kubedns", "kube-system", "10.0.0.10", [("dns", 53)], endpoints=[_ep("172.0.0.100", port=53)]),
            _svc("svc1", "testns", "10.0.0.1", [("http", 80)], endpoints=[_ep("172.0.0.1", "ep1a")]),
            _svc("svcempty", "testns", "10.0.0.1", [("http", 80)]),
            _svc("hdls1", "testns", None, [("http", 80)], headless=True, endpoints=[
                _ep("172.0.0.2"), _ep("172.0.0.3"), _ep("172.0.0.4", "dup-name"), _ep("172.0.0.5", "dup-name")]),
            _svc("external", "testns", None, [("http", 80)], type_="ExternalName",
                 external_name="ext.interwebs.test"),
            _svc("external-to-service", "testns", None, [("http", 80)], type_="ExternalName",
                 external_name="svc1.testns.svc.cluster.local."),
            _svc("hdlsprtls", "testns", None, [], headless=True, endpoints=[_ep("172.0.0.20", port=None)]),
            _svc("svc1", "unexposedns", "10.0.0.2", [("http", 80)]),
            _svc("svc-dual-stack", "testns", "10.0.0.3", [("http", 80)]),
        ],
        "pods_by_ip": {"10.240.0.1": "podns"},
    }


# (qname, qtype, rcode, answer, ns, extra): records in upstream's presentation format, as in the Go file.
# hdls1's ports: the Go Service has none, its endpoints carry "http"/80; emu's headless SRV reads endpoint ports by
# the Service's port names, so the Service here names port http (the answers are the same).
DNS_CASES: list[tuple[str, str, str, list[str], list[str], list[str]]] = [
    ("svc1.testns.svc.cluster.local.", "A", "NOERROR", ["svc1.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"], [], []),
    ("svcempty.testns.svc.cluster.local.", "A", "NOERROR",
     ["svcempty.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"], [], []),
    ("svc1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["svc1.testns.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 svc1.testns.svc.cluster.local."], [],
     ["svc1.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"]),
    ("svcempty.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["svcempty.testns.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 svcempty.testns.svc.cluster.local."], [],
     ["svcempty.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"]),
    ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.svc1.testns.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 svc1.testns.svc.cluster.local."], [],
     ["svc1.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"]),
    ("_http._tcp.svcempty.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.svcempty.testns.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 svcempty.testns.svc.cluster.local."], [],
     ["svcempty.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"]),
    ("hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     [f"hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.{i}" for i in (2, 3, 4, 5)], [], []),
    ("hdlsprtls.testns.svc.cluster.local.", "A", "NOERROR",
     ["hdlsprtls.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.20"], [], []),
    ("172-0-0-20.hdlsprtls.testns.svc.cluster.local.", "A", "NOERROR",
     ["172-0-0-20.hdlsprtls.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.20"], [], []),
    ("172-0-0-2.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["172-0-0-2.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.2"], [], []),
    ("172-0-0-3.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["172-0-0-3.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.3"], [], []),
    ("dup-name.hdls1.testns.svc.cluster.local.", "A", "NOERROR",
     ["dup-name.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.4",
      "dup-name.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.5"], [], []),
    # adapted: upstream's hdls1 also has 5678:abcd::1 and ::2, six endpoints, so weight floor(100/6) = 16; without
    # them backend_lookup.go's rule gives floor(100/4) = 25 (dup-name counted twice, answered once)
    ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.hdls1.testns.svc.cluster.local.\t5\tIN\tSRV\t0 25 80 172-0-0-2.hdls1.testns.svc.cluster.local.",
      "_http._tcp.hdls1.testns.svc.cluster.local.\t5\tIN\tSRV\t0 25 80 172-0-0-3.hdls1.testns.svc.cluster.local.",
      "_http._tcp.hdls1.testns.svc.cluster.local.\t5\tIN\tSRV\t0 25 80 dup-name.hdls1.testns.svc.cluster.local."], [],
     ["172-0-0-2.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.2",
      "172-0-0-3.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.3",
      "dup-name.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.4",
      "dup-name.hdls1.testns.svc.cluster.local.\t5\tIN\tA\t172.0.0.5"]),
    ("external.testns.svc.cluster.local.", "CNAME", "NOERROR",
     ["external.testns.svc.cluster.local.\t5\tIN\tCNAME\text.interwebs.test."], [], []),
    # deviation: upstream answers CNAME + the target's A in one step (backend_lookup.go A() recurses for an in-zone
    # target); emu's records.resolve returns the CNAME and emu.addons.dns.server's Server.chase appends the target's
    # records, so the test joins resolve(name) with resolve(target) as the server does
    ("external-to-service.testns.svc.cluster.local.", "A", "NOERROR",
     ["external-to-service.testns.svc.cluster.local.\t5\tIN\tCNAME\tsvc1.testns.svc.cluster.local.",
      "svc1.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1"], [], []),
    # left out: `external` A, whose answer comes from the fake Upstreamer (a truncated upstream reply)
    ("svc1.testns.svc.cluster.local.", "AAAA", "NOERROR", [], [SOA], []),
    ("svc0.testns.svc.cluster.local.", "AAAA", "NXDOMAIN", [], [SOA], []),
    ("svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("svc0.svc-nons.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    # (upstream writes the owner without its final dot; dns.NewRR makes it absolute)
    ("dns-version.cluster.local.", "TXT", "NOERROR", ["dns-version.cluster.local.\t28800\tIN\tTXT\t1.1.0"], [], []),
    ("bogusendpoint.hdls1.testns.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("bogusendpoint.svc0.testns.svc.cluster.local.", "A", "NXDOMAIN", [], [SOA], []),
    ("svc.cluster.local.", "A", "NOERROR", [], [SOA], []),
    ("pod.cluster.local.", "A", "NOERROR", [], [SOA], []),
    ("testns.svc.cluster.local.", "A", "NOERROR", [], [SOA], []),
    ("svc.cluster.local.", "NS", "NOERROR", [], [SOA], []),
    ("testns.svc.cluster.local.", "NS", "NOERROR", [], [SOA], []),
    ("foo.cluster.local.", "NS", "NXDOMAIN", [], [SOA], []),
    ("foo.svc.cluster.local.", "NS", "NXDOMAIN", [], [SOA], []),
    ("svc-dual-stack.testns.svc.cluster.local.", "A", "NOERROR",
     ["svc-dual-stack.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.3"], [], []),
    ("svc1.testns.svc.cluster.local.", "SOA", "NOERROR", [], [SOA], []),
    ("endpoint.external.testns.svc.cluster.local.", "CNAME", "NXDOMAIN", [], [SOA], []),
]

# Pod records (handler_pod_*_test.go@08045eb): rcode and answer.  That file's SOA carries the TTL 300/minimum 30 of
# the plugin's default TTL at the time; the SOA shape is compared in DNS_CASES above.  Left out: `podns.pod.<zone>`,
# which that commit answers NXDOMAIN in insecure mode and NOERROR in verified mode (emu: NXDOMAIN in both).
POD_CASES: list[tuple[str, str, str, str, list[str]]] = [
    ("insecure", "10-240-0-1.podns.pod.cluster.local.", "A", "NOERROR",
     ["10-240-0-1.podns.pod.cluster.local.\t5\tIN\tA\t10.240.0.1"]),
    ("insecure", "172-0-0-2.podns.pod.cluster.local.", "A", "NOERROR",
     ["172-0-0-2.podns.pod.cluster.local.\t5\tIN\tA\t172.0.0.2"]),
    ("insecure", "blah.podns.pod.cluster.local.", "A", "NXDOMAIN", []),
    ("insecure", "blah.podns.pod.cluster.local.", "AAAA", "NXDOMAIN", []),
    ("insecure", "blah.pod-nons.pod.cluster.local.", "A", "NXDOMAIN", []),
    ("verified", "10-240-0-1.podns.pod.cluster.local.", "A", "NOERROR",
     ["10-240-0-1.podns.pod.cluster.local.\t5\tIN\tA\t10.240.0.1"]),
    ("verified", "172-0-0-2.podns.pod.cluster.local.", "A", "NXDOMAIN", []),
]
