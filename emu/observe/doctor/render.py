"""The doctor's human output: findings grouped by check, problems first with their evidence indented, the ok
ones folded into one line (every one with `wide`), and a summary line."""
from __future__ import annotations

from emu.observe.doctor.findings import Finding, Report, Status

EVIDENCE_LINES = 12  # per finding, unless wide
OK_SUBJECTS = 6  # subjects named on the folded ok line
_WORD = {Status.FAIL: "FAIL", Status.WARN: "WARN", Status.SKIP: "skip", Status.OK: "ok"}
_ORDER = {Status.FAIL: 0, Status.WARN: 1, Status.SKIP: 2, Status.OK: 3}
_INDENT = " " * 10


def _finding(x: Finding, wide: bool) -> list[str]:
    lines = [f"  {_WORD[x.status]:<6}  {x.subject}: {x.message}"]
    if x.status in (Status.FAIL, Status.WARN) or wide:
        shown = x.evidence if wide else x.evidence[:EVIDENCE_LINES]
        lines += [_INDENT + e for e in shown]
        if len(x.evidence) > len(shown):
            lines.append(_INDENT + f"... {len(x.evidence) - len(shown)} more lines (-o wide or -o json shows them)")
    return lines


def text(report: Report, wide: bool = False) -> str:
    c = report.counts()
    lines = [f"emu doctor: cluster {report.cluster}, {len(report.checks)} checks in {report.seconds:.1f}s"]
    for check in report.checks:
        found = sorted(report.by_check(check), key=lambda x: _ORDER[x.status])
        lines += ["", f"{check}: {report.titles.get(check, '')}".rstrip(": ")]
        oks = [x for x in found if x.status is Status.OK]
        for x in found:
            if x.status is not Status.OK or wide:
                lines += _finding(x, wide)
        if oks and not wide:
            if len(oks) == 1:
                lines.append(f"  {'ok':<6}  {oks[0].subject}: {oks[0].message}")
            else:
                names = ", ".join(x.subject for x in oks[:OK_SUBJECTS])
                more = f" and {len(oks) - OK_SUBJECTS} more" if len(oks) > OK_SUBJECTS else ""
                lines.append(f"  {'ok':<6}  {names}{more}")
    verdict = "no check failed" if report.ok else "exit status 1"
    lines += ["", f"summary: {c['fail']} failed, {c['warn']} warnings, {c['ok']} ok, {c['skip']} skipped "
                  f"({verdict})"]
    return "\n".join(lines)
