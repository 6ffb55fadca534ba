"""Writing each node's NetworkPolicy state into its namespace with the real tools, as kube-router's full sync does:
`ipset restore` (sets refreshed by swap), one `iptables-restore --noflush` with the cluster's iptables backend (the
new sync version's chains in, the previous version's out, in one transaction), then the sets nothing refers to any
more are destroyed: plan objects (emu.plan.content: Ipsets, Ruleset, DestroyIpsets) applied in felix's order by
emu.apply.drivers.

The controller is installed while the cluster has at least one NetworkPolicy: the first policy brings every node's
chains, jumps and sets; removing the last one removes them all, so a cluster without policies has exactly the
rules it had before (kube-router itself runs from startup; with no policy its chains accept everything).

Connection tracking is left alone: an established connection keeps flowing when a policy starts to deny it (the
pod chains accept RELATED,ESTABLISHED first), as with kube-router and Calico's defaults; only new connections
meet the new rules.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from emu.addons.base import Running
from emu.addons.netpol import desired, resolve, restore, rules
from emu.apply import drivers, state, tools
from emu.errors import EmuError
from emu.plan.content import DestroyIpsets, PlanObject


class SyncError(EmuError):
    pass


@dataclass(frozen=True, slots=True)
class SyncResult:
    node: str
    action: str  # "sync" | "cleanup"
    seconds: float
    rules: int = 0
    ipsets: int = 0


def _failed(e: tools.ToolFailed) -> SyncError:
    """A tool's failure as the sync words it: the tool and its first argument, the namespace, stderr."""
    return SyncError(f"{' '.join(e.argv[:2])} in {e.netns} failed: {e.stderr.strip()[:2000]}")


def _apply(objects: list[PlanObject]) -> None:
    """The objects applied by their drivers, in felix's order (sets, the filter table, stale sets)."""
    try:
        drivers.apply(objects)
    except tools.ToolFailed as e:
        raise _failed(e) from None


def _read(ns: str, argv: list[str]) -> str:
    try:
        return tools.check(ns, argv)
    except tools.ToolFailed as e:
        raise _failed(e) from None


def current(ns: str, backend: str) -> restore.Current:
    chains, jumps = restore.parse_save(_read(ns, [f"iptables-{backend}-save", "-t", "filter"]))
    sets = restore.parse_sets(_read(ns, ["ipset", "list", "-n"]))
    return restore.Current(chains, jumps, sets)


def sync_node(ns: str, inp: resolve.NodeInput, version: str, backend: str) -> tuple[SyncResult, rules.NodeRules]:
    """One node's full sync: sets first (rules refer to them), then the filter table, then stale sets."""
    t0 = time.monotonic()
    cur = current(ns, backend)
    nr = rules.generate(inp, version)
    _apply(desired.node_objects(ns, inp.node, nr, cur, backend))
    return SyncResult(inp.node, "sync", time.monotonic() - t0, len(nr.rules), len(nr.ipsets)), nr


def cleanup_node(ns: str, node: str, backend: str) -> SyncResult:
    """Remove every jump, chain and set of the controller from one node (idempotent)."""
    t0 = time.monotonic()
    cur = current(ns, backend)
    if cur.active:
        objects: list[PlanObject] = [desired.table(ns, node, backend, restore.cleanup_text(cur))]
        if cur.sets:
            objects.append(DestroyIpsets(ns, node, tuple(sorted(cur.sets))))
        _apply(objects)
    return SyncResult(node, "cleanup", time.monotonic() - t0)


def sync_cluster(cl: Running) -> list[SyncResult]:
    """Bring every node in line with the model: a full sync where the node's input differs from the one its last
    successful sync recorded (every node the first time), a cleanup of every node that has our state when the
    last policy went away, nothing when there never were policies.  A sync that failed is retried next time."""
    new = resolve.node_inputs(cl.topology, cl.allocations)
    backend = cl.topology.cluster.iptables_backend
    version = str(time.time_ns())  # kube-router's sync version: UnixNano, base 10
    if new:
        jobs = [(n.netns, n.name) for n in cl.plan.nodes if _recorded_digest(cl.record, n.name) != digest(new[n.name])]
    else:
        jobs = [(n.netns, n.name) for n in cl.plan.nodes if os.path.exists(index_path(cl.record, n.name))]

    def one(job: tuple[str, str]) -> SyncResult:
        ns, node = job
        if not new:
            res = cleanup_node(ns, node, backend)
            _forget_index(cl, node)
            return res
        res, nr = sync_node(ns, new[node], version, backend)
        _write_index(cl, node, nr, digest(new[node]))
        return res

    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(jobs), 16)) as ex:
        return list(ex.map(one, jobs))


def digest(inp: resolve.NodeInput) -> str:
    """A node input's fingerprint (frozen dataclasses of tuples, strings and enums: a stable repr)."""
    return hashlib.sha256(repr(inp).encode()).hexdigest()


def index_path(rec: state.Record, node: str) -> str:
    return os.path.join(rec.dir, "nodes", node, "netpol.json")


def _write_index(cl: Running, node: str, nr: rules.NodeRules, fingerprint: str) -> None:
    """After a successful sync: what each chain and set of the node is for (pod, policy and direction, rule), for
    `emu trace` and humans (chain names are hashes), and the fingerprint of the input it was made from."""
    state.write_file(cl.record, f"nodes/{node}/netpol.json",
                     json.dumps({"version": nr.version, "input": fingerprint, "index": nr.index}, indent=1))


def _recorded_digest(rec: state.Record, node: str) -> str | None:
    try:
        with open(index_path(rec, node)) as f:
            return str(json.load(f).get("input"))
    except (FileNotFoundError, ValueError):
        return None


def _forget_index(cl: Running, node: str) -> None:
    try:
        os.unlink(index_path(cl.record, node))
    except FileNotFoundError:
        pass


def load_index(rec: state.Record, node: str) -> dict[str, str]:
    """Chain or set name -> what it is ("pod x/a", "policy x/deny ingress", ...); {} without policies."""
    try:
        with open(index_path(rec, node)) as f:
            return dict(json.load(f)["index"])
    except (FileNotFoundError, ValueError, KeyError):
        return {}
