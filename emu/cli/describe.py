"""`emu describe KIND [NAME]` (registered on the main group with `main.add_command`)."""
from __future__ import annotations

import click

from emu.cluster import lifecycle as clusters
from emu.report import describe as describer
from emu.cluster import events
from emu.report import output as report
from emu.cli.errors import UserError
from emu.cli.errors import cluster_name as cluster_name_check
from emu.cli.errors import run as _run
from emu.errors import EmuError

# what the API server sends with every v1 Endpoints request since 1.33 (kubectl prints it on stderr)
ENDPOINTS_WARNING = "Warning: v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"


@click.command()
@click.argument("kind", metavar="KIND[/NAME]")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace (NAME then cannot be given).")
@click.option("--show-events", type=click.BOOL, is_flag=False, flag_value=True, default=None, metavar="[BOOL]",
              help="Show the object's Events (default: true for one object, false for several or a name prefix).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              help="json: per object its kind, namespace, name, the text and its Events as data.")
@click.option("--cluster", "cluster_name", metavar="NAME", callback=cluster_name_check,
              help="Cluster to act on (implied when one is up).")
def describe(kind: str, name: str | None, namespace: str, all_namespaces: bool, show_events: bool | None,
             output: str, cluster_name: str | None) -> None:
    """Show details of a Service, Pod, NetworkPolicy, Node, Ingress or Endpoints, as kubectl describe does.

    KIND: service|svc, pod|po, networkpolicy|netpol, node|no, ingress|ing, endpoints|ep (or KIND/NAME).  Without
    NAME every object of the kind in the namespace; a NAME no object has describes the objects whose name starts
    with it (kubectl describe pods myapp)."""
    if "/" in kind:
        kind, _, slash_name = kind.partition("/")
        if name or not slash_name:
            raise click.UsageError("arguments in resource/name form must have a single resource and name")
        name = slash_name
    k = _run(lambda: describer.describable(kind))
    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    if k.resource == "endpoints":
        click.echo(ENDPOINTS_WARNING, err=True)
    ns = None if all_namespaces else namespace
    try:
        if output == "json":
            click.echo(report.to_json(describer.describe_json(cl, kind, ns, name, events.load(cl.record))))
            return
        text = describer.describe(cl, kind, ns, name, events.load(cl.record), show_events)
    except EmuError as e:
        raise UserError(str(e), e.exit_code) from None
    if not text:
        click.echo("No resources found" if ns is None else f"No resources found in {ns} namespace.", err=True)
        return
    click.echo(text, nl=False)
