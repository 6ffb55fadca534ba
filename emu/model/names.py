"""Names of everything emu creates, each from one function, with its length budget.

Linux interface names hold at most 15 characters (IFNAMSIZ - 1).  Namespace names are files under /run/netns.
"""
from __future__ import annotations

import hashlib
import re

IFNAMSIZ_MAX = 15
# A cluster name is a path component of the state directory and the first part of every namespace name
# (`<cluster>.<node>`, `<cluster>.<namespace>.<pod>`, files under /run/netns and /etc/netns, NAME_MAX 255 bytes).
# A DNS-1123 label holds no '/', '.', NUL or newline, so it can never climb out of the state directory or split a
# namespace name; 40 characters leave a pod's namespace 214 bytes for `<namespace>.<pod>`.
CLUSTER_NAME_MAX = 40
NETNS_NAME_MAX = 255  # NAME_MAX: a namespace is a file /run/netns/<name>
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def cluster_name_error(name: object) -> str | None:
    """Why `name` cannot name a cluster, or None when it can."""
    if isinstance(name, str) and len(name) <= CLUSTER_NAME_MAX and _DNS_LABEL.fullmatch(name):
        return None
    return (f"cluster name {name!r} must be a DNS-1123 label (lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit) of at most {CLUSTER_NAME_MAX} characters")


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
    return stable_mac(cluster, node, "flannel.1")


def stable_mac(*identity: str) -> str:
    """A locally administered unicast MAC derived from an object's identity (a plan is reproducible where the
    real component would pick a random address and persist it)."""
    d = hashlib.sha256("/".join(identity).encode()).digest()
    first = (d[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in bytes([first]) + d[1:6])
