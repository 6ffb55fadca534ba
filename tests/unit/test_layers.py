"""The layer rule, checked on the source: every module under emu/ imports only from its own layer or a lower one,
no two emu modules import each other (directly or round a loop), and nothing in the pure layers (model, alloc,
plan) reaches pyroute2, scapy, subprocess or ctypes, however indirectly (issue 14, STYLE.md "Seams and layers").

Imports are read with `ast`, never by importing: `import x`, `from . import y`, `from .a.b import c`, relative and
absolute, at module level and inside functions (an import moved into a function to dodge a cycle is still an edge).
`if TYPE_CHECKING:` imports never run, so they are left out of the cycle and forbidden-library checks (a Protocol
or a type named for annotations cannot make an import loop or load pyroute2), but they are held to the layer rule:
a lower layer that names a higher layer's type still depends on it.  Importing `emu.a.b` also runs `emu/a/__init__.py`;
that implicit edge counts only for what a pure module reaches (a package `__init__` that imports its submodules is
Python's own re-export pattern, not a loop anyone wrote).

A module's layer is the package it lives in; a module of a feature folder (emu/network/, emu/addons/) is listed
in FEATURE_LAYER.  KNOWN_VIOLATIONS lists what the tree breaks today, each with its reason; it can only shrink: an entry that no longer occurs fails the test until it is removed.
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

EMU = Path(__file__).resolve().parents[2] / "emu"

# Lowest first.  "feature" is issue 14's network/ and addons/ (the seams); "observe" is agent and observe (probe,
# trace, doctor).  The kernel lane is its own group: it may use only errors, and only the cli may use it.
ORDER = ("errors", "model", "alloc", "plan", "apply", "feature", "cluster", "observe", "report", "cli")
SIDE_GROUPS = {"kernel-lane": {"errors"}}
MAY_USE_SIDE = {"cli": {"kernel-lane"}}
PURE = ("model", "alloc", "plan")
FORBIDDEN = ("pyroute2", "scapy", "subprocess", "ctypes")

# A module's layer is the package it lives in: emu/model/ is model, emu/plan/ is plan, and so on.  The seams,
# emu/network/ (PodNetwork) and emu/addons/ (Addon), are one folder per dataplane or component; a folder holds the
# feature's own model, plan and apply parts, so their modules are listed one by one in FEATURE_LAYER.
PACKAGE_LAYER = {"emu.model": "model", "emu.alloc": "alloc", "emu.plan": "plan", "emu.apply": "apply",
                 "emu.cluster": "cluster", "emu.observe": "observe", "emu.report": "report", "emu.cli": "cli",
                 "emu.lane": "kernel-lane"}
TOP_LAYER = {"emu": "errors", "emu.errors": "errors", "emu.__main__": "cli",
             "emu.testing": "cli"}  # the pytest plugin, kept at its old import path
FEATURE_LAYER = {
    "emu.network": "feature", "emu.addons": "feature",
    # addons/dns
    "emu.addons.dns": "feature", "emu.addons.dns.addon": "feature", "emu.addons.dns.corefile": "model",
    "emu.addons.dns.corelog": "feature", "emu.addons.dns.probe": "observe", "emu.addons.dns.records": "feature",
    "emu.addons.dns.resolvconf": "plan", "emu.addons.dns.server": "feature", "emu.addons.dns.wire": "feature",
    "emu.addons.dns.documents": "model", "emu.addons.dns.validation": "model", "emu.addons.dns.desired": "feature",
    # addons/ingress
    "emu.addons.ingress": "feature", "emu.addons.ingress.addon": "feature", "emu.addons.ingress.annotations": "model",
    "emu.addons.ingress.certs": "feature", "emu.addons.ingress.cli": "cli",
    "emu.addons.ingress.controller": "feature", "emu.addons.ingress.httpprobe": "observe",
    "emu.addons.ingress.model": "model", "emu.addons.ingress.nginxconf": "plan",
    "emu.addons.ingress.nginxproc": "feature", "emu.addons.ingress.nginxsafe": "plan",
    "emu.addons.ingress.parse": "model",
    "emu.addons.ingress.documents": "model", "emu.addons.ingress.desired": "feature",
    # addons/kubeproxy
    "emu.addons.kubeproxy": "feature", "emu.addons.kubeproxy.inputs": "alloc",
    "emu.addons.kubeproxy.iptables": "plan", "emu.addons.kubeproxy.ipvs": "feature",
    "emu.addons.kubeproxy.model": "alloc", "emu.addons.kubeproxy.nftables": "plan",
    "emu.addons.kubeproxy.sync": "feature", "emu.addons.kubeproxy.systempods": "feature",
    "emu.addons.kubeproxy.iptables_rules": "plan", "emu.addons.kubeproxy.iptables_text": "plan",
    "emu.addons.kubeproxy.nftables_sync": "plan", "emu.addons.kubeproxy.ipvs_names": "plan",
    "emu.addons.kubeproxy.ipvs_rules": "plan", "emu.addons.kubeproxy.ipvs_desired": "plan",
    "emu.addons.kubeproxy.modes": "plan", "emu.addons.kubeproxy.proxiers": "feature",
    "emu.addons.kubeproxy.desired": "plan",
    # addons/multus
    "emu.addons.multus": "feature", "emu.addons.multus.nad": "model", "emu.addons.multus.allocate": "alloc",
    "emu.addons.multus.wire": "feature",
    # addons/netpol
    "emu.addons.netpol": "feature", "emu.addons.netpol.engine": "alloc", "emu.addons.netpol.explain": "observe",
    "emu.addons.netpol.model": "model", "emu.addons.netpol.names": "plan", "emu.addons.netpol.parse": "model",
    "emu.addons.netpol.resolve": "plan", "emu.addons.netpol.restore": "plan", "emu.addons.netpol.rules": "plan",
    "emu.addons.netpol.sync": "feature", "emu.addons.base": "feature", "emu.addons.table": "feature",
    "emu.addons.netpol.desired": "plan",
    "emu.addons.netpol.hooks": "feature", "emu.addons.dns.hooks": "feature", "emu.addons.ingress.hooks": "feature",
    "emu.addons.multus.hooks": "feature", "emu.addons.kubeproxy.hooks": "feature",
    # network: the PodNetwork seam and its table; bridge is flannel's delegate, shared with cni's prediction
    "emu.network.base": "feature", "emu.network.table": "feature", "emu.network.bridge": "feature",
    # network/cni
    "emu.network.cni": "feature", "emu.network.cni.capabilities": "model", "emu.network.cni.cli": "cli",
    "emu.network.cni.config": "model", "emu.network.cni.dryrun": "feature", "emu.network.cni.netconf": "model",
    "emu.network.cni.network": "feature", "emu.network.cni.nodes": "feature", "emu.network.cni.pods": "feature",
    "emu.network.cni.runtime": "feature", "emu.network.cni.spec": "model",
    # network/flannel
    "emu.network.flannel": "feature", "emu.network.flannel.network": "feature", "emu.network.flannel.nodes": "feature",
}

# What the tree breaks today: (kind, importer, imported or library) -> why, and where the fix goes.  "upward" is a
# layer violation, "cycle" an edge taken out of the loop search (the loop it closes is named), "reaches" a pure
# module that loads a forbidden library at run time.  This list can only shrink (issue 14: done with none).
KNOWN_VIOLATIONS: dict[tuple[str, str, str], str] = {
}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of the package, or the top-level name of anything else
    line: int
    in_function: bool
    type_checking: bool


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every .py file under the package directory `root`."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(root: Path) -> list[Import]:
    """Every import statement of every module under `root`, resolved to the module it loads."""
    mods = modules(root)
    out: list[Import] = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def target(mod: str, member: str | None) -> str:
            if mod.split(".")[0] != root.name:
                return mod.split(".")[0]
            if member is not None and f"{mod}.{member}" in mods:
                return f"{mod}.{member}"
            return mod

        def visit(nodes: list[ast.stmt] | list[ast.AST], in_fn: bool, tc: bool) -> None:
            for node in nodes:
                if isinstance(node, ast.Import):
                    out.extend(Import(name, target(a.name, None), node.lineno, in_fn, tc) for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[:len(package.split(".")) - node.level + 1]
                        mod = ".".join(base + ([node.module] if node.module else []))
                    else:
                        mod = node.module or ""
                    out.extend(Import(name, target(mod, a.name), node.lineno, in_fn, tc) for a in node.names)
                elif isinstance(node, ast.If) and _is_type_checking(node):
                    visit(node.body, in_fn, True)
                    visit(node.orelse, in_fn, tc)
                else:
                    fn = in_fn or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    visit(list(ast.iter_child_nodes(node)), fn, tc)

        visit(ast.parse(path.read_text(), str(path)).body, False, False)
    return out


def _may_use(importer: str, target: str) -> bool:
    if importer in SIDE_GROUPS:
        return target == importer or target in SIDE_GROUPS[importer]
    if target in SIDE_GROUPS:
        return target in MAY_USE_SIDE.get(importer, set())
    return ORDER.index(target) <= ORDER.index(importer)


def _cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One shortest loop per strongly connected set of modules (Tarjan, then a BFS back to the start)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[set[str]] = []

    def connect(v: str) -> None:  # recursion depth is bounded by the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1 or v in edges.get(v, {}):
                sccs.append(scc)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    loops = []
    for scc in sccs:
        start = min(scc)
        prev: dict[str, Import] = {}
        todo = deque([start])
        while todo:
            v = todo.popleft()
            for w, imp in sorted(edges.get(v, {}).items()):
                if w in scc and w not in prev:
                    prev[w] = imp
                    todo.append(w)
        loop, v = [], start
        while True:
            loop.append(prev[v])
            v = prev[v].importer
            if v == start:
                break
        loops.append(loop[::-1])
    return loops


def _where(i: Import, layer: dict[str, str]) -> str:
    how = " (inside a function)" if i.in_function else " (TYPE_CHECKING)" if i.type_checking else ""
    return (f"{i.importer} ({layer.get(i.importer, '?')}) imports {i.target} ({layer.get(i.target, '?')}) "
            f"at line {i.line}{how}")


def check(root: Path, layer: dict[str, str], known: dict[tuple[str, str, str], str]) -> list[str]:
    """Every problem of the package at `root` against the layer table, one line each; allow-listed ones are not
    problems, but an allow-listed one that no longer occurs is."""
    mods = modules(root)
    found = imports(root)
    problems = [f"{m}: not in the layer table (put it in a layer's package, or add it to FEATURE_LAYER in "
                f"tests/unit/test_layers.py)"
                for m in sorted(mods) if m not in layer]
    problems += [f"{m}: in the layer table but no such module" for m in sorted(layer) if m not in mods]
    seen: set[tuple[str, str, str]] = set()

    def report(key: tuple[str, str, str], text: str) -> None:
        if key in known:
            seen.add(key)
        else:
            problems.append(text)

    inner = [i for i in found if i.target in mods and i.target != i.importer]
    for i in inner:  # (b) upward
        a, b = layer.get(i.importer), layer.get(i.target)
        if a and b and not _may_use(a, b):
            report(("upward", i.importer, i.target), f"upward import: {_where(i, layer)}")
    runtime: dict[str, dict[str, Import]] = {}
    for i in inner:
        if not i.type_checking:
            runtime.setdefault(i.importer, {}).setdefault(i.target, i)
    # (a) cycles, searched with the allow-listed edges taken out; such an edge still counts while it closes a loop
    cut = {k: {t: i for t, i in v.items() if ("cycle", k, t) not in known} for k, v in runtime.items()}
    for loop in _cycles(cut):
        problems.append("import cycle: " + " -> ".join(_where(i, layer) for i in loop))
    seen.update(k for k in known if k[0] == "cycle" and k[2] in runtime.get(k[1], {}) and _on_a_loop(runtime, *k[1:]))
    for m in sorted(mods):  # (c) a pure module reaching a forbidden library, through runtime and package edges
        if layer.get(m) not in PURE:
            continue
        for lib, path in _reaches(m, mods, found).items():
            report(("reaches", m, lib), f"{m} ({layer[m]}) reaches {lib}: " +
                   " -> ".join(f"{i.importer}:{i.line}" if i.line else f"{i.importer} (runs {i.target}/__init__)"
                                  for i in path) + f" -> {lib}")
    problems += [f"KNOWN_VIOLATIONS entry {k} ({why}) no longer occurs: remove it" for k, why in known.items()
                 if k not in seen]
    return problems


def _on_a_loop(edges: dict[str, dict[str, Import]], a: str, b: str) -> bool:
    """Does the edge a -> b close a loop (is a reachable from b)?"""
    todo, seen = [b], {b}
    while todo:
        v = todo.pop()
        if v == a:
            return True
        for w in edges.get(v, {}):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


def _reaches(start: str, mods: dict[str, Path], found: list[Import]) -> dict[str, list[Import]]:
    """Forbidden library -> the shortest chain of runtime imports from `start` that loads it."""
    out: dict[str, list[Import]] = {}
    edges: dict[str, list[Import]] = {}
    for i in found:
        if not i.type_checking:
            edges.setdefault(i.importer, []).append(i)
    for m in mods:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = m.split(".")
        for k in range(1, len(parts)):
            if ".".join(parts[:k]) in mods:
                edges.setdefault(m, []).append(Import(m, ".".join(parts[:k]), 0, False, False))
    prev: dict[str, Import | None] = {start: None}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        for i in sorted(edges.get(v, []), key=lambda i: (i.line, i.target)):
            if i.target in FORBIDDEN and i.target not in out:
                path, j = [i], prev[v]
                while j is not None:
                    path.append(j)
                    j = prev[j.importer]
                out[i.target] = path[::-1]
            elif i.target in mods and i.target not in prev:
                prev[i.target] = i
                todo.append(i.target)
    return out


def layer_table(mods: dict[str, Path]) -> dict[str, str]:
    """Every module's layer: TOP_LAYER, FEATURE_LAYER, or the layer package it lives in.  A module of a feature
    folder that FEATURE_LAYER does not list has none, and the test says so."""
    out = dict(TOP_LAYER)
    for m in mods:
        top = ".".join(m.split(".")[:2])
        if m in FEATURE_LAYER:
            out[m] = FEATURE_LAYER[m]
        elif top in PACKAGE_LAYER:
            out[m] = PACKAGE_LAYER[top]
    return out


def test_emu_keeps_its_layers() -> None:
    problems = check(EMU, layer_table(modules(EMU)), KNOWN_VIOLATIONS)
    assert not problems, "\n" + "\n".join(problems)


# --- the checker itself, on a throwaway package ---------------------------------------------------------------------

FAKE_LAYERS = {"pkg": "errors", "pkg.errors": "errors", "pkg.kinds": "model", "pkg.planning": "plan",
               "pkg.helper": "apply", "pkg.sub": "feature", "pkg.sub.deep": "feature", "pkg.top": "cluster",
               "pkg.lane": "kernel-lane"}


def _package(tmp_path: Path, **sources: str) -> Path:
    """A package `pkg` under tmp_path: every FAKE_LAYERS module, empty unless `sources` gives its text."""
    root = tmp_path / "pkg"
    for mod in FAKE_LAYERS:
        parts = mod.split(".")[1:]
        is_pkg = any(m.startswith(mod + ".") for m in FAKE_LAYERS)
        path = root.joinpath(*parts, "__init__.py") if is_pkg else root.joinpath(*parts[:-1], parts[-1] + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sources.get(mod.replace(".", "_"), ""))
    return root


def test_a_clean_package_has_no_problems(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_kinds="from .errors import E\n", pkg_top="from .sub import deep\nimport os\n",
                    pkg_sub_deep="from ..kinds import K\nfrom pkg.helper import h\n")
    assert check(root, FAKE_LAYERS, {}) == []


def test_an_import_cycle_is_found_with_its_lines(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_helper="from . import planning\n", pkg_planning="\n\nimport pkg.helper\n")
    problems = check(root, FAKE_LAYERS, {})
    assert [p for p in problems if p.startswith("import cycle")] == [
        "import cycle: pkg.helper (apply) imports pkg.planning (plan) at line 1 -> "
        "pkg.planning (plan) imports pkg.helper (apply) at line 3"]


def test_an_upward_import_names_both_modules_their_layers_and_the_line(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_kinds='"""doc"""\nfrom .sub.deep import x\n')
    assert check(root, FAKE_LAYERS, {}) == [
        "upward import: pkg.kinds (model) imports pkg.sub.deep (feature) at line 2"]


def test_an_import_inside_a_function_counts(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_planning="def f():\n    from . import top\n    return top\n")
    assert check(root, FAKE_LAYERS, {}) == [
        "upward import: pkg.planning (plan) imports pkg.top (cluster) at line 2 (inside a function)"]


def test_subprocess_reached_from_a_plan_module_is_named_with_its_chain(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_planning="from . import errors\nfrom .kinds import K\n",
                    pkg_kinds="def f():\n    from . import errors\n", pkg_errors="import subprocess\n")
    assert check(root, FAKE_LAYERS, {}) == [
        "pkg.kinds (model) reaches subprocess: pkg.kinds:2 -> pkg.errors:1 -> subprocess",
        "pkg.planning (plan) reaches subprocess: pkg.planning:1 -> pkg.errors:1 -> subprocess"]


def test_a_package_init_runs_before_its_module(tmp_path: Path) -> None:
    """Importing pkg.sub.deep runs pkg/sub/__init__.py: what it loads, the importer loads."""
    root = _package(tmp_path, pkg_sub="import ctypes\n", pkg_kinds="from .sub.deep import x\n")
    assert check(root, FAKE_LAYERS, {})[-1] == \
        "pkg.kinds (model) reaches ctypes: pkg.kinds:1 -> pkg.sub.deep (runs pkg.sub/__init__) -> pkg.sub:1 -> ctypes"


def test_type_checking_imports_make_no_cycle_but_keep_the_layer_rule(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_top="from .helper import h\n",
                    pkg_helper="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import T\n"
                               "    import scapy\n")
    assert check(root, FAKE_LAYERS, {}) == [
        "upward import: pkg.helper (apply) imports pkg.top (cluster) at line 3 (TYPE_CHECKING)"]


def test_the_kernel_lane_uses_only_errors_and_only_the_cli_uses_it(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_lane="from . import errors, kinds\n", pkg_top="from . import lane\n")
    assert check(root, FAKE_LAYERS, {}) == [
        "upward import: pkg.lane (kernel-lane) imports pkg.kinds (model) at line 1",
        "upward import: pkg.top (cluster) imports pkg.lane (kernel-lane) at line 1"]


def test_every_module_needs_a_layer(tmp_path: Path) -> None:
    root = _package(tmp_path)
    (root / "newcomer.py").write_text("")
    assert check(root, FAKE_LAYERS, {}) == [
        "pkg.newcomer: not in the layer table (put it in a layer's package, or add it to FEATURE_LAYER in "
        "tests/unit/test_layers.py)"]


@pytest.mark.parametrize("key", [("upward", "pkg.kinds", "pkg.top"), ("cycle", "pkg.kinds", "pkg.top"),
                                 ("reaches", "pkg.kinds", "subprocess")])
def test_the_allow_list_only_shrinks(tmp_path: Path, key: tuple[str, str, str]) -> None:
    root = _package(tmp_path, pkg_top="from . import kinds\n", pkg_kinds="def f():\n    from . import top\n",
                    pkg_helper="import subprocess\n")
    real = {key: "known"}
    problems = check(root, FAKE_LAYERS, real)
    if key[0] == "upward":  # the loop is still there: the allow-list entry covers only the layer rule
        assert problems[0] == ("import cycle: pkg.kinds (model) imports pkg.top (cluster) at line 2 (inside a "
                               "function) -> pkg.top (cluster) imports pkg.kinds (model) at line 1")
    elif key[0] == "cycle":
        assert problems == ["upward import: pkg.kinds (model) imports pkg.top (cluster) at line 2 (inside a function)"]
    else:
        assert problems[-1] == f"KNOWN_VIOLATIONS entry {key} (known) no longer occurs: remove it"
    (root / "kinds.py").write_text("")
    assert check(root, FAKE_LAYERS, real) == [f"KNOWN_VIOLATIONS entry {key} (known) no longer occurs: remove it"]
