"""Per-node settings of the Cluster spec: the node's MTU (its eth0; flannel's MTU follows per node) and network
sysctls written inside the node's namespace, as a node-tuning DaemonSet or the machine's sysctl.d would set them.

    spec:
      nodeSettings: {mtu: 1500, sysctls: {net.core.somaxconn: "4096"}}   # default for every node
      nodes:
      - node-1                                                            # a name: the defaults
      - {name: node-2, mtu: 9000, sysctls: {net.ipv4.tcp_fin_timeout: "15"}}  # overrides (sysctls merged)

Only net.* sysctls that each network namespace has its own copy of are applied.  The machine-wide net.core ones
(net.core.netdev_max_backlog: one backlog queue per CPU that every namespace's veth traffic goes through;
net.core.rmem_max, ...) are accepted, so a topology can carry a tuning guide's whole block, but never applied: emu
never changes the machine.  `emu up` warns about each and `emu get nodes -o wide` marks it "not applied" next to
the machine's own value.  Anything outside net.* is a validation error."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .documents import Collector, Document

MTU_RANGE = (1280, 9000)
# net.core keys that exist in every network namespace (the rest of net.core is the init namespace's only)
NETNS_CORE = ("net.core.somaxconn", "net.core.xfrm_acq_expires", "net.core.xfrm_aevent_etime",
              "net.core.xfrm_aevent_rseqth", "net.core.xfrm_larval_drop")
# net.ipv4 keys that are machine-wide (shared by every namespace, or absent outside the init namespace)
GLOBAL_IPV4 = ("net.ipv4.tcp_mem", "net.ipv4.udp_mem", "net.ipv4.tcp_max_orphans", "net.ipv4.tcp_max_tw_buckets_ehash",
               "net.ipv4.route.max_size", "net.ipv4.route.gc_thresh", "net.ipv4.ipfrag_secret_interval",
               "net.ipv4.tcp_child_ehash_entries")
PER_NETNS_PREFIXES = ("net.ipv4.", "net.ipv6.", "net.netfilter.", "net.unix.max_dgram_qlen", "net.mptcp.")
KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_\-]+)+$")


@dataclass(frozen=True, slots=True)
class NodeSettings:
    mtu: int | None = None
    sysctls: tuple[tuple[str, str], ...] = ()
    machine_wide: tuple[tuple[str, str], ...] = ()  # asked for, not applied (they would change the machine)


def per_namespace(key: str) -> bool:
    if key in NETNS_CORE:
        return True
    if key in GLOBAL_IPV4:
        return False
    return key.startswith(PER_NETNS_PREFIXES)


def parse(v: Any, doc: Document, c: Collector, obj: str, fld: str, allow: tuple[str, ...] = ()) -> NodeSettings:
    if v is None:
        return NodeSettings()
    if not isinstance(v, dict):
        c.add(doc, doc.file, obj, fld, f"must be a mapping with mtu and sysctls, got {v!r}")
        return NodeSettings()
    for key in v:
        if key not in ("mtu", "sysctls", *allow):
            known = ", ".join((*allow, "mtu", "sysctls"))
            c.add(doc, doc.file, obj, f"{fld}.{key}", f"unknown field (known: {known})")
    mtu = v.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)
                            or not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]):
        c.add(doc, doc.file, obj, f"{fld}.mtu", f"must be an integer from {MTU_RANGE[0]} to {MTU_RANGE[1]}, got {mtu!r}")
        mtu = None
    sysctls: list[tuple[str, str]] = []
    wide: list[tuple[str, str]] = []
    raw = v.get("sysctls") or {}
    if not isinstance(raw, dict):
        c.add(doc, doc.file, obj, f"{fld}.sysctls", "must be a mapping of sysctl name to value")
        raw = {}
    for key, value in raw.items():
        kf = f"{fld}.sysctls[{key}]"
        if not isinstance(key, str) or not KEY.match(key):
            c.add(doc, doc.file, obj, kf, f"{key!r} is not a sysctl name")
        elif not key.startswith("net."):
            c.add(doc, doc.file, obj, kf, f"{key} is not a network sysctl: only net.* sysctls of the node's network "
                                          f"namespace can be set (emu never changes the machine)")
        elif not per_namespace(key) and not key.startswith("net.core."):
            c.add(doc, doc.file, obj, kf, f"{key} is machine-wide, not per network namespace: emu cannot set it "
                                          f"for one node (per-namespace net.core keys: {', '.join(NETNS_CORE)})")
        elif isinstance(value, bool) or not isinstance(value, (str, int)) or "\n" in str(value):
            c.add(doc, doc.file, obj, kf, f"value {value!r} must be a string or an integer")
        elif not per_namespace(key):
            wide.append((key, str(value)))
        else:
            sysctls.append((key, str(value)))
    return NodeSettings(mtu, tuple(sysctls), tuple(wide))


def merge(default: NodeSettings, own: NodeSettings) -> NodeSettings:
    sysctls = dict(default.sysctls)
    sysctls.update(own.sysctls)
    wide = dict(default.machine_wide)
    wide.update(own.machine_wide)
    return NodeSettings(own.mtu if own.mtu is not None else default.mtu, tuple(sysctls.items()),
                        tuple(wide.items()))


def machine_value(key: str) -> str | None:
    """The machine's own value of a machine-wide sysctl (read, never written)."""
    try:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def unapplied(settings: dict[str, NodeSettings]) -> list[str]:
    """One warning per machine-wide sysctl a topology asks for (emu up prints them)."""
    asked: dict[tuple[str, str], list[str]] = {}
    for node, s in settings.items():
        for key, value in s.machine_wide:
            asked.setdefault((key, value), []).append(node)
    return [f"warning: {key}={value} (nodes {', '.join(nodes)}) is machine-wide, shared by every namespace on "
            f"this machine: not applied (the machine has {machine_value(key) or '?'}); emu never changes the machine"
            for (key, value), nodes in asked.items()]
