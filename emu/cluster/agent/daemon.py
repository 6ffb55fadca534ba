"""The per-cluster server daemon: one process per cluster that opens its sockets inside each pod's namespace.

    python -m emu.cluster.agent --dir DIR        # reads DIR/agent.json, logs to stderr

The process around emu.cluster.agent.server's loop: it records its own pid first, refuses a directory another agent
serves, raises its descriptor limit, opens the initial sockets, then the control socket, says ready and serves until
told to stop (a control `stop`, SIGTERM or SIGINT) or until its cluster's directory goes.

Do not import scapy or pyroute2 here: the daemon's RSS budget is 150 MB with thousands of sockets.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from typing import Any

from emu.apply import processes
from emu.cluster.agent.protocol import PID_FILE, READY_FILE, SOCK_FILE, SPEC_FILE, unlink_quiet
from emu.cluster.agent.server import Agent
from emu.cluster.agent.sockets import raise_nofile_limit

log = logging.getLogger("emu.cluster.agent")


def _refuse_if_running(path: str) -> None:
    """Another agent answering on this control socket owns the directory: do not steal it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError:
        return
    finally:
        s.close()
    raise SystemExit(f"another agent is listening on {path}")


def _write_ready(directory: str) -> None:
    tmp = os.path.join(directory, f".{READY_FILE}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, os.path.join(directory, READY_FILE))


def load_spec(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, SPEC_FILE)) as f:
        spec = json.load(f)
    if not isinstance(spec, dict) or not isinstance(spec.get("endpoints", []), list):
        raise ValueError(f"{SPEC_FILE}: expected {{\"cluster\": ..., \"endpoints\": [...]}}")
    return spec


def serve(directory: str) -> int:
    """The daemon: open the initial sockets, then the control socket, then say ready and serve until told to stop."""
    _refuse_if_running(os.path.join(directory, SOCK_FILE))
    limit = raise_nofile_limit()
    spec = load_spec(directory)
    agent = Agent(directory)
    agent.install_signals()
    unlink_quiet(os.path.join(directory, READY_FILE))  # stale: we are the only agent here
    try:
        t0 = time.monotonic()
        res = agent.sync(spec.get("endpoints", []))
        for e in res["errors"]:
            print(f"agent: {e}", file=sys.stderr, flush=True)
        log.info("cluster %s: %d endpoints, %d sockets opened in %.2fs (%d errors, nofile limit %d)",
                 spec.get("cluster", "?"), agent.endpoint_count, res["opened"], time.monotonic() - t0,
                 len(res["errors"]), limit)
        agent.listen_control()
        _write_ready(directory)
        agent.run()
    finally:
        agent.close()
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emu.cluster.agent", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="directory with agent.json; agent.sock and agent.ready go here")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s agent[%(process)d] %(levelname)s %(message)s")
    log.info("starting in %s", args.dir)
    try:
        processes.write_pid(os.path.join(args.dir, PID_FILE), os.getpid())  # recorded before anything else
        return serve(os.path.abspath(args.dir))
    except (OSError, ValueError) as e:
        log.error("cannot start: %s", e)
        return 1
