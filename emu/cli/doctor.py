"""`emu doctor [NAME]` (registered on the main group with `main.add_command`)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

from emu.cluster import lifecycle as clusters
from emu.report import output as report
from emu.cli.errors import cluster_name as cluster_name_check
from emu.cli.errors import run as _run
from emu.observe.doctor.run import CHECKS


def _progress(enabled: bool) -> Callable[[str, int, int], None]:
    """One stderr line per check on a terminal (rewritten in place), nothing otherwise."""
    tty = sys.stderr.isatty()
    last = {"t": 0.0}

    def show(stage: str, done: int, total: int) -> None:
        if not enabled or not tty:
            return
        now = time.monotonic()
        if 0 < done < total and now - last["t"] < 0.2:
            return
        last["t"] = now
        click.echo("\r" + f"  doctor: {stage} {done}/{total}".ljust(50), err=True, nl=False)

    return show


@click.command()
@click.argument("name", required=False, callback=cluster_name_check)
@click.option("--check", "only", multiple=True, type=click.Choice(list(CHECKS)), metavar="CHECK",
              help=f"Run only this check (repeatable): {', '.join(CHECKS)}.")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for each probe answer.")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table",
              help="Output format (wide: every finding with its evidence).")
@click.option("--cluster", "cluster_name", metavar="NAME", callback=cluster_name_check,
              help="Cluster to act on (same as NAME).")
def doctor(name: str | None, only: tuple[str, ...], timeout: float, output: str, cluster_name: str | None) -> None:
    """Run the troubleshooting checklist on a live cluster and print each finding with its evidence.

    Checks: routes, addresses, neighbours and FDB as planned; link and path MTUs; pod-to-pod across every node
    pair; Services' endpoints; cluster DNS from every node; what NetworkPolicies select; kube-proxy's rules
    against the model; conntrack table pressure.  Exit status 1 when a check failed."""
    from emu.observe.doctor import render
    from emu.observe.doctor.run import run

    if name and cluster_name and name != cluster_name:
        raise click.UsageError(f"two cluster names: {name} and --cluster {cluster_name}")
    cl = _run(lambda: clusters.open_cluster(clusters.pick(name or cluster_name)))
    show = _progress(output != "json")
    try:
        res = run(cl, only, progress=show, timeout=timeout)
    finally:
        if output != "json" and sys.stderr.isatty():
            click.echo("\r" + " " * 50 + "\r", err=True, nl=False)
    if output == "json":
        click.echo(report.to_json(res.to_json()))
    else:
        click.echo(render.text(res, wide=output == "wide"))
    if not res.ok:
        sys.exit(1)

