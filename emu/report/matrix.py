"""`emu matrix` as text: every pod to every pod, '.' answered and 'X' failed; once the cluster has policies, the
policy engine's expected table beside the observed one (emu.addons.netpol.explain)."""
from __future__ import annotations

from typing import Any

from emu.addons.netpol import explain as netpol_explain
from emu.report import output as report


def matrix_text(res: dict[str, Any]) -> str:
    """The text of a matrix result (emu.observe.probing.matrix, or `emu matrix -o json` parsed)."""
    note = f"\n{res['note']}" if res.get("note") else ""
    if res.get("policies"):
        return netpol_explain.matrix_text(res) + note
    pods = res["pods"]
    rows = [[f"{i}", p] + ["." if res["observed"][p][q] else "X" for q in pods] for i, p in enumerate(pods, 1)]
    grid = report.table(["#", "FROM \\ TO"] + [str(i) for i in range(1, len(pods) + 1)], rows)
    return (f"{res['proto']}/{res['port']}: '.' answered, 'X' failed\n{grid}\n"
            f"{res['probes']} probes, {res['failures']} failures, {res['seconds']:.2f}s{note}")
