"""Names of everything emu creates, each from one function, with its length budget.

Linux interface names hold at most 15 characters (IFNAMSIZ - 1).  Namespace names are files under /run/netns.
"""
from __future__ import annotations

import hashlib

IFNAMSIZ_MAX = 15


def node_netns(cluster: str, node: str) -> str:
    """`demo.node-1`: two dot-separated parts (node names are DNS labels, so they hold no dot)."""
    return f"{cluster}.{node}"


def pod_netns(cluster: str, namespace: str, pod: str) -> str:
    """`demo.default.web-0`: three or more parts, so a pod namespace never collides with a node's."""
    return f"{cluster}.{namespace}.{pod}"


def underlay_netns(cluster: str) -> str:
    return f"{cluster}.underlay"


def external_netns(cluster: str) -> str:
    return f"{cluster}.external"


def host_veth(cluster: str, namespace: str, pod: str) -> str:
    """The bridge plugin names the host end `veth` + 4 random bytes in hex (pkg/ip RandomVethName).

    We derive the 4 bytes from the pod's identity so a plan is reproducible; the shape is the plugin's.
    """
    digest = hashlib.sha256(f"{cluster}/{namespace}/{pod}".encode()).hexdigest()
    return f"veth{digest[:8]}"


def underlay_port(node: str, index: int) -> str:
    """The underlay bridge's port facing a node: `to-node-1` when it fits in 15 characters, else `to-n<index>`."""
    name = f"to-{node}"
    return name if len(name) <= IFNAMSIZ_MAX else f"to-n{index}"


def vtep_mac(cluster: str, node: str) -> str:
    """flannel.1's MAC.  flanneld picks a random one and persists it in the node annotation
    (flannel#1795); we derive a stable locally administered unicast MAC from the node's identity."""
    d = hashlib.sha256(f"{cluster}/{node}/flannel.1".encode()).digest()
    first = (d[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in bytes([first]) + d[1:6])
