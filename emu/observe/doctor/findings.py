"""What a check reports: a Finding (check, status, subject, message, evidence lines) and the Report of a run."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"  # worth a look; the dataplane still does its job
    FAIL = "fail"  # the dataplane differs from what it must be, or traffic that must flow does not
    SKIP = "skip"  # the check does not apply (the reason is the message)


@dataclass(frozen=True, slots=True)
class Finding:
    """One fact a check established about one subject (`node-1 -> node-2`, `default/web`, `node/node-1`).
    `evidence` holds the exact lines it rests on: the route that is missing, expected and observed MTUs, the
    rule text, the probe results."""

    check: str
    status: Status
    subject: str
    message: str
    evidence: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status.value, "subject": self.subject,
                "message": self.message, "evidence": list(self.evidence)}


def ok(check: str, subject: str, message: str, evidence: tuple[str, ...] | list[str] = ()) -> Finding:
    return Finding(check, Status.OK, subject, message, tuple(evidence))


def warn(check: str, subject: str, message: str, evidence: tuple[str, ...] | list[str] = ()) -> Finding:
    return Finding(check, Status.WARN, subject, message, tuple(evidence))


def fail(check: str, subject: str, message: str, evidence: tuple[str, ...] | list[str] = ()) -> Finding:
    return Finding(check, Status.FAIL, subject, message, tuple(evidence))


def skip(check: str, subject: str, message: str, evidence: tuple[str, ...] | list[str] = ()) -> Finding:
    return Finding(check, Status.SKIP, subject, message, tuple(evidence))


@dataclass(frozen=True, slots=True)
class Report:
    """Every finding of one run, in check order."""

    cluster: str
    checks: tuple[str, ...]
    findings: tuple[Finding, ...]
    seconds: float = 0.0
    titles: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        c = Counter(f.status for f in self.findings)
        return {s.value: c.get(s, 0) for s in Status}

    @property
    def ok(self) -> bool:
        """False when any check failed (the exit status of `emu doctor`)."""
        return not any(f.status is Status.FAIL for f in self.findings)

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "ok": self.ok, "checks": list(self.checks), "summary": self.counts(),
                "seconds": round(self.seconds, 3), "findings": [f.to_json() for f in self.findings]}
