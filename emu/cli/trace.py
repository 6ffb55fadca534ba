"""`emu trace` and `emu capture` (registered on the main group with `main.add_command`)."""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from emu.cluster import lifecycle as clusters
from emu.report import output as report


from emu.cli.errors import cluster_name as cluster_name_check  # noqa: E402
from emu.cli.errors import run as _run  # noqa: E402


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt for the block, so the trace's and the capture's `finally` cleanup
    (trace tables, taps, tcpdump) runs as it does for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _cluster(name: str | None) -> clusters.Cluster:
    return _run(lambda: clusters.open_cluster(clusters.pick(name)))


@click.command()
@click.argument("src", metavar="FROM")
@click.argument("dst", metavar="TO")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), help="Destination port (default: the target's first "
                                                             "declared port for the protocol, else 80).")
@click.option("--size", type=click.IntRange(0, 65507), help="Payload bytes after the ICMP/UDP header (ping -s).")
@click.option("--df", is_flag=True, help="Set Don't Fragment.")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--no-rules", is_flag=True, help="Do not trace the nodes' rules (faster; the path only).")
@click.option("--pcap", "pcap_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Write one pcap per interface crossed, named NETNS_IFACE.pcap.")
@click.option("--svg", "svg_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Draw the path across the nodes (graphviz).")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json"]), default="table",
              help="Output format (wide: every packet of the flow).")
@click.option("--cluster", "cluster_name", metavar="NAME", callback=cluster_name_check,
              help="Cluster to act on (implied when one is up).")
def trace(src: str, dst: str, proto: str, port: int | None, size: int | None, df: bool, timeout: float,
          no_rules: bool, pcap_dir: str | None, svg_file: str | None, output: str, cluster_name: str | None) -> None:
    """Follow one probe packet hop by hop: every interface, rewrite and rule it met, and its reply.

    FROM is NS/POD, node/NAME or external; TO is also svc/NS/NAME[:PORT], lb/NS/NAME[:PORT], nodeport/NODE:PORT,
    IP or IP:PORT.  Exit code 1 when the probe did not get its answer (the trace says where and why)."""
    from emu.observe.trace import render, run

    cl = _cluster(cluster_name)
    with _terminate_as_interrupt():
        res = _run(lambda: run.trace(cl, src, dst, proto, port, size, df, timeout, not no_rules, pcap_dir,
                                     svg_file))
    if output == "json":
        click.echo(report.to_json(res))
    else:
        click.echo(render.text(res, wide=output == "wide"))
    if not res["ok"]:
        sys.exit(1)


@click.command()
@click.argument("target", metavar="TARGET[:IFACE]")
@click.option("--filter", "bpf", metavar="BPF", help="A pcap filter expression, as tcpdump takes it.")
@click.option("-w", "write", metavar="FILE", type=click.Path(dir_okay=False), help="Write a pcap file.")
@click.option("--count", type=click.IntRange(1), help="Stop after N packets.")
@click.option("--seconds", type=click.FloatRange(0, min_open=True), help="Stop after S seconds.")
@click.option("--cluster", "cluster_name", metavar="NAME", callback=cluster_name_check,
              help="Cluster to act on (implied when one is up).")
def capture(target: str, bpf: str | None, write: str | None, count: int | None, seconds: float | None,
            cluster_name: str | None) -> None:
    """tcpdump anywhere in the emulated network: TARGET is NS/POD, node/NAME, external or underlay; IFACE
    defaults to every interface.  Runs until Ctrl-C, --count or --seconds."""
    from emu.observe.trace import tcpdump

    cl = _cluster(cluster_name)
    with _terminate_as_interrupt():
        code = _run(lambda: tcpdump.run(cl, target, bpf, write, count, seconds))
    if code:
        sys.exit(code)
