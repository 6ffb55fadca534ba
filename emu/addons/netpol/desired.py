"""kube-router's NetworkPolicy state on every node as plan objects: what emu.addons.netpol.sync writes on a first
sync (nothing of kube-router's there yet), from the same pure functions: resolve (the node inputs), rules (the
node's ipsets and filter table) and restore (the tools' text).

Per node, in sync_node's order: `ipset restore -exist` (sets first: the rules refer to them), then one
`iptables-<backend>-restore --noflush -w` of the filter table.  A cluster without a NetworkPolicy has none (the
controller is installed with the first policy).

kube-router's sync version (the sync's UnixNano) is part of every chain name's hash; the dry run uses version "0",
so its policy and pod chain names differ from those of the sync `up` runs (the sets' names do not depend on it).
"""
from __future__ import annotations

from emu.addons.netpol import resolve, restore, rules
from emu.alloc.ipam import Allocations
from emu.model.types import Topology
from emu.plan.content import Ipsets, PlanObject, Ruleset
from emu.plan.objects import ClusterPlan

VERSION = "0"
NOTHING_YET = restore.Current(frozenset(), (), frozenset())  # a first sync: no chain, jump or set of ours


def desired(topo: Topology, alloc: Allocations, plan: ClusterPlan) -> tuple[PlanObject, ...]:
    """Every node's sets and filter table, node by node (each object's owner is its node); () without policies."""
    inputs = resolve.node_inputs(topo, alloc)
    if not inputs:
        return ()
    tool = f"iptables-{topo.cluster.iptables_backend}-restore --noflush -w"
    out: list[PlanObject] = []
    for n in plan.nodes:
        nr = rules.generate(inputs[n.name], VERSION)
        sets = restore.ipset_text(nr.ipsets)
        if sets:
            out.append(Ipsets(n.netns, n.name, sets))
        out.append(Ruleset(n.netns, n.name, tool, restore.iptables_text(nr, NOTHING_YET)))
    return tuple(out)
