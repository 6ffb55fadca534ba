"""The kernel's neighbour (ARP) table is one table for all namespaces, capped by the root namespace's
net.ipv4.neigh.default.gc_thresh3.  Past it, new entries fail and packets are dropped ("neighbour table overflow").
Only the root namespace can raise it, which emu never does: we estimate and warn."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .plan import ClusterPlan

SYSCTL = "net.ipv4.neigh.default.gc_thresh3"


def gc_thresh3() -> int | None:
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Risk:
    entries: int
    limit: int | None
    what: str

    @property
    def at_risk(self) -> bool:
        return self.limit is not None and self.entries > self.limit

    def message(self) -> str:
        return (f"warning: {self.what} needs about {self.entries} ARP entries, more than the kernel's shared limit "
                f"{SYSCTL}={self.limit}: packets may be dropped (neighbour table overflow). emu never changes it; "
                f"you may raise it yourself: sysctl -w {SYSCTL}={_suggest(self.entries)}")


def _suggest(n: int) -> int:
    v = 1024
    while v < 2 * n:
        v *= 2
    return v


def _infra_entries(plan: ClusterPlan) -> int:
    n = len(plan.nodes)
    # underlay: every node may ARP every other node and the external host; vxlan peers are permanent entries
    return n * n + n * (n - 1)


def for_up(plan: ClusterPlan) -> Risk:
    """A cluster that is up and probed: each pod resolves its gateway, each node's cni0 resolves its pods."""
    return Risk(2 * len(plan.pods) + _infra_entries(plan), gc_thresh3(), "this cluster")


def for_matrix(plan: ClusterPlan, sources: int | None = None) -> Risk:
    """All pairs: pods on one node resolve each other directly; remote traffic needs the gateway and cni0 entries."""
    per_node = Counter(p.node for p in plan.pods)
    same_node = sum(k * (k - 1) for k in per_node.values())
    return Risk(same_node + 2 * len(plan.pods) + _infra_entries(plan), gc_thresh3(), "an all-pairs matrix")
