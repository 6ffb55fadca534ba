"""The daemons emu starts (agent, DNS server, nginx): spawned with their pid recorded before they can outlive the
starting command, found again by pid file, and stopped by pid only while the pid is still ours: pids get recycled,
so every caller passes a check of the process's command line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_pid(path: str, pid: int) -> None:
    """Atomically: a reader sees the old pid file or the new one, never an empty one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def read_pids(path: str) -> set[int]:
    """The pid in a pid file ({} when there is none or it is unreadable)."""
    try:
        with open(path) as f:
            return {int(f.read().strip())}
    except (OSError, ValueError):
        return set()


def spawn_module(module: str, directory: str, log_name: str, pid_name: str) -> subprocess.Popen[bytes]:
    """Start `python -m MODULE --dir DIRECTORY` detached (own session, stdin from /dev/null, output to LOG_NAME in
    DIRECTORY).  Each of emu's daemons writes DIRECTORY/PID_NAME itself as its first act, so a SIGKILL of this
    process at any point after the fork cannot leave it unrecorded; we write the same file at once too, and the
    daemon exits by itself when its cluster's directory goes (see `owner_gone`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    d = os.path.abspath(directory)
    with open(os.path.join(d, log_name), "ab") as logf, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([sys.executable, "-m", module, "--dir", d], stdin=devnull, stdout=logf, stderr=logf,
                                start_new_session=True, close_fds=True, env=env)
    # Reap it when it exits, so a long-lived caller never keeps a zombie that still looks alive in /proc.
    threading.Thread(target=proc.wait, name=f"emu-reaper-{proc.pid}", daemon=True).start()
    write_pid(os.path.join(d, pid_name), proc.pid)
    return proc


class Companion:
    """A daemon that cannot watch its cluster's directory itself (nginx has no timer for it), watched by one that can
    (the agent): while the directory exists the watcher remembers the companion's pid from its pid file; once the
    directory is gone -- `emu down` missed the companion, or the directory was removed behind emu's back -- it stops
    the companion, if that pid is still a process whose command line carries `marker` (pids get recycled)."""

    def __init__(self, pid_file: str, marker: str, sig: int = signal.SIGQUIT):
        self.pid_file, self.marker, self.sig = pid_file, marker, sig
        self.pid: int | None = None

    def remember(self) -> None:
        found = read_pids(self.pid_file)
        if found:
            self.pid = found.pop()

    def stop_orphan(self) -> bool:
        """Signal the remembered companion (nginx: SIGQUIT, a graceful shutdown); True if one was signalled."""
        argv = cmdline(self.pid) if self.pid else None
        if self.pid is None or argv is None or self.marker not in " ".join(argv):
            return False
        try:
            os.kill(self.pid, self.sig)
        except ProcessLookupError:
            return False
        return True


def owner_gone(path: str) -> bool:
    """For a daemon's loop: has the file that says its cluster exists gone (`emu down` removed the directory, maybe
    while the daemon was not yet recorded)?  Then nobody owns the daemon any more and it must exit."""
    return not os.path.exists(path)


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


def etc_netns() -> str:
    """Where `ip netns exec` finds per-namespace /etc files (EMU_ETC_NETNS moves it, for tests)."""
    return os.environ.get("EMU_ETC_NETNS", "/etc/netns")


def remove_etc(path: str) -> None:
    """A file under /etc/netns/<netns>/ we wrote, and its directory when that is left empty (never others' files,
    and never a path that resolves anywhere else, whatever a damaged record says)."""
    top = os.path.realpath(etc_netns())
    if os.path.dirname(os.path.dirname(os.path.realpath(path))) != top:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass
