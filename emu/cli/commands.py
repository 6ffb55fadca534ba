"""The `emu` command line: each command parses, calls one function, renders (table, wide or JSON).  This module is
the `emu` group and the one table of its commands; each command lives with its group (emu.cli.lifecycle, views,
nstools, probes, trace, doctor, describe, kernel) or with its feature (emu.network.cni.cli, emu.addons.ingress.cli).
"""
from __future__ import annotations

import click

from emu.addons.ingress.cli import create
from emu.cli import lifecycle, nstools, probes, views
from emu.cli.describe import describe
from emu.cli.doctor import doctor
from emu.cli.kernel import kernel_features, kernel_lane
from emu.cli.trace import capture, trace
from emu.network.cni.cli import cni


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cni-emu")
def main() -> None:
    """cni-emu: Kubernetes Pod networking as a real Linux dataplane of network namespaces."""


COMMANDS: tuple[click.Command, ...] = (
    lifecycle.up, lifecycle.down, lifecycle.status, lifecycle.apply_cmd, lifecycle.delete, lifecycle.mark,
    lifecycle.demo,
    views.get, views.logs,
    nstools.exec_cmd, nstools.rules, nstools.conntrack,
    probes.probe, probes.matrix, probes.explain,
    trace, capture, doctor, describe, create, cni, kernel_lane, kernel_features,
)
for _command in COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
