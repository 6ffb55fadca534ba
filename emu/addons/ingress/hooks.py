"""Ingress as an Addon: the ingress-nginx controller's nginx, in the controller pod's namespace.

It reads Ingress, IngressClass, the Services and EndpointSlices they route to and the TLS Secrets.  Up starts nginx
when the cluster has an admitted Ingress (its pid named in the record first); a change writes a new nginx.conf and
reloads; the controller pod leaving stops nginx before the pod's namespace goes; down stops it and removes the
external host's /etc/hosts entry the record names.
"""
from __future__ import annotations

from emu.addons.base import Addon, Daemon, Emit, Running
from collections.abc import Sequence

from emu.addons.ingress import controller, desired, routing
from emu.addons.ingress import documents as ingress_documents
from emu.addons.ingress.nginxproc import COMPONENT
from emu.model.documents import Document
from emu.model.types import ClusterSpec
from emu.plan.content import Section

SOURCE = "nginx-ingress-controller"  # its Events' source.component


def _sync(new: Running, old: Running) -> None:
    controller.sync(new)  # Ingresses, their Services' endpoints or Secrets changed: new nginx.conf, reload


def _pods_leaving(old: Running, keys: frozenset[str]) -> None:
    if routing.controller_pod(old) in keys:
        controller.stop(old.record)  # nginx leaves before its pod's namespace does


def _documents(path: str, docs: Sequence[Document], cluster: ClusterSpec) -> list[Document]:
    return ingress_documents.addon_documents(path, list(docs), cluster.load_balancer_pool is not None)


def _events(old: Running | None, new: Running, ev: Emit) -> None:
    """ingress-nginx (internal/ingress/controller/store/store.go, controller.go): `Sync` "Scheduled for sync" for
    each Ingress of its class added or changed, and `RELOAD` on the controller pod when its configuration changed."""
    served = routing.served(new)
    prev = {i.key: i for i in routing.served(old)} if old else {}
    for ing in served:
        if prev.get(ing.key) != ing:  # AddFunc, or UpdateFunc with a change (or a class it now matches)
            ev("Normal", "Sync", "Ingress", ing.namespace, ing.name, "Scheduled for sync", SOURCE)
    pod = routing.controller_pod(new)
    if pod is None or not served:
        return
    tls = {f"{i.namespace}/{t.secret_name}" for i in served for t in i.tls if t.secret_name}
    secrets = {s.key: s for s in new.topology.secrets if s.key in tls}
    old_secrets = {s.key: s for s in old.topology.secrets if s.key in tls} if old else {}
    fresh = old is None or routing.controller_pod(old) != pod  # its first sync always loads a configuration
    if fresh or list(prev.values()) != served or secrets != old_secrets:
        ns, name = pod.split("/", 1)
        ev("Normal", "RELOAD", "Pod", ns, name, "NGINX reload triggered due to a change in configuration",
           SOURCE)


def _dry_run(cl: Running) -> list[Section]:
    nginx = desired.desired(cl)
    if not nginx:
        return []
    made = "".join(f"\n# {path}: made by up with openssl (a fresh key), not shown" for path in desired.generated(cl))
    return [(f"ingress-nginx controller: nginx in {nginx[-1].owner}{made}", nginx)]


INGRESS = Addon(COMPONENT, kinds=("Ingress", "IngressClass", "Secret", "Service", "EndpointSlice"),
                documents=_documents, start=controller.start, sync=_sync, pods_leaving=_pods_leaving,
                stop=controller.stop, events=_events, dry_run=_dry_run,
                daemon=Daemon("the ingress controller's nginx", controller.pids, controller.start))
