"""Which of a cluster's daemons the record expects and which of them run: the agent (every pod's servers) and each
addon's daemon whose pid the record names (emu.addons.table: the cluster DNS server, the ingress controller's
nginx).  `emu status` calls a cluster with a dead one `degraded`, `emu doctor` fails its `daemons` check, probes
that find nobody answering say so, and `emu up --repair` (or the next command that changes the cluster) starts it
again."""
from __future__ import annotations

import os
from dataclasses import dataclass

from emu.addons.table import ADDONS
from emu.apply import processes, state
from emu.cluster.agent import client as agent

AGENT = "agent"  # the agent's entry in the record


@dataclass(frozen=True, slots=True)
class Daemon:
    name: str  # agent | dns | ingress-nginx
    what: str  # what stops working without it
    pids: tuple[int, ...]  # the live processes of ours found for it (pid file and record)

    @property
    def running(self) -> bool:
        return bool(self.pids)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "running": self.running, "pids": list(self.pids), "serves": self.what}


def agent_pids(rec: state.Record) -> set[int]:
    """The recorded pid and the pid file (the agent writes its own as it starts, `agent.start` writes it too); a pid
    counts only while its command line is our agent on this cluster's directory (pids get recycled)."""
    pids = {rec.pid(AGENT)} - {None}
    pids |= processes.read_pids(os.path.join(rec.agent_dir, agent.PID_FILE))
    return {p for p in pids if is_our_agent(p, rec.agent_dir)}


def is_our_agent(pid: int, agent_dir: str) -> bool:
    argv = processes.cmdline(pid)
    return argv is not None and agent.MODULE in argv and os.path.abspath(agent_dir) in argv


def expected(rec: state.Record) -> list[Daemon]:
    """The daemons a cluster that is up runs, each with the live pids found for it (none: it is down)."""
    if rec.status != "up":
        return []  # still being built, or being removed: nothing is expected yet
    out = [Daemon(AGENT, "every pod's TCP/UDP servers", tuple(sorted(agent_pids(rec))))]
    out += [Daemon(a.name, a.daemon.what, tuple(sorted(a.daemon.pids(rec))))
            for a in ADDONS if a.daemon is not None and rec.pid(a.name) is not None]
    return out


def down(rec: state.Record) -> list[Daemon]:
    """The expected daemons that do not run."""
    return [d for d in expected(rec) if not d.running]


def note(rec: state.Record) -> str | None:
    """One line for a probe that found nobody answering while a daemon is down: the network is not to blame."""
    dead = down(rec)
    if not dead:
        return None
    names = ", ".join(f"{d.name} ({d.what})" for d in dead)
    return f"not the network: emu's {names} is not running; emu up --repair {rec.name} restarts it"
