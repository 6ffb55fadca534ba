"""The CLI reference, generated from the click commands themselves: `python -m emu.cli.doc > docs/reference/cli.md`.

Contract: `render()` returns the whole Markdown page for the `emu` group as click sees it — every command and
group, depth first in click's own listing order (`list_commands`, alphabetical), each with its usage line as
`--help` prints it, its help text, and every option with its help.  The output depends only on the commands'
definitions (no terminal width, no environment), so tests/unit/test_clidoc.py can compare it with the committed
page and fail when the page is stale.  Nothing imports this module; it sits above emu.cli.commands.
"""
from __future__ import annotations

import inspect

import click

from emu.cli.commands import main

REGENERATE = ".venv/bin/python -m emu.cli.doc > docs/reference/cli.md"

HEADER = f"""# `emu` command reference

Generated from the click commands by `emu/cli/doc.py`; do not edit by hand. Regenerate with

```sh
{REGENERATE}
```

(`tests/unit/test_clidoc.py` fails when this page differs from what the generator prints.) A hand-written
overview of the commands, probe targets, JSON fields and exit codes is in [commands.md](commands.md).
"""


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, `|` escaped (also inside code spans, as GFM requires)."""
    return " ".join(text.split()).replace("|", "\\|")


def _help(cmd: click.Command) -> str:
    """The command's help as click prints it: dedented, `\\b` markers dropped, text after `\\f` left out."""
    text = inspect.cleandoc(cmd.help or "").split("\f", 1)[0]
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _command(cmd: click.Command, ctx: click.Context, depth: int) -> list[str]:
    path = ctx.command_path
    usage = " ".join([path, *cmd.collect_usage_pieces(ctx)])
    out = [f"{'#' * min(depth, 6)} `{path}`", "", "```text", f"Usage: {usage}", "```", ""]
    help_text = _help(cmd)
    if help_text:
        out += ["```text", help_text, "```", ""]
    rows = []
    help_option = cmd.get_help_option(ctx)
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if param is help_option and record is not None:
            # click caches a command's help option from the first context that asked for it (a test's own, maybe
            # without the `-h` the `emu` group's context_settings add): name it from this context, shortest first
            names = sorted(cmd.get_help_option_names(ctx), key=lambda n: (len(n), n))
            record = (", ".join(names), record[1])
        if record is not None:
            rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
    if rows:
        out += ["| option | help |", "|---|---|", *rows, ""]
    if isinstance(cmd, click.Group):
        names = cmd.list_commands(ctx)
        out += ["Commands:", ""]
        for name in names:
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            out.append(f"- `{path} {name}`: {_cell(sub.get_short_help_str(limit=10_000))}")
        out.append("")
        for name in names:
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            out += _command(sub, click.Context(sub, info_name=name, parent=ctx, **sub.context_settings), depth + 1)
    return out


def render(group: click.Command = main, name: str = "emu") -> str:
    """The reference page for GROUP (by default the `emu` entry point), as Markdown."""
    ctx = click.Context(group, info_name=name, **group.context_settings)  # as make_context() applies them
    return HEADER + "\n" + "\n".join(_command(group, ctx, 2)).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
