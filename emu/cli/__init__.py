"""The command line.  `emu.cli:main` is the `emu` entry point."""
from emu.cli.commands import main

__all__ = ["main"]
