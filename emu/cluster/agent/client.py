"""The agent's client, used by the rest of emu: start the daemon, wait until it is ready, sync the endpoints it
serves, ping it and stop it, over DIR/agent.sock (one JSON line out, one JSON line back)."""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from typing import Any

from emu.apply import processes
from emu.cluster.agent.protocol import LOG_FILE, PID_FILE, READY_FILE, SOCK_FILE, unlink_quiet
from emu.errors import EmuError

MODULE = "emu.cluster.agent"  # what `start` runs with `python -m`; its command line tells our agents apart


class AgentError(EmuError, RuntimeError):
    """The agent could not be started or reached; the message says why (with the tail of agent.log)."""


def start(directory: str) -> int:
    """Spawn the daemon for DIR (detached, logging to DIR/agent.log, its pid in DIR/agent.pid) and return its pid;
    then `wait_ready`."""
    client = AgentClient(directory)
    if client.alive():
        raise AgentError(f"an agent already answers on {client.sock_path}")
    unlink_quiet(client.ready_path)
    return processes.spawn_module(MODULE, directory, LOG_FILE, PID_FILE).pid


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no agent.log)"
    return "\n".join(text.splitlines()[-lines:]) or "(agent.log is empty)"


class AgentClient:
    """Talks to the agent of one directory over DIR/agent.sock (one JSON line out, one JSON line back)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.sock_path = os.path.join(directory, SOCK_FILE)
        self.ready_path = os.path.join(directory, READY_FILE)
        self.pid_path = os.path.join(directory, PID_FILE)
        self.log_path = os.path.join(directory, LOG_FILE)

    def request(self, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(self.sock_path)
                s.sendall(json.dumps(obj).encode() + b"\n")
                return json.loads(_recv_line(s))
        except (OSError, ValueError) as e:
            raise AgentError(f"agent at {self.dir} did not answer {obj.get('op')!r}: {e}") from e

    def alive(self) -> bool:
        try:
            return bool(self.request({"op": "ping"}, timeout=2.0).get("ok"))
        except AgentError:
            return False

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.request({"op": "ping"}, timeout)

    def sync(self, endpoints: list[dict[str, Any]], timeout: float = 300.0) -> dict[str, Any]:
        """Replace the served endpoints; returns {"ok", "opened", "closed", "errors"}."""
        res = self.request({"op": "sync", "endpoints": endpoints}, timeout)
        if not res.get("ok"):
            raise AgentError(f"agent sync failed: {res.get('error')}")
        return res

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Ask the agent to exit and wait until it has (its files are removed by then)."""
        res = self.request({"op": "stop"}, timeout)
        pid = res.get("pid")
        deadline = time.monotonic() + timeout
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid and pid_alive(pid):
            raise AgentError(f"agent {pid} did not exit within {timeout:.0f}s")
        return res

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for agent.ready and a ping; raise AgentError with the log's tail if it dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            pid = _read_pid(self.pid_path) or _read_pid(self.ready_path)
            if _read_pid(self.ready_path) is not None:
                try:
                    return self.ping()
                except AgentError:
                    pass
            if pid is not None and not pid_alive(pid):
                raise AgentError(f"agent {pid} exited before it was ready; {self.log_path}:\n"
                                 f"{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise AgentError(f"agent not ready after {timeout:.0f}s; {self.log_path}:\n"
                                 f"{log_tail(self.log_path)}")
            time.sleep(0.05)


def _recv_line(s: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = s.recv(1 << 16)
        if not chunk:
            raise ConnectionError(errno.ECONNRESET, "connection closed before a full reply")
        buf += chunk
    return bytes(buf.split(b"\n", 1)[0])
