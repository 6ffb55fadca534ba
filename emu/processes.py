"""The daemons emu starts (agent, DNS server, nginx) are stopped by pid, and only while the pid is still ours: pids
get recycled, so every caller passes a check of the process's command line."""
from __future__ import annotations

import os
import signal
import time
from typing import Callable


def cmdline(pid: int) -> list[str] | None:
    """argv of a live (not zombie) process, or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None
    except (OSError, IndexError):
        return None
    return argv


def stop(pid: int, ours: Callable[[int], bool], sig: int = signal.SIGTERM, grace: float = 3.0,
         group: bool = False) -> None:
    """Signal `pid`, wait up to `grace` seconds for it to go, then SIGKILL it (its process group with `group`)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and ours(pid):
        time.sleep(0.02)
    if ours(pid):
        try:
            (os.killpg if group else os.kill)(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_etc(path: str) -> None:
    """A file under /etc/netns/<netns>/ we wrote, and its directory when that is left empty (never others' files)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
