"""kube-proxy's iptables proxier as text: the `iptables-restore` input of one full syncProxyRules for one node
(`pkg/proxy/iptables/proxier.go`), and the form `iptables-save` prints the same rules back in.  Pure: no subprocess,
no kernel access.

Two textual forms of a rule exist and both matter:

* the **written form** -- exactly what kube-proxy puts into `iptables-restore` (`restore_text` emits this, byte for
  byte as upstream's `proxier_test.go` expects it, e.g.
  ``-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j X``);
* the **saved form** -- what `iptables-save` (v1.8.9, nf_tables backend, checked on a real kernel) prints back for
  the same rule: ``-A KUBE-SERVICES -d 172.30.0.44/32 -p tcp -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp
  --dport 80 -j X``.  `saved_form` maps the first to the second (see its docstring for the exact rules).
"""
from __future__ import annotations

import ipaddress
import math
import shlex
from collections.abc import Iterable, Mapping

from emu.addons.kubeproxy.iptables import (KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ,
    KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES, LOCALNET, NFACCT_CT_INVALID, Options,
    is_service_chain_name)
from emu.addons.kubeproxy.iptables_rules import Builder, Ctx, service_rules, sorted_endpoints
from emu.addons.kubeproxy.model import MASQUERADE_MARK, NodeProxyState

LAYER = "plan"


# --------------------------------------------------------------------------------------------- restore text


def _fixed_head(b: Builder, ctx: Ctx) -> None:
    """Top-level chain lines, KUBE-POSTROUTING, KUBE-MARK-MASQ and the KUBE-FIREWALL localnet rule."""
    for chain in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL):
        b.filter_chain(chain)
    for chain in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ):
        b.nat_chains.append(f":{chain} - [0:0]")
    mark = ctx.mark
    b.nat("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN")
    b.nat("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark)
    b.nat("-A", KUBE_POSTROUTING, "-m", "comment", "--comment", '"kubernetes service traffic requiring SNAT"',
          "-j", "MASQUERADE", ["--random-fully"] if ctx.opts.random_fully else [])
    b.nat("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark)
    if ctx.opts.localhost_nodeports:
        b.filter_chain(KUBE_FIREWALL)
        b.filter("-A", KUBE_FIREWALL, "-m", "comment", "--comment", '"block incoming localnet connections"',
                 "-d", LOCALNET, "!", "-s", LOCALNET,
                 "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP")


def _delete_stale(b: Builder, existing: Mapping[str, Iterable[str]] | None) -> None:
    """Flush (chain line) and delete (-X) nat service chains present in the kernel but not written this sync.
    Upstream walks a Go set (random order); here they are sorted."""
    if not existing:
        return
    for chain in sorted(set(existing.get("nat", ())) - b.active_nat):
        if is_service_chain_name(chain):
            b.nat_chains.append(f":{chain} - [0:0]")
            b.nat("-X", chain)


def _fixed_tail(b: Builder, ctx: Ctx) -> None:
    """The "must be the last rule" KUBE-SERVICES jump and the KUBE-FORWARD rules."""
    dest = ["-m", "addrtype", "--dst-type", "LOCAL"]
    if not ctx.opts.localhost_nodeports:
        dest += ["!", "-d", LOCALNET]
    b.nat("-A", KUBE_SERVICES, "-m", "comment", "--comment",
          '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"', dest, "-j", KUBE_NODEPORTS)
    if not ctx.opts.conntrack_tcp_be_liberal:
        acct = ["-m", "nfacct", "--nfacct-name", NFACCT_CT_INVALID] if ctx.opts.nfacct else []
        b.filter("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", acct, "-j", "DROP")
    mark = ctx.mark
    b.filter("-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding rules"',
             "-m", "mark", "--mark", f"{mark}/{mark}", "-j", "ACCEPT")
    b.filter("-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding conntrack rule"',
             "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")


def restore_text(state: NodeProxyState, existing_chains: dict[str, set[str]] | None = None, *,
                 options: Options = Options()) -> str:
    """The complete ``iptables-restore --noflush`` input of one full syncProxyRules, in written form.

    `existing_chains` maps table -> chains currently in the kernel (as iptables-save lists them); nat chains with
    a KUBE-SVC/SVL/EXT/FW/SEP prefix that this sync does not write are declared (flushing them) and deleted with
    ``-X``, exactly as upstream.  Services are processed in `state.services` order (upstream: Go map order);
    each service's endpoints are de-duplicated by "IP:port" and sorted by that string, as the EndpointsMap is.
    """
    services = [(svc, sorted_endpoints(eps)) for svc, eps in state.services]
    ctx = Ctx(
        node=state.node,
        node_ip=state.node_ips[0] if state.node_ips else None,
        local_cidr=str(state.cluster_cidr) if state.cluster_cidr is not None else None,
        masquerade_all=state.masquerade_all,
        mark=MASQUERADE_MARK,
        opts=options,
        large_cluster=sum(len(eps) for _, eps in services) > options.large_cluster_threshold,
    )
    b = Builder()
    _fixed_head(b, ctx)
    for svc, eps in services:
        service_rules(b, svc, eps, ctx)
    _delete_stale(b, existing_chains)
    _fixed_tail(b, ctx)
    return b.text()


# --------------------------------------------------------------------------------------------- saved form

_HEADER = {"-s": "s", "--source": "s", "-d": "d", "--destination": "d", "-i": "i", "--in-interface": "i",
           "-o": "o", "--out-interface": "o", "-p": "p", "--protocol": "p"}
_HEADER_ORDER = ("s", "d", "i", "o", "p")  # nft_ipv4_save_rule: addresses, then interfaces, then protocol
_RECENT_CMDS = ("--set", "--rcheck", "--update", "--remove")
_STAT_SCALE = 0x80000000  # libxt_statistic stores lround(p * 2^31), prints "%.11f" of it / 2^31


def _save_string(s: str) -> str:
    """xtables_save_string: always double-quoted, with backslash and double quote escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _save_addr(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=False))


def _opts(tokens: list[str]) -> list[tuple[bool, str, list[str]]]:
    """Split a match/target's tokens into (negated, --option, values)."""
    out: list[tuple[bool, str, list[str]]] = []
    neg = False
    for tok in tokens:
        if tok == "!":
            neg = True
        elif tok.startswith("--"):
            out.append((neg, tok, []))
            neg = False
        elif out:
            out[-1][2].append(tok)
    return out


def _fmt(opts: list[tuple[bool, str, list[str]]]) -> list[str]:
    words: list[str] = []
    for neg, opt, vals in opts:
        words += (["!"] if neg else []) + [opt, *vals]
    return words


def _save_match(name: str, tokens: list[str]) -> list[str]:
    opts = _opts(tokens)
    if name == "comment":
        return ["-m", "comment", "--comment", _save_string(opts[0][2][0])]
    if name == "statistic":
        opts = [(n, o, ["%.11f" % (math.floor(float(v[0]) * _STAT_SCALE + 0.5) / _STAT_SCALE)])
                if o == "--probability" else (n, o, v) for n, o, v in opts]
    elif name == "recent":
        opts = _save_recent(opts)
    elif name == "nfacct":
        opts = [(n, o, [" " + v[0]] if o == "--nfacct-name" else v) for n, o, v in opts]  # prints a double space
    return ["-m", name, *_fmt(opts)]


def _save_recent(opts: list[tuple[bool, str, list[str]]]) -> list[tuple[bool, str, list[str]]]:
    """libxt_recent save order: command, --seconds, --reap, --hitcount, --rttl, --name, --mask, --rsource/--rdest."""
    by = {o: (n, o, v) for n, o, v in opts}
    out = [by[c] for c in _RECENT_CMDS if c in by]
    out += [by[o] for o in ("--seconds", "--reap", "--hitcount", "--rttl") if o in by]
    out.append(by.get("--name", (False, "--name", ["DEFAULT"])))
    out.append(by.get("--mask", (False, "--mask", ["255.255.255.255"])))
    out.append((False, "--rdest", []) if "--rdest" in by else (False, "--rsource", []))
    return out


def _save_target(target: str, tokens: list[str]) -> list[str]:
    opts = _opts(tokens)
    if target == "MARK":
        opts = [_save_mark(o, v[0]) if o in ("--or-mark", "--xor-mark", "--and-mark", "--set-mark")
                else (n, o, v) for n, o, v in opts]
    elif target == "REJECT" and not opts:
        opts = [(False, "--reject-with", ["icmp-port-unreachable"])]
    return ["-j", target, *_fmt(opts)]


def _save_mark(opt: str, value: str) -> tuple[bool, str, list[str]]:
    """libxt_MARK (revision 2) prints every form as --set-xmark value/mask."""
    v, _, m = value.partition("/")
    x = int(v, 0)
    form = {"--or-mark": (x, x), "--xor-mark": (x, 0), "--and-mark": (0, (~x) & 0xFFFFFFFF),
            "--set-mark": (x, int(m, 0) if m else 0xFFFFFFFF)}[opt]
    return (False, "--set-xmark", [f"{form[0]:#x}/{form[1]:#x}"])


def saved_form(rule: str) -> str:
    """Map a rule line in kube-proxy's written form to the line iptables-save v1.8.9 (nf_tables) prints for it.

    Established against this kernel by loading every rule shape `restore_text` emits and reading it back:

    * ``-s``/``-d`` (with ``!``), ``-i``/``-o`` and ``-p`` move to the front in that order; addresses gain
      their prefix length (``172.30.0.44`` -> ``172.30.0.44/32``);
    * the ``-m`` matches keep the order they were written in (so ``-m tcp`` stays where kube-proxy put it, now
      holding ``--dport``); options of a match follow the match in written order, except:
      comments are always double-quoted (``--comment "ns4/svc4:p80"``); ``recent`` prints
      ``--set|--rcheck [--seconds N] [--reap] --name X --mask 255.255.255.255 --rsource``; ``statistic`` prints
      ``--probability`` as ``%.11f`` of the kernel's fixed-point value (0.5000000000 -> 0.50000000000,
      0.3333333333 -> 0.33333333349);
    * targets: ``MARK --or-mark M`` -> ``--set-xmark M/M``, ``--xor-mark M`` -> ``--set-xmark M/0x0``;
      a bare ``REJECT`` gains ``--reject-with icmp-port-unreachable``; DNAT, MASQUERADE (--random-fully), DROP,
      ACCEPT, RETURN and chain jumps print as written;
    * ``-X CHAIN`` and chain lines are not rules and are returned unchanged.
    """
    if not rule.startswith(("-A ", "-I ")):
        return rule
    words = shlex.split(rule)
    head, chain, rest = words[0], words[1], words[2:]
    header: dict[str, list[str]] = {}
    matches: list[tuple[str, list[str]]] = []
    target: tuple[str, list[str]] | None = None
    neg = False
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok == "!" and i + 1 < len(rest) and rest[i + 1] in _HEADER:
            neg = True
        elif tok in _HEADER and target is None:
            value = rest[i + 1]
            key = _HEADER[tok]
            value = _save_addr(value) if key in "sd" else value
            header[key] = (["!"] if neg else []) + [f"-{key}", value]
            neg = False
            i += 1
        elif tok in ("-m", "--match"):
            matches.append((rest[i + 1], []))
            i += 1
        elif tok in ("-j", "--jump"):
            target = (rest[i + 1], [])
            i += 1
        elif target is not None:
            target[1].append(tok)
        elif matches:
            matches[-1][1].append(tok)
        i += 1
    out = [head, chain]
    for key in _HEADER_ORDER:
        out += header.get(key, [])
    for name, toks in matches:
        out += _save_match(name, toks)
    if target is not None:
        out += _save_target(*target)
    return " ".join(out)


# --------------------------------------------------------------------------------------------- parsing helpers


def restore_chains(text: str) -> dict[str, dict[str, list[str]]]:
    """What an ``iptables-restore --noflush`` of `text` leaves in the chains it declares: table -> chain ->
    rule lines (written form), in order; chains deleted with ``-X`` are absent.  Pure text processing."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current[line[1:].split()[0]] = []
        elif line.startswith("-A "):
            current.setdefault(line.split()[1], []).append(line)
        elif line.startswith("-X "):
            current.pop(line.split()[1], None)
    return tables


def saved_chains(save_output: str, prefix: str = "") -> dict[str, dict[str, list[str]]]:
    """Parse iptables-save output into table -> chain -> rule lines (keeping only chains starting with `prefix`)."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in save_output.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith(prefix):
                current[name] = []
        elif line.startswith("-A "):
            name = line.split()[1]
            if name.startswith(prefix):
                current.setdefault(name, []).append(line)
    return tables
