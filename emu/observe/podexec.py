"""The command line that runs a program as a pod, node or the external host sees the machine: `ip netns exec`
into its network namespace, which also bind-mounts /etc/netns/<netns>/{resolv.conf,hosts}.  A hostNetwork pod
shares its node's namespace but has a resolv.conf of its own (kubelet's): that one is bind-mounted over
/etc/resolv.conf inside the private mount namespace `ip netns exec` has already made, so nothing else sees it."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from emu.addons.dns import addon as dns_addon
from emu.observe.targets import Target

# run by sh inside `ip netns exec`: $0 is the pod's resolv.conf, "$@" the command
_MOUNT_RESOLV = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


def argv(cl: Any, target: Target, cmd: Sequence[str]) -> list[str]:
    assert target.netns is not None
    pp = cl.plan.pod(target.label) if target.kind == "pod" else None
    if pp is not None and pp.host_network:
        path = dns_addon.pod_resolv_path(cl.record, target.label)
        if os.path.exists(path):
            return ["ip", "netns", "exec", target.netns, "sh", "-c", _MOUNT_RESOLV, path, *cmd]
    return ["ip", "netns", "exec", target.netns, *cmd]
