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
from emu.plan.content import DestroyIpsets, Ipsets, PlanObject, Ruleset
from emu.plan.objects import ClusterPlan

LAYER = "plan"

VERSION = "0"
NOTHING_YET = restore.Current(frozenset(), (), frozenset())  # a first sync: no chain, jump or set of ours


def desired(topo: Topology, alloc: Allocations, plan: ClusterPlan) -> tuple[PlanObject, ...]:
    """Every node's sets and filter table, node by node (each object's owner is its node); () without policies."""
    inputs = resolve.node_inputs(topo, alloc)
    if not inputs:
        return ()
    backend = topo.cluster.iptables_backend
    return tuple(o for n in plan.nodes
                 for o in node_objects(n.netns, n.name, rules.generate(inputs[n.name], VERSION), NOTHING_YET, backend))


def table(ns: str, node: str, backend: str, text: str) -> Ruleset:
    return Ruleset(ns, node, f"iptables-{backend}-restore --noflush -w", text)


def node_objects(ns: str, node: str, nr: rules.NodeRules, cur: restore.Current, backend: str) -> list[PlanObject]:
    """One node's full sync as plan objects (emu.addons.netpol.sync applies them; the dry run prints them for a node
    that holds nothing yet): its sets (when it has any), the filter table written against what the node holds
    (`cur`), and the sets nothing refers to any more, destroyed last."""
    out: list[PlanObject] = []
    text = restore.ipset_text(nr.ipsets)
    if text:
        out.append(Ipsets(ns, node, text))
    out.append(table(ns, node, backend, restore.iptables_text(nr, cur)))
    stale = cur.sets - set(nr.ipsets)
    if stale:
        out.append(DestroyIpsets(ns, node, tuple(sorted(stale))))
    return out
