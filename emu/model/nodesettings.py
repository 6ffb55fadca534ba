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
the machine's own value.  Anything outside net.*, a key this kernel does not have, one a node namespace cannot write
and a value that is not a plain number or word is a validation error, so `emu up --dry-run` finds it."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from emu.model.documents import Collector, Document

MTU_RANGE = (1280, 9000)
# net.core keys that exist, writable, in every network namespace (the rest of net.core is the init namespace's only,
# or read-only outside it: rmem_*/wmem_* show the machine's values).  Read off Linux 6.18 with `unshare -n`.
NETNS_CORE = ("net.core.somaxconn", "net.core.optmem_max", "net.core.tstamp_allow_data", "net.core.txrehash",
              "net.core.rps_default_mask", "net.core.xfrm_acq_expires", "net.core.xfrm_aevent_etime",
              "net.core.xfrm_aevent_rseqth", "net.core.xfrm_larval_drop")
# net.ipv4 keys that are machine-wide (shared by every namespace, or absent outside the init namespace)
GLOBAL_IPV4 = ("net.ipv4.tcp_mem", "net.ipv4.udp_mem", "net.ipv4.tcp_max_orphans", "net.ipv4.tcp_max_tw_buckets_ehash",
               "net.ipv4.route.max_size", "net.ipv4.route.gc_thresh", "net.ipv4.ipfrag_secret_interval",
               "net.ipv4.tcp_child_ehash_entries")
# Per-namespace keys a node namespace cannot write: mode 0444 outside the init namespace (Linux 6.18, `unshare -n`:
# conntrack's table size and hash are the machine's, mc_forwarding belongs to a multicast routing daemon, the hash
# sizes are fixed when the namespace is created, the available_* lists are reports).
READ_ONLY_IN_NETNS = ("net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets",
                      "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_expect_max",
                      "net.ipv4.tcp_allowed_congestion_control", "net.ipv4.tcp_available_congestion_control",
                      "net.ipv4.tcp_ehash_entries", "net.ipv4.udp_hash_entries",
                      "net.mptcp.available_path_managers", "net.mptcp.available_schedulers")
PER_NETNS_PREFIXES = ("net.ipv4.", "net.ipv6.", "net.netfilter.", "net.unix.max_dgram_qlen", "net.mptcp.")
# Per-interface trees: net.ipv4.conf.<dev>.<key>.  emu writes a node's sysctls as it enters the namespace, before
# any of its links exists, so only the interfaces every namespace has from birth can be named.
PER_DEVICE = ("net.ipv4.conf.", "net.ipv6.conf.", "net.ipv4.neigh.", "net.ipv6.neigh.")
BIRTH_DEVICES = ("all", "default", "lo")
# `$` would also match before a trailing newline; \Z does not.  No empty component, so no `..` in the path.
KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_\-]+)+\Z")
VALUE = re.compile(r"^[-A-Za-z0-9_.:, \t]{1,256}\Z")  # numbers, number lists, names such as `bbr` or `1-65535`
PROC_SYS = "/proc/sys"


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


def parse(v: Any, doc: Document, c: Collector, obj: str, fld: str) -> NodeSettings:
    """mtu and sysctls of a nodeSettings or nodes[] entry (emu.model.schema reports fields it does not have)."""
    if v is None:
        return NodeSettings()
    if not isinstance(v, dict):
        c.add(doc, doc.file, obj, fld, f"must be a mapping with mtu and sysctls, got {v!r}")
        return NodeSettings()
    mtu = v.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)
                            or not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]):
        c.add(doc, doc.file, obj, f"{fld}.mtu",
              f"must be an integer from {MTU_RANGE[0]} to {MTU_RANGE[1]}, got {mtu!r}")
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
        elif isinstance(value, bool) or not isinstance(value, (str, int)) or not VALUE.match(str(value)):
            c.add(doc, doc.file, obj, kf, f"value {value!r} must be a string or an integer (digits, letters, "
                                          f"spaces, '-', '_', '.', ':' or ',', at most 256 characters)")
        elif kernel_problem(key):
            c.add(doc, doc.file, obj, kf, str(kernel_problem(key)))
        elif not per_namespace(key):
            wide.append((key, str(value)))
        else:
            sysctls.append((key, str(value)))
    return NodeSettings(mtu, tuple(sysctls), tuple(wide))


def kernel_problem(key: str, proc: str = PROC_SYS) -> str | None:
    """Why this kernel cannot set `key` (a net.* name KEY matches) in a node namespace, or None.  The key must
    exist under /proc/sys here (the namespace emu runs in: per-namespace keys are in every one), must not be
    read-only in a new namespace, and a per-interface key must name an interface the namespace has from birth."""
    if key in READ_ONLY_IN_NETNS:
        return f"{key} is read-only in a node's network namespace (only the machine's own namespace can set it)"
    for prefix in PER_DEVICE:
        if key.startswith(prefix):
            dev = key[len(prefix):].split(".", 1)[0]
            if dev not in BIRTH_DEVICES:
                return (f"{key}: interface {dev!r} does not exist yet when emu sets a node's sysctls (use "
                        f"{', '.join(BIRTH_DEVICES)})")
    if not os.path.isfile(os.path.join(proc, *key.split("."))):
        return f"{key} is not a sysctl of this kernel (no {proc}/{key.replace('.', '/')})"
    return None


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
