"""`emu probe`, `emu matrix` and `emu explain`: real packets between endpoints, every pod to every pod, and what
the NetworkPolicies decide."""
from __future__ import annotations

import sys
from typing import Any

import click

from emu.apply import neighbours
from emu.apply import state
from emu.cli.errors import run as _run
from emu.cli.options import CLUSTER, OUTPUT, progress
from emu.cluster import lifecycle as clusters
from emu.report import output as report


@click.command()
@click.argument("src", metavar="FROM")
@click.argument("dst", metavar="TO", required=False)
@click.option("--dns", "dns_name", metavar="NAME", help="Resolve NAME with FROM's resolv.conf: every query the "
                                                         "search path and ndots cause, with its answer and time.")
@click.option("--dns-type", default="A", show_default=True, help="Record type for --dns (A, SRV, PTR, ...).")
@click.option("--proto", type=click.Choice(["tcp", "udp", "sctp", "icmp"]), default="tcp", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Destination port (default: the target's first "
                                                             "declared port for the protocol, else 80).")
@click.option("--size", type=click.IntRange(0, 65507), help="Payload bytes after the ICMP/UDP header (ping -s).")
@click.option("--df", is_flag=True, help="Set Don't Fragment.")
@click.option("--count", type=click.IntRange(1, 10000), default=1, show_default=True)
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--pmtu", is_flag=True, help="Discover the path MTU with DF probes and name the hop that limits it.")
@click.option("--traceroute", is_flag=True, help="List the routers on the way (one probe per TTL).")
@click.option("--max-hops", type=click.IntRange(1, 64), default=8, show_default=True)
@OUTPUT
@CLUSTER
def probe(src: str, dst: str | None, dns_name: str | None, dns_type: str, proto: str, port: int | None,
          size: int | None, df: bool, count: int, timeout: float, pmtu: bool, traceroute: bool, max_hops: int,
          output: str, cluster_name: str | None) -> None:
    """Send real packets from FROM to TO and report what happened (or, with --dns NAME, resolve NAME).

    TO may be a URL (http://HOST/PATH or https://...): a real HTTP request, through the ingress controller when
    HOST is an Ingress host."""
    from emu.observe import probing

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    if dns_name:
        from emu.addons.dns import probe as dns_probe

        res = _run(lambda: dns_probe.probe_dns(cl, src, dns_name, dns_type.upper(), timeout=timeout))
        click.echo(report.to_json(res) if output == "json" else dns_probe.probe_dns_text(res))
        sys.exit(0 if res["ok"] else 1)
    if dst is None:
        raise click.UsageError("missing argument TO (or --dns NAME)")
    if dst.startswith(("http://", "https://")):  # through the ingress controller (or any HTTP server)
        from emu.addons.ingress import httpprobe

        res = _run(lambda: httpprobe.probe_url(cl, src, dst, timeout * 2))
        click.echo(report.to_json(res) if output == "json" else httpprobe.probe_url_text(res))
        sys.exit(0 if res["ok"] else 1)
    if pmtu:
        res = _run(lambda: probing.pmtu(cl, src, dst, timeout))
        click.echo(report.to_json(res) if output == "json" else probing.pmtu_text(res))
        return
    if traceroute:
        from emu.observe.trace import traceroute as tr

        res = _run(lambda: tr.traceroute(cl, src, dst, proto, port, max_hops, timeout))
        click.echo(report.to_json(res) if output == "json" else tr.traceroute_text(res))
        sys.exit(0 if res["reached"] else 1)
    res = _run(lambda: probing.probe_many(cl, src, dst, proto, port, size, df, count, timeout))
    if size is not None and not df and proto in ("udp", "icmp"):
        from emu.observe.trace import fragments as fr  # one more probe, watched on the wire: how it was fragmented

        res["fragmentation"] = _run(lambda: fr.fragments(cl, src, dst, size, proto, timeout))
    if output == "json":
        click.echo(report.to_json(res))
    else:
        click.echo(probing.probe_text(res, wide=output == "wide"))
        if "fragmentation" in res:
            from emu.observe.trace import fragments as frag

            click.echo(frag.fragments_text(res["fragmentation"]))
    if not res["ok"]:
        sys.exit(1)


def _namespaces(value: str | None) -> list[str] | None:
    return [n for n in value.split(",") if n] if value else None


@click.command()
@click.option("--proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=80, show_default=True)
@click.option("--namespaces", metavar="NS,NS", help="Only pods of these namespaces (as sources and destinations).")
@click.option("--timeout", type=float, default=0.3, show_default=True,
              help="Seconds to wait for each answer (a failed probe is tried again, see --retries).")
@click.option("--retries", type=click.IntRange(0, 10), default=1, show_default=True,
              help="Tries again for a probe that failed before it counts as failed.")
@click.option("--workers", type=click.IntRange(1, 512), default=64, show_default=True, help="Probes in parallel.")
@OUTPUT
@CLUSTER
def matrix(proto: str, port: int, namespaces: str | None, timeout: float, retries: int, workers: int, output: str,
           cluster_name: str | None) -> None:
    """Probe every pod from every pod; beside what the NetworkPolicies allow, with every disagreement marked.

    Exit status 1: with NetworkPolicies, when the dataplane disagrees with the policy engine; without any, when
    a probe fails."""
    from emu.observe import probing
    from emu.report import matrix as matrix_report

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    risk = neighbours.for_matrix(cl.plan, neighbours.others(state.names(), cl.name,
                                                            lambda n: clusters.open_cluster(n).plan),
                                 _namespaces(namespaces))  # before the first probe: what it is about to send
    if risk.at_risk:
        click.echo(risk.message(), err=True)
    res = probing.matrix(cl, proto, port, timeout, progress(output != "json"), workers=workers,
                         namespaces=_namespaces(namespaces), retries=retries)
    click.echo(report.to_json(res) if output == "json" else matrix_report.matrix_text(res))
    if probing.matrix_failed(res):
        sys.exit(1)


@click.command()
@click.argument("src", metavar="FROM")
@click.argument("dst", metavar="TO")
@click.option("--proto", type=click.Choice(["tcp", "udp", "sctp"]), default="tcp", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Destination port (default: the destination pod's first "
                                                             "declared port for the protocol, else 80).")
@OUTPUT
@CLUSTER
def explain(src: str, dst: str, proto: str, port: int | None, output: str, cluster_name: str | None) -> None:
    """Which NetworkPolicies select FROM (egress) and TO (ingress), which rule allows the traffic, or why none does.

    FROM and TO are NS/POD, node/NAME, external or an IP address.  Decided from the model alone (no packets);
    `emu matrix` checks the dataplane against the same decisions."""
    from emu.observe import probing

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    res = _run(lambda: probing.explain(cl, src, dst, proto, port))
    click.echo(report.to_json(res) if output == "json" else _explain_text(res))


def _explain_text(res: dict[str, Any]) -> str:
    from emu.addons.netpol import explain as netpol_explain

    return netpol_explain.explain_text(res)
