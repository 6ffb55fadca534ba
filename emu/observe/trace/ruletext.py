"""The text of the rules a trace names: nftables rules by handle (`nft -a list table`), and for tables that
iptables-nft manages the same rule as `iptables-save` prints it (its Nth rule in a chain is the Nth `-A CHAIN` line).

Trace events carry only table, chain and rule handle; the text is read once per node after the probe, for the
tables that appear in its events.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from emu.apply import tools

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
_HANDLE = re.compile(r"^(?P<text>.*?)\s*# handle (?P<handle>\d+)$")


@dataclass(frozen=True, slots=True)
class Rule:
    text: str  # nft syntax, as `nft list` prints it (counters removed)
    position: int  # 0-based index in its chain
    iptables: str | None = None  # `-A CHAIN ...` for an iptables-nft table


_COUNTER = re.compile(r"\s*counter packets \d+ bytes \d+")


def parse_nft_listing(text: str) -> dict[tuple[str, str, str, int], Rule]:
    """(family, table, chain, handle) -> rule, from `nft -a list ...` output (braces are counted, so sets and maps
    printed over several lines are skipped)."""
    out: dict[tuple[str, str, str, int], Rule] = {}
    family = table = chain = None
    position = depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if depth == 0 and line.startswith("table "):
            parts = line.split()
            family, table = (parts[1], parts[2]) if len(parts) > 2 and parts[2] != "{" else ("ip", parts[1])
        elif depth == 1 and line.startswith("chain "):
            chain, position = line.split()[1], 0
        elif depth == 2 and chain and family and table and (m := _HANDLE.match(line)):
            out[(family, table, chain, int(m.group("handle")))] = Rule(_COUNTER.sub("", m.group("text")).strip(),
                                                                       position)
            position += 1
        depth += line.count("{") - line.count("}")
        if depth <= 1:
            chain = None
    return out


def parse_iptables_save(text: str) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> its `-A` lines in order, from iptables-save output."""
    out: dict[tuple[str, str], list[str]] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A ") and table:
            chain = line.split()[1]
            out.setdefault((table, chain), []).append(line)
    return out


def _listing(ns: str, argv: list[str]) -> str:
    """The listing a tool prints, or nothing when it fails (the table went away)."""
    return tools.output(ns, argv, timeout=30) or ""


def lookup(ns: str, tables: set[tuple[str, str]], iptables_save: str | None) -> dict[tuple[str, str, str, int], Rule]:
    """The rules of `tables` ((family, name) pairs) in namespace `ns`; with `iptables_save` (the backend's
    iptables-save binary, e.g. iptables-nft-save) the iptables form is added for iptables-managed tables."""
    rules: dict[tuple[str, str, str, int], Rule] = {}
    for family, name in sorted(tables):
        rules.update(parse_nft_listing(_listing(ns, ["nft", "-a", "list", "table", family, name])))
    ipt_tables = {name for family, name in tables if family == "ip" and name in IPTABLES_TABLES}
    if iptables_save and ipt_tables:
        saved: dict[tuple[str, str], list[str]] = {}
        for t in sorted(ipt_tables):
            saved.update(parse_iptables_save(_listing(ns, [iptables_save, "-t", t])))
        for key, rule in list(rules.items()):
            family, table, chain, _handle = key
            lines = saved.get((table, chain))
            if family == "ip" and lines and rule.position < len(lines):
                rules[key] = Rule(rule.text, rule.position, lines[rule.position])
    return rules
