"""The pod networks emu knows, in one literal tuple (felix's RegisterManager, netlab's module list): the Cluster's
`spec.cni.plugin` names one of them.  Adding a dataplane is its folder under emu/network/ and one entry here: its
NetworkSpec (`spec.cni` fields and parser) goes to the loader through emu.cluster.planner.PLUGINS, so the model
validates a topology without importing this module's kernel code.

Not in emu/network/__init__.py: a package's __init__ runs on every import of any of its modules, and the model-layer
modules of a network's folder (emu.network.cni.spec) must not load the networks' kernel code through it."""
from __future__ import annotations

from emu.model.types import ClusterSpec
from emu.network.base import PodNetwork
from emu.network.cni.network import CNI
from emu.network.flannel.network import FLANNEL

NETWORKS: tuple[PodNetwork, ...] = (FLANNEL, CNI)


def for_cluster(c: ClusterSpec) -> PodNetwork:
    """The network `spec.cni.plugin` names (the loader accepts no other)."""
    for net in NETWORKS:
        if net.name == c.cni.plugin:
            return net
    raise LookupError(f"no pod network {c.cni.plugin!r} (known: {', '.join(n.name for n in NETWORKS)})")
