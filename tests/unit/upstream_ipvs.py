"""Upstream's expectations for kube-proxy's IPVS proxier, carried as test data.

Source: pkg/proxy/ipvs/proxier_test.go as stored for aroradaman/kubernetes (a fork of kubernetes/kubernetes kept in
step with its master branch) at commit 4177b600d4b97a67b765a18ddeeb295ef757b212: the file's LoadBalancerIPMode test
emulates version 1.31, so this is the 1.32 development line.  The only stored kubernetes/kubernetes version of that
file (f3c7e72904cd9a65e4198cc30326a0d600462902, 2017) predates ipsets, EndpointSlices and KUBE-IPVS-FILTER and has
nothing left to compare emu against.

Each case is one upstream test (or one row of a table test), its Service and EndpointSlice objects written as the
emu ServicePort / Endpoint fields they become (`svc`, `ep`), with what upstream asserts after one syncProxyRules:

- `ipvs`: the whole IPVS table, "ip:port/PROTO" -> real servers, where upstream compares the fake IPVS with
  reflect.DeepEqual (every VirtualServer there has scheduler "rr", no flags, no timeout);
- `vs_count` and `real_servers`: checkIPVS or assert.Len on the number of virtual servers, and the real servers of
  the ones it looks at;
- `ipsets`: checkIPSet, the entries (Entry.String()) of each named set, order ignored;
- `iptables`: checkIptables, per chain the (jump target, match-set) of every rule in order, nat rules then filter
  rules (getRules saves both tables, so KUBE-NODE-PORT lists both);
- `bind`: the addresses ListBindAddress reports on kube-ipvs0; `timeout`: every virtual server's persistence.

Upstream's fake proxier has no node IP (fp.nodeIP), no local-traffic detector (NoOpLocalDetector: cluster_cidr
None) and takes the node's addresses from the test (`node_addresses`: SetLocalAddresses, or the fake interfaces
that --nodeport-addresses filters).  Transcribed verbatim except where a line says `adapted` and why.  Left out for
every case: the IPv6 services, slices and node addresses (emu's clusters are IPv4 only).
"""
from __future__ import annotations

from typing import Any

UPSTREAM = ("kubernetes/kubernetes pkg/proxy/ipvs/proxier_test.go as forked in "
            "aroradaman/kubernetes@4177b600d4b97a67b765a18ddeeb295ef757b212")
TEST_HOSTNAME = "test-hostname"  # testHostname
NODE_IP = "100.101.102.103"


def svc(ns: str, name: str, cluster_ip: str, port: int = 80, protocol: str = "TCP", port_name: str = "p80",
        **kw: Any) -> dict[str, Any]:
    """One Service port, as emu.addons.kubeproxy.model.ServicePort keyword arguments (addresses as strings)."""
    return {"namespace": ns, "name": name, "port_name": port_name, "protocol": protocol, "cluster_ip": cluster_ip,
            "port": port, **kw}


def ep(ip: str, port: int = 80, node: str | None = None, ready: bool = True, serving: bool = True,
       terminating: bool = False) -> dict[str, Any]:
    """One EndpointSlice endpoint with its port; `ready` etc. are its conditions (nil Ready counts as ready)."""
    return {"ip": ip, "port": port, "node": node, "ready": ready, "serving": serving, "terminating": terminating}


def case(test: str, services: list[tuple[dict[str, Any], list[dict[str, Any]]]], *,
         node_addresses: tuple[str, ...] = (), **expected: Any) -> dict[str, Any]:
    return {"test": test, "services": services, "node_addresses": node_addresses, **expected}


_SVC_CHAINS = [("RETURN", ""), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"), ("KUBE-NODE-PORT", ""),
               ("ACCEPT", "KUBE-CLUSTER-IP")]
_LB_SVC_CHAINS = [("RETURN", ""), ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER"),
                  ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"), ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP"),
                  ("ACCEPT", "KUBE-LOAD-BALANCER")]
_HC = ("ACCEPT", "KUBE-HEALTH-CHECK-NODE-PORT")  # filter KUBE-NODE-PORT, always written


def _terminating_eps(*conds: tuple[str, bool, bool, bool]) -> list[dict[str, Any]]:
    """10.0.1.1, 10.0.1.2, ... with (node, ready, serving, terminating) each."""
    return [ep(f"10.0.1.{i}", node=n, ready=r, serving=s, terminating=t) for i, (n, r, s, t) in enumerate(conds, 1)]


_LOCAL_AND_TERMINATING = _terminating_eps(
    (TEST_HOSTNAME, True, True, False), (TEST_HOSTNAME, True, True, False), (TEST_HOSTNAME, False, True, True),
    (TEST_HOSTNAME, False, False, True), ("another-host", True, True, False))
_ONLY_TERMINATING = _terminating_eps(
    (TEST_HOSTNAME, False, True, True), (TEST_HOSTNAME, False, True, True), (TEST_HOSTNAME, False, False, True),
    ("another-host", False, True, True), ("another-host", False, False, False))
_ONLY_LOCAL_TERMINATING = _terminating_eps(
    (TEST_HOSTNAME, False, True, True), (TEST_HOSTNAME, False, True, True), (TEST_HOSTNAME, False, False, True),
    ("another-host", False, True, True), ("another-host", True, True, False))


def _e2e(external_ip: bool = False, local: bool = False) -> dict[str, Any]:
    """The Service of the *E2E and EndpointSlice* tests: 172.20.1.1, one unnamed TCP port, optionally external IP
    1.2.3.4 with an externalTrafficPolicy.  Adapted: the E2E tests give the port no `port` (0, which the API server
    rejects); it is 80 here, the endpoint port, which is what the real servers and ipset entries carry."""
    if not external_ip:
        return svc("ns1", "svc1", "172.20.1.1", port_name="")
    return svc("ns1", "svc1", "172.20.1.1", port_name="", external_ips=("1.2.3.4",), external_policy_local=local)


def _loop_back(*ips: str) -> dict[str, list[str]]:
    return {"KUBE-LOOP-BACK": [f"{ip},tcp:80,{ip}" for ip in ips]}


CASES: list[dict[str, Any]] = [
    # --- TestNodePortIPv4 (expectedIPVS compared whole)
    case("TestNodePortIPv4/1 service with node port, has 2 endpoints",
         [(svc("ns1", "svc1", "10.20.30.41", node_port=3001), [ep("10.180.0.1")])],
         node_addresses=(NODE_IP,),
         ipvs={"10.20.30.41:80/TCP": ["10.180.0.1:80"], "100.101.102.103:3001/TCP": ["10.180.0.1:80"]}),
    case("TestNodePortIPv4/1 UDP service with node port, has endpoints",
         [(svc("ns1", "svc1", "10.20.30.41", protocol="UDP", node_port=3001), [ep("10.180.0.1")])],
         node_addresses=(NODE_IP,),  # nodePortAddresses 0.0.0.0/0: every node address
         ipvs={"10.20.30.41:80/UDP": ["10.180.0.1:80"], "100.101.102.103:3001/UDP": ["10.180.0.1:80"]},
         ipsets={"KUBE-NODE-PORT-UDP": ["3001"]},
         iptables={"KUBE-NODE-PORT": [("KUBE-MARK-MASQ", "KUBE-NODE-PORT-UDP"), _HC],
                   "KUBE-SERVICES": _SVC_CHAINS}),
    case("TestNodePortIPv4/service has node port but no endpoints",
         [(svc("ns1", "svc1", "10.20.30.41", node_port=3001), [])],
         node_addresses=(NODE_IP,),
         ipvs={"10.20.30.41:80/TCP": [], "100.101.102.103:3001/TCP": []}),
    case("TestNodePortIPv4/node port service with protocol sctp on a node with multiple nodeIPs",
         [(svc("ns1", "svc1", "10.20.30.41", protocol="SCTP", node_port=3001), [ep("10.180.0.1")])],
         node_addresses=("100.101.102.103", "100.101.102.104", "100.101.102.105"),
         ipvs={"10.20.30.41:80/SCTP": ["10.180.0.1:80"], "100.101.102.103:3001/SCTP": ["10.180.0.1:80"],
               "100.101.102.104:3001/SCTP": ["10.180.0.1:80"], "100.101.102.105:3001/SCTP": ["10.180.0.1:80"]},
         ipsets={"KUBE-NODE-PORT-SCTP-HASH": ["100.101.102.103,sctp:3001", "100.101.102.104,sctp:3001",
                                              "100.101.102.105,sctp:3001"]}),
    case("TestNodePortIPv4/node port service with protocol sctp and externalTrafficPolicy local",
         [(svc("ns1", "svc1", "10.20.30.41", protocol="SCTP", node_port=3001, external_policy_local=True),
           [ep("10.180.0.1", node=TEST_HOSTNAME), ep("10.180.1.1", node="otherHost")])],
         node_addresses=(NODE_IP,),
         ipvs={"10.20.30.41:80/SCTP": ["10.180.0.1:80", "10.180.1.1:80"],
               "100.101.102.103:3001/SCTP": ["10.180.0.1:80"]},
         ipsets={"KUBE-NODE-PORT-SCTP-HASH": ["100.101.102.103,sctp:3001"],
                 "KUBE-NODE-PORT-LOCAL-SCTP-HASH": ["100.101.102.103,sctp:3001"]},
         iptables={"KUBE-NODE-PORT": [("RETURN", "KUBE-NODE-PORT-LOCAL-SCTP-HASH"),
                                      ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-SCTP-HASH"), _HC]}),
    # --- TestIPv4Proxier (expectedIPVS compared whole; svc2 is IPv6)
    case("TestIPv4Proxier/2 services with Cluster IP, each with endpoints",
         [(svc("ns1", "svc1", "10.20.30.41"), [ep("10.180.0.1")])],
         ipvs={"10.20.30.41:80/TCP": ["10.180.0.1:80"]}),
    case("TestIPv4Proxier/cluster IP service with no endpoints",
         [(svc("ns1", "svc1", "10.20.30.41"), [])],
         ipvs={"10.20.30.41:80/TCP": []}),
    # --- external IPs
    case("TestExternalIPsNoEndpoint",
         [(svc("ns1", "svc1", "10.20.30.41", external_ips=("50.60.70.81",)), [])],
         vs_count=2, real_servers={"50.60.70.81:80/TCP": []}),
    # adapted: upstream's EndpointSlice port says UDP for the TCP Service port, so no endpoint attaches to it (the
    # ServicePortName includes the protocol) and its real-server loop checks nothing; carried as no endpoints
    case("TestExternalIPs",
         [(svc("ns1", "svc1", "10.20.30.41", external_ips=("50.60.70.81", "127.0.0.1")), [])],
         vs_count=3),
    # upstream checks the first external-IP virtual server GetVirtualServers returns (map order): every one holds
    case("TestOnlyLocalExternalIPs",
         [(svc("ns1", "svc1", "10.20.30.41", external_ips=("50.60.70.81", "127.0.0.1"), external_policy_local=True),
           [ep("10.180.0.1", node=TEST_HOSTNAME), ep("10.180.1.1", node="other-hostname")])],
         vs_count=3, real_servers={"50.60.70.81:80/TCP": ["10.180.0.1:80"], "127.0.0.1:80/TCP": ["10.180.0.1:80"]}),
    # --- load balancers (buildFakeProxier: no node addresses, so NodePorts get no virtual server)
    # adapted: as TestExternalIPs, the slice's UDP port attaches no endpoint; checkIPVS then looks for 1.2.3.4:3001,
    # which does not exist, so only the count is checked
    case("TestLoadBalancer",
         [(svc("ns1", "svc1", "10.20.30.41", node_port=3001, load_balancer_ips=("1.2.3.4",)), [])],
         vs_count=2, ipsets={"KUBE-LOAD-BALANCER": ["1.2.3.4,tcp:80"]},
         iptables={"KUBE-SERVICES": _LB_SVC_CHAINS, "KUBE-LOAD-BALANCER": [("KUBE-MARK-MASQ", "")]}),
    case("TestLoadBalancerSourceRanges",
         [(svc("ns1", "svc1", "10.20.30.41", load_balancer_ips=("1.2.3.4",),
               load_balancer_source_ranges=("10.0.0.0/8",)), [ep("10.180.0.1")])],
         vs_count=2, real_servers={"1.2.3.4:80/TCP": ["10.180.0.1:80"]},
         ipsets={"KUBE-LOAD-BALANCER": ["1.2.3.4,tcp:80"], "KUBE-LOAD-BALANCER-FW": ["1.2.3.4,tcp:80"],
                 "KUBE-LOAD-BALANCER-SOURCE-CIDR": ["1.2.3.4,tcp:80,10.0.0.0/8"]},
         iptables={"KUBE-SERVICES": _LB_SVC_CHAINS,
                   "KUBE-PROXY-FIREWALL": [("KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-FW")],
                   "KUBE-SOURCE-RANGES-FIREWALL": [("RETURN", "KUBE-LOAD-BALANCER-SOURCE-CIDR"), ("DROP", "")]}),
    case("TestOnlyLocalLoadBalancing",
         [(svc("ns1", "svc1", "10.20.30.41", node_port=3001, load_balancer_ips=("1.2.3.4",),
               external_policy_local=True),
           [ep("10.180.0.1", node=TEST_HOSTNAME), ep("10.180.1.1", node="other-hostname")])],
         vs_count=2, real_servers={"1.2.3.4:80/TCP": ["10.180.0.1:80"]},
         ipsets={"KUBE-LOAD-BALANCER": ["1.2.3.4,tcp:80"], "KUBE-LOAD-BALANCER-LOCAL": ["1.2.3.4,tcp:80"]},
         iptables={"KUBE-SERVICES": _LB_SVC_CHAINS,
                   "KUBE-LOAD-BALANCER": [("RETURN", "KUBE-LOAD-BALANCER-LOCAL"), ("KUBE-MARK-MASQ", "")]}),
    # adapted: the slices are named for a Service "p80" that does not exist, so no endpoint attaches; carried as none
    case("TestAcceptIPVSTraffic",
         [(svc("ns1", "svc1", "10.20.30.40", node_port=80, external_ips=("5.6.7.8",)), []),
          (svc("ns1", "svc2", "10.20.30.41", node_port=80, load_balancer_ips=("1.2.3.4",)), []),
          (svc("ns1", "svc3", "10.20.30.42", node_port=80), [])],
         iptables={"KUBE-SERVICES": [
             ("RETURN", ""), ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER"), ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
             ("KUBE-MARK-MASQ", "KUBE-EXTERNAL-IP"), ("ACCEPT", "KUBE-EXTERNAL-IP"), ("ACCEPT", "KUBE-EXTERNAL-IP"),
             ("KUBE-NODE-PORT", ""), ("ACCEPT", "KUBE-CLUSTER-IP"), ("ACCEPT", "KUBE-LOAD-BALANCER")]}),
    # --- node ports with --nodeport-addresses 100.101.102.0/24 over eth0 100.101.102.103/24 (and an IPv6 eth1)
    case("TestOnlyLocalNodePorts",
         [(svc("ns1", "svc1", "10.20.30.41", node_port=3001, external_policy_local=True),
           [ep("10.180.0.1", node=TEST_HOSTNAME), ep("10.180.1.1", node="other-hostname")])],
         node_addresses=(NODE_IP,),
         vs_count=2, real_servers={"100.101.102.103:3001/TCP": ["10.180.0.1:80"]},
         ipsets={"KUBE-NODE-PORT-TCP": ["3001"], "KUBE-NODE-PORT-LOCAL-TCP": ["3001"]},
         iptables={"KUBE-SERVICES": _SVC_CHAINS,
                   "KUBE-NODE-PORT": [("RETURN", "KUBE-NODE-PORT-LOCAL-TCP"),
                                      ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-TCP"), _HC]}),
    # adapted: invalid-svc3 sets healthCheckNodePort 30002 with externalTrafficPolicy Cluster; kube-proxy's
    # ServicePort reports it only when apiservice.NeedsHealthCheck (LoadBalancer + Local), which emu decides where it
    # allocates (emu.alloc.services), so its ServicePort carries 0 -- the check is that 30002 is absent
    case("TestHealthCheckNodePort",
         [(svc("ns1", "valid-svc1", "10.20.30.41", node_port=3000, external_policy_local=True,
               health_check_node_port=30000), []),
          (svc("ns1", "valid-svc2", "10.20.30.41", node_port=3000, external_policy_local=True,
               health_check_node_port=30001), []),
          (svc("ns1", "invalid-svc3", "10.20.30.41", node_port=3000), [])],
         node_addresses=(NODE_IP,),
         ipsets={"KUBE-HEALTH-CHECK-NODE-PORT": ["30000", "30001"]},
         iptables={"KUBE-NODE-PORT": [("RETURN", "KUBE-NODE-PORT-LOCAL-TCP"),
                                      ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-TCP"), _HC]}),
    # a LoadBalancer without a node port keeps its health check node port (only `NodePort() != 0` with no node
    # address skips the rest of the service port)
    case("TestHealthCheckNodePortE2E",
         [(svc("ns1", "svc1", "172.20.1.1", port_name="", external_policy_local=True, health_check_node_port=30000),
           [])],
         ipsets={"KUBE-HEALTH-CHECK-NODE-PORT": ["30000"]}),
    case("TestSessionAffinity",
         [(svc("ns1", "svc1", "10.20.30.41", node_port=3001, external_ips=("50.60.70.81",), session_affinity=True,
               affinity_timeout=10800), [])],
         node_addresses=(NODE_IP,), timeout=10800),
    case("TestMultiPortServiceBindAddr/service3",
         [(svc("ns1", "svc1", "172.16.55.4", port=1234, port_name="port1"), []),
          (svc("ns1", "svc1", "172.16.55.4", port=1235, port_name="port2"), []),
          (svc("ns1", "svc1", "172.16.55.4", port=1236, port_name="port3", protocol="UDP"), [])],
         bind=["172.16.55.4"]),
    # --- EndpointSlices and traffic policies (see _e2e for the service port)
    case("TestEndpointSliceE2E",
         [(_e2e(), [ep("10.0.1.1", node=TEST_HOSTNAME), ep("10.0.1.2", node="node2"),
                             ep("10.0.1.3", node="node3"), ep("10.0.1.4", node="node3", ready=False, serving=False)])],
         vs_count=1, real_servers={"172.20.1.1:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]},
         ipsets=_loop_back("10.0.1.1")),
    case("TestEndpointSliceE2E/after OnEndpointSliceDelete",
         [(_e2e(), [])],
         vs_count=1, real_servers={"172.20.1.1:80/TCP": []}, ipsets=_loop_back()),
    *[case(f"TestTestInternalTrafficPolicyE2E/internalTrafficPolicy is {policy} with {which} local endpoints",
           [(dict(_e2e(), internal_policy_local=policy == "local"),
             [ep("10.0.1.1", node=first), ep("10.0.1.2", node="host1"), ep("10.0.1.3", node="host2")])],
           ipsets=_loop_back(*(["10.0.1.1"] if first == TEST_HOSTNAME else [])), **checked)
      for policy, which, first, checked in (
          ("cluster", "non-zero", TEST_HOSTNAME,
           {"vs_count": 1, "real_servers": {"172.20.1.1:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]}}),
          ("cluster", "zero", "host0", {}),  # expectVirtualServer false: not looked at
          ("local", "non-zero", TEST_HOSTNAME,
           {"vs_count": 1, "real_servers": {"172.20.1.1:80/TCP": ["10.0.1.1:80"]}}),
          ("local", "zero", "host0", {}))],
    case("Test_EndpointSliceReadyAndTerminatingCluster",
         [(_e2e(True, False), _LOCAL_AND_TERMINATING)],
         vs_count=2, ipsets=_loop_back("10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"),
         real_servers={"172.20.1.1:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
                       "1.2.3.4:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]}),
    case("Test_EndpointSliceReadyAndTerminatingLocal",
         [(_e2e(True, True), _LOCAL_AND_TERMINATING)],
         vs_count=2, ipsets=_loop_back("10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"),
         real_servers={"172.20.1.1:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"],
                       "1.2.3.4:80/TCP": ["10.0.1.1:80", "10.0.1.2:80"]}),
    case("Test_EndpointSliceOnlyReadyAndTerminatingCluster",
         [(_e2e(True, False), _ONLY_TERMINATING)],
         vs_count=2, ipsets=_loop_back("10.0.1.1", "10.0.1.2", "10.0.1.3"),
         real_servers={"172.20.1.1:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"],
                       "1.2.3.4:80/TCP": ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.4:80"]}),
    case("Test_EndpointSliceOnlyReadyAndTerminatingLocal",
         [(_e2e(True, True), _ONLY_LOCAL_TERMINATING)],
         vs_count=2, ipsets=_loop_back("10.0.1.1", "10.0.1.2", "10.0.1.3"),
         real_servers={"172.20.1.1:80/TCP": ["10.0.1.5:80"], "1.2.3.4:80/TCP": ["10.0.1.1:80", "10.0.1.2:80"]}),
    # TestLoadBalancerIngressRouteTypeProxy, the rows emu can express (ipMode VIP or unset: both virtual servers)
    case("TestLoadBalancerIngressRouteTypeProxy/LoadBalancerIPMode enabled, ipMode VIP",
         [(svc("ns1", "svc1", "10.20.30.42", node_port=3001, load_balancer_ips=("1.2.3.5",)), [ep("10.180.0.1")])],
         vs_count=2),
]

# TestCreateAndLinkKubeChain: natChains and filterChains after createAndLinkKubeChain, verbatim.
NAT_CHAINS = """\
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
"""
FILTER_CHAINS = """\
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
"""

# TestMasqueradeRule: (HasRandomFully, --random-fully on KUBE-POSTROUTING's MASQUERADE rule).
MASQUERADE_RANDOM_FULLY = [(False, False), (True, True)]

# TestDismissLocalhostRuleExist (ipv4 rule): the first KUBE-SERVICES rule.
DISMISS_LOCALHOST = ("RETURN", "127.0.0.0/8")

# Test_syncService, cases 0-7: (old virtual server or None, new one); each (protocol, port, scheduler, flags) on
# 1.2.3.4.  After syncService the one virtual server is Equal to the new one.  Flags as upstream writes them:
# FlagHashed (0x2) is what the kernel reports on every service; FlagPersistent 0x1.
SYNC_SERVICE_CASES: list[tuple[tuple[str, int, str, int] | None, tuple[str, int, str, int]]] = [
    (("TCP", 80, "rr", 0x2), ("TCP", 80, "rr", 0x2)),
    (("TCP", 8080, "rr", 0x2), ("TCP", 8080, "rr", 0x1)),
    (("TCP", 8080, "rr", 0x2), ("TCP", 8080, "wlc", 0x2)),
    (None, ("UDP", 53, "rr", 0x2)),
    (("SCTP", 80, "rr", 0x2), ("SCTP", 80, "rr", 0x2)),
    (("SCTP", 8080, "rr", 0x2), ("SCTP", 8080, "rr", 0x1)),
    (("SCTP", 8080, "rr", 0x2), ("SCTP", 8080, "wlc", 0x2)),
    (None, ("SCTP", 53, "rr", 0x2)),
]

# TestCleanLegacyServiceWithRealServers: every service but the active one goes, real servers or not.
CLEAN_LEGACY = {
    "current": [("1.1.1.1", "UDP", 53, [("10.180.0.1", 53)]), ("2.2.2.2", "UDP", 54, []), ("3.3.3.3", "UDP", 54, [])],
    "active": [("3.3.3.3", "UDP", 54)],
}

# Where emu cannot follow upstream's test, and why (no case above depends on these).
DEVIATIONS = {
    "TestCleanLegacyService": "--ipvs-exclude-cidrs is not implemented: upstream keeps virtual servers in the "
                              "excluded ranges (3.3.3.3, 4.4.4.4); emu deletes every one its sync did not produce, "
                              "as nothing else programs IPVS in an emu node's namespace",
    "TestCleanLegacyRealServersExcludeCIDRs": "same: no --ipvs-exclude-cidrs",
    "TestLoadBalancerIngressRouteTypeProxy": "status.loadBalancer.ingress[].ipMode is not modelled: emu's load "
                                             "balancer addresses are always VIP (the Proxy rows are left out)",
    "Test_HealthCheckNodePortWhenTerminating": "about the health-check server's endpoint counts, which emu does "
                                               "not serve",
    "TestNoEndpointsMetric": "metrics are not emulated",
    "Test_updateEndpointsMap, TestBuildServiceMap*": "the change trackers: emu computes each sync from the whole "
                                                     "state, so there is no incremental map to test",
    "TestCanUseIPVSProxier, TestGetNodeIPs, TestIpIsValidForSet, TestFilterCIDRs, Test_getFirstColumn":
        "start-up probes and helpers emu does not repeat",
}
