"""`emu exec`, `emu rules` and `emu conntrack`: a tool run inside a pod's or a node's namespace, in place of emu
(`ip netns exec`)."""
from __future__ import annotations

import os

import click

from emu.cli.errors import UserError
from emu.cli.errors import run as _run
from emu.cli.options import CLUSTER
from emu.cluster import lifecycle as clusters


@click.command("exec", context_settings={"ignore_unknown_options": True})
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


@click.command()
@click.argument("target", metavar="node/NAME")
@click.option("-t", "--table", help="Only this table (iptables-save -t TABLE).")
@CLUSTER
def rules(target: str, table: str | None, cluster_name: str | None) -> None:
    """The node's live ruleset, as iptables-save (iptables mode) or nft list ruleset (nftables mode) prints it."""
    from emu.addons.kubeproxy import modes
    from emu.observe import targets

    cl = _run(lambda: clusters.open_cluster(clusters.pick(cluster_name)))
    t = _run(lambda: targets.resolve(cl, target))
    if t.kind != "node" or t.netns is None:
        raise UserError(f"{target}: rules lives on nodes (node/NAME)", 2)
    c = cl.topology.cluster
    argv = modes.for_mode(c.proxy.mode).rules(c.iptables_backend, table)  # its proxier's tool
    os.execvp("ip", ["ip", "netns", "exec", t.netns, *argv])


@click.command()
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
