"""kube-proxy's desired state on every node as plan objects: what a first sync writes into an empty node, from the
proxier mode's own pure renderer (emu.addons.kubeproxy.modes, `Mode.render`) over the node's proxier input
(emu.addons.kubeproxy.inputs.node_states), for `emu up --dry-run` and its goldens.

  iptables  one `iptables-<backend>-restore --noflush -w`: the jump rules and canary chains, then the proxier's rules
  nftables  one `nft -f -` transaction of `table ip kube-proxy`
  ipvs      NewProxier's sysctls and kube-ipvs0 with its addresses, the ipsets, the iptables rules and the virtual
            servers (as `ipvsadm --restore` input)

Each tool run becomes the plan object of its kind (emu.plan.content), so the dry run prints them in felix's order.
"""
from __future__ import annotations

from emu.addons.kubeproxy import inputs, modes
from emu.alloc.ipam import Allocations
from emu.model.types import Topology
from emu.plan.content import Command, Ipsets, Ipvs, PlanObject, Ruleset
from emu.plan.objects import ClusterPlan

LAYER = "plan"


def plan_object(netns: str, owner: str, load: modes.Load) -> PlanObject:
    """The plan object one tool run of a sync amounts to."""
    tool = load.argv[0]
    if tool == "ipset" and load.argv[1:2] == ("restore",):
        return Ipsets(netns, owner, load.stdin, exist="-exist" in load.argv)
    if tool == "ipvsadm":
        return Ipvs(netns, owner, load.stdin)
    if tool == "nft" or (tool.startswith("iptables-") and tool.endswith("-restore")):
        return Ruleset(netns, owner, " ".join(load.argv), load.stdin)
    return Command(netns, owner, load.argv, load.stdin)  # sysctl, ip -batch


def desired(topo: Topology, alloc: Allocations, plan: ClusterPlan) -> tuple[PlanObject, ...]:
    """Every node's first sync, node by node (each object's owner is its node)."""
    c = topo.cluster
    mode = modes.for_mode(c.proxy.mode)
    states = inputs.node_states(topo, alloc)
    return tuple(plan_object(n.netns, n.name, load) for n in plan.nodes
                 for load in mode.render(states[n.name], c.iptables_backend))
