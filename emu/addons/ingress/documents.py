"""The ingress-nginx addon's objects, as its baremetal manifest installs them: Namespace `ingress-nginx`, the
`ingress-nginx-controller` Deployment (one replica) and Service (LoadBalancer when the cluster has a
loadBalancerPool, else NodePort; http 80 and https 443), and the `nginx` IngressClass, marked the default class (as
minikube's ingress addon does) so that Ingresses without ingressClassName, like the seed guide's TLS example, are
served.  The objects join the model when the topology has an Ingress; a topology's own objects of the same names win.
Pure: documents in, documents out.
"""
from __future__ import annotations

from typing import Any

from emu.model.documents import Document, metadata
from emu.addons.ingress.model import DEFAULT_CLASS_ANNOTATION, NGINX_CONTROLLER

LAYER = "model"

NAMESPACE = "ingress-nginx"
NAME = "ingress-nginx-controller"
CLASS = "nginx"
IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.11.2"
LABELS = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress-nginx",
          "app.kubernetes.io/component": "controller"}
SERVED_BY = "emu.dev/served-by"  # pod annotation: an addon process (not emu's agent) serves the pod's ports
ADDON_INDEX = 100100  # document index of the synthesized objects (error messages name them as documents)


def _has(bodies: list[dict[str, Any]], kind: str, ns: str | None, name: str) -> bool:
    for b in bodies:
        meta = metadata(b)
        if b.get("kind") == kind and meta.get("name") == name and (ns is None or (meta.get("namespace")
                                                                                  or "default") == ns):
            return True
    return False


def addon_documents(path: str, docs: list[Document], with_lb: bool) -> list[Document]:
    bodies = [d.body for d in docs]
    if not any(b.get("kind") == "Ingress" for b in bodies):
        return []
    out = []

    def add(body: dict[str, Any]) -> None:
        out.append(Document(path, ADDON_INDEX + len(out), body))

    if not _has(bodies, "Namespace", None, NAMESPACE):
        add({"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/name": "ingress-nginx"}}})
    if not _has(bodies, "IngressClass", None, CLASS):
        add({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": {"name": CLASS, "labels": dict(LABELS),
                          "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
             "spec": {"controller": NGINX_CONTROLLER}})
    if not _has(bodies, "Deployment", NAMESPACE, NAME):
        add({"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
             "spec": {"replicas": 1, "selector": {"matchLabels": dict(LABELS)},
                      "template": {"metadata": {"labels": dict(LABELS), "annotations": {SERVED_BY: "nginx"}},
                                   "spec": {"dnsPolicy": "ClusterFirst",
                                            "containers": [{"name": "controller", "image": IMAGE, "ports": [
                                                {"name": "http", "containerPort": 80, "protocol": "TCP"},
                                                {"name": "https", "containerPort": 443, "protocol": "TCP"}]}]}}}})
    if not _has(bodies, "Service", NAMESPACE, NAME):
        add({"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
             "spec": {"type": "LoadBalancer" if with_lb else "NodePort", "selector": dict(LABELS),
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}]}})
    return out
