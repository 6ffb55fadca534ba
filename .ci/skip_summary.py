"""Sum up the skips of every pytest session of a CI run and fail on a reason that is not allowed.

Each session writes skips-*.json into the directory EMU_SKIP_REPORT_DIR names (tests/conftest.py): one entry per
skip with its reason and its allowed kind ("kernel feature", "lane only"), or kind null when the reason is not
allowed (tests/conftest.py ALLOWED_SKIPS is the one list).  Usage: python .ci/skip_summary.py DIR [SESSIONS];
SESSIONS is how many sessions must have reported (a session that never wrote its file did not run our conftest).
Exit status 0, or 1 if a reason is not allowed or a session is missing.
"""
from __future__ import annotations

import json
import pathlib
import sys
from collections import Counter


def summarize(directory: str | pathlib.Path, sessions: int | None = None) -> tuple[list[str], int]:
    """(lines to print, exit status)."""
    files = sorted(pathlib.Path(directory).glob("skips-*.json"))
    skips = [s for f in files for s in json.loads(f.read_text())["skips"]]
    counts = Counter((s["kind"], s["reason"]) for s in skips)
    lines = [f"skips: {len(skips)} in {len(files)} pytest session(s)"]
    for (kind, reason), n in sorted(counts.items(), key=lambda kv: (kv[0][0] is not None, -kv[1], kv[0][1])):
        lines.append(f"{n:5d}  {kind or 'NOT ALLOWED'}: {reason}")
    bad = sum(n for (kind, _), n in counts.items() if kind is None)
    rc = 0
    if bad:
        lines.append(f"FAIL: {bad} skip(s) for a reason outside the allowed list (kernel feature, lane only)")
        rc = 1
    if sessions is not None and len(files) < sessions:
        lines.append(f"FAIL: {sessions} pytest session(s) should have reported their skips, {len(files)} did")
        rc = 1
    return lines, rc


def main(argv: list[str]) -> int:
    lines, rc = summarize(argv[0], int(argv[1]) if len(argv) > 1 else None)
    print("\n".join(lines))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
