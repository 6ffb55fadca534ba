"""User errors at the command-line boundary: an EmuError becomes one `error: ...` line and its exit code, never a
traceback (bugs still crash loudly)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from emu.errors import EmuError
from emu.model.names import cluster_name_error


class UserError(click.ClickException):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.exit_code = code

    def show(self, file: Any = None) -> None:
        msg = self.format_message()  # kubectl's own server errors are printed as kubectl prints them
        click.echo(msg if msg.startswith("Error from server") else f"error: {msg}", err=True)


def run(fn: Callable[[], Any]) -> Any:
    """Call fn; turn the EmuError a user can act on into a UserError."""
    try:
        return fn()
    except EmuError as e:
        raise UserError(str(e), e.exit_code) from None


def require_cluster_name(value: str, where: str) -> str:
    """`value` if it can name a cluster; else one line naming `where` it came from, exit 2."""
    bad = cluster_name_error(value)
    if bad:
        raise UserError(f"{where}: {bad}", 2)
    return value


def cluster_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """click callback for every option or argument that names a cluster: refused in one line, exit 2, before any path
    is built from it."""
    if value is None:
        return None
    return require_cluster_name(value, param.opts[0] if param.param_type_name == "option" else
                                (param.name or "NAME").upper())
