"""The plan's objects that are not the network's netlink objects: kernel settings made by a tool, ipsets, rulesets,
IPVS services, files and daemons, and their rendering as the shell lines a person can replay (the components' part
of `emu up --dry-run`).

The order follows Calico felix's dataplane driver (felix/dataplane/linux/int_dataplane.go, apply()): ipsets before
the tables (the rules refer to them), then the rest, and the sets nothing refers to any more destroyed last; here
kernel settings (sysctls, devices) come first, IPVS services after the tables, then files, then daemons (a daemon
reads its files when it starts), then stale sets (`DestroyIpsets`).  `render` sorts a section's objects that way
and keeps their order within a kind; emu.apply.drivers applies them in the same order.

Texts go to their tool as here-documents (`ip netns exec NS iptables-nft-restore --noflush -w <<'EOF'`, `nft -f -`,
`ipset restore`, `ipvsadm --restore`, `cat > PATH`).  The record's directory is written `$EMU_STATE/<cluster>/...`
(`EMU_STATE_PREAMBLE` sets the variable from EMU_STATE_DIR, as emu.apply.state reads it), so the text does not depend
on the machine; a file whose text names that directory gets it substituted as it is written (`sed`).
"""
from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

EMU_STATE = "$EMU_STATE"  # the state directory in paths, argv and texts
EMU_STATE_PREAMBLE = 'EMU_STATE="${EMU_STATE_DIR:-/run/emu}"'  # emu.apply.state.state_dir(), as shell
ETC_NETNS = "/etc/netns"  # where `ip netns exec` finds a namespace's resolv.conf and hosts (EMU_ETC_NETNS moves it)


def record_path(cluster: str, *parts: str) -> str:
    """A path in the cluster's record directory, as the dry run prints it."""
    return posixpath.join(EMU_STATE, cluster, *parts)


@dataclass(frozen=True, slots=True)
class Ipsets:
    """`ipset restore` input for one namespace."""

    netns: str
    owner: str  # the node (or pod) it belongs to
    text: str
    exist: bool = True  # `ipset restore -exist` (kube-router); kube-proxy's own lines carry -exist where needed


@dataclass(frozen=True, slots=True)
class Ruleset:
    """One transaction of a table tool in one namespace: `iptables-<backend>-restore --noflush -w` or `nft -f -`."""

    netns: str
    owner: str
    tool: str  # the command, with its options: it reads `text` on stdin
    text: str


@dataclass(frozen=True, slots=True)
class Ipvs:
    """IPVS virtual services with their real servers, as `ipvsadm --restore` input (the form `ipvsadm -S -n`
    prints); emu programs them over netlink, as kube-proxy does."""

    netns: str
    owner: str
    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """A kernel setting made by one run of a tool in a namespace (`sysctl -w`, `ip -batch -` for a device and its
    addresses), before the sets and tables: what the network part's netlink objects are for a component."""

    netns: str
    owner: str
    argv: tuple[str, ...]
    stdin: str = ""


@dataclass(frozen=True, slots=True)
class File:
    """A file and its whole text; `path` is absolute, or under the record as `$EMU_STATE/<cluster>/...`."""

    path: str
    owner: str
    text: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Daemon:
    """A long-running process: `argv` run inside `netns` (`ip netns exec`), or in the host's namespace (None)."""

    name: str
    owner: str
    netns: str | None
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DestroyIpsets:
    """Sets no rule refers to any more, destroyed once the tables stopped using them (felix's stale ipsets, removed
    after everything else): one `ipset restore -exist` of `destroy NAME` lines."""

    netns: str
    owner: str
    names: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(f"destroy {n}\n" for n in self.names)


PlanObject = Union[Command, Ipsets, Ruleset, Ipvs, File, Daemon, DestroyIpsets]
# felix's: sets before the rules using them, stale sets after everything that could still use them
ORDER: tuple[type, ...] = (Command, Ipsets, Ruleset, Ipvs, File, Daemon, DestroyIpsets)


Section = tuple[str, tuple[PlanObject, ...]]  # (the comment that heads it in the dry run, its objects)


def by_owner(objects: Iterable[PlanObject]) -> dict[str, tuple[PlanObject, ...]]:
    """The objects grouped by owner (a node, a pod), owners in order of first appearance."""
    out: dict[str, list[PlanObject]] = {}
    for o in objects:
        out.setdefault(o.owner, []).append(o)
    return {k: tuple(v) for k, v in out.items()}


def _arg(s: str) -> str:
    """One shell word; `$EMU_STATE` in it still expands (double quotes: names and paths hold no other `$`)."""
    return f'"{s}"' if EMU_STATE in s else shlex.quote(s)


def _heredoc(head: str, text: str) -> str:
    """`head <<'EOF'`, the text, `EOF` (another delimiter if a line of the text is EOF); a missing final newline is
    added, which the tools reading rulesets and sets do not mind."""
    tag, n = "EOF", 0
    while tag in text.splitlines():
        n += 1
        tag = f"EOF{n}"
    body = text if text.endswith("\n") else text + "\n"
    return f"{head} <<'{tag}'\n{body}{tag}"


def _in(netns: str) -> str:
    return f"ip netns exec {netns} "


def _file(f: File, made: set[str]) -> Iterator[str]:
    d = posixpath.dirname(f.path)
    if d not in made:
        made.add(d)
        yield f"mkdir -p {_arg(d)}"
    if not f.text:
        yield f": > {_arg(f.path)}"
    elif EMU_STATE in f.text:  # the text names the record's directory: written with the real one
        yield _heredoc(f"sed 's|\\$EMU_STATE|'\"$EMU_STATE\"'|g' > {_arg(f.path)}", f.text)
    elif f.text.endswith("\n"):
        yield _heredoc(f"cat > {_arg(f.path)}", f.text)
    else:  # a one-line text without a final newline (JSON): exactly these bytes
        yield f"printf '%s' {shlex.quote(f.text)} > {_arg(f.path)}"
    if f.mode != 0o644:
        yield f"chmod {f.mode:o} {_arg(f.path)}"


def render(objects: Iterable[PlanObject]) -> list[str]:
    """Shell lines for `objects`, in felix's order by kind (kernel settings, ipsets, rulesets, IPVS, files,
    daemons, stale ipsets)."""
    lines: list[str] = []
    made: set[str] = set()
    for o in sorted(objects, key=lambda o: ORDER.index(type(o))):
        if isinstance(o, Command):
            head = _in(o.netns) + " ".join(shlex.quote(a) for a in o.argv)
            lines.append(_heredoc(head, o.stdin) if o.stdin else head)
        elif isinstance(o, Ipsets):
            lines.append(_heredoc(f"{_in(o.netns)}ipset restore" + (" -exist" if o.exist else ""), o.text))
        elif isinstance(o, Ruleset):
            lines.append(_heredoc(f"{_in(o.netns)}{o.tool}", o.text))
        elif isinstance(o, Ipvs):
            lines.append(_heredoc(f"{_in(o.netns)}ipvsadm --restore", o.text))
        elif isinstance(o, File):
            lines.extend(_file(o, made))
        elif isinstance(o, DestroyIpsets):
            lines.append(_heredoc(f"{_in(o.netns)}ipset restore -exist", o.text))
        else:
            argv = " ".join(_arg(a) for a in o.argv)
            lines.append(f"{_in(o.netns) if o.netns else ''}{argv} &")
    return lines
