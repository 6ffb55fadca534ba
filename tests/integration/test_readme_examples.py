"""Every ```console example in README.md and in docs/**/*.md (every page, at any depth) is run as written and its output
compared, so the documentation cannot drift from what emu prints.

The format: a line starting with `# emu ` is a command (run as root, as the README's examples are); the lines after it,
up to the next command, are what it prints on stdout. `...` stands for any text within a line, and a line that is
only `...` for any number of lines (none included). What is compared:
- stdout only: progress lines and warnings go to stderr, which the examples do not show;
- after normalising what truly varies from run to run, identically on both sides: durations (`in 0.23s`,
  `rtt 0.30 ms`, an AGE column's `0s`) become `<duration>`, and runs of spaces become one space (a table's padding
  follows the width of those durations);
- everything else exactly, line by line; exit statuses are not compared (the console shows none), but they are in
  the failure message.

Commands run from the repository root (the examples' paths are relative to it) with a state directory of their own
(EMU_STATE_DIR), so `emu down --all` in `finally` removes exactly the clusters an example brought up, also when it
fails. An example needs the cluster names it prints: a namespace of that name held by someone else makes it fail
with that reason. Examples that need a kernel feature this machine lacks (IPVS, ...) would carry the kernel marker;
none does today.
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
EMU = str(pathlib.Path(sys.executable).parent / "emu")

# a duration as emu prints one: `0.23s`, `1.5 ms`, `12ms`, an AGE such as `0s`, `3m5s`, `2h`
DURATION = re.compile(r"(?<![\w.])(\d+(\.\d+)?) ?(ms|s)\b|(?<![\w.])\d+[mhd](\d+[smh])?\b")


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    path: pathlib.Path
    line: int  # of the opening fence, 1-based
    steps: tuple[Step, ...]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse(path: pathlib.Path) -> list[Example]:
    """The ```console blocks of a Markdown file, as commands with their expected output."""
    out: list[Example] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        start, i = i + 1, i + 1
        steps: list[Step] = []
        while i < len(lines) and lines[i].strip() != "```":
            if lines[i].startswith("# emu "):  # output may itself start with `#` (a table's `#` column)
                steps.append(Step(lines[i][2:], ()))
            else:
                assert steps, f"{path}:{i + 1}: output before the first command"
                steps[-1] = Step(steps[-1].command, steps[-1].expected + (lines[i],))
            i += 1
        out.append(Example(path, start, tuple(steps)))
    return out


def normalise(line: str) -> str:
    return re.sub(r"\s+", " ", DURATION.sub("<duration>", line)).strip()


def _line_matches(pattern: str, line: str) -> bool:
    rx = ".*".join(re.escape(normalise(part)) for part in pattern.split("..."))
    return re.fullmatch(rx, normalise(line)) is not None


def matches(expected: tuple[str, ...] | list[str], actual: list[str]) -> bool:
    """Whether ACTUAL lines fit the EXPECTED pattern lines (`...` alone: any lines; within a line: any text)."""
    exp, act = list(expected), list(actual)
    if not exp:
        return not act
    if exp[0].strip() == "...":
        return any(matches(exp[1:], act[k:]) for k in range(len(act) + 1))
    return bool(act) and _line_matches(exp[0], act[0]) and matches(exp[1:], act[1:])


EXAMPLES = [e for p in DOCS for e in parse(p)]


def test_the_docs_have_console_examples() -> None:
    """The harness found the README's first session (an empty list would make the test below run nothing)."""
    assert [e.id for e in EXAMPLES if e.path.name == "README.md"], "no ```console block found in README.md"
    first = next(e for e in EXAMPLES if e.path.name == "README.md")
    assert first.steps[0].command == "emu up topologies/flannel-vxlan.yaml"


@pytest.mark.parametrize(("expected", "actual", "ok"), [
    (["cluster x is up: 3 nodes, in 0.4s"], ["cluster x is up: 3 nodes, in 0.23s"], True),
    (["cluster x is up: 3 nodes, in 0.4s"], ["cluster x is up: 4 nodes, in 0.23s"], False),
    (["web-0   1/1   0s    10.244.0.2"], ["web-0   1/1   12s   10.244.0.2"], True),
    (["web-0   1/1   0s    10.244.0.2"], ["web-0   1/1   12s   10.244.0.3"], False),
    (["rtt 0.30 ms"], ["rtt 1.2 ms"], True),
    (["... frag-needed; mtu 1450"], ["a -> b icmp size=1423 DF: frag-needed; mtu 1450"], True),
    (["... frag-needed; mtu 1450"], ["a -> b: frag-needed; mtu 1400"], False),
    (["veth...   ns"], ["veth30dcefee   ns"], True),
    (["a", "...", "d"], ["a", "b", "c", "d"], True),
    (["a", "...", "d"], ["a", "d"], True),
    (["a", "d"], ["a", "b", "d"], False),
    (["a"], ["a", "b"], False),
    ([], ["cluster x removed"], False),
])
def test_the_matcher(expected, actual, ok) -> None:  # type: ignore[no-untyped-def]
    assert matches(expected, actual) is ok


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_console_example(example: Example) -> None:
    with tempfile.TemporaryDirectory(prefix="emu-readme-") as state:
        env = {**os.environ, "EMU_STATE_DIR": state}
        try:
            for step in example.steps:
                argv = shlex.split(step.command)
                assert argv[0] == "emu", f"{example.id}: only emu commands are run: {step.command}"
                r = subprocess.run([EMU, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                got = r.stdout.splitlines()
                assert matches(step.expected, got), (
                    f"{example.id}: `{step.command}` (exit {r.returncode}) printed\n"
                    + "\n".join(f"    {x}" for x in got)
                    + "\n  where the example shows\n" + "\n".join(f"    {x}" for x in step.expected)
                    + (f"\n  stderr:\n    {r.stderr.strip()}" if r.stderr.strip() else ""))
        finally:
            subprocess.run([EMU, "down", "--all"], env=env, capture_output=True, text=True, timeout=120)
