"""docs/reference/cli.md is generated from the click commands (emu.cli.doc) and must be what the generator prints
today: a command, an option or a help text changed without regenerating the page fails here."""
from __future__ import annotations

import click

from emu.cli import doc as clidoc
from emu.cli.commands import main
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "reference" / "cli.md"


def test_the_committed_reference_is_what_the_generator_prints() -> None:
    committed = PAGE.read_text()
    assert committed == clidoc.render(), (
        f"docs/reference/cli.md is stale (the click commands changed): regenerate it with `{clidoc.REGENERATE}` "
        "and commit the diff")


def _paths(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = [path]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _paths(sub, path + (name,))
    return out


def test_every_command_and_option_is_on_the_page() -> None:
    """The generator leaves nothing out: each command of the click tree has its heading and each option its row."""
    page = clidoc.render()
    for path in _paths(main, ("emu",)):
        assert f"# `{' '.join(path)}`\n" in page, path
    for path in _paths(main, ("emu",))[1:]:
        cmd: click.Command = main
        for name in path[1:]:
            assert isinstance(cmd, click.Group)
            cmd = cmd.commands[name]
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert f"`{', '.join(p.opts)}" in page or any(f"`{o}" in page for o in p.opts), (path, p.opts)


def test_a_changed_option_changes_the_page() -> None:
    """The comparison above can fail: an option added to a command shows up in what the generator prints."""
    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def tool() -> None:
        """A tool."""

    @tool.command()
    @click.option("--port", type=int, help="Port | number.")
    @click.argument("target")
    def probe(port: int, target: str) -> None:
        """Probe TARGET.

        Second paragraph."""

    before = clidoc.render(tool, "tool")
    assert "### `tool probe`" in before and "Usage: tool probe [OPTIONS] TARGET" in before
    assert "| `--port INTEGER` | Port \\| number. |" in before
    assert "Probe TARGET.\n\nSecond paragraph." in before
    click.option("--count", type=int, help="How many.")(probe)
    after = clidoc.render(tool, "tool")
    assert "| `--count INTEGER` | How many. |" in after and after != before


def test_the_page_does_not_depend_on_what_asked_for_a_help_option_first() -> None:
    """click caches a command's help option from the first context that asks; one made without the `emu` group's
    context (as a test walking the tree does) has no `-h`, and the page must not change for it."""
    from emu.network.cni.cli import log

    before = clidoc.render()
    log._help_option = None  # as in a fresh process
    try:
        log.get_help_option(click.Context(log))  # a context without the group's help_option_names caches `--help`
        assert clidoc.render() == before and "| `-h, --help` |" in before
    finally:
        log._help_option = None  # leave click as a fresh process has it
