"""`emu describe` on the seed guide's cluster as a plan (no root): kubectl describe's fields, their order and its
tabwriter alignment for Services, Pods, NetworkPolicies, Nodes, Ingresses and Endpoints, with hand-made Events.

Where the expected texts come from:
- test_upstream_kubectl_*: kubectl's own expected texts (kubernetes/kubectl pkg/describe/describe_test.go@dee3483a3d6a,
  transcribed with their inputs in tests/unit/upstream_kubectl.py; the differences are listed there).
- Everything else here is emu's own, written beside emu/describe*.py from describe.go's describers (field order,
  labels, the tabwriter levels) for the seed guide's objects.  It is believed because the same describers render
  upstream's fixtures byte for byte (the test_upstream_kubectl_* cases) and the Go tabwriter and duration helpers
  are tested against Go's own behaviour below; it has not been diffed against a real `kubectl describe`.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re

import pytest
from click.testing import CliRunner

from emu.cluster import planner
from emu.cluster import lifecycle as clusters
from emu.report import describe as d
from emu.report import describe_text as dt
from emu.cluster import events
from emu.model import kinds
from emu.report import output as report
from emu.apply import state
from emu.addons.kubeproxy import systempods
from emu.report import tabwriter
from emu.model import loader as topology
from emu.cli.commands import main
from emu.alloc.endpoints import PortEndpoints
from emu.errors import EmuError, NotFound
from emu.cluster.events import Event
from emu.addons.kubeproxy.model import Endpoint
from emu.model.types import Service, ServicePortSpec
from tests.conftest import TOPOLOGIES

from . import upstream_kubectl

NOW = 1_700_000_000.0
UP = NOW - 300  # the cluster came up five minutes ago
SEED = str(TOPOLOGIES / "seed-guide.yaml")


def make_cluster(path: str = SEED) -> clusters.Cluster:
    """A Cluster from a plan, with the record `emu up` keeps (the manifests as stored documents)."""
    topo, alloc, plan = clusters.plan_file(path)
    rec = state.Record(topo.cluster.name, path)
    rec.documents = [{"file": x.file, "index": x.index, "body": x.body} for x in topology.read_documents(path)]
    rec.created = UP
    rec.allocations = alloc.to_json()
    return clusters.Cluster(rec, topo, alloc, plan)


@pytest.fixture(scope="module")
def sg() -> clusters.Cluster:
    return make_cluster()


def pod_named(cl: clusters.Cluster, ns: str, prefix: str) -> str:
    return next(p.name for p in cl.topology.pods if p.namespace == ns and p.name.startswith(prefix))


def ev(reason: str, kind: str, ns: str, name: str, message: str, source: str, t: float = UP + 5,
       type_: str = "Normal") -> Event:
    return Event(type_, reason, kind, ns, name, message, source, t)


@pytest.fixture(scope="module")
def evs(sg: clusters.Cluster) -> list[Event]:
    """What `emu up` records for this cluster (all at one moment), plus two later Ingress syncs."""
    out = events.between(None, sg, UP + 5)
    out += [ev("Sync", "Ingress", "default", "minimal-ingress", "Scheduled for sync", "nginx-ingress-controller",
               UP + 5 + k * 60) for k in (1, 2)]
    return out


def describe(cl: clusters.Cluster, evs: list[Event], kind: str, ns: str | None, name: str | None,
             **kw: object) -> str:
    return d.describe(cl, kind, ns, name, evs, now=NOW, **kw)  # type: ignore[arg-type]


def flat(text: str) -> list[str]:
    """The lines with their alignment folded: runs of two or more spaces become one, both ends stripped."""
    return [re.sub(r" {2,}", " ", line).strip() for line in text.split("\n")]


def contains_run(lines: list[str], want: list[str]) -> bool:
    """`want` appears in `lines` as consecutive lines."""
    return any(lines[i:i + len(want)] == want for i in range(len(lines) - len(want) + 1))


def in_order(lines: list[str], want: list[str]) -> bool:
    """Every line of `want` appears in `lines`, in this order (others may come between)."""
    it = iter(lines)
    return all(any(x == w for x in it) for w in want)


def ep_list(cl: clusters.Cluster, ns: str, labels: dict[str, str], port: int) -> str:
    """ip:port of the pods a selector picks, from the IPAM allocations (document order, as the controller lists)."""
    return ",".join(f"{cl.allocations.pods[p.key].ip}:{port}" for p in cl.topology.pods
                    if p.namespace == ns and all(p.labels.get(k) == v for k, v in labels.items()))


# --- Go's tabwriter and kubectl's helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("text, out", [
    ("Name:\tweb\nNamespace:\tdefault\n", "Name:       web\nNamespace:  default\n"),
    # a line without a tab ends the column block: the next block is aligned on its own
    ("Name:\tweb\nIPs:\n  IP:\t10.0.0.1\n", "Name:  web\nIPs:\n  IP:  10.0.0.1\n"),
    # the text after a line's last tab is no cell and never padded; a row without a cell in a column splits that
    # column's block (the host row here), so "/ " gets a width of its own
    ("  Host\tPath\tBackends\n  *\t\n    \t/ \tsvc:80\n", "  Host  Path  Backends\n  *     \n        /   svc:80\n"),
    ("a\tb\tc\n", "a  b  c\n"),
])
def test_tabwrite_aligns_like_go_text_tabwriter(text: str, out: str) -> None:
    assert tabwriter.tabwrite(text) == out


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (-1, "0s"), (-5, "<invalid>"), (119, "119s"), (120, "2m"), (290, "4m50s"), (600, "10m"),
    (179 * 60, "179m"), (3 * 3600 + 5 * 60, "3h5m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (50 * 3600, "2d2h"),
    (10 * 86400, "10d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y"),
])
def test_human_duration_is_apimachinery_s(seconds: int, text: str) -> None:
    assert report.human_duration(seconds) == text


@pytest.mark.parametrize("word, resource", [
    ("svc", "services"), ("Service", "services"), ("services", "services"), ("po", "pods"), ("pod", "pods"),
    ("netpol", "networkpolicies"), ("networkpolicies.networking.k8s.io", "networkpolicies"), ("no", "nodes"),
    ("ing", "ingresses"), ("ingress", "ingresses"), ("ep", "endpoints"), ("endpoints", "endpoints"),
])
def test_kinds_and_their_aliases(word: str, resource: str) -> None:
    assert kinds.kind_of(word).resource == resource


def test_endpoint_list_is_cut_at_three_as_kubectl_counts() -> None:
    svc = Service("default", "s", "ClusterIP", (ServicePortSpec(80),), {"app": "x"})
    ip = ipaddress.IPv4Address
    eps = [Endpoint(ip(f"10.0.0.{i}"), 80, ready=i != 2) for i in range(1, 7)]
    cl = make_cluster()  # any cluster: the Service is not in it, only its selector counts
    text = d.format_endpoints(cl, svc, {""}, [PortEndpoints(svc.ports[0], tuple(eps))])
    # 10.0.0.2 is not ready: left out, and not counted
    assert text == "10.0.0.1:80,10.0.0.3:80,10.0.0.4:80 + 2 more..."
    assert d.format_endpoints(cl, svc, {""}, [PortEndpoints(svc.ports[0], ())]) == ""  # a slice, no endpoint
    headless = dataclasses.replace(svc, selector=None)
    assert d.format_endpoints(cl, headless, {""}, []) == "<none>"  # no EndpointSlice at all


# --- Service -------------------------------------------------------------------------------------------------------


def test_describe_service_is_kubectls_text(sg: clusters.Cluster, evs: list[Event]) -> None:
    cip = sg.allocations.services["default/my-service"].cluster_ip
    eps = ep_list(sg, "default", {"app": "MyApp"}, 9376)
    assert describe(sg, evs, "svc", "default", "my-service") == (
        "Name:                     my-service\n"
        "Namespace:                default\n"
        "Labels:                   <none>\n"
        "Annotations:              <none>\n"
        "Selector:                 app=MyApp\n"
        "Type:                     ClusterIP\n"
        "IP Family Policy:         SingleStack\n"
        "IP Families:              IPv4\n"
        f"IP:                       {cip}\n"
        f"IPs:                      {cip}\n"
        "Port:                     <unset>  80/TCP\n"
        "TargetPort:               9376/TCP\n"
        f"Endpoints:                {eps}\n"
        "Session Affinity:         None\n"
        "Internal Traffic Policy:  Cluster\n"
        "Events:                   <none>\n")


@pytest.mark.parametrize("ns, name, want", [
    ("nodeport-demo", "my-service", ["Type: NodePort", "Port: <unset> 80/TCP", "TargetPort: 80/TCP",
                                     "NodePort: <unset> 30007/TCP", "Endpoints: {eps:nodeport-demo:MyApp:80}",
                                     "Session Affinity: None", "External Traffic Policy: Cluster",
                                     "Internal Traffic Policy: Cluster", "Events: <none>"]),
    ("lb-demo", "my-service", ["LoadBalancer Ingress: 192.168.240.1 (VIP)", "Port: <unset> 80/TCP",
                               "TargetPort: 9376/TCP", "NodePort: <unset> {np:lb-demo/my-service}/TCP",
                               "Endpoints: {eps:lb-demo:MyApp:9376}"]),
    ("policy-cidr", "web", ["Type: LoadBalancer", "TargetPort: 80/TCP", "Endpoints: {eps:policy-cidr:web:80}",
                            "Session Affinity: None", "External Traffic Policy: Local",
                            "Internal Traffic Policy: Cluster", "HealthCheck NodePort: {hc:policy-cidr/web}"]),
    ("default", "test", ["Selector: app=test", "TargetPort: 8080/TCP", "Endpoints: {eps:default:test:8080}"]),
    ("kube-system", "kube-dns", ["Labels: k8s-app=kube-dns", "kubernetes.io/name=CoreDNS", "IP: 10.96.0.10",
                                 "IPs: 10.96.0.10", "Port: dns 53/UDP", "TargetPort: 53/UDP",
                                 "Endpoints: {eps:kube-system:kube-dns:53}", "Port: dns-tcp 53/TCP",
                                 "TargetPort: 53/TCP", "Endpoints: {eps:kube-system:kube-dns:53}",
                                 "Port: metrics 9153/TCP", "TargetPort: 9153/TCP",
                                 "Endpoints: {eps:kube-system:kube-dns:9153}"]),
])
def test_describe_service_fields(sg: clusters.Cluster, evs: list[Event], ns: str, name: str,
                                  want: list[str]) -> None:
    def fill(m: re.Match[str]) -> str:
        what, _, arg = m.group(1).partition(":")
        if what == "eps":
            ens, app, port = arg.split(":")
            key = "k8s-app" if app == "kube-dns" else "app"
            return ep_list(sg, ens, {key: app}, int(port))
        a = sg.allocations.services[arg]
        return str(a.node_ports["80/TCP"] if what == "np" else a.health_check_node_port)

    lines = flat(describe(sg, evs, "service", ns, name))
    assert in_order(lines, [re.sub(r"\{([^}]+)\}", fill, w) for w in want]), "\n".join(lines)


@pytest.fixture(scope="module")
def svcs() -> clusters.Cluster:
    return make_cluster(str(TOPOLOGIES / "services.yaml"))


@pytest.mark.parametrize("name, want", [
    ("web", ["Port: http 80/TCP", "TargetPort: http/TCP", "Endpoints: {web:80}", "Port: dns 53/UDP",
             "TargetPort: 80/UDP", "Endpoints: {web:80}", "Port: alt 8081/TCP", "TargetPort: alt/TCP",
             "Endpoints: {web:81}"]),
    ("empty", ["Selector: app=nothing", "Endpoints:"]),  # a slice without endpoints: empty, not <none>
    ("headless", ["IP Family Policy: SingleStack", "IP: None", "IPs: None"]),
    ("manual", ["Selector: <none>", "TargetPort: 80/TCP", "Endpoints: 10.244.1.2:81"]),  # the user's slice
    ("sticky", ["Session Affinity: ClientIP"]),
    ("local-np", ["NodePort: <unset> 30081/TCP", "External Traffic Policy: Local"]),
    ("local-internal", ["Internal Traffic Policy: Local"]),
    ("web-lb-restricted", ["External Traffic Policy: Cluster", "LoadBalancer Source Ranges: 10.0.0.0/8"]),
])
def test_describe_services_topology(svcs: clusters.Cluster, name: str, want: list[str]) -> None:
    web = [str(svcs.allocations.pods[p.key].ip) for p in svcs.topology.pods if p.labels.get("app") == "web"]
    lines = flat(d.describe(svcs, "svc", "default", name, [], now=NOW))
    expect = [re.sub(r"\{web:(\d+)\}", lambda m: ",".join(f"{ip}:{m.group(1)}" for ip in web), w) for w in want]
    assert in_order(lines, expect), "\n".join(lines)


def test_a_selector_less_service_has_no_endpoints_object(svcs: clusters.Cluster) -> None:
    with pytest.raises(NotFound):
        d.describe(svcs, "ep", "default", "manual", [], now=NOW)  # an EndpointSlice only, no v1 Endpoints
    assert "Subsets:\n\n" not in d.describe(svcs, "ep", "default", "empty", [], now=NOW)


def test_describe_service_shows_the_service_controller_events(sg: clusters.Cluster, evs: list[Event]) -> None:
    text = describe(sg, evs, "svc", "lb-demo", "my-service")
    assert text.endswith("Events:\n"
                         "  Type    Reason                Age    From                Message\n"
                         "  ----    ------                ----   ----                -------\n"
                         "  Normal  EnsuringLoadBalancer  4m55s  service-controller  Ensuring load balancer\n"
                         "  Normal  EnsuredLoadBalancer   4m55s  service-controller  Ensured load balancer\n")


def test_service_endpoints_follow_pod_readiness(sg: clusters.Cluster, evs: list[Event]) -> None:
    first = pod_named(sg, "default", "myapp-")
    pods = tuple(dataclasses.replace(p, ready=False) if p.name == first else p for p in sg.topology.pods)
    cl = dataclasses.replace(sg, topology=dataclasses.replace(sg.topology, pods=pods))
    ready = [f"{sg.allocations.pods[p.key].ip}:9376" for p in pods if p.labels.get("app") == "MyApp"
             and p.namespace == "default" and p.ready]
    assert f"Endpoints: {','.join(ready)}" in flat(describe(cl, evs, "svc", "default", "my-service"))
    ep = flat(describe(cl, evs, "ep", "default", "my-service"))
    assert f"NotReadyAddresses: {sg.allocations.pods['default/' + first].ip}" in ep
    assert f"Addresses: {ready[0].split(':')[0]}" in ep


# --- NetworkPolicy -------------------------------------------------------------------------------------------------


def test_describe_networkpolicy_is_kubectls_text(sg: clusters.Cluster, evs: list[Event]) -> None:
    text = describe(sg, evs, "netpol", "policy-frontend", "allow-frontend")
    created = dt.go_time(UP)
    assert text == ("Name:         allow-frontend\n"
                    "Namespace:    policy-frontend\n"
                    f"Created on:   {created}\n"
                    "Labels:       <none>\n"
                    "Annotations:  <none>\n"
                    "Spec:\n"
                    "  PodSelector:     app=backend\n"
                    "  Allowing ingress traffic:\n"
                    "    To Port: 80/TCP\n"
                    "    From:\n"
                    "      PodSelector: app=frontend\n"
                    "  Not affecting egress traffic\n"
                    "  Policy Types: Ingress\n")  # kubectl shows no Events for a NetworkPolicy


@pytest.mark.parametrize("ns, name, spec", [
    ("policy-ns", "allow-ns-policy", [
        "  PodSelector:     app=db",
        "  Allowing ingress traffic:",
        "    To Port: <any> (traffic allowed to all ports)",
        "    From:",
        "      NamespaceSelector: project=myproject",
        "  Not affecting egress traffic",
        "  Policy Types: Ingress"]),
    ("policy-cidr", "allow-external", [
        "  PodSelector:     app=web",
        "  Allowing ingress traffic:",
        "    To Port: <any> (traffic allowed to all ports)",
        "    From:",
        "      IPBlock:",
        "        CIDR: 172.17.0.0/16",
        "        Except: 172.17.1.0/24",
        "  Not affecting egress traffic",
        "  Policy Types: Ingress"]),
    ("policy-deny", "default-deny-ingress", [
        "  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)",
        "  Allowing ingress traffic:",
        "    <none> (Selected pods are isolated for ingress connectivity)",
        "  Not affecting egress traffic",
        "  Policy Types: Ingress"]),
    ("policy-allow-all", "default-allow-all", [
        "  PodSelector:     <none> (Allowing the specific traffic to all pods in this namespace)",
        "  Allowing ingress traffic:",
        "    To Port: <any> (traffic allowed to all ports)",
        "    From: <any> (traffic not restricted by source)",
        "  Allowing egress traffic:",
        "    To Port: <any> (traffic allowed to all ports)",
        "    To: <any> (traffic not restricted by destination)",
        "  Policy Types: Ingress, Egress"]),
    ("policy-deny-all", "default-deny-all", [
        "  Allowing ingress traffic:",
        "    <none> (Selected pods are isolated for ingress connectivity)",
        "  Allowing egress traffic:",
        "    <none> (Selected pods are isolated for egress connectivity)",
        "  Policy Types: Ingress, Egress"]),
])
def test_describe_networkpolicy_rules(sg: clusters.Cluster, evs: list[Event], ns: str, name: str,
                                      spec: list[str]) -> None:
    lines = describe(sg, evs, "networkpolicy", ns, name).split("\n")
    assert contains_run(lines, spec), "\n".join(lines)
    assert not any(x.startswith("Events") for x in lines)


def test_networkpolicy_peer_with_both_selectors_and_port_range() -> None:
    text = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: np}
spec: {nodes: 1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, api]}], matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {team: x}}
      podSelector: {matchLabels: {role: db}}
    ports:
    - {protocol: TCP, port: 32000, endPort: 32768}
    - {protocol: UDP}
  - to: [{namespaceSelector: {}}]
"""
    topo = planner.load("np.yaml", text=text)
    from emu.alloc import ipam
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    cl = clusters.Cluster(state.Record("np", "np.yaml", created=UP), topo, alloc, planner.build(topo, alloc))
    lines = d.describe(cl, "netpol", "default", "p", [], now=NOW).split("\n")
    assert contains_run(lines, [
        "  PodSelector:     app=a,tier in (api,web)",
        "  Not affecting ingress traffic",
        "  Allowing egress traffic:",
        "    To Port Range: 32000-32768/TCP",
        "    To Port: <nil>/UDP",
        "    To:",
        "      NamespaceSelector: team=x",
        "      PodSelector: role=db",
        "    ----------",
        "    To Port: <any> (traffic allowed to all ports)",
        "    To:",
        "      NamespaceSelector: <none>",
        "  Policy Types: Egress"]), "\n".join(lines)


# --- Pod -----------------------------------------------------------------------------------------------------------


def test_describe_pod_of_a_deployment(sg: clusters.Cluster, evs: list[Event]) -> None:
    name = pod_named(sg, "default", "myapp-")
    pp = sg.plan.pod(f"default/{name}")
    assert pp is not None
    node_ip = next(n.ip for n in sg.plan.nodes if n.name == pp.node)
    text = describe(sg, evs, "pod", "default", name)
    lines = flat(text)
    rs = sg.topology.pods[[p.name for p in sg.topology.pods].index(name)].owner
    assert rs is not None and rs.startswith("ReplicaSet/myapp-")
    assert contains_run(lines, [f"Name: {name}", "Namespace: default", "Priority: 0", "Service Account: default",
                                f"Node: {pp.node}/{node_ip}", f"Start Time: {dt.rfc1123z(UP)}", "Labels: app=MyApp",
                                f"pod-template-hash={rs.rsplit('-', 1)[1]}"])
    assert contains_run(lines, ["Status: Running", f"IP: {pp.ip}", "IPs:", f"IP: {pp.ip}", f"Controlled By: {rs}",
                                "Containers:", "app:", "Container ID:",
                                "Image: registry.k8s.io/e2e-test-images/agnhost:2.53", "Image ID:",
                                "Port: 9376/TCP", "Host Port: 0/TCP", "State: Running"])
    assert contains_run(lines, ["Type Status", "PodReadyToStartContainers True", "Initialized True", "Ready True",
                                "ContainersReady True", "PodScheduled True", "Volumes: <none>",
                                "QoS Class: BestEffort"])
    # the scheduler's event, and the "IPs:" sub-block aligned on its own as kubectl's tabwriter does
    assert f"  Normal  Scheduled  4m55s  default-scheduler  Successfully assigned default/{name} to {pp.node}" \
        in text.split("\n")
    assert f"IPs:\n  IP:           {pp.ip}\nControlled By:  {rs}\n" in text


def test_describe_pod_shows_multus_network_status(sg: clusters.Cluster, evs: list[Event]) -> None:
    text = describe(sg, evs, "po", "default", "samplepod-1")
    lines = flat(text)
    assert "Node: node-1/172.18.0.2" in lines  # spec.nodeName: no scheduler, no Scheduled event
    assert lines[-2:] == ["Events: <none>", ""]
    i = lines.index("Annotations: k8s.v1.cni.cncf.io/network-status:")
    status = "".join(lines[i + 1:lines.index("k8s.v1.cni.cncf.io/networks: macvlan-conf")])
    ip = str(sg.allocations.pods["default/samplepod-1"].ip)
    assert status == ('[{"name": "cbr0","interface": "eth0","ips": ["' + ip + '"],"default": true,"dns": {},'
                      '"gateway": ["10.244.0.1"]},{"name": "default/macvlan-conf","interface": "net1",'
                      '"ips": ["192.168.1.200"],"dns": {}}]')
    # the JSON keeps Multus' four-space indentation inside kubectl's two-space annotation indent
    assert "                    [{\n                        \"name\": \"cbr0\",\n" in text


def test_describe_pod_with_two_ports_and_not_ready(sg: clusters.Cluster, evs: list[Event]) -> None:
    pods = tuple(dataclasses.replace(p, ready=False) if p.key == "policy-frontend/backend" else p
                 for p in sg.topology.pods)
    cl = dataclasses.replace(sg, topology=dataclasses.replace(sg.topology, pods=pods))
    lines = flat(describe(cl, evs, "pod", "policy-frontend", "backend"))
    assert contains_run(lines, ["Ports: 80/TCP, 81/TCP", "Host Ports: 0/TCP, 0/TCP"])
    assert "Ready: False" in lines and "Ready False" in lines and "ContainersReady False" in lines


def test_a_pod_made_again_shows_only_its_own_events(sg: clusters.Cluster) -> None:
    name = pod_named(sg, "default", "test-")
    old = ev("Scheduled", "Pod", "default", name, f"Successfully assigned default/{name} to node-1",
             "default-scheduler", UP + 5)
    new = ev("Scheduled", "Pod", "default", name, f"Successfully assigned default/{name} to node-2",
             "default-scheduler", NOW - 30)
    text = describe(sg, [old, new], "pod", "default", name)
    assert "to node-2" in text and "to node-1" not in text
    assert f"Start Time:       {dt.rfc1123z(NOW - 30)}" in text


# --- Node, Ingress, Endpoints ---------------------------------------------------------------------------------------


def test_describe_node(sg: clusters.Cluster, evs: list[Event]) -> None:
    n = sg.plan.nodes[0]
    on_node = sorted([(p.namespace, p.name) for p in sg.topology.pods if sg.allocations.pods[p.key].node == n.name] +
                     [(p.namespace, p.name) for p in systempods.kube_proxy(sg) if p.node == n.name])
    assert ("kube-system", systempods.kube_proxy(sg)[0].name) in on_node  # its kube-proxy pod runs there
    text = describe(sg, evs, "node", "default", n.name)
    lines = flat(text)
    assert contains_run(lines, [f"Name: {n.name}", "Roles: control-plane"])
    assert f"Annotations: flannel.alpha.coreos.com/backend-data: {{\"VNI\":1,\"VtepMAC\":\"{n.vtep_mac}\"}}" in lines
    assert f"flannel.alpha.coreos.com/public-ip: {n.ip}" in lines
    assert contains_run(lines, ["Taints: <none>", "Unschedulable: false", "Addresses:", f"InternalIP: {n.ip}",
                                f"Hostname: {n.name}", f"PodCIDR: {n.subnet}", f"PodCIDRs: {n.subnet}",
                                f"Non-terminated Pods: ({len(on_node)} in total)"])
    rows = [x.split(" ")[:2] for x in lines if x.endswith("0 (0%) 0 (0%) 0 (0%) 0 (0%) 5m")]
    assert rows == [list(k) for k in on_node]
    assert contains_run(lines, ["Events:", "Type Reason Age From Message", "---- ------ ---- ---- -------",
                                "Normal Starting 4m55s kube-proxy", ""])
    assert "Roles: <none>" in flat(describe(sg, evs, "no", None, sg.plan.nodes[1].name))


def test_describe_ingress(sg: clusters.Cluster, evs: list[Event]) -> None:
    lb = sg.allocations.services["ingress-nginx/ingress-nginx-controller"].load_balancer_ip
    backends = ep_list(sg, "default", {"app": "test"}, 8080)
    text = describe(sg, evs, "ing", "default", "minimal-ingress")
    assert text == ("Name:             minimal-ingress\n"
                    "Labels:           <none>\n"
                    "Namespace:        default\n"
                    f"Address:          {lb}\n"
                    "Ingress Class:    nginx\n"
                    "Default backend:  <default>\n"
                    "Rules:\n"
                    "  Host        Path  Backends\n"
                    "  ----        ----  --------\n"
                    "  *           \n"
                    f"              /testpath   test:80 ({backends})\n"
                    "Annotations:  nginx.ingress.kubernetes.io/rewrite-target: /\n"
                    "Events:\n"
                    "  Type    Reason  Age                    From                      Message\n"
                    "  ----    ------  ----                   ----                      -------\n"
                    "  Normal  Sync    2m55s (x3 over 4m55s)  nginx-ingress-controller  Scheduled for sync\n")
    tls = flat(describe(sg, evs, "ingress", "default", "tls-example-ingress"))
    # no ingressClassName: the DefaultIngressClass admission plugin gave it the default class
    assert contains_run(tls, ["Ingress Class: nginx", "Default backend: <default>", "TLS:",
                              "testsecret-tls terminates https-example.foo.com", "Rules:", "Host Path Backends",
                              "---- ---- --------", "https-example.foo.com",
                              f"/ service1:80 ({ep_list(sg, 'default', {'app': 'service1'}, 80)})"])


def test_describe_endpoints(sg: clusters.Cluster, evs: list[Event]) -> None:
    ips = sorted((str(sg.allocations.pods[p.key].ip) for p in sg.topology.pods
                  if p.namespace == "kube-system" and p.labels.get("k8s-app") == "kube-dns"), key=str.encode)
    text = describe(sg, evs, "ep", "kube-system", "kube-dns")
    assert contains_run(flat(text), [
        "Subsets:", f"Addresses: {','.join(ips)}", "NotReadyAddresses: <none>", "Ports:", "Name Port Protocol",
        "---- ---- --------", "dns 53 UDP", "dns-tcp 53 TCP", "metrics 9153 TCP", "", "Events: <none>", ""])
    assert "Labels:       endpoints.kubernetes.io/managed-by=endpoint-controller\n" in text


# --- selection: lists, prefixes, errors -----------------------------------------------------------------------------


def test_a_name_prefix_describes_every_match_without_events(sg: clusters.Cluster, evs: list[Event]) -> None:
    text = describe(sg, evs, "pods", "default", "myapp")
    names = sorted(p.name for p in sg.topology.pods if p.namespace == "default" and p.name.startswith("myapp"))
    assert [x.split()[1] for x in text.split("\n") if x.startswith("Name:")] == names
    assert "Events" not in text
    assert "\n\nName:" in text and "\n\n\nName:" not in text and text.endswith("\n\n")
    with_events = describe(sg, evs, "pods", "default", "myapp", show_events=True)
    assert with_events.count("Normal  Scheduled") == 2


def test_a_list_is_sorted_and_separated_as_kubectl_does(sg: clusters.Cluster, evs: list[Event]) -> None:
    text = describe(sg, evs, "svc", None, None)
    keys = [x.split()[1] for x in text.split("\n") if x.startswith(("Name:", "Namespace:"))]
    pairs = list(zip(keys[1::2], keys[0::2]))
    assert pairs == sorted((s.namespace, s.name) for s in sg.topology.services)
    assert text.count("\n\n\nName:") == len(pairs) - 1  # "\n\n" after each text's own final newline
    assert "Events" not in text
    assert describe(sg, evs, "svc", "nowhere", None) == ""


@pytest.mark.parametrize("kind, ns, name, message", [
    ("svc", "default", "x", 'services "x" not found'),
    ("po", "default", "x", 'pods "x" not found'),
    ("netpol", "default", "x", 'networkpolicies.networking.k8s.io "x" not found'),
    ("no", "default", "x", 'nodes "x" not found'),
    ("ing", "default", "x", 'ingresses.networking.k8s.io "x" not found'),
    ("ep", "policy-deny", "x", 'endpoints "x" not found'),
    ("svc", "policy-deny", "my-service", 'services "my-service" not found'),  # another namespace's
])
def test_not_found(sg: clusters.Cluster, evs: list[Event], kind: str, ns: str, name: str, message: str) -> None:
    with pytest.raises(NotFound) as e:
        describe(sg, evs, kind, ns, name)
    assert str(e.value) == f"Error from server (NotFound): {message}"


def test_other_user_errors(sg: clusters.Cluster, evs: list[Event]) -> None:
    with pytest.raises(EmuError, match="emu describe does not describe namespaces: emu get namespaces lists them"):
        describe(sg, evs, "ns", None, "default")
    with pytest.raises(kinds.UnknownKind, match='the server doesn\'t have a resource type "deploy"'):
        describe(sg, evs, "deploy", "default", None)
    with pytest.raises(d.NameAcrossNamespaces):
        describe(sg, evs, "svc", None, "my-service")
    assert describe(sg, evs, "node", None, "node-2").startswith("Name:               node-2\n")


# --- the command ----------------------------------------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The seed guide's record and events in a private state directory, as `emu up` leaves them."""
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path))
    cl = make_cluster()
    cl.record.name = "sg"
    cl.record.status = "up"
    cl.record.save()
    events.record(cl.record, events.between(None, cl, UP + 5))
    return "sg"


def test_cli_describe(recorded: str) -> None:
    r = CliRunner().invoke(main, ["describe", "svc", "my-service", "-n", "lb-demo", "--cluster", recorded])
    assert r.exit_code == 0, r.output
    assert "LoadBalancer Ingress:     192.168.240.1 (VIP)\n" in r.stdout and "EnsuredLoadBalancer" in r.stdout
    r = CliRunner().invoke(main, ["describe", "pod/nginx", "--cluster", recorded, "--show-events=false"])
    assert r.exit_code == 0 and r.stdout.startswith("Name:             nginx\n") and "Events" not in r.stdout
    r = CliRunner().invoke(main, ["describe", "ep", "test", "--cluster", recorded])
    assert r.exit_code == 0 and r.stderr.startswith("Warning: v1 Endpoints is deprecated in v1.33+")


def test_cli_describe_json(recorded: str) -> None:
    r = CliRunner().invoke(main, ["describe", "svc", "my-service", "-n", "lb-demo", "-o", "json",
                                  "--cluster", recorded])
    assert r.exit_code == 0, r.output
    [obj] = json.loads(r.stdout)
    assert (obj["kind"], obj["namespace"], obj["name"]) == ("Service", "lb-demo", "my-service")
    assert obj["text"].startswith("Name:                     my-service\n")
    assert [e["reason"] for e in obj["events"]] == ["EnsuringLoadBalancer", "EnsuredLoadBalancer"]
    r = CliRunner().invoke(main, ["describe", "nodes", "-o", "json", "--cluster", recorded])
    assert [o["name"] for o in json.loads(r.stdout)] == ["node-1", "node-2", "node-3"]


@pytest.mark.parametrize("args, code, stderr", [
    (["svc", "nope"], 1, 'Error from server (NotFound): services "nope" not found\n'),
    (["netpol", "nope", "-n", "policy-ns"], 1,
     'Error from server (NotFound): networkpolicies.networking.k8s.io "nope" not found\n'),
    (["deploy"], 1, 'error: the server doesn\'t have a resource type "deploy"\n'),
    (["svc", "x", "-A"], 1, "error: a resource cannot be retrieved by name across all namespaces\n"),
    (["svc", "-n", "nowhere"], 0, "No resources found in nowhere namespace.\n"),
])
def test_cli_errors(recorded: str, args: list[str], code: int, stderr: str) -> None:
    r = CliRunner().invoke(main, ["describe", *args, "--cluster", recorded])
    assert (r.exit_code, r.stderr, r.stdout) == (code, stderr, "")


def test_describe_kube_proxy_pod_is_its_daemonset_template_on_its_node(sg: clusters.Cluster, evs: list[Event]) -> None:
    sp = systempods.kube_proxy(sg)[1]
    lines = flat(describe(sg, evs, "pod", "kube-system", sp.name))
    node_ip = next(n.ip for n in sg.plan.nodes if n.name == sp.node)
    assert contains_run(lines, [f"Name: {sp.name}", "Namespace: kube-system", "Priority: 2000001000",
                                "Priority Class Name: system-node-critical", "Service Account: kube-proxy",
                                f"Node: {sp.node}/{node_ip}"])
    assert f"IP: {node_ip}" in lines and "Controlled By: DaemonSet/kube-proxy" in lines
    assert contains_run(lines, ["Command:", "/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                "--hostname-override=$(NODE_NAME)"])
    assert "Image: registry.k8s.io/kube-proxy:v1.33.0" in lines
    assert contains_run(lines, ["Tolerations: op=Exists", "node.kubernetes.io/disk-pressure:NoSchedule op=Exists"])
    listed = describe(sg, evs, "pods", "kube-system", None)
    names = {x.removeprefix("Name: ") for x in flat(listed) if x.startswith("Name: ")}
    assert {p.name for p in systempods.kube_proxy(sg)} <= names


# --- kubectl's own expected texts (tests/unit/upstream_kubectl.py) -------------------------------------------------


def _cluster_of(text: str, created: float = UP) -> clusters.Cluster:
    from emu.alloc import ipam
    topo = planner.load("upstream.yaml", text=text)
    alloc = ipam.allocate(topo, ipam.Allocations.empty())
    return clusters.Cluster(state.Record(topo.cluster.name, "upstream.yaml", created=created), topo, alloc,
                            planner.build(topo, alloc))


@pytest.fixture
def pacific(monkeypatch):  # type: ignore[no-untyped-def]
    """Local time as the Go test's parsed time prints it (PDT), restored afterwards."""
    import time
    monkeypatch.setenv("TZ", upstream_kubectl.CREATED_TZ)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("test, manifests, expected", upstream_kubectl.NETWORK_POLICY_CASES,
                         ids=[c[0] for c in upstream_kubectl.NETWORK_POLICY_CASES])
def test_upstream_kubectl_network_policy(pacific, test: str, manifests: str, expected: str) -> None:
    import datetime
    created = datetime.datetime.strptime(upstream_kubectl.CREATED, "%Y-%m-%d %H:%M:%S %z").timestamp()
    cl = _cluster_of(manifests, created)
    assert d.describe(cl, "netpol", "default", "network-policy-1", [], now=created + 60) == expected


def test_upstream_kubectl_service_test1() -> None:
    cl = _cluster_of(upstream_kubectl.SERVICE_TEST1)
    got = d.describe(cl, "svc", "foo", "bar", [], now=NOW).split("\n")
    # upstream's endpoint addresses are its fixture's; emu's pods get theirs from host-local IPAM (.1 is cni0)
    want = upstream_kubectl.SERVICE_TEST1_EXPECTED
    for i in (1, 2, 3):
        want = want.replace(f"10.244.0.{i}:", f"{{p{i}}}:")
    for i in (1, 2, 3):
        want = want.replace(f"{{p{i}}}:", f"{cl.allocations.pods[f'foo/p{i}'].ip}:")
    deviations = upstream_kubectl.DESCRIBE_SERVICE_DEVIATIONS
    differing = [line for line in got if line not in want.split("\n")]
    assert [line.split(":")[0] + ":" for line in differing] == list(deviations), "\n".join(differing)
    assert [line for line in got if not line.startswith(tuple(deviations))] == \
        [line for line in want.split("\n") if not line.startswith(tuple(deviations))]
