"""Rendering the policy debugger: `emu explain FROM TO` (a Verdict as JSON and as text) and the expected-versus-
observed matrix (a truth table side by side, every disagreement marked).  Pure: the callers probe and decide."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emu.addons.netpol.engine import Side, Verdict

LAYER = "observe"

CORNER = "FROM \\ TO"


def side_dict(s: Side) -> dict[str, Any]:
    return {"direction": s.direction.value, "pod": s.pod, "policies": list(s.policies), "allowed": s.allowed,
            "reason": s.reason, "allowed_by": [str(m) for m in s.matches], "not_matching": list(s.misses)}


def verdict_dict(v: Verdict, dataplane: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out = {"from": v.src, "to": v.dst, "port": v.port, "protocol": v.protocol.value, "allowed": v.allowed,
           "reason": v.reason, "egress": side_dict(v.egress), "ingress": side_dict(v.ingress)}
    if dataplane:
        out["dataplane"] = dict(dataplane)
    return out


def explain_text(d: Mapping[str, Any]) -> str:
    head = f"{d['from']} -> {d['to']} {d['protocol'].lower()}/{d['port']}: {'ALLOWED' if d['allowed'] else 'DENIED'}"
    lines = [head]
    for key, role in (("egress", "source:     "), ("ingress", "destination:")):
        s = d[key]
        lines.append(f"  {role} {s['reason']}")
        for m in s["allowed_by"]:
            lines.append(f"    allowed by {m}")
        if not s["allowed"]:
            lines.extend(f"    {why}" for why in s["not_matching"])
    for where, text in (d.get("dataplane") or {}).items():
        lines.append(f"  dataplane, {where}: {text}")
    return "\n".join(lines)


def disagreements(pods: list[str], observed: Mapping[str, Mapping[str, bool]],
                  expected: Mapping[str, Mapping[str, bool]], verdicts: Mapping[str, Mapping[str, str]]
                  ) -> list[dict[str, Any]]:
    """Every pair where the dataplane did not do what the engine expects, in matrix order."""
    return [{"from": a, "to": b, "expected": expected[a][b], "observed": observed[a][b], "verdict": verdicts[a][b]}
            for a in pods for b in pods if expected[a][b] != observed[a][b]]


def matrix_text(res: Mapping[str, Any]) -> str:
    """Expected and observed truth tables side by side; '!' marks an observed cell that disagrees."""
    pods = res["pods"]
    width = max([len(CORNER)] + [len(p) for p in pods])
    grid = len(pods) * 3 - 1  # one cell: a symbol and a marker, then a space

    def row(cells: list[str]) -> str:
        return " ".join(cells)

    nums = row([f"{i:<2}" for i in range(1, len(pods) + 1)])
    lines = [f"{res['proto']}/{res['port']}: '.' allowed, 'X' denied; '!' the dataplane differs from the policies",
             f"{'':<3} {'':<{width}}   {'EXPECTED':<{grid}}   OBSERVED",
             f"{'#':<3} {CORNER:<{width}}   {nums}   {nums}".rstrip()]
    for i, a in enumerate(pods, 1):
        exp = row([("." if res["expected"][a][b] else "X") + " " for b in pods])
        obs = row([("." if res["observed"][a][b] else "X") +
                   ("!" if res["observed"][a][b] != res["expected"][a][b] else " ") for b in pods])
        lines.append(f"{i:<3} {a:<{width}}   {exp}  {obs}".rstrip())
    for d in res["disagreements"]:
        lines.append(f"! {d['from']} -> {d['to']}: expected {'allowed' if d['expected'] else 'denied'}, "
                     f"observed {d['verdict']}")
    lines.append(f"{res['probes']} probes, {res['failures']} failures, {len(res['disagreements'])} disagreements, "
                 f"{res['seconds']:.2f}s")
    return "\n".join(lines)
