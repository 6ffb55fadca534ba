"""Cluster DNS as an Addon: kubelet's resolv.conf for every pod and node, and, with the coredns ConfigMap, the
cluster DNS server (one daemon playing every coredns pod: emu.addons.dns.server).

It reads the coredns ConfigMap (the Corefile) and the Services, pods and EndpointSlices its records come from.  Up
writes the resolv.conf files (named in the record first) and starts the server; a change rewrites the zone, which
the server re-reads; down stops the server and removes the files the record names.
"""
from __future__ import annotations

from emu.addons.base import Addon, Daemon, Running
from collections.abc import Sequence

from emu.addons.dns import addon, desired
from emu.addons.dns import documents as dns_documents
from emu.model.documents import Document
from emu.model.types import ClusterSpec
from emu.plan.content import Daemon as RunDaemon
from emu.plan.content import Section


def _sync(new: Running, old: Running) -> None:
    addon.sync(new)  # new records (the DNS server re-reads its zone), resolv.conf of new pods


def _documents(path: str, docs: Sequence[Document], cluster: ClusterSpec) -> list[Document]:
    return dns_documents.addon_documents(path, list(docs), cluster.service_cidr)


def _dry_run(cl: Running) -> list[Section]:
    objs = desired.desired(cl)
    server = any(isinstance(o, RunDaemon) for o in objs)
    return [("cluster DNS: the resolv.conf of every node and pod" + (", the DNS server's files and the server"
                                                                     if server else ""), objs)] if objs else []


DNS = Addon(addon.NAME, kinds=("ConfigMap", "Service", "Pod", "EndpointSlice"), documents=_documents,
            start=addon.start, sync=_sync, stop=addon.stop,
            daemon=Daemon("cluster DNS (the coredns pods)", addon.pids, addon.start), dry_run=_dry_run)
