"""Ingress as an Addon: the ingress-nginx controller's nginx, in the controller pod's namespace.

It reads Ingress, IngressClass, the Services and EndpointSlices they route to and the TLS Secrets.  Up starts nginx
when the cluster has an admitted Ingress (its pid named in the record first); a change writes a new nginx.conf and
reloads; the controller pod leaving stops nginx before the pod's namespace goes; down stops it and removes the
external host's /etc/hosts entry the record names.
"""
from __future__ import annotations

from emu.addons.base import Addon, Daemon, Running
from collections.abc import Sequence

from emu.addons.ingress import controller, desired, routing
from emu.addons.ingress import documents as ingress_documents
from emu.addons.ingress.nginxproc import COMPONENT
from emu.apply.state import Record
from emu.model.documents import Document
from emu.model.types import ClusterSpec
from emu.plan.content import Section


def _sync(new: Running, old: Running) -> None:
    controller.sync(new)  # Ingresses, their Services' endpoints or Secrets changed: new nginx.conf, reload


def _pods_leaving(old: Running, keys: frozenset[str]) -> None:
    if routing.controller_pod(old) in keys:
        controller.stop(old.record)  # nginx leaves before its pod's namespace does


def _documents(path: str, docs: Sequence[Document], cluster: ClusterSpec) -> list[Document]:
    return ingress_documents.addon_documents(path, list(docs), cluster.load_balancer_pool is not None)


def _expected(rec: Record) -> bool:
    return rec.pid(COMPONENT) is not None


def _dry_run(cl: Running) -> list[Section]:
    nginx = desired.desired(cl)
    if not nginx:
        return []
    made = "".join(f"\n# {path}: made by up with openssl (a fresh key), not shown" for path in desired.generated(cl))
    return [(f"ingress-nginx controller: nginx in {nginx[-1].owner}{made}", nginx)]


INGRESS = Addon(COMPONENT, kinds=("Ingress", "IngressClass", "Secret", "Service", "EndpointSlice"),
                documents=_documents, start=controller.start, sync=_sync, pods_leaving=_pods_leaving,
                stop=controller.stop,                daemon=Daemon("the ingress controller's nginx", controller.pids, _expected, controller.start),
                dry_run=_dry_run)
