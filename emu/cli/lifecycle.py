"""`emu up`, `down`, `status`, `apply`, `delete`, `mark` and `demo`: a cluster's lifecycle and its changes."""
from __future__ import annotations

import sys
import time
from typing import Any

import click

from emu.apply import neighbours
from emu.apply import state
from emu.cli.errors import UserError
from emu.cli.errors import cluster_name as _cluster_name
from emu.cli.errors import require_cluster_name
from emu.cli.errors import run as _run
from emu.cli.options import CLUSTER, OUTPUT, progress
from emu.cluster import daemons
from emu.cluster import lifecycle as clusters
from emu.network import table as networks
from emu.cluster import converge, dryrun
from emu.errors import EmuError
from emu.report import output as report


@click.command()
@click.argument("file", metavar="FILE|NAME")
@click.option("--name", callback=_cluster_name, help="Cluster name (default: the Cluster's metadata.name).")
@click.option("--dry-run", is_flag=True, help="Print the whole plan as the commands and files up would run and write; change nothing.")
@click.option("--repair", is_flag=True, help="NAME is a running cluster: restart its daemons that died (agent, DNS "
                                             "server, ingress nginx).")
@OUTPUT
def up(file: str, name: str | None, dry_run: bool, repair: bool, output: str) -> None:
    """Build the cluster described by FILE, wait until every pod answers, print a summary."""
    if repair:
        cname = require_cluster_name(file, "NAME")
        restarted = _run(lambda: clusters.repair(cname))
        if output == "json":
            click.echo(report.to_json({"name": cname, "restarted": restarted}))
        else:
            click.echo(f"cluster {cname}: restarted {', '.join(restarted)}" if restarted else
                       f"cluster {cname}: every daemon is running (nothing to repair)")
        return
    if dry_run:
        click.echo(_run(lambda: dryrun.script(file, name)), nl=False)
        return
    t0 = time.monotonic()
    cl = _run(lambda: clusters.up(file, name, progress(output != "json")))
    elapsed = time.monotonic() - t0
    # the table is shared by every namespace on the host: count the other clusters that are up too
    risk = neighbours.for_up(cl.plan, neighbours.others(state.names(), cl.name,
                                                        lambda n: clusters.open_cluster(n).plan))
    from emu.model import nodesettings

    warnings = ([risk.message()] if risk.at_risk else []) + nodesettings.unapplied(
        dict(cl.topology.cluster.node_settings))
    if output == "json":
        click.echo(report.to_json({**_status(cl), "seconds": round(elapsed, 3), "warnings": warnings}))
        return
    c = cl.topology.cluster
    click.echo(f"cluster {cl.name} is up: {len(c.nodes)} nodes, {len(cl.plan.pods)} pods, "
               f"{networks.for_cluster(c).summary(c)} "
               f"(pod MTU {next((p.host_link.mtu for p in cl.plan.pods if not p.host_network), '-')}), "
               f"in {elapsed:.2f}s")
    click.echo(report.table(["NODE", "INTERNAL-IP", "POD-CIDR", "PODS"],
                            [(n.name, n.ip, n.subnet, sum(p.node == n.name for p in cl.plan.pods))
                             for n in cl.plan.nodes]))
    for w in warnings:
        click.echo(w, err=True)
    click.echo(f"next: emu get pods -A -o wide | emu matrix | emu down {cl.name}")


@click.command()
@click.argument("name", required=False, callback=_cluster_name)
@click.option("--all", "all_", is_flag=True, help="Remove every cluster.")
@OUTPUT
def down(name: str | None, all_: bool, output: str) -> None:
    """Remove a cluster and everything emu made for it (idempotent)."""
    if all_:
        targets = state.names()
    elif name:
        targets = [name]
    else:
        targets = [_run(lambda: clusters.pick(None))]
    results = {n: _run(lambda n=n: clusters.down(n)) for n in targets}
    if output == "json":
        click.echo(report.to_json({"removed": [n for n, r in results.items() if r],
                                   "absent": [n for n, r in results.items() if not r]}))
        return
    for n, removed in results.items():
        click.echo(f"cluster {n} removed" if removed else f"cluster {n} not found (nothing to remove)")


def _status(cl: clusters.Cluster) -> dict[str, Any]:
    c = cl.topology.cluster
    ds = daemons.expected(cl.record)
    dead = [d.name for d in ds if not d.running]
    return {"name": cl.name, "status": "degraded" if dead else cl.record.status, "down": dead,
            "daemons": [d.to_json() for d in ds], "topology": cl.record.topology_file,
            "nodes": len(c.nodes), "pods": len(cl.plan.pods), "backend": c.cni.backend.value,
            "podCIDR": str(c.pod_cidr), "nodeNetwork": str(c.node_network), "mtu": c.mtu,
            "created": cl.record.created, "agentPid": cl.record.pid("agent")}


@click.command()
@click.argument("name", required=False, callback=_cluster_name)
@OUTPUT
def status(name: str | None, output: str) -> None:
    """The clusters that are up (or one of them)."""
    rows = []
    for n in [name] if name else state.names():
        try:
            rows.append(_status(clusters.open_cluster(n)))
        except EmuError as e:
            if name:
                raise UserError(str(e)) from None
            rows.append({"name": n, "status": "broken (emu down to remove)"})
    if output == "json":
        click.echo(report.to_json(rows))
        return
    if not rows:
        click.echo("no clusters (emu up FILE)")
        return
    click.echo(report.table(["NAME", "STATUS", "NODES", "PODS", "BACKEND", "POD-CIDR", "AGE"],
                            [(r["name"], r["status"] + (f" ({', '.join(r['down'])} down)" if r.get("down") else ""),
                              r.get("nodes"), r.get("pods"), r.get("backend"),
                              r.get("podCIDR"), report.age(r["created"]) if r.get("created") else None)
                             for r in rows]))


@click.command("apply")
@click.option("-f", "--filename", "file", required=True, type=click.Path(dir_okay=False))
@CLUSTER
@OUTPUT
def apply_cmd(file: str, cluster_name: str | None, output: str) -> None:
    """Create or update the objects in FILE on a running cluster."""
    ch = _run(lambda: converge.apply_file(clusters.pick(cluster_name), file, progress(output != "json")))
    _change(ch, output, "created")


@click.command()
@click.option("-f", "--filename", "file", required=True, type=click.Path(dir_okay=False))
@CLUSTER
@OUTPUT
def delete(file: str, cluster_name: str | None, output: str) -> None:
    """Delete the objects in FILE from a running cluster."""
    ch = _run(lambda: converge.delete_file(clusters.pick(cluster_name), file, progress(output != "json")))
    _change(ch, output, "created")


def _change(ch: converge.Change, output: str, verb: str) -> None:
    if output == "json":
        click.echo(report.to_json({"added": list(ch.added), "removed": list(ch.removed), "unchanged": ch.unchanged}))
        return
    for k in ch.added:
        click.echo(f"pod/{k} created")
    for k in ch.removed:
        click.echo(f"pod/{k} deleted")
    click.echo(f"{len(ch.added)} added, {len(ch.removed)} removed, {ch.unchanged} unchanged")


@click.command()
@click.argument("pod", metavar="NS/POD")
@click.argument("condition", type=click.Choice(sorted(converge.CONDITIONS)))
@CLUSTER
def mark(pod: str, condition: str, cluster_name: str | None) -> None:
    """Mark a pod ready, not-ready or terminating; its Service endpoints and every node's rules follow."""
    _run(lambda: converge.mark(clusters.pick(cluster_name), pod, condition))
    click.echo(f"pod/{pod} marked {condition}")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False), default="topologies/flannel-vxlan.yaml")
@click.option("--name", callback=_cluster_name, help="Cluster name (default: the Cluster's metadata.name).")
@OUTPUT
def demo(file: str, name: str | None, output: str) -> None:
    """The main job: up, probe every pod from every pod (TCP and UDP), the MTU edge across nodes, then down."""
    from emu.cli import demo as demo_mod

    res = _run(lambda: demo_mod.run(file, name, progress(output != "json"),
                                    None if output == "json" else click.echo))
    if output == "json":
        click.echo(report.to_json(res))
    if not res["ok"]:
        sys.exit(1)
