"""The `emu` command line: each command parses, calls one function, renders (table, wide or JSON)."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from emu.cluster import lifecycle as clusters
from emu.cluster import daemons
from emu.apply import neighbours
from emu.plan import render
from emu.report import output as report
from emu.apply import state
from emu.report import views
from emu.errors import EmuError

OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table",
                      help="Output format.")
from emu.cli.errors import UserError  # noqa: E402
from emu.cli.errors import cluster_name as _cluster_name  # noqa: E402
from emu.cli.errors import require_cluster_name  # noqa: E402
from emu.cli.errors import run as _run  # noqa: E402

CLUSTER = click.option("--cluster", "cluster_name", metavar="NAME", callback=_cluster_name,
                       help="Cluster to act on (implied when one is up).")


def _progress(enabled: bool) -> clusters.Progress:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cni-emu")
def main() -> None:
    """cni-emu: Kubernetes Pod networking as a real Linux dataplane of network namespaces."""


# --- lifecycle ------------------------------------------------------------------------------------------------------


@main.command()
@click.argument("file", metavar="FILE|NAME")
@click.option("--name", callback=_cluster_name, help="Cluster name (default: the Cluster's metadata.name).")
@click.option("--dry-run", is_flag=True, help="Print the commands the plan amounts to; change nothing.")
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
        _, _, plan = _run(lambda: clusters.plan_file(file, name))
        click.echo(render.script(plan), nl=False)
        return
    t0 = time.monotonic()
    cl = _run(lambda: clusters.up(file, name, _progress(output != "json")))
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
    click.echo(f"cluster {cl.name} is up: {len(c.nodes)} nodes, {len(cl.plan.pods)} pods, flannel "
               f"{c.cni.backend.value} "
               f"(pod MTU {next((p.host_link.mtu for p in cl.plan.pods if not p.host_network), '-')}), "
               f"in {elapsed:.2f}s")
    click.echo(report.table(["NODE", "INTERNAL-IP", "POD-CIDR", "PODS"],
                            [(n.name, n.ip, n.subnet, sum(p.node == n.name for p in cl.plan.pods))
                             for n in cl.plan.nodes]))
    for w in warnings:
        click.echo(w, err=True)
    click.echo(f"next: emu get pods -A -o wide | emu matrix | emu down {cl.name}")


@main.command()
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
            "created": cl.record.created, "agentPid": cl.record.agent_pid}


@main.command()
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


# --- kubectl-shaped views -------------------------------------------------------------------------------------------


@main.command()
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


@main.command()
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


@main.command("apply")
@click.option("-f", "--filename", "file", required=True, type=click.Path(dir_okay=False))
@CLUSTER
@OUTPUT
def apply_cmd(file: str, cluster_name: str | None, output: str) -> None:
    """Create or update the objects in FILE on a running cluster."""
    ch = _run(lambda: clusters.apply_file(clusters.pick(cluster_name), file, _progress(output != "json")))
    _change(ch, output, "created")


@main.command()
@click.option("-f", "--filename", "file", required=True, type=click.Path(dir_okay=False))
@CLUSTER
@OUTPUT
def delete(file: str, cluster_name: str | None, output: str) -> None:
    """Delete the objects in FILE from a running cluster."""
    ch = _run(lambda: clusters.delete_file(clusters.pick(cluster_name), file, _progress(output != "json")))
    _change(ch, output, "created")


def _change(ch: clusters.Change, output: str, verb: str) -> None:
    if output == "json":
        click.echo(report.to_json({"added": list(ch.added), "removed": list(ch.removed), "unchanged": ch.unchanged}))
        return
    for k in ch.added:
        click.echo(f"pod/{k} created")
    for k in ch.removed:
        click.echo(f"pod/{k} deleted")
    click.echo(f"{len(ch.added)} added, {len(ch.removed)} removed, {ch.unchanged} unchanged")


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@CLUSTER
def exec_cmd(target: str, cmd: tuple[str, ...], cluster_name: str | None) -> None:
    """Run CMD inside TARGET's namespace (NS/POD, node/NAME or external), like `ip netns exec`."""
    from emu.observe import targets

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    t = _run(lambda: targets.resolve(cl, target))
    if t.netns is None:
        raise UserError(f"{target}: exec needs a pod, node/NAME or external, not an address", 2)
    from emu.observe import podexec

    argv = podexec.argv(cl, t, cmd)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        raise UserError(f"cannot run {argv[0]}: {e.strerror}") from None


@main.command()
@click.argument("pod", metavar="NS/POD")
@click.argument("condition", type=click.Choice(sorted(clusters.CONDITIONS)))
@CLUSTER
def mark(pod: str, condition: str, cluster_name: str | None) -> None:
    """Mark a pod ready, not-ready or terminating; its Service endpoints and every node's rules follow."""
    _run(lambda: clusters.mark(clusters.pick(cluster_name), pod, condition))
    click.echo(f"pod/{pod} marked {condition}")


@main.command()
@click.argument("target", metavar="node/NAME")
@click.option("-t", "--table", help="Only this table (iptables-save -t TABLE).")
@CLUSTER
def rules(target: str, table: str | None, cluster_name: str | None) -> None:
    """The node's live ruleset, as iptables-save (iptables mode) or nft list ruleset (nftables mode) prints it."""
    from emu.observe import targets

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    t = _run(lambda: targets.resolve(cl, target))
    if t.kind != "node" or t.netns is None:
        raise UserError(f"{target}: rules lives on nodes (node/NAME)", 2)
    mode = cl.topology.cluster.proxy.mode.value
    save = cl.topology.cluster.iptables("save")
    argv = ["nft", "list", "ruleset"] if mode == "nftables" else [save] + (["-t", table] if table else [])
    os.execvp("ip", ["ip", "netns", "exec", t.netns, *argv])


@main.command()
@click.argument("target", metavar="node/NAME")
@click.option("-p", "--proto", type=click.Choice(["tcp", "udp", "icmp"]), help="Only this protocol.")
@CLUSTER
def conntrack(target: str, proto: str | None, cluster_name: str | None) -> None:
    """The node's connection-tracking table (conntrack -L), where Service NAT is recorded."""
    from emu.observe import targets

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    t = _run(lambda: targets.resolve(cl, target))
    if t.netns is None:
        raise UserError(f"{target}: expected node/NAME, NS/POD or external", 2)
    os.execvp("ip", ["ip", "netns", "exec", t.netns, "conntrack", "-L", *(["-p", proto] if proto else [])])


# --- probes ---------------------------------------------------------------------------------------------------------


@main.command()
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


@main.command()
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

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    risk = neighbours.for_matrix(cl.plan, neighbours.others(state.names(), cl.name,
                                                            lambda n: clusters.open_cluster(n).plan),
                                 _namespaces(namespaces))  # before the first probe: what it is about to send
    if risk.at_risk:
        click.echo(risk.message(), err=True)
    res = probing.matrix(cl, proto, port, timeout, _progress(output != "json"), workers=workers,
                         namespaces=_namespaces(namespaces), retries=retries)
    click.echo(report.to_json(res) if output == "json" else probing.matrix_text(res))
    if probing.matrix_failed(res):
        sys.exit(1)


@main.command()
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


@main.command()
@click.argument("file", type=click.Path(dir_okay=False), default="topologies/flannel-vxlan.yaml")
@click.option("--name", callback=_cluster_name, help="Cluster name (default: the Cluster's metadata.name).")
@OUTPUT
def demo(file: str, name: str | None, output: str) -> None:
    """The main job: up, probe every pod from every pod (TCP and UDP), the MTU edge across nodes, then down."""
    from emu.cli import demo as demo_mod

    res = _run(lambda: demo_mod.run(file, name, _progress(output != "json"),
                                    None if output == "json" else click.echo))
    if output == "json":
        click.echo(report.to_json(res))
    if not res["ok"]:
        sys.exit(1)


from emu.cli.kernel import kernel_features, kernel_lane  # noqa: E402
from emu.cli.trace import capture as _capture_cmd  # noqa: E402
from emu.cli.trace import trace as _trace_cmd  # noqa: E402

main.add_command(kernel_lane)
main.add_command(kernel_features)
main.add_command(_trace_cmd)
main.add_command(_capture_cmd)
from emu.network.cni.cli import cni as _cni_cmd  # noqa: E402

main.add_command(_cni_cmd)
from emu.addons.ingress.cli import create as _create_cmd  # noqa: E402

main.add_command(_create_cmd)
from emu.cli.doctor import doctor as _doctor_cmd  # noqa: E402
main.add_command(_doctor_cmd)
from emu.cli.describe import describe as _describe_cmd  # noqa: E402
main.add_command(_describe_cmd)


if __name__ == "__main__":
    main()
