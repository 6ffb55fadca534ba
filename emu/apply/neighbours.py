"""The kernel's neighbour (ARP) table is one table for all namespaces, capped by the root namespace's
net.ipv4.neigh.default.gc_thresh3.  Past it, new entries fail and packets are dropped ("neighbour table overflow").
Only the root namespace can raise it, which emu never does: we estimate and warn."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from emu.errors import EmuError
from emu.plan.objects import ClusterPlan

SYSCTL = "net.ipv4.neigh.default.gc_thresh3"


def gc_thresh3() -> int | None:
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Others:
    """What the other clusters that are up hold in the shared table: their names and their estimated entries."""

    names: tuple[str, ...] = ()
    entries: int = 0


@dataclass(frozen=True)
class Risk:
    entries: int  # the estimate for everything counted: this cluster (or matrix) plus `others`
    limit: int | None
    what: str
    others: Others = Others()

    @property
    def at_risk(self) -> bool:
        return self.limit is not None and self.entries > self.limit

    def message(self) -> str:
        mine = self.entries - self.others.entries
        n = len(self.others.names)
        held = (f" ({mine} for it, {self.others.entries} held by {n} other cluster{'s' if n != 1 else ''} up: "
                f"{', '.join(self.others.names)})" if n else "")
        return (f"warning: {self.what} needs about {self.entries} ARP entries{held}, more than the kernel's shared "
                f"limit {SYSCTL}={self.limit}: packets may be dropped (neighbour table overflow). emu never "
                f"changes it; you may raise it yourself: sysctl -w {SYSCTL}={_suggest(self.entries)}")


def _suggest(n: int) -> int:
    v = 1024
    while v < 2 * n:
        v *= 2
    return v


def _infra_entries(plan: ClusterPlan) -> int:
    n = len(plan.nodes)
    # underlay: every node may ARP every other node and the external host; vxlan peers are permanent entries
    return n * n + n * (n - 1)


def held(plan: ClusterPlan) -> int:
    """What a cluster that is up and probed holds: each pod resolves its gateway, each node's cni0 its pods."""
    return 2 * len(plan.pods) + _infra_entries(plan)


def others(names: Iterable[str], this: str, plan_of: Callable[[str], ClusterPlan]) -> Others:
    """The other clusters' share of the table: `held` for every cluster in `names` but `this`.  The caller passes
    the names (emu.apply.state.names()) and a way to read a cluster's plan from its record, so this module stays below
    the cluster layer; a cluster whose record cannot be read (half made, being removed) is left out."""
    counted: list[str] = []
    total = 0
    for name in names:
        if name == this:
            continue
        try:
            plan = plan_of(name)
        except EmuError:
            continue
        counted.append(name)
        total += held(plan)
    return Others(tuple(counted), total)


def for_up(plan: ClusterPlan, elsewhere: Others = Others()) -> Risk:
    """This cluster up and probed, beside what the other clusters that are up hold."""
    return Risk(held(plan) + elsewhere.entries, gc_thresh3(), "this cluster", elsewhere)


def for_matrix(plan: ClusterPlan, elsewhere: Others = Others(), namespaces: Collection[str] | None = None) -> Risk:
    """All pairs among the pods of `namespaces` (every pod when None), as emu.observe.probing.matrix sends them: pods on
    one node resolve each other directly (each holds an entry per other probed pod on its node); remote traffic
    needs only the gateway and cni0 entries the cluster already holds.  Plus what the other clusters hold."""
    probed = [p for p in plan.pods if namespaces is None or p.key.split("/", 1)[0] in namespaces]
    per_node = Counter(p.node for p in probed)
    same_node = sum(k * (k - 1) for k in per_node.values())
    return Risk(same_node + held(plan) + elsewhere.entries, gc_thresh3(), "an all-pairs matrix", elsewhere)
