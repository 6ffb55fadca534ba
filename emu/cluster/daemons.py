"""Which of a cluster's daemons the record expects and which of them run: the agent (every pod's servers), the
cluster DNS server and the ingress controller's nginx.  `emu status` calls a cluster with a dead one `degraded`,
`emu doctor` fails its `daemons` check, probes that find nobody answering say so, and `emu up --repair` (or the next
command that changes the cluster) starts it again."""
from __future__ import annotations

import os
from dataclasses import dataclass

from emu.observe import agent
from emu.apply import processes, state
from emu.addons.dns import addon as dns_addon
from emu.addons.ingress import controller as ingress


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
    pids = {rec.agent_pid} if rec.agent_pid else set()
    pids |= processes.read_pids(os.path.join(rec.agent_dir, agent.PID_FILE))
    return {p for p in pids if is_our_agent(p, rec.agent_dir)}


def is_our_agent(pid: int, agent_dir: str) -> bool:
    argv = processes.cmdline(pid)
    return argv is not None and "emu.observe.agent" in argv and os.path.abspath(agent_dir) in argv


def expected(rec: state.Record) -> list[Daemon]:
    """The daemons a cluster that is up runs, each with the live pids found for it (none: it is down)."""
    if rec.status != "up":
        return []  # still being built, or being removed: nothing is expected yet
    out = [Daemon("agent", "every pod's TCP/UDP servers", tuple(sorted(agent_pids(rec))))]
    if rec.dns_pid:
        out.append(Daemon("dns", "cluster DNS (the coredns pods)", tuple(sorted(dns_addon.pids(rec)))))
    if rec.ingress_pid:
        out.append(Daemon("ingress-nginx", "the ingress controller's nginx", tuple(sorted(ingress.pids(rec)))))
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
