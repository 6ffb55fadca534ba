"""Errors a user can act on.  Bugs are ordinary exceptions and crash loudly."""
from __future__ import annotations

from dataclasses import dataclass


class EmuError(Exception):
    """A failure with a one-line message meant for the user (the CLI prints it without a traceback)."""

    exit_code = 1


class NotFound(EmuError):
    """The API server's 404 for an object asked for by name, as kubectl prints it: `Error from server (NotFound):
    services "x" not found` (`resource` as the server names it: plural, group-qualified outside the core group)."""

    def __init__(self, resource: str, name: str):
        self.resource, self.name = resource, name
        super().__init__(f'Error from server (NotFound): {resource} "{name}" not found')


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem, located the way a user finds it: file, YAML document, object and field."""

    file: str
    document: int | None  # 1-based index of the YAML document, None for file-level problems
    obj: str  # e.g. "Pod default/web-0"
    field: str  # e.g. "spec.containers[0].ports[1].containerPort"
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.document is not None:
            where += f" (document {self.document})"
        parts = [where]
        if self.obj:
            parts.append(self.obj)
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + f": {self.message}"


class ValidationError(EmuError):
    """Every problem found in a topology, one line each; nothing was built."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidName(EmuError):
    """A name given on the command line (a cluster name) that emu refuses before building any path from it."""

    exit_code = 2


class ClusterError(EmuError):
    """A cluster-level failure: unknown cluster, name in use, missing kernel feature, ..."""


class ApplyError(EmuError):
    """The kernel or a real tool refused a change the plan asked for."""
