"""Check `kube-proxy`: each node's live kube-proxy rules against the rules its proxier writes for the model.

The desired ruleset is the node's plan objects that `emu up --dry-run` prints (emu.addons.kubeproxy.desired: what
the sync writes on a first sync), applied by `gather` into a scratch namespace by the drivers a sync uses and read
back with the same tool (so both sides are printed by one `iptables-save` or `nft`, whatever their version).  This
module only parses and compares the two readings, through one function (`compare`: the proxier's listing format
picks the parser): pure.  Counters, chain and element order are noise and are normalised away; a rule's order
inside its chain matters to the kernel, so a changed order is a warning.

iptables mode: only kube-proxy's chains are compared (KUBE-SERVICES, KUBE-SVC-*, ... the canaries); in the
built-in chains only the rules that jump to one of them (flannel's and kube-router's rules live there too).
nftables mode: the whole `table ip kube-proxy`; the contents of dynamic sets (ClientIP affinity) are runtime
state and are ignored."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from emu.addons.kubeproxy import iptables as ipt
from emu.observe.doctor import findings as f
from emu.observe.doctor.findings import Finding

CHECK = "kube-proxy"
BUILTIN = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
FIXED_CHAINS = {ipt.KUBE_SERVICES, ipt.KUBE_EXTERNAL_SERVICES, ipt.KUBE_NODEPORTS, ipt.KUBE_POSTROUTING,
                ipt.KUBE_MARK_MASQ, ipt.KUBE_FORWARD, ipt.KUBE_PROXY_FIREWALL, ipt.KUBE_PROXY_CANARY,
                ipt.KUBE_FIREWALL}
_COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")
_NFT_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


@dataclass
class Diff:
    """What the node lacks (`missing`), holds beyond the model (`unexpected`), and holds in another order."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    chains: int = 0
    rules: int = 0

    @property
    def in_sync(self) -> bool:
        return not self.missing and not self.unexpected


def _multiset(kind: str, where: str, want: list[str], got: list[str], d: Diff) -> None:
    """Rules (or elements) as multisets: each one the node lacks or has in excess, once per copy."""
    w, g = Counter(want), Counter(got)
    for item in want:
        if g[item] < w[item]:
            d.missing.append(f"missing {kind} {where}: {item}")
            g[item] += 1  # report each missing copy once
    g = Counter(got)
    for item in got:
        if w[item] < g[item]:
            d.unexpected.append(f"unexpected {kind} {where}: {item}")
            w[item] += 1


# --- iptables ---------------------------------------------------------------------------------------------------


def parse_iptables_save(text: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save output as table -> chain -> rule lines (chains declared without rules are kept, empty);
    `-c` counters and repeated blanks are dropped."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = _COUNTERS.sub("", raw.strip())
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            current.setdefault(line.split()[1], []).append(" ".join(line.split()))
    return tables


def _target(rule: str) -> str | None:
    words = rule.split()
    for i, w in enumerate(words[:-1]):
        if w in ("-j", "--jump", "-g", "--goto"):
            return words[i + 1]
    return None


def _owned(chain: str) -> bool:
    return chain in FIXED_CHAINS or ipt.is_service_chain_name(chain)


def diff_iptables(want_text: str, got_text: str) -> Diff:
    """Compare kube-proxy's chains of two iptables-save outputs (the desired one rendered alone)."""
    want, got = parse_iptables_save(want_text), parse_iptables_save(got_text)
    d = Diff()
    for table in sorted(set(want) | set(got)):
        w, g = want.get(table, {}), got.get(table, {})
        ours = {c for c in w if c not in BUILTIN} | {c for c in g if _owned(c)}
        for chain in sorted(ours):
            if chain not in g:
                d.missing.append(f"missing chain {table} {chain}" +
                                 (f" ({len(w[chain])} rules)" if w.get(chain) else ""))
                d.missing += [f"missing rule {table}: {r}" for r in w.get(chain, [])]
                continue
            if chain not in w:
                d.unexpected.append(f"unexpected chain {table} {chain}" +
                                    (f" ({len(g[chain])} rules)" if g[chain] else ""))
                d.unexpected += [f"unexpected rule {table}: {r}" for r in g[chain]]
                continue
            d.chains += 1
            d.rules += len(w[chain])
            before = len(d.missing) + len(d.unexpected)
            _multiset("rule", table, w[chain], g[chain], d)
            if len(d.missing) + len(d.unexpected) == before and w[chain] != g[chain]:
                d.reordered.append(f"rule order differs in {table} {chain}")
        for chain in sorted(BUILTIN & (set(w) | set(g))):
            jumps_w = [r for r in w.get(chain, []) if _target(r) in ours]
            jumps_g = [r for r in g.get(chain, []) if _target(r) in ours]
            d.rules += len(jumps_w)
            _multiset("rule", table, jumps_w, jumps_g, d)
    return d


# --- nftables ---------------------------------------------------------------------------------------------------


@dataclass
class NftObject:
    """A chain, set or map of `nft list table` output: its header lines (type, hook, flags, comment) and its
    rules (a chain: ordered) or elements (a set or map: unordered)."""

    kind: str
    name: str
    header: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)

    @property
    def dynamic(self) -> bool:
        return any(h.startswith("flags ") and "dynamic" in h for h in self.header)


def _balance(s: str) -> int:
    return s.count("{") - s.count("}")


def _split_elements(body: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    out.append(cur)
    return [" ".join(x.split()) for x in out if x.strip()]


def parse_nft(text: str) -> dict[tuple[str, str], NftObject]:
    """`nft list table ...` as (kind, name) -> object; the table's own lines are ("table", "")."""
    objs: dict[tuple[str, str], NftObject] = {}
    table = NftObject("table", "")
    cur: NftObject | None = None
    lines = [line.strip() for line in text.splitlines()]
    i = 0
    while i < len(lines):
        s = lines[i]
        i += 1
        if not s or s.startswith("table ") or (cur is None and s == "}"):
            continue
        while _balance(s) > (1 if s.endswith("{") and cur is None else 0) and i < len(lines):
            s += " " + lines[i]  # an element list or anonymous set printed over several lines
            i += 1
        s = _NFT_COUNTER.sub("counter", " ".join(s.split()))
        if cur is None:
            m = re.match(r'^(chain|set|map|flowtable|counter|quota|ct helper) ("?)(.+?)\2 \{$', s)
            if m:
                cur = NftObject(m.group(1), m.group(3))
            else:
                table.header.append(s)
            continue
        if s == "}":
            objs[(cur.kind, cur.name)] = cur
            cur = None
        elif cur.kind == "chain":
            if (s.startswith("type ") and " hook " in s) or s.startswith("comment ") or s.startswith("policy "):
                cur.header.append(s)
            else:
                cur.items.append(s)
        elif s.startswith("elements = {"):
            cur.items += _split_elements(s[s.index("{") + 1:s.rindex("}")])
        else:
            cur.header.append(s)
    objs[("table", "")] = table
    return objs


def diff_nft(want_text: str, got_text: str) -> Diff:
    want, got = parse_nft(want_text), parse_nft(got_text)
    d = Diff()
    for key in sorted(set(want) | set(got)):
        kind, name = key
        label = f"{kind} {name}".strip()
        w, g = want.get(key), got.get(key)
        if g is None:
            assert w is not None
            d.missing.append(f"missing {label}" + (f" ({len(w.items)} {'rules' if kind == 'chain' else 'elements'})"
                                                   if w.items else ""))
            d.missing += [f"missing {'rule' if kind == 'chain' else 'element'} in {label}: {x}" for x in w.items]
            continue
        if w is None:
            d.unexpected.append(f"unexpected {label}")
            d.unexpected += [f"unexpected {'rule' if kind == 'chain' else 'element'} in {label}: {x}"
                             for x in g.items]
            continue
        if kind != "table":
            d.chains += kind == "chain"
            d.rules += len(w.items) if kind == "chain" else 0
        if sorted(w.header) != sorted(g.header):
            _multiset("line", f"of {label}", sorted(w.header), sorted(g.header), d)
        if w.dynamic:
            continue  # affinity sets: the kernel adds and expires their elements
        if kind == "chain":
            before = len(d.missing) + len(d.unexpected)
            _multiset("rule", f"in {label}", w.items, g.items, d)
            if len(d.missing) + len(d.unexpected) == before and w.items != g.items:
                d.reordered.append(f"rule order differs in {label}")
        else:
            _multiset("element", f"in {label}", sorted(w.items), sorted(g.items), d)
    return d


# --- one diff for every listing format --------------------------------------------------------------------------


DIFFS = {"iptables-save": diff_iptables, "nft": diff_nft}  # a proxier's `compared_as` -> how its listings compare


def diff(compared_as: str, want_text: str, got_text: str) -> Diff:
    """The desired listing against the live one, in the format the proxier's tool prints (`compared_as`)."""
    return DIFFS[compared_as](want_text, got_text)


def compare(node: str, mode: str, compared_as: str, what: str, want_text: str, got_text: str | None) -> Finding:
    """The node's finding: its desired rules (read back from the scratch namespace) against the live ones (None:
    the tool found no table, `what` names it)."""
    if got_text is None:
        return missing_table(node, mode, what, want_text)
    return finding(node, mode, diff(compared_as, want_text, got_text))


# --- findings ---------------------------------------------------------------------------------------------------


def finding(node: str, mode: str, d: Diff) -> Finding:
    subj = f"node/{node}"
    lines = d.missing + d.unexpected + d.reordered
    if not d.in_sync:
        first = (d.missing or d.unexpected)[0]
        return f.fail(CHECK, subj, f"{len(d.missing)} missing, {len(d.unexpected)} unexpected ({mode} mode): "
                                   f"{first}", lines)
    if d.reordered:
        return f.warn(CHECK, subj, f"every rule is there, in another order ({mode} mode): {d.reordered[0]}", lines)
    return f.ok(CHECK, subj, f"in sync with the model ({mode} mode): {d.chains} chains, {d.rules} rules")


def missing_table(node: str, mode: str, what: str, desired: str) -> Finding:
    """The node has none of kube-proxy's state (the table is gone, the tool failed)."""
    lines = [f"missing {what}"] + [line.strip() for line in desired.splitlines()
                                   if line.strip().startswith(("-A ", "chain ", "set ", "map "))][:50]
    return f.fail(CHECK, f"node/{node}", f"{what} is missing ({mode} mode)", lines)
