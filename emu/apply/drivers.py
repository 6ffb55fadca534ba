"""Apply drivers: one per kind of plan object (emu.plan.content), and `apply`, which applies a batch of them in
felix's order: kernel settings, ipsets (the rules refer to them), rulesets, IPVS services, files, daemons, and the
sets nothing refers to any more last.  A dry run prints the same objects in the same order (content.render), so
what `emu up --dry-run` shows is what the drivers run.

Upstream: Calico felix, felix/dataplane/linux/int_dataplane.go (`apply()`: the IP sets' ApplyUpdates, then the
iptables tables' Apply, then routes, then the IP sets' ApplyDeletions), each manager's output one kind of object
with its own driver.  Differences: felix's drivers keep a cache of the dataplane and diff against it; here an
object is a whole transaction of its tool (`iptables-restore --noflush`, `nft -f -`, `ipset restore`) computed by
its owner against what the owner read back, and a driver just runs it.

Each tool runs inside its namespace through emu.apply.tools (a thread that setns()ed, argv a list, no shell).  The
first failure stops the batch, as one line naming the tool, the namespace and its stderr (tools.ToolFailed, which
keeps the argv and stderr for an owner that words its own error).  The runner and the daemon starter are
parameters, so the order and the argv of each object are testable without root.

IPVS services are applied by `ipvsadm --restore` here (the form the dry run prints); kube-proxy's IPVS proxier
does not use this driver: it programs the virtual servers over netlink, interleaved with reading the node's
addresses and deleting what is stale (emu.addons.kubeproxy.ipvs).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable

from emu.apply import state, tools
from emu.apply.tools import ToolFailed
from emu.plan.content import (EMU_STATE, ORDER, Command, Daemon, DestroyIpsets, File, Ipsets, Ipvs, PlanObject,
                              Ruleset)

__all__ = ["ToolFailed", "Runner", "Spawner", "apply", "argv", "ordered", "spawn", "stdin", "write_file"]

# (namespace, argv, stdin) -> the tool's exit status and output: tools.run, or a fake in tests
Runner = Callable[[str, list[str], str | None], subprocess.CompletedProcess[str]]
# a daemon (its argv and netns with the state directory filled in) -> its pid
Spawner = Callable[[Daemon], int]

TOOL_KINDS = (Command, Ipsets, Ruleset, Ipvs, DestroyIpsets)  # the kinds that are one run of a tool


def ordered(objects: Iterable[PlanObject]) -> list[PlanObject]:
    """The objects in felix's order by kind (emu.plan.content.ORDER), each kind's in the order given."""
    return sorted(objects, key=lambda o: ORDER.index(type(o)))


def argv(o: PlanObject) -> list[str]:
    """The tool run an object is, as argv (the same command the dry run prints before its here-document)."""
    if isinstance(o, Command):
        return list(o.argv)
    if isinstance(o, Ipsets):
        return ["ipset", "restore", *(["-exist"] if o.exist else [])]
    if isinstance(o, Ruleset):
        return shlex.split(o.tool)
    if isinstance(o, Ipvs):
        return ["ipvsadm", "--restore"]
    if isinstance(o, DestroyIpsets):
        return ["ipset", "restore", "-exist"]
    raise TypeError(f"{type(o).__name__} is not a tool run")


def stdin(o: PlanObject) -> str | None:
    """What the tool reads on its standard input (None: nothing)."""
    if isinstance(o, Command):
        return o.stdin or None
    if isinstance(o, (Ipsets, Ruleset, Ipvs, DestroyIpsets)):
        return o.text
    raise TypeError(f"{type(o).__name__} is not a tool run")


def _real(s: str, state_dir: str) -> str:
    """`$EMU_STATE` (the dry run's name for the state directory) replaced by the real one."""
    return s.replace(EMU_STATE, state_dir)


def write_file(f: File, state_dir: str) -> str:
    """Write the whole file atomically (a reader sees the old text or the new one), its directory made first; the
    path written."""
    path = _real(f.path, state_dir)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(_real(f.text, state_dir))
    os.chmod(tmp, f.mode)
    os.replace(tmp, path)
    return path


def spawn(d: Daemon) -> int:
    """Start a daemon detached (its own session, stdin and output /dev/null), inside its namespace through
    `ip netns exec` (which also gives it the namespace's /etc/netns files), reaped when it exits; its pid.  emu's
    own daemons (agent, DNS server, nginx) write their pid files themselves, as emu.apply.processes starts them."""
    cmd = ["ip", "netns", "exec", d.netns, *d.argv] if d.netns else list(d.argv)
    with open(os.devnull, "rb") as devnull, open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=sink, stderr=sink, start_new_session=True,
                                close_fds=True)
    threading.Thread(target=proc.wait, name=f"emu-reaper-{proc.pid}", daemon=True).start()
    return proc.pid


def _tool(o: PlanObject, run: Runner) -> None:
    cmd = argv(o)
    ns = o.netns  # type: ignore[union-attr]  # every tool kind runs in a namespace
    r = run(ns, cmd, stdin(o))
    if r.returncode != 0:
        raise ToolFailed(ns, cmd, r)


def apply(objects: Iterable[PlanObject], run: Runner | None = None, start: Spawner | None = None,
          state_dir: str | None = None) -> dict[str, int]:
    """Apply the objects in felix's order, each by its kind's driver; the first failure raises ToolFailed (the
    objects after it are not applied).  Returns the pid of each daemon started, by name (for the caller's record).
    `run` runs a tool in a namespace (default tools.run, looked up at call time), `start` starts a daemon (default
    `spawn`); `state_dir` replaces `$EMU_STATE` in files' paths and texts and in daemons' argv (default: the real
    one)."""
    run = run if run is not None else tools.run
    start = start if start is not None else spawn
    where = state_dir if state_dir is not None else state.root()
    pids: dict[str, int] = {}
    for o in ordered(objects):
        if isinstance(o, TOOL_KINDS):
            _tool(o, run)
        elif isinstance(o, File):
            write_file(o, where)
        elif isinstance(o, Daemon):
            real = Daemon(o.name, o.owner, o.netns, tuple(_real(a, where) for a in o.argv))
            pids[o.name] = start(real)
        else:
            raise TypeError(f"no driver for {type(o).__name__}")
    return pids
