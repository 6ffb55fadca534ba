"""The pieces every `kubectl describe` text shares (kubectl/pkg/describe/describe.go): ages, timestamps, label
selectors, the Labels / Annotations / Events sections, and the per-object facts a describer looks up (its Events,
its creation time).  Pure."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from emu.cluster.events import Event
from emu.report.output import human_duration
from emu.addons.netpol.model import LabelSelector
from emu.report.tabwriter import Writer

if TYPE_CHECKING:
    from emu.cluster.lifecycle import Cluster

T = TypeVar("T")
MAX_ANNOTATION = 140  # describe.go maxAnnotationLen
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"  # describe.go skips it


def rfc1123z(ts: float) -> str:
    """time.RFC1123Z in local time ("Mon, 02 Jan 2006 15:04:05 -0700"): Start Time, CreationTimestamp."""
    return time.strftime("%a, %d %b %Y %H:%M:%S %z", time.localtime(int(ts)))


def go_time(ts: float) -> str:
    """Go's time.Time.String() of a whole-second API timestamp in local time ("2006-01-02 15:04:05 -0700 MST"):
    a NetworkPolicy's "Created on"."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(int(ts)))


def format_labels(labels: Mapping[str, str] | None) -> str:
    """labels.FormatLabels: sorted k=v pairs, "<none>" when empty."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "<none>"


def format_selector(sel: LabelSelector) -> str:
    """metav1.FormatLabelSelector: requirements sorted by key (`k=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`);
    the empty selector is "<none>"."""
    reqs = [(k, f"{k}={v}") for k, v in sel.match_labels] + [(r.key, str(r)) for r in sel.match_expressions]
    return ",".join(t for _, t in sorted(reqs, key=lambda r: r[0])) or "<none>"


def write_labels(w: Writer, title: str, labels: Mapping[str, str]) -> None:
    """printLabelsMultiline: one sorted k=v a line, the continuation lines in the value column."""
    w.write(0, f"{title}:\t")
    if not labels:
        w.write(0, "<none>\n")
    for i, k in enumerate(sorted(labels)):
        w.write(0, ("\t" if i else "") + f"{k}={labels[k]}\n")


def write_annotations(w: Writer, annotations: Mapping[str, str]) -> None:
    """printAnnotationsMultiline: `key: value`, or for a long or multi-line value the key alone and each line of
    the value indented two spaces (cut at 138 characters with "...")."""
    w.write(0, "Annotations:\t")
    keys = sorted(k for k in annotations if k != LAST_APPLIED)
    if not keys:
        w.write(0, "<none>\n")
    for i, k in enumerate(keys):
        if i:
            w.write(0, "\t")
        v = annotations[k].removesuffix("\n")
        if len(v) + len(k) + 2 <= MAX_ANNOTATION and "\n" not in v:
            w.write(0, f"{k}: {v}\n")
            continue
        w.write(0, f"{k}:\n")
        cut = MAX_ANNOTATION - 2
        for line in v.split("\n"):
            w.write(0, f"\t  {line[:cut] + '...' if len(line) > cut else line}\n")


@dataclass(frozen=True, slots=True)
class Series:
    """Identical events folded into one Event with a count, as client-go's EventCorrelator records them."""

    type: str
    reason: str
    source: str
    message: str
    count: int
    first: float
    last: float


def series(events: Iterable[Event]) -> list[Series]:
    """Folded by (type, reason, source, message), sorted by last occurrence (event.SortableEvents)."""
    by: dict[tuple[str, str, str, str], list[float]] = {}
    for e in events:
        by.setdefault((e.type, e.reason, e.source, e.message), []).append(e.timestamp)
    return sorted((Series(*k, len(ts), min(ts), max(ts)) for k, ts in by.items()), key=lambda s: s.last)


def write_events(w: Writer, events: Sequence[Event] | None, now: float) -> None:
    """DescribeEvents: nothing when Events are not shown, "Events: <none>", or the table Type Reason Age From
    Message, flushed on its own; a folded event's age is "LAST (xN over FIRST)"."""
    if events is None:
        return
    if not events:
        w.write(0, "Events:\t<none>\n")
        return
    w.flush()
    w.write(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n")
    w.write(1, "----\t------\t----\t----\t-------\n")
    for s in series(events):
        age = human_duration(now - s.first)
        if s.count > 1:
            age = f"{human_duration(now - s.last)} (x{s.count} over {age})"
        w.write(1, f"{s.type}\t{s.reason}\t{age}\t{s.source}\t{s.message.strip()}\n")


class Context:
    """One describe call: the cluster, its recorded Events by involved object, the time, whether Events are shown,
    and what the describers computed once for several objects (`memo`)."""

    def __init__(self, cl: Cluster, events: Sequence[Event], now: float, show_events: bool):
        self.cl, self.now, self.show_events = cl, now, show_events
        self._by: dict[tuple[str, str, str], list[Event]] = {}
        for e in events:
            self._by.setdefault((e.kind, "" if e.kind == "Node" else e.namespace, e.name), []).append(e)
        self._up_batch = min((e.timestamp for e in events), default=None)  # what `emu up` recorded, at one time
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, make: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = make()
        value: T = self._memo[key]
        return value

    def about(self, kind: str, namespace: str, name: str) -> list[Event]:
        """The events whose involvedObject is this object (a Node's carry no namespace)."""
        return self._by.get((kind, "" if kind == "Node" else namespace, name), [])

    def shown(self, kind: str, namespace: str, name: str) -> list[Event] | None:
        """The events the describer prints, None when Events are not shown."""
        if not self.show_events:
            return None
        evs = self.about(kind, namespace, name)
        if kind == "Pod":  # a pod deleted and made again has a new UID: kubectl shows only this one's events
            since = self.created(kind, namespace, name)
            evs = [e for e in evs if e.timestamp >= since]
        return evs

    def created(self, kind: str, namespace: str, name: str) -> float:
        """metadata.creationTimestamp as near as emu knows it (the record keeps no time per object): when the
        cluster came up, unless the object's own events say it came later (a pod's last Scheduled event, another
        object's first event, recorded after `emu up`'s batch)."""
        evs = self.about(kind, namespace, name)
        if kind == "Pod":
            ts = max((e.timestamp for e in evs if e.reason == "Scheduled"), default=None)
        elif kind == "Node":
            ts = None  # only `emu up` makes nodes
        else:
            ts = min((e.timestamp for e in evs), default=None)
        if ts is None or self._up_batch is None or ts <= self._up_batch:
            return self.cl.record.created
        return ts
