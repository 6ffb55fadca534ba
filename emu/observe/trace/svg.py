"""The path drawn across the nodes with graphviz: one box per namespace (clustered as the cluster is: pods inside
their node), one point per interface, numbered arrows for the request (blue), the reply (green) and ICMP errors
(red).  `dot -Tsvg` renders it (Debian package graphviz)."""
from __future__ import annotations

import shutil
import subprocess
from typing import Any

from emu.errors import EmuError

COLORS = {"request": "#1f5fbf", "reply": "#2e8b3a", "icmp-error": "#c62828"}
PREFIX = {"request": "", "reply": "r", "icmp-error": "e"}  # edge labels: 3, r3 (reply), e3 (ICMP error)


def _id(*parts: str) -> str:
    return '"' + "|".join(parts).replace('"', "'") + '"'


def dot(res: dict[str, Any]) -> str:
    """The graphviz source (pure)."""
    paths = [p for p in [res.get("request"), res.get("reply")] if p] + [e["path"] for e in res.get("icmp_errors", [])]
    ifaces: dict[str, dict[str, None]] = {}
    for p in paths:
        for h in p["hops"]:
            ifaces.setdefault(h["where"], {})[h["iface"]] = None
    lines = ["digraph trace {", "  rankdir=LR; compound=true; fontname=Helvetica;",
             "  node [shape=box, style=rounded, fontname=Helvetica, fontsize=10];",
             "  edge [fontname=Helvetica, fontsize=9];",
             f'  label="{res["from"]} -> {res["to"]} ({res["to_ip"]}) {res["proto"]}: {res["verdict"]}"; labelloc=t;']
    for i, (where, names) in enumerate(ifaces.items()):
        lines.append(f'  subgraph "cluster_{i}" {{ label="{where}"; style=rounded; color="#888888";')
        for name in names:
            lines.append(f'    {_id(where, name)} [label="{name}"];')
        lines.append("  }")
    for p in paths:
        color = COLORS.get(p["role"], "#555555")
        hops = p["hops"]
        for a, b in zip(hops, hops[1:]):
            if (a["where"], a["iface"]) == (b["where"], b["iface"]):
                continue
            label = f"{PREFIX.get(p['role'], '')}{b['n']}"
            if b.get("outer") and not a.get("outer"):
                label += " vxlan"
            lines.append(f'  {_id(a["where"], a["iface"])} -> {_id(b["where"], b["iface"])} '
                         f'[color="{color}", fontcolor="{color}", label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(path: str, res: dict[str, Any]) -> str:
    if shutil.which("dot") is None:
        raise EmuError("--svg needs graphviz's dot (apt-get install graphviz)")
    r = subprocess.run(["dot", "-Tsvg", "-o", path], input=dot(res), text=True, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise EmuError(f"dot failed: {r.stderr.strip()[:500]}")
    return path
