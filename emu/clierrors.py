"""User errors at the command-line boundary: an EmuError becomes one `error: ...` line and its exit code, never a
traceback (bugs still crash loudly)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .errors import EmuError


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
