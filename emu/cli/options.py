"""What every command shares: the `-o table|wide|json` and `--cluster` options, and the progress line on stderr."""
from __future__ import annotations

import sys
import time

import click

from emu.cli.errors import cluster_name as _cluster_name
from emu.cluster import lifecycle as clusters

OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table",
                      help="Output format.")
CLUSTER = click.option("--cluster", "cluster_name", metavar="NAME", callback=_cluster_name,
                       help="Cluster to act on (implied when one is up).")


def progress(enabled: bool) -> clusters.Progress:
    """A Progress that rewrites one stderr line on a terminal (at most 4 times a second) and prints only each
    stage's last line otherwise; nothing when not `enabled` (JSON output)."""
    tty = sys.stderr.isatty()
    last = {"t": 0.0}

    def show(stage: str, done: int, total: int) -> None:
        if not enabled or last["t"] == float("inf"):
            return
        now = time.monotonic()
        if done < total and now - last["t"] < 0.25:
            return
        last["t"] = now
        msg = f"  {stage:<11} {done}/{total}"
        try:
            if tty:
                click.echo("\r" + msg.ljust(40), err=True, nl=done >= total)
            elif done >= total:
                click.echo(msg, err=True)
        except OSError:  # `emu up FILE 2>&1 | head -1`: whoever reads has gone; the work goes on, unreported
            last["t"] = float("inf")

    return show
