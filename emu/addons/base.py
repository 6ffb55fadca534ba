"""The Addon seam: a cluster component (kube-proxy, NetworkPolicy enforcement, DNS, Ingress, Multus) as a table of
verbs, the way a CNI plugin is a table of ADD/DEL/CHECK and felix registers a manager per kind of state.

An addon declares what it reads (`kinds`), the objects its installer adds (`documents`), what it checks before
anything is built (`preflight`), what it does when a cluster comes up (`start`), when its objects change (`sync`),
before pods it serves leave (`pods_leaving`) and when the cluster goes (`stop`), which daemon of it the record owns
(`daemon`), the Events it records (`events`), and what it would do, as plan objects (`dry_run`).
`emu.addons.table.ADDONS` lists them in one literal tuple; the cluster's lifecycle is a loop over that tuple (up in
order, down in reverse), so adding a component is its folder plus one line there.

The hooks take the running cluster through the `Running` protocol (record, model, allocations, plan): an addon
never imports the cluster layer that calls it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from emu.alloc.ipam import Allocations
from emu.apply.state import Record
from emu.model.kinds import DocumentSource
from emu.model.types import Topology
from emu.plan.content import Section
from emu.plan.objects import ClusterPlan


class Running(Protocol):
    """What an addon sees of a running cluster (emu.cluster.lifecycle.Cluster has it)."""

    @property
    def name(self) -> str: ...

    @property
    def record(self) -> Record: ...

    @property
    def topology(self) -> Topology: ...

    @property
    def allocations(self) -> Allocations: ...

    @property
    def plan(self) -> ClusterPlan: ...


@dataclass(frozen=True, slots=True)
class Daemon:
    """A long-running process of an addon, owned by the record (its pid under the addon's entry before it runs): a
    cluster that is up is expected to run it once the record names its pid."""

    what: str  # what stops working without it ("cluster DNS (the coredns pods)")
    pids: Callable[[Record], set[int]]  # its live processes, proven ours (pids get recycled)
    restart: Callable[[Running], None]  # start it again, as `up` started it (`emu up --repair`)


# One Kubernetes Event a component records: (type, reason, involved kind, its namespace, its name, message, source
# component); emu.cluster.events stamps and keeps it.
Emit = Callable[[str, str, str, str, str, str, str], None]


def _nothing(*_: object) -> None:
    return None


def _no_sections(*_: object) -> list[Section]:
    return []


@dataclass(frozen=True, slots=True)
class Addon:
    name: str  # its entry in the record, and the name `emu status` and `emu doctor` give its daemon
    kinds: tuple[str, ...] = ()  # the manifest kinds it reads
    # the objects its installer adds to a topology's manifests (kubeadm's CoreDNS, ingress-nginx's manifest), as the
    # model reads them: each source sees the manifests and what the addons before it added
    documents: DocumentSource | None = None
    preflight: Callable[[Topology], None] = _nothing  # a ClusterError (one line) before anything is built
    start: Callable[[Running], None] = _nothing  # up: once every pod answers
    sync: Callable[[Running, Running], None] = _nothing  # emu apply / delete / mark: (new, old)
    pods_leaving: Callable[[Running, frozenset[str]], None] = _nothing  # before these pods' namespaces go
    stop: Callable[[Record], None] = _nothing  # down (reverse order), and undoing a failed up
    daemon: Daemon | None = None
    events: Callable[[Running | None, Running, Emit], None] = _nothing  # what it records for a step (old None: up)
    per_node: bool = False  # `emu up` reports its start as one step per node (kube-proxy: a first sync on each)
    # its part of `emu up --dry-run`: what it would program, write and run, computed purely by the functions its
    # hooks use (emu.addons.*.desired), in sections headed by a comment
    dry_run: Callable[[Running], list[Section]] = _no_sections
