"""NetworkPolicy enforcement as an Addon: kube-router's network policy controller beside the pod network.

It reads NetworkPolicy, and the pods, namespaces and labels the policies select; on up and on every change it
brings each node's filter table and ipsets in line (a full sync where a node's input changed, a cleanup once the
last policy is gone: emu.addons.netpol.sync).  Its state lives in the nodes' namespaces, which `down` removes: there
is nothing of it to stop.
"""
from __future__ import annotations

from emu.addons.base import Addon, Running
from emu.addons.netpol import desired, sync
from emu.plan.content import Section, by_owner


def _start(cl: Running) -> None:
    sync.sync_cluster(cl)


def _sync(new: Running, old: Running) -> None:
    sync.sync_cluster(new)  # pods, labels, namespaces or policies changed: regenerate where it matters


def _dry_run(cl: Running) -> list[Section]:
    return [(f"kube-router network policy controller on {node}", objs)
            for node, objs in by_owner(desired.desired(cl.topology, cl.allocations, cl.plan)).items()]


NETWORK_POLICY = Addon("networkpolicy", kinds=("NetworkPolicy",), start=_start, sync=_sync, dry_run=_dry_run)
