"""`emu get` and `emu logs`: kubectl-shaped views of a running cluster."""
from __future__ import annotations

import os

import click

from emu.cli.errors import UserError
from emu.cli.errors import run as _run
from emu.cli.options import CLUSTER, OUTPUT
from emu.cluster import lifecycle as clusters
from emu.report import output as report
from emu.report import views


@click.command()
@click.argument("kind", type=click.Choice(list(views.ALIASES)))
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("--field-selector", default="", metavar="SELECTOR",
              help="events: involvedObject.kind=Service,reason=..., as the API server filters them (=, ==, !=).")
@OUTPUT
@CLUSTER
def get(kind: str, name: str | None, namespace: str, all_namespaces: bool, field_selector: str, output: str,
        cluster_name: str | None) -> None:
    """List nodes, pods, namespaces, services, endpoints, ingresses, networkpolicies or events, like kubectl get
    (NAME: just that one)."""
    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    view = _run(lambda: views.get(cl, kind, None if all_namespaces else namespace, name, field_selector))
    click.echo(report.to_json(view.items) if output == "json" else view.table(wide=output == "wide"))
    if kind in ("ingresses", "ingress", "ing") and output != "json":
        from emu.addons.ingress import controller

        for w in controller.warnings(cl.record):  # what ingress-nginx would log: missing Secrets, Services
            click.echo(f"Warning: {w}", err=True)


@click.command()
@click.argument("pod", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-l", "--selector", default=None, help="Label selector (k=v,k!=v,k,!k): every pod it selects.")
@click.option("--tail", type=int, default=None, help="Lines of each pod's log to show (default: all; 10 with -l).")
@click.option("--prefix", is_flag=True, help="Prefix each line with [pod/NAME/CONTAINER].")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C or the cluster goes down.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
@CLUSTER
def logs(pod: str | None, namespace: str, selector: str | None, tail: int | None, prefix: bool, follow: bool,
         output: str, cluster_name: str | None) -> None:
    """Print what a pod printed, like kubectl logs: coredns, kube-proxy and ingress-nginx pods have logs."""
    from emu.report import logs as logs_mod

    if (pod is None) == (selector is None):
        raise UserError("give a POD or -l SELECTOR (not both)", 2)
    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    found = _run(lambda: logs_mod.logs(cl, namespace, pod, selector, tail if tail is not None else
                                       (10 if selector else -1)))
    if not found:  # -l selected nothing: kubectl says so on stderr and succeeds
        click.echo(f"No resources found in {namespace} namespace.", err=True)
    if output == "json":
        if follow:
            raise UserError("-f goes with text output (a JSON document has an end)", 2)
        click.echo(report.to_json([p.to_json() for p in found]))
        return
    leads = {p.pod: f"[pod/{p.pod.split('/', 1)[1]}/{p.container}] " if prefix else "" for p in found}
    for p in found:
        for line in p.lines:
            click.echo(leads[p.pod] + line)
    if follow:
        try:
            for key, line in logs_mod.follow(cl, found, lambda: os.path.isdir(cl.record.dir)):
                click.echo(leads[key] + line)
        except KeyboardInterrupt:
            pass
