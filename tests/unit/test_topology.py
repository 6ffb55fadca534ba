"""Parsing and validation of topology files: every error names the file, the document, the object and the field."""
from __future__ import annotations

import datetime
import json
import textwrap

import pytest

from emu.cluster import planner
from emu.model import pods as model_pods
from emu.errors import ValidationError
from emu.model.types import Backend, Protocol

CLUSTER = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata:
  name: demo
spec:
  nodes: {nodes}
  podCIDR: {pod}
  serviceCIDR: {svc}
  nodeCIDRMaskSize: {mask}
  nodeNetwork: {nodenet}
  cni:
    plugin: flannel
    backend: {backend}
"""


def cluster(nodes="3", pod="10.244.0.0/16", svc="10.96.0.0/12", mask=24, nodenet="172.18.0.0/24",
            backend="vxlan") -> str:
    return CLUSTER.format(nodes=nodes, pod=pod, svc=svc, mask=mask, nodenet=nodenet, backend=backend)


def pod(name, ns="default", node=None, ports="[{containerPort: 80}]", labels="{app: web}") -> str:
    lines = ["---", "apiVersion: v1", "kind: Pod", "metadata:", f"  name: {name}", f"  namespace: {ns}",
             f"  labels: {labels}", "spec:"]
    if node:
        lines.append(f"  nodeName: {node}")
    lines += ["  containers:", "  - name: c", f"    ports: {ports}"]
    return "\n".join(lines) + "\n"


def load(text: str):
    return planner.load("t.yaml", text=text)


def problems(text: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        load(text)
    return [str(p) for p in e.value.problems]


def test_defaults_match_the_issue_schema():
    t = load("apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\n")
    c = t.cluster
    assert c.nodes == ("node-1", "node-2", "node-3")
    assert str(c.pod_cidr) == "10.244.0.0/16" and str(c.service_cidr) == "10.96.0.0/12"
    assert c.node_cidr_mask_size == 24 and str(c.node_network) == "172.18.0.0/24" and c.mtu == 1500
    assert c.cni.plugin == "flannel" and c.cni.backend is Backend.VXLAN


def test_node_list_and_pods_with_ports():
    t = load(cluster(nodes="[alpha, beta]", backend="host-gw") +
             pod("a", node="beta", ports="[{name: http, containerPort: 80, protocol: TCP}, "
                                         "{containerPort: 81, protocol: UDP}]"))
    assert t.cluster.nodes == ("alpha", "beta")
    assert t.cluster.cni.backend is Backend.HOST_GW
    (p,) = t.pods
    assert p.key == "default/a" and p.node_name == "beta" and p.labels == {"app": "web"}
    assert [(x.name, x.container_port, x.protocol) for x in p.ports] == [("http", 80, Protocol.TCP),
                                                                          (None, 81, Protocol.UDP)]


def test_namespaces_are_labelled_like_the_api_server_labels_them():
    t = load(cluster() + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {team: a}}\n")
    ns = t.namespace("x")
    assert ns is not None and ns.labels == {"team": "a", "kubernetes.io/metadata.name": "x"}
    assert t.namespace("default").labels == {"kubernetes.io/metadata.name": "default"}


def test_deployment_pods_are_named_like_the_replicaset_controller_names_them():
    text = cluster() + textwrap.dedent("""\
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 3
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: c, ports: [{containerPort: 80}]}]
        """)
    t = load(text)
    assert len(t.pods) == 3
    hashes = {p.labels["pod-template-hash"] for p in t.pods}
    assert len(hashes) == 1
    h = hashes.pop()
    for p in t.pods:
        prefix, suffix = p.name.rsplit("-", 1)
        assert prefix == f"web-{h}" and len(suffix) == 5
        assert set(h + suffix) <= set(model_pods.SAFE_ALPHANUMS)
        assert p.owner == f"ReplicaSet/web-{h}"
    assert load(text).pods == t.pods  # stable across loads


@pytest.mark.parametrize("text, expected", [
    (cluster(svc="10.244.128.0/20"), "t.yaml (document 1): Cluster demo: spec.serviceCIDR: 10.244.128.0/20 overlaps "
                                     "spec.podCIDR 10.244.0.0/16"),
    (cluster(nodenet="10.96.0.0/24"), "spec.nodeNetwork: 10.96.0.0/24 overlaps spec.serviceCIDR"),
    (cluster(mask=12), "spec.nodeCIDRMaskSize: /12 does not fit in podCIDR 10.244.0.0/16"),
    (cluster(pod="10.244.0.0/23", mask=24), "podCIDR 10.244.0.0/23 holds 2 node subnets of /24, but there are 3"),
    (cluster(nodes="[a, a]"), "spec.nodes[1]: duplicate node name 'a'"),
    (cluster(nodes="[underlay]"), "spec.nodes[0]: node name 'underlay' is reserved"),
    (cluster(backend="ipip"), "spec.cni.backend: backend 'ipip' is not one of vxlan, host-gw"),
    (cluster(pod="10.244.0.1/16"), "spec.podCIDR: '10.244.0.1/16' is not a valid CIDR"),
    (cluster() + pod("a") + pod("a"), "t.yaml (document 3): Pod default/a: metadata.name: duplicate pod default/a "
                                      "(first defined in document 2)"),
    (cluster() + pod("a", ns="nope"), "Pod nope/a: metadata.namespace: namespace 'nope' does not exist"),
    (cluster() + pod("a", ports="[{containerPort: 70000}]"),
     "Pod default/a: spec.containers[0].ports[0].containerPort: must be a port number from 1 to 65535, got 70000"),
    (cluster() + pod("a", ports="[{containerPort: 80, protocol: ICMP}]"),
     "spec.containers[0].ports[0].protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    (cluster() + pod("a", ports="[{containerPort: 80, name: Bad_Name}]"), "ports[0].name: 'Bad_Name' must be"),
    (cluster() + pod("a", node="node-9"), "Pod default/a: spec.nodeName: node 'node-9' does not exist"),
    (cluster() + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: s}\nspec: {}\n",
     "t.yaml (document 2): Ingress s: spec: either defaultBackend or rules must be specified"),
    (cluster() + "---\napiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n", "kind Gadget is not implemented"),
    ("kind: Pod\n", "the first document must be a Cluster"),
    (cluster() + "---\n: [\n", "invalid YAML"),
])
def test_each_problem_names_file_document_object_and_field(text, expected):
    found = problems(text)
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_at_once():
    found = problems(cluster() + pod("a", node="node-9") + pod("b", ns="nope"))
    assert len(found) == 2


def test_external_clients_are_addresses_outside_every_cluster_network():
    base = "apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec:\n  externalClients: "
    c = load(base + "[172.17.0.10, 172.17.1.10]\n").cluster
    assert [str(a) for a in c.external_clients] == ["172.17.0.10", "172.17.1.10"]
    from emu.plan import underlay

    ext = underlay.external_plan(c)
    assert [str(a.cidr) for a in ext.addresses if a.dev == "lo"] == ["172.17.0.10/32", "172.17.1.10/32"]
    msgs = problems(base + "[10.244.3.3, nope, 172.17.0.10, 172.17.0.10]\n")
    assert any("spec.externalClients[0]" in m and "inside spec.podCIDR" in m for m in msgs)
    assert any("spec.externalClients[1]" in m and "not an IPv4 address" in m for m in msgs)
    assert any("spec.externalClients[3]" in m and "duplicate" in m for m in msgs)


def doc(kind: str, body: str, api: str = "v1") -> str:
    return f"---\napiVersion: {api}\nkind: {kind}\n" + textwrap.dedent(body)


SVC = "metadata: {name: s}\nspec:\n  ports: [{port: 80}]\n"
DEPLOY = """\
    metadata: {name: d}
    spec:
      selector: {matchLabels: {app: d}}
      template:
        metadata: {labels: {app: d}}
        spec: {containers: [{name: c}]}
    """
NAD = ('metadata: {name: n}\nspec:\n  config: \'{"type": "macvlan", "ipam": {"type": "host-local", '
       '"subnet": "10.9.0.0/24", "routes": 7}}\'\n')


@pytest.mark.parametrize("text, expected", [  # a value of the wrong type: one line each, never a traceback
    (cluster() + doc("Pod", "metadata: 7\nspec: {containers: [{name: c}]}\n"),
     "t.yaml (document 2): Pod <unnamed>: metadata: must be a mapping"),
    (cluster() + doc("Service", SVC.replace("{name: s}", "{name: s, namespace: [x]}")),
     "t.yaml (document 2): Service s: metadata.namespace: must be a string, got ['x']"),
    (cluster() + pod("a", ports="7"), "Pod default/a: spec.containers[0].ports: must be a list"),
    (cluster() + doc("Deployment", DEPLOY.replace("metadata: {labels: {app: d}}", "metadata: 7"), "apps/v1"),
     "Deployment d: spec.template.metadata: must be a mapping"),
    (cluster() + doc("Deployment", DEPLOY.replace("{labels: {app: d}}", "{labels: [app]}"), "apps/v1"),
     "Deployment d: spec.template.metadata.labels: labels must be a mapping"),
    (cluster() + doc("Deployment", DEPLOY.replace("selector: {matchLabels: {app: d}}", "selector: 7"), "apps/v1"),
     "Deployment d: spec.selector.matchLabels: a Deployment needs a selector"),
    (cluster() + doc("Deployment", DEPLOY.replace("spec: {containers", "spec: {7: x, containers"), "apps/v1"),
     'Deployment d: spec.template.spec.7: unknown field "spec.template.spec.7"'),
    (cluster() + doc("Service", SVC + "  externalIPs: 7\n"), "Service s: spec.externalIPs: must be a list of IPv4"),
    (cluster() + doc("Service", SVC + "  loadBalancerIP: nope\n"), "spec.loadBalancerIP[0]: 'nope' is not an IPv4"),
    (cluster() + doc("Service", SVC + "  sessionAffinityConfig: {clientIP: 7}\n"),
     "Service s: spec.sessionAffinityConfig.clientIP: must be a mapping"),
    (cluster() + doc("Service", SVC.replace("ports:", "type: LoadBalancer\n  externalTrafficPolicy: Local\n"
                                                     "  healthCheckNodePort: [1]\n  ports:")),
     "Service s: spec.healthCheckNodePort: [1] is not in the node port range 30000-32767"),
    (cluster() + doc("Service", SVC + "  externalName: 7\n"), "Service s: spec.externalName: must be a string, got 7"),
    (cluster() + doc("EndpointSlice", "metadata: {name: e, labels: {kubernetes.io/service-name: s}}\nendpoints: 7\n",
                     "discovery.k8s.io/v1"),
     "EndpointSlice e: endpoints: must be a list of mappings with addresses"),
    (cluster() + doc("EndpointSlice", "metadata: {name: e, labels: {kubernetes.io/service-name: s}}\nports: [7]\n",
                     "discovery.k8s.io/v1"),
     "EndpointSlice e: ports[0]: must be a mapping with port"),
    (cluster() + doc("Endpoints", "metadata: {name: e}\nsubsets: [{addresses: [7]}]\n"),
     "Endpoints e: subsets[0].addresses[0]: must be a mapping with ip"),
    (cluster() + pod("a").replace("spec:\n", "spec:\n  dnsConfig: {nameservers: 7}\n"),
     "Pod default/a: spec.dnsConfig.nameservers: must be a list of IP addresses"),
    (cluster() + pod("a").replace("spec:\n", "spec:\n  dnsConfig: {options: 7}\n"),
     "Pod default/a: spec.dnsConfig.options: must be a list of options (name, value)"),
    (cluster() + doc("NetworkAttachmentDefinition", NAD, "k8s.cni.cncf.io/v1"),
     "NetworkAttachmentDefinition n: spec.config.ipam.routes: must be a list, got 7"),
    (cluster() + doc("ConfigMap", "metadata: {name: coredns, namespace: kube-system}\ndata: 7\n"),
     "ConfigMap kube-system/coredns: data: must be a mapping of keys to strings"),
])
def test_a_value_of_the_wrong_type_is_one_problem(text, expected):
    found = problems(text)
    assert any(expected in p for p in found), found


def test_a_pod_template_with_a_key_json_has_no_string_for_still_hashes():
    """A template key YAML reads as an int or a date (refused as an unknown field) is hashed as sigs.k8s.io/yaml
    would name it, not a crash of json.dumps; a valid template hashes as before."""
    assert model_pods.pod_template_hash({"metadata": {"labels": {"app": "web"}}}) == \
        model_pods.safe_encode(str(_fnv({"metadata": {"labels": {"app": "web"}}})))
    assert model_pods.pod_template_hash({7: "x", "spec": {"image": datetime.date(2024, 1, 1)}})


def _fnv(template: dict) -> int:
    h = 0x811C9DC5
    for b in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def test_a_conflist_plugin_capabilities_must_be_booleans(tmp_path):
    """libcni decodes `capabilities` into a map[string]bool: anything else is refused before a dry run reads it."""
    f = tmp_path / "net.conflist"
    f.write_text('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "ptp", "capabilities": 7}]}')
    text = ("apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\n"
            f"spec: {{cni: {{plugin: cni, conflist: {f}}}}}\n")
    assert problems(text) == [f"t.yaml (document 1): Cluster demo: spec.cni.conflist: {f}: plugins[0].capabilities "
                              "must be an object of booleans (libcni's map[string]bool), got 7"]
