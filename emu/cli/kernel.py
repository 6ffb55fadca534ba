"""`emu kernel-lane run|info` (run a command under a stock Debian kernel in a throw-away VM) and
`emu kernel-features` (what the running kernel has). Registered on the main group by emu.cli.commands."""
from __future__ import annotations

import sys
from typing import Any

import click

from emu.report import output as report
from emu.errors import EmuError


class _Failed(click.ClickException):
    """A one-line `error: ...` with the EmuError's exit code (as emu.cli.errors.UserError prints one)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.exit_code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _fail(e: EmuError) -> click.ClickException:
    return _Failed(str(e), e.exit_code)


def _output_option(choices: tuple[str, ...] = ("table", "json")) -> Any:
    return click.option("-o", "--output", type=click.Choice(list(choices)), default="table", help="Output format.")


@click.group("kernel-lane", context_settings={"help_option_names": ["-h", "--help"]})
def kernel_lane() -> None:
    """Run commands under a stock Debian kernel (IPVS, IPIP, GRE, netem, dummy, VLAN, VRF, WireGuard, SCTP as
    modules) in a throw-away QEMU VM with software emulation. The host's / is shared read-only under a tmpfs
    overlay, the project directory read-write; the VM has no network device."""


@kernel_lane.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--kernel", "spec", default="debian-stable", show_default=True, metavar="debian-stable|PACKAGE|PATH",
              help="debian-stable (what linux-image-amd64 depends on), a linux-image-* package, or a vmlinuz path.")
@click.option("--modules", type=click.Path(file_okay=False, exists=True), default=None,
              help="Modules directory (lib/modules/VERSION) of a --kernel PATH, if not found next to it.")
@click.option("--mem", default="4G", show_default=True, help="Guest memory (QEMU -m).")
@click.option("--cpus", default=2, show_default=True, type=click.IntRange(1, 64), help="Guest CPUs.")
@click.option("--timeout", default=1800.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds before the VM is killed (exit status 124).")
@click.option("-e", "--env", "envs", multiple=True, metavar="NAME=VALUE", help="Set a variable for CMD (repeatable).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(spec: str, modules: str | None, mem: str, cpus: int, timeout: float, envs: tuple[str, ...],
            cmd: tuple[str, ...]) -> None:
    """Boot the kernel and run CMD as root in the project directory; exit with CMD's status (124: timed out,
    125: the guest never reported one). Example: emu kernel-lane run -- emu kernel-features"""
    from emu.lane import host, kernels, vm

    env = {}
    for e in envs:
        name, sep, value = e.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{e!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    try:
        host.ensure_tools()
        kernel = kernels.ensure_kernel(spec, modules)
        rc = vm.run(list(cmd), kernel=kernel, mem=mem, cpus=cpus, timeout=timeout, env=env)
    except EmuError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        click.echo("kernel-lane: interrupted; the VM was stopped", err=True)
        sys.exit(130)
    sys.exit(rc)


@kernel_lane.command("info")
@click.option("--kernel", "spec", default="debian-stable", show_default=True, metavar="debian-stable|PACKAGE|PATH")
@_output_option()
def info_cmd(spec: str, output: str) -> None:
    """The cached lane kernel (version, files) and the dataplane features its config has. Never downloads."""
    from emu.lane import kconfig, kernels

    try:
        d = kernels.info(spec)
    except EmuError as e:
        raise _fail(e) from None
    if output == "json":
        click.echo(report.to_json(d))
        return
    if not d["cached"]:
        click.echo(f"no kernel cached in {d['cache']}: {d['hint']}")
    else:
        click.echo(report.table(["KERNEL", "SOURCE", "VMLINUZ"], [(d["version"], d["source"], d["vmlinuz"])]))
        click.echo()
        opts = d.get("feature_options", {})
        click.echo(report.table(["FEATURE", "PRESENT", "CONFIG"],
                                [(name, "yes" if ok else "no", f"{kconfig.FEATURE_CONFIG[name]}={opts.get(name, '?')}")
                                 for name, ok in d["features"].items()]))
    if d["tools_missing"]:
        click.echo(f"\nmissing tools (installed on first run): {' '.join(d['tools_missing'])}")


@click.command("kernel-features")
@_output_option()
def kernel_features(output: str) -> None:
    """The dataplane features the RUNNING kernel has, tried in a scratch network namespace (needs root)."""
    from emu.apply import kernel

    try:
        feats = kernel.features()
    except EmuError as e:
        raise _fail(e) from None
    except PermissionError as e:
        raise _Failed(f"kernel-features needs root (network namespaces): {e}") from None
    if output == "json":
        click.echo(report.to_json({n: {"present": f.present, "detail": f.detail} for n, f in feats.items()}))
        return
    click.echo(report.table(["FEATURE", "PRESENT", "DETAIL"],
                            [(f.name, "yes" if f.present else "no", f.detail) for f in feats.values()]))


if __name__ == "__main__":  # python -m emu.cli.kernel run -- CMD (works before the group is registered on `emu`)
    kernel_lane()
