"""One home for running a real tool (iptables-restore, nft, ipset, conntrack, tc, ...) inside a cluster's network
namespace: the child process is started by a thread that has setns()ed into the namespace (emu.apply.netns.run_in),
so it inherits the namespace without an `ip netns exec` per call, and never through a shell: argv is a list.

`ip netns exec` also bind-mounts /etc/netns/<ns>/ files over /etc; these tools read none of them.  What must see
them (a shell a user opens in a pod, `emu exec`) goes through emu.observe.podexec instead."""
from __future__ import annotations

import subprocess

from emu.apply import netns
from emu.errors import ApplyError


def run(ns: str, argv: list[str], stdin: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """The tool's exit status and output, whatever they are."""
    return netns.run_in(ns, lambda: subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                                   timeout=timeout))


def check(ns: str, argv: list[str], stdin: str | None = None, timeout: float | None = None,
          error: type[Exception] = ApplyError) -> str:
    """The tool's standard output; `error` (one line: the tool, the namespace, its stderr) when it fails."""
    r = run(ns, argv, stdin, timeout)
    if r.returncode != 0:
        raise error(f"{argv[0]} in {ns} failed: {(r.stderr or r.stdout).strip()}")
    return r.stdout
