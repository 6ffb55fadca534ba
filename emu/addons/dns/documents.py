"""The cluster DNS addon's objects, as kubeadm installs CoreDNS: the `coredns` ConfigMap (kube-system) brings the
`coredns` Deployment (2 replicas, k8s-app=kube-dns, dnsPolicy Default) and the `kube-dns` Service at serviceCIDR .10
(dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP) into the model, unless the topology has them already; and the
ConfigMap checks (every ConfigMap's keys, the coredns one's Corefile).  Pure: documents in, documents out."""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from emu.model.documents import DNS_SUBDOMAIN, Collector, Document, metadata
from emu.addons.dns import corefile

LAYER = "model"

CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+\Z")  # k8s.io/apimachinery validation.IsConfigMapKey
ADDON_INDEX = 100000  # document index of the synthesized objects (error messages name them as documents)
DNS_LABELS = {"k8s-app": "kube-dns"}


def _is_coredns_configmap(body: dict[str, Any]) -> bool:
    meta = metadata(body)
    return (body.get("kind") == "ConfigMap" and meta.get("name") == "coredns"
            and (meta.get("namespace") or "default") == "kube-system")


def corefile_text(bodies: list[dict[str, Any]]) -> str | None:
    cm = next((b for b in bodies if _is_coredns_configmap(b)), None)
    if cm is None:
        return None
    data = cm.get("data")  # not a mapping: check_configmap reports it
    return str((data if isinstance(data, dict) else {}).get("Corefile") or corefile.DEFAULT_COREFILE)


def check_configmap(doc: Document, c: Collector) -> None:
    """ConfigMaps are recorded; the coredns one must hold a Corefile CoreDNS would start with."""
    name = doc.meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        c.add(doc, doc.file, doc.label(), "metadata.name", f"ConfigMap name {name!r} must be a DNS subdomain")
    data = doc.body.get("data")
    if data is not None and not isinstance(data, dict):
        c.add(doc, doc.file, doc.label(), "data", "must be a mapping of keys to strings")
        return
    for key in data or {}:  # IsConfigMapKey: a key is a file name in a volume
        if not isinstance(key, str) or len(key) > 253 or not CONFIGMAP_KEY.match(key) or key in (".", ".."):
            c.add(doc, doc.file, doc.label(), f"data[{key}]", f"{key!r} must be letters, digits, '-', '_' or '.'")
    if _is_coredns_configmap(doc.body) and data and "Corefile" in data:
        try:
            corefile.parse(str(data["Corefile"]))
        except corefile.CorefileError as e:
            c.add(doc, doc.file, doc.label(), "data.Corefile", str(e))


def addon_documents(path: str, docs: list[Document], service_cidr: ipaddress.IPv4Network) -> list[Document]:
    """kubeadm's CoreDNS addon objects, when the coredns ConfigMap is there and no kube-dns Service is."""
    bodies = [d.body for d in docs]
    if corefile_text(bodies) is None:
        return []
    has_svc = any(d.kind == "Service" and d.meta.get("name") == "kube-dns"
                  and d.meta.get("namespace") == "kube-system" for d in docs)
    has_deploy = any(d.kind == "Deployment" and d.meta.get("name") == "coredns"
                     and d.meta.get("namespace") == "kube-system" for d in docs)
    out = []
    if not has_deploy:
        out.append(Document(path, ADDON_INDEX, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": dict(DNS_LABELS)},
            "spec": {"replicas": 2, "selector": {"matchLabels": dict(DNS_LABELS)},
                     "template": {"metadata": {"labels": dict(DNS_LABELS)},
                                  "spec": {"dnsPolicy": "Default",
                                           "containers": [{"name": "coredns",
                                                           "image": "registry.k8s.io/coredns/coredns:v1.11.1"}]}}}}))
    if not has_svc:
        out.append(Document(path, ADDON_INDEX + 1, {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"selector": dict(DNS_LABELS), "clusterIP": str(service_cidr.network_address + 10),
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                               {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}))
    return out
