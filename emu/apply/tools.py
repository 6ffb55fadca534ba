"""One home for running a real tool (iptables-restore, nft, ipset, conntrack, tc, ...) inside a cluster's network
namespace: the child process is started by a thread that has setns()ed into the namespace (emu.apply.netns.run_in),
so it inherits the namespace without an `ip netns exec` per call, and never through a shell: argv is a list.

`ip netns exec` also bind-mounts /etc/netns/<ns>/ files over /etc; these tools read none of them.  What must see
them (a shell a user opens in a pod, `emu exec`) goes through emu.observe.podexec instead."""
from __future__ import annotations

import subprocess
from collections.abc import Sequence

from emu.apply import netns
from emu.errors import ApplyError


class ToolFailed(ApplyError):
    """A tool that exited non-zero, as one line: the tool, the namespace, its stderr (its stdout when stderr is
    empty).  The run's parts stay readable for a caller that words its own error (a sync names its node)."""

    def __init__(self, ns: str, argv: Sequence[str], result: subprocess.CompletedProcess[str]):
        self.netns = ns
        self.argv = tuple(argv)
        self.returncode = result.returncode
        self.stdout = result.stdout or ""
        self.stderr = result.stderr or ""
        super().__init__(f"{self.argv[0]} in {ns} failed: {(self.stderr or self.stdout).strip()}")


def run(ns: str, argv: list[str], stdin: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """The tool's exit status and output, whatever they are."""
    return netns.run_in(ns, lambda: subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                                   timeout=timeout))


def check(ns: str, argv: list[str], stdin: str | None = None, timeout: float | None = None,
          error: type[Exception] | None = None) -> str:
    """The tool's standard output; ToolFailed (or `error` with the same one line) when it fails."""
    r = run(ns, argv, stdin, timeout)
    if r.returncode != 0:
        failed = ToolFailed(ns, argv, r)
        raise failed if error is None else error(str(failed))
    return r.stdout


def output(ns: str, argv: list[str], stdin: str | None = None, timeout: float | None = None) -> str | None:
    """The tool's standard output, or None when it failed (a listing of a table that does not exist yet)."""
    r = run(ns, argv, stdin, timeout)
    return r.stdout if r.returncode == 0 else None
