"""`emu cni log [NS/POD]`: every plugin call emu made for a pod (stdin, environment, exit status, result), with a
shell line to replay it by hand."""
from __future__ import annotations

import json
import sys

import click

from emu.cluster import lifecycle as clusters
from emu.apply import state
from emu.cli.errors import cluster_name as cluster_name_check
from emu.errors import EmuError
from emu.network.cni import pods, runtime
from emu.network.cni.network import CNI

LAYER = "cli"


def _fail(e: EmuError) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(e.exit_code)


def _why_none(name: str) -> str:
    """Built-in wiring runs no plugin binary, so there is no CNI log to read (kubelet's journal would hold the
    flannel plugin's lines on a real node); say where the wiring is shown instead."""
    try:
        topo = clusters.open_cluster(name).topology
    except EmuError:
        return ""
    if topo.cluster.cni.plugin == CNI.name:
        return ""
    return (f": it is wired by emu's built-in {topo.cluster.cni.plugin} (cni.plugin: {topo.cluster.cni.plugin}), "
            "which runs no plugin binary; `emu up --dry-run FILE` prints each pod's wiring, and cni.plugin: cni "
            "runs real plugins whose calls are logged here")


@click.group("cni")
def cni() -> None:
    """The CNI runtime of `plugin: cni` clusters."""


@cni.command("log")
@click.argument("pod", required=False, metavar="[NS/POD]")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table")
@click.option("--cluster", "cluster_name", metavar="NAME", callback=cluster_name_check,
              help="Cluster to act on (implied when one is up).")
def log(pod: str | None, output: str, cluster_name: str | None) -> None:
    """Every plugin call for POD (all pods without it): command, plugin, exit status, time; -o wide adds the
    stdin, the CNI_* environment, the result and a command line that replays the call; -o json has all of it."""
    try:
        name = clusters.pick(cluster_name)
    except EmuError as e:
        return _fail(e)
    rec = state.load(name)
    if rec is None:
        return _fail(EmuError(f"cluster {name!r} not found"))
    entries = runtime.read_log(pods.log_path(rec.dir), pod)
    if output == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo(f"no CNI calls recorded{' for ' + pod if pod else ''} in cluster {name}{_why_none(name)}")
        return
    for e in entries:
        res = "ok" if e["exit"] == 0 else f"exit {e['exit']}"
        click.echo(f"{e.get('pod', '-'):<40} {e['command']:<7} {e['network']:<14} {e['plugin']:<10} "
                   f"{e['env'].get('CNI_IFNAME', '-'):<5} {res:<8} {e['ms']:8.1f} ms")
        if output == "wide" or e["exit"] != 0:
            env = " ".join(f"{k}={v}" for k, v in e["env"].items() if k.startswith("CNI_"))
            click.echo(f"    env:    {env}")
            click.echo(f"    stdin:  {json.dumps(e['stdin'])}")
            click.echo(f"    stdout: {e['stdout'].strip()}")
            if e["stderr"].strip():
                click.echo(f"    stderr: {e['stderr'].strip()}")
            click.echo(f"    replay: {runtime.replay_command(e)}")
