"""Pure text for the tools: what to feed `iptables-restore --noflush` and `ipset restore`, and how to read back
what a node holds (`iptables-save -t filter`, `ipset list -n`).

With --noflush, a `:CHAIN - [0:0]` line flushes that user chain (or creates it) and leaves every other chain alone,
so one transaction replaces kube-router's chains, writes the new sync version's chains, flushes the previous
version's and deletes them (`-X`), atomically: the kernel never sees half a ruleset.
"""
from __future__ import annotations

from dataclasses import dataclass

from emu.addons.netpol import names
from emu.addons.netpol.rules import IPSet, NodeRules

LAYER = "plan"


@dataclass(frozen=True, slots=True)
class Current:
    """What a node's filter table and ipsets hold now, as far as kube-router's objects go."""

    chains: frozenset[str]  # chains with kube-router's prefixes
    jumps: tuple[str, ...]  # the built-in chains' jumps to KUBE-ROUTER-*, as iptables-save prints them
    sets: frozenset[str]  # KUBE-SRC-* / KUBE-DST-* sets

    @property
    def active(self) -> bool:
        return bool(self.chains or self.jumps or self.sets)


def parse_save(text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """(owned chains, jump rules) from `iptables-save -t filter`."""
    chains = frozenset(line[1:].split()[0] for line in text.splitlines()
                       if line.startswith(":") and line[1:].startswith(names.OWNED_PREFIXES))
    jumps = tuple(line for line in text.splitlines()
                  if line.startswith(("-A INPUT ", "-A FORWARD ", "-A OUTPUT ")) and " -j KUBE-ROUTER-" in line)
    return chains, jumps


def parse_sets(text: str) -> frozenset[str]:
    """Set names from `ipset list -n` that kube-router's policy sets use."""
    return frozenset(n.strip() for n in text.splitlines()
                     if n.strip().startswith((names.SRC_SET_PREFIX, names.DST_SET_PREFIX)))


def iptables_text(nr: NodeRules, cur: Current) -> str:
    """One transaction: declare (flush) every chain of this sync and of the previous one, add the built-in jumps
    that are missing (first at position 1, as ensureTopLevelChains puts them), write the rules, delete the previous
    sync's chains."""
    stale = sorted(cur.chains - set(nr.chains))
    have = {j.split(" -j ")[-1] for j in cur.jumps}
    lines = ["*filter"]
    lines += [f":{c} - [0:0]" for c in [*nr.chains, *stale]]
    lines += [j for j in nr.jumps if j.split(" -j ")[-1] not in have]
    lines += nr.rules
    lines += [f"-X {c}" for c in stale]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def cleanup_text(cur: Current) -> str:
    """Remove everything kube-router installed: the jumps, then its chains (flushed, then deleted)."""
    chains = sorted(cur.chains)
    lines = ["*filter", *[f":{c} - [0:0]" for c in chains], *["-D" + j[2:] for j in cur.jumps],
             *[f"-X {c}" for c in chains], "COMMIT"]
    return "\n".join(lines) + "\n"


def ipset_text(sets: dict[str, IPSet]) -> str:
    """utils.BuildIPSetRestore: per set type one TMP set; fill it, create the real set (-exist makes that a no-op
    when it exists), swap, flush; destroy the TMP sets last.  Sets are refreshed atomically."""
    out: list[str] = []
    tmps: dict[str, str] = {}
    for name in sorted(sets):
        s = sets[name]
        tmp = tmps.get(s.options)
        if tmp is None:
            tmp = tmps[s.options] = names.tmp_set(s.options)
            out += [f"create {tmp} {s.options}", f"flush {tmp}"]
        out += [f"add {tmp} {_entry(e)}" for e in s.entries]
        out += [f"create {name} {s.options}", f"swap {tmp} {name}", f"flush {tmp}"]
    out += [f"destroy {t}" for t in sorted(tmps.values())]
    return "\n".join(out) + "\n" if out else ""


def _entry(e: str) -> str:
    """An entry with kube-router's options: `IP timeout 0`, or `CIDR timeout 0 nomatch` for an except."""
    addr, _, flag = e.partition(" ")
    return f"{addr} timeout 0" + (f" {flag}" if flag else "")


def destroy_text(stale: set[str] | frozenset[str]) -> str:
    return "".join(f"destroy {n}\n" for n in sorted(stale))
