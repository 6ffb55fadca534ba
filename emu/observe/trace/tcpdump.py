"""`emu capture TARGET[:IFACE]`: tcpdump inside one namespace of the emulated network, until Ctrl-C, a packet count
or a number of seconds, and never left running afterwards."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from emu.model import names
from emu.cluster.lifecycle import Cluster
from emu.errors import EmuError
from emu.observe.targets import TargetError, resolve


@dataclass(frozen=True)
class Where:
    netns: str
    iface: str | None  # None: every interface (tcpdump -i any)
    label: str


def where(cl: Cluster, text: str) -> Where:
    """TARGET[:IFACE] with TARGET one of NS/POD, node/NAME, external, underlay."""
    target, sep, iface = text.rpartition(":")
    if not sep:
        target, iface = text, ""
    if target == "underlay":
        return Where(names.underlay_netns(cl.name), iface or None, "underlay")
    t = resolve(cl, target)
    if t.netns is None or t.kind not in ("pod", "node", "external"):
        raise TargetError(f"{text}: capture runs in NS/POD, node/NAME, external or underlay (optionally :IFACE)")
    return Where(t.netns, iface or None, t.label)


def argv(w: Where, bpf: str | None, write: str | None, count: int | None) -> list[str]:
    """The command line: `ip netns exec NS tcpdump ...` (-Z root: keep the right to write FILE wherever it is)."""
    cmd = ["ip", "netns", "exec", w.netns, "tcpdump", "-i", w.iface or "any", "-n", "-Z", "root"]
    cmd += ["-w", write, "-U"] if write else ["-l"]
    if count:
        cmd += ["-c", str(count)]
    if bpf:
        cmd.append(bpf)
    return cmd


def stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> int:
    """Stop tcpdump the way Ctrl-C does (SIGINT: it flushes its file and prints its counts), then harder."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def run(cl: Cluster, text: str, bpf: str | None = None, write: str | None = None, count: int | None = None,
        seconds: float | None = None) -> int:
    """Run the capture in the foreground (output goes to the terminal); returns tcpdump's exit code."""
    if shutil.which("tcpdump") is None:
        raise EmuError("tcpdump is not installed (run tools/setup)")
    w = where(cl, text)
    proc = subprocess.Popen(argv(w, bpf, write, count))
    try:
        deadline = time.monotonic() + seconds if seconds else None
        while proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return stop(proc)
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        return proc.returncode
    finally:
        # Ctrl-C reached tcpdump too (same process group); wait for it, and make sure nothing is left running
        try:
            stop(proc)
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
