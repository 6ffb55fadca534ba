"""Upstream's expected `kubectl describe` texts, carried as test data.

Source: kubernetes/kubectl pkg/describe/describe_test.go at commit dee3483a3d6a64c07fdf746caf80af446dee99ac
(the file last changed in 543ddcbffd75a7cc2c5bf201721c0bdb08c22655).  Each case is the Go object of one test,
written here as the manifest that makes it (field for field), and the `expectedOut`/`expected` string of that test,
verbatim.  Where emu cannot be given the same input, the case says so (`adapted`) and why.

- TestDescribeNetworkPolicies, TestDescribeIngressNetworkPolicies, TestDescribeIsolatedEgressNetworkPolicies,
  TestDescribeNetworkPoliciesWithPortRange: one policy, four spec variants.  Its CreationTimestamp is
  2017-06-04 21:45:56 -0700 PDT; emu's "Created on" is the cluster's creation time printed in local time, so the
  test creates the cluster at that instant with TZ=America/Los_Angeles.
- TestDescribeService "test1": a LoadBalancer Service with a Local external policy.  Adapted: upstream hands the
  describer a Service and an EndpointSlice as stored objects; emu describes what its model derives from manifests,
  so the ClusterIP, node port, health-check node port and load-balancer address are emu's allocations and the
  endpoints are pods it places.  The test pins those allocations to upstream's values where the manifest can
  (spec.clusterIP, nodePort, healthCheckNodePort, loadBalancerIP) and compares the text line by line, reporting
  the documented differences (DESCRIBE_SERVICE_DEVIATIONS).
"""
from __future__ import annotations

UPSTREAM = "kubernetes/kubectl pkg/describe/describe_test.go@dee3483a3d6a64c07fdf746caf80af446dee99ac"
CREATED = "2017-06-04 21:45:56 -0700"  # metav1.NewTime(expectedTime) of the four NetworkPolicy tests
CREATED_TZ = "America/Los_Angeles"  # prints as PDT, as the Go test's parsed time does

_CLUSTER = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: upstream-describe}
spec: {nodes: 1}
---
"""

_PEERS = """\
      - podSelector: {matchLabels: {id: pod1, id2: pod2}}
        namespaceSelector: {matchLabels: {id: ns1, id2: ns2}}
      - podSelector: {matchLabels: {id: app2, id2: app3}}
      - namespaceSelector: {matchLabels: {id: app2, id2: app3}}
      - namespaceSelector:
          matchLabels: {id: app2, id2: app3}
          matchExpressions: [{key: foo, operator: In, values: [bar1, bar2]}]
      - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.3.0/24, 192.168.4.0/24]}
"""
_PORTS = """\
      ports:
      - {port: 80}
      - {port: 82, protocol: TCP}
"""
_RANGE = """\
      ports:
      - {port: 80, endPort: 82, protocol: TCP}
"""


def _policy(types: str, ingress_ports: str, egress: str) -> str:
    return (_CLUSTER + """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: network-policy-1, namespace: default}
spec:
  podSelector:
    matchLabels: {id1: app1, id2: app2}
    matchExpressions:
    - {key: foo, operator: In, values: [bar1, bar2]}
    - {key: foo2, operator: NotIn, values: [bar1, bar2]}
  ingress:
    - from:
""" + _PEERS + ingress_ports + "    - {}\n" + egress + f"  policyTypes: [{types}]\n")


def _egress(ports: str) -> str:
    return "  egress:\n    - to:\n" + _PEERS + ports + "    - {}\n"


_HEAD = """\
Name:         network-policy-1
Namespace:    default
Created on:   2017-06-04 21:45:56 -0700 PDT
Labels:       <none>
Annotations:  <none>
Spec:
  PodSelector:     foo in (bar1,bar2),foo2 notin (bar1,bar2),id1=app1,id2=app2
"""


def _rules(word: str, ports: str, unrestricted: str) -> str:
    return (ports + f"""\
    {word}:
      NamespaceSelector: id=ns1,id2=ns2
      PodSelector: id=pod1,id2=pod2
    {word}:
      PodSelector: id=app2,id2=app3
    {word}:
      NamespaceSelector: id=app2,id2=app3
    {word}:
      NamespaceSelector: foo in (bar1,bar2),id=app2,id2=app3
    {word}:
      IPBlock:
        CIDR: 192.168.0.0/16
        Except: 192.168.3.0/24, 192.168.4.0/24
    ----------
    To Port: <any> (traffic allowed to all ports)
    {word}: <any> (traffic not restricted by {unrestricted})
""")


_TWO_PORTS = "    To Port: 80/TCP\n    To Port: 82/TCP\n"
_PORT_RANGE = "    To Port Range: 80-82/TCP\n"

# (Go test name, manifests, expectedOut)
NETWORK_POLICY_CASES: list[tuple[str, str, str]] = [
    ("TestDescribeNetworkPolicies", _policy("Ingress, Egress", _PORTS, _egress(_PORTS)),
     _HEAD + "  Allowing ingress traffic:\n" + _rules("From", _TWO_PORTS, "source")
     + "  Allowing egress traffic:\n" + _rules("To", _TWO_PORTS, "destination") + "  Policy Types: Ingress, Egress\n"),
    ("TestDescribeIngressNetworkPolicies", _policy("Ingress", _PORTS, ""),
     _HEAD + "  Allowing ingress traffic:\n" + _rules("From", _TWO_PORTS, "source")
     + "  Not affecting egress traffic\n  Policy Types: Ingress\n"),
    ("TestDescribeIsolatedEgressNetworkPolicies", _policy("Ingress, Egress", _PORTS, ""),
     _HEAD + "  Allowing ingress traffic:\n" + _rules("From", _TWO_PORTS, "source")
     + "  Allowing egress traffic:\n    <none> (Selected pods are isolated for egress connectivity)\n"
       "  Policy Types: Ingress, Egress\n"),
    ("TestDescribeNetworkPoliciesWithPortRange", _policy("Ingress, Egress", _RANGE, _egress(_RANGE)),
     _HEAD + "  Allowing ingress traffic:\n" + _rules("From", _PORT_RANGE, "source")
     + "  Allowing egress traffic:\n" + _rules("To", _PORT_RANGE, "destination") + "  Policy Types: Ingress, Egress\n"),
]

# TestDescribeService "test1": the Service as a manifest, three ready endpoints as pods with the selector's label.
# The cluster's networks are chosen so that upstream's addresses are emu's to allocate: serviceCIDR holds 1.2.3.4,
# the load-balancer pool 5.6.7.8, and podCIDR 10.244.0.0/16's first node subnet gives pods 10.244.0.x.
SERVICE_TEST1 = _CLUSTER.replace("spec: {nodes: 1}", "spec: {nodes: 1, serviceCIDR: 1.2.3.0/24, "
                                 "loadBalancerPool: 5.6.7.8/29}") + """\
apiVersion: v1
kind: Namespace
metadata: {name: foo}
---
apiVersion: v1
kind: Service
metadata: {name: bar, namespace: foo}
spec:
  type: LoadBalancer
  ports: [{name: port-tcp, port: 8080, protocol: TCP, targetPort: 9527, nodePort: 31111}]
  selector: {blah: heh}
  clusterIP: 1.2.3.4
  ipFamilies: [IPv4]
  loadBalancerIP: 5.6.7.8
  sessionAffinity: None
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  healthCheckNodePort: 32222
""" + "".join(f"""\
---
apiVersion: v1
kind: Pod
metadata: {{name: p{i}, namespace: foo, labels: {{blah: heh}}}}
spec: {{containers: [{{name: c, image: x, ports: [{{containerPort: 9527}}]}}]}}
""" for i in (1, 2, 3))

SERVICE_TEST1_EXPECTED = """\
Name:                     bar
Namespace:                foo
Labels:                   <none>
Annotations:              <none>
Selector:                 blah=heh
Type:                     LoadBalancer
IP Families:              IPv4
IP:                       1.2.3.4
IPs:                      <none>
Desired LoadBalancer IP:  5.6.7.8
LoadBalancer Ingress:     5.6.7.8 (VIP)
Port:                     port-tcp  8080/TCP
TargetPort:               9527/TCP
NodePort:                 port-tcp  31111/TCP
Endpoints:                10.244.0.1:9527,10.244.0.2:9527,10.244.0.3:9527
Session Affinity:         None
External Traffic Policy:  Local
Internal Traffic Policy:  Cluster
HealthCheck NodePort:     32222
Events:                   <none>
"""

# Lines where emu's text differs from upstream's for test1, and why (line label -> reason).
DESCRIBE_SERVICE_DEVIATIONS = {
    # upstream's Service object has no ipFamilyPolicy (the fake skips API defaulting); a real API server defaults
    # it to SingleStack, and emu describes what the API server would store
    "IP Family Policy:": "added: the API server's default, absent from upstream's undefaulted fixture",
    # upstream's fixture sets ClusterIP but not ClusterIPs, which the API server would fill from ClusterIP
    "IPs:": "emu prints the ClusterIPs the API server derives from spec.clusterIP, upstream's fixture has none",
}
