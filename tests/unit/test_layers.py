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

A module's layer is the package it lives in (emu/plan/ is plan).  The seams' folders, emu/network/ and emu/addons/
(FEATURE_PACKAGES), are feature, except where a module declares its own layer, in one line at module level:
`LAYER = "model"`, a string literal naming a layer of ORDER, read here with `ast` (never by importing; a LAYER inside
a function or an `if` does not count).  A feature folder holds its component's own parts of other layers (its parser
is model, its renderer plan, its subcommand cli), and each says so where it is written: a new module of a folder needs
no line here.  A module that declares nothing is feature; one that a lower layer imports must declare that layer, or
the import is upward.  Only a module of a feature folder may declare: elsewhere the package is the layer.

KNOWN_VIOLATIONS lists what the tree breaks today, each with its reason; it can only shrink: an entry that no longer
occurs fails the test until it is removed.
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
# emu/network/ (PodNetwork) and emu/addons/ (Addon), are one folder per dataplane or component: their modules are
# feature unless they declare their layer (LAYER = "model"), see the docstring.
PACKAGE_LAYER = {"emu.model": "model", "emu.alloc": "alloc", "emu.plan": "plan", "emu.apply": "apply",
                 "emu.cluster": "cluster", "emu.observe": "observe", "emu.report": "report", "emu.cli": "cli",
                 "emu.lane": "kernel-lane"}
TOP_LAYER = {"emu": "errors", "emu.errors": "errors", "emu.__main__": "cli",
             "emu.testing": "cli"}  # the pytest plugin, kept at its old import path
FEATURE_PACKAGES = ("emu.network", "emu.addons")
DECLARATION = "LAYER"  # the module-level name a feature folder's module declares its layer with

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
    problems = [f"{m}: has no layer (put it in a layer's package or a feature folder)" for m in sorted(mods)
                if m not in layer]
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


def declared_layer(path: Path) -> tuple[ast.expr, int] | None:
    """What a module assigns to LAYER at module level, read with `ast` (the last assignment wins, as it would when
    the module runs), and its line; None when it declares nothing."""
    found = None
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == DECLARATION for t in targets):
            found = (value, node.lineno)
    return found


def layer_table(root: Path, packages: dict[str, str], top: dict[str, str],
                features: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Every module's layer, and what is wrong with the declarations, one line each: `top` names single modules;
    a module of a feature folder (`features`) is feature unless it declares a layer; any other module is its
    package's (`packages`, by the first two parts of its name).  A module in none of these has no layer (check()
    says so)."""
    out, problems = dict(top), []
    for m, path in modules(root).items():
        feature = any(m == f or m.startswith(f + ".") for f in features)
        declared = declared_layer(path)
        if declared is not None:
            value, line = declared
            layer = value.value if isinstance(value, ast.Constant) else None
            if not feature:
                problems.append(f"{m}: declares its {DECLARATION} at line {line}, but only a module of a feature "
                                f"folder ({', '.join(features)}) may: elsewhere its package is its layer")
            elif layer not in ORDER:
                problems.append(f"{m}: {DECLARATION} = {ast.unparse(value)} at line {line} is not a string literal "
                                f"naming a layer ({', '.join(ORDER)})")
            else:
                out[m] = layer
                continue
        if feature:
            out[m] = "feature"
        elif ".".join(m.split(".")[:2]) in packages:
            out[m] = packages[".".join(m.split(".")[:2])]
    return out, problems


def test_emu_keeps_its_layers() -> None:
    layers, problems = layer_table(EMU, PACKAGE_LAYER, TOP_LAYER, FEATURE_PACKAGES)
    problems += check(EMU, layers, KNOWN_VIOLATIONS)
    assert not problems, "\n" + "\n".join(problems)


# --- the checker itself, on a throwaway package ---------------------------------------------------------------------

# A throwaway package whose top-level modules are named one by one (as TOP_LAYER names emu's), with one feature
# folder, pkg/sub/: its modules are feature unless they declare a layer.
FAKE_TOP = {"pkg": "errors", "pkg.errors": "errors", "pkg.kinds": "model", "pkg.planning": "plan",
            "pkg.helper": "apply", "pkg.top": "cluster", "pkg.lane": "kernel-lane"}
FAKE_FEATURES = ("pkg.sub",)
FAKE_MODULES = (*FAKE_TOP, "pkg.sub", "pkg.sub.deep")


def _problems(root: Path, known: dict[tuple[str, str, str], str] | None = None) -> list[str]:
    """What test_emu_keeps_its_layers finds, on the throwaway package at `root`."""
    layers, problems = layer_table(root, {}, FAKE_TOP, FAKE_FEATURES)
    return problems + check(root, layers, known or {})


def _package(tmp_path: Path, **sources: str) -> Path:
    """A package `pkg` under tmp_path: every FAKE_MODULES module, empty unless `sources` gives its text."""
    root = tmp_path / "pkg"
    for mod in FAKE_MODULES:
        parts = mod.split(".")[1:]
        is_pkg = any(m.startswith(mod + ".") for m in FAKE_MODULES)
        path = root.joinpath(*parts, "__init__.py") if is_pkg else root.joinpath(*parts[:-1], parts[-1] + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sources.get(mod.replace(".", "_"), ""))
    return root


def test_a_clean_package_has_no_problems(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_kinds="from .errors import E\n", pkg_top="from .sub import deep\nimport os\n",
                    pkg_sub_deep="from ..kinds import K\nfrom pkg.helper import h\n")
    assert _problems(root) == []


def test_an_import_cycle_is_found_with_its_lines(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_helper="from . import planning\n", pkg_planning="\n\nimport pkg.helper\n")
    problems = _problems(root)
    assert [p for p in problems if p.startswith("import cycle")] == [
        "import cycle: pkg.helper (apply) imports pkg.planning (plan) at line 1 -> "
        "pkg.planning (plan) imports pkg.helper (apply) at line 3"]


def test_an_upward_import_names_both_modules_their_layers_and_the_line(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_kinds='"""doc"""\nfrom .sub.deep import x\n')
    assert _problems(root) == [
        "upward import: pkg.kinds (model) imports pkg.sub.deep (feature) at line 2"]


def test_an_import_inside_a_function_counts(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_planning="def f():\n    from . import top\n    return top\n")
    assert _problems(root) == [
        "upward import: pkg.planning (plan) imports pkg.top (cluster) at line 2 (inside a function)"]


def test_subprocess_reached_from_a_plan_module_is_named_with_its_chain(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_planning="from . import errors\nfrom .kinds import K\n",
                    pkg_kinds="def f():\n    from . import errors\n", pkg_errors="import subprocess\n")
    assert _problems(root) == [
        "pkg.kinds (model) reaches subprocess: pkg.kinds:2 -> pkg.errors:1 -> subprocess",
        "pkg.planning (plan) reaches subprocess: pkg.planning:1 -> pkg.errors:1 -> subprocess"]


def test_a_package_init_runs_before_its_module(tmp_path: Path) -> None:
    """Importing pkg.sub.deep runs pkg/sub/__init__.py: what it loads, the importer loads."""
    root = _package(tmp_path, pkg_sub="import ctypes\n", pkg_kinds="from .sub.deep import x\n")
    assert _problems(root)[-1] == \
        "pkg.kinds (model) reaches ctypes: pkg.kinds:1 -> pkg.sub.deep (runs pkg.sub/__init__) -> pkg.sub:1 -> ctypes"


def test_type_checking_imports_make_no_cycle_but_keep_the_layer_rule(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_top="from .helper import h\n",
                    pkg_helper="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import T\n"
                               "    import scapy\n")
    assert _problems(root) == [
        "upward import: pkg.helper (apply) imports pkg.top (cluster) at line 3 (TYPE_CHECKING)"]


def test_the_kernel_lane_uses_only_errors_and_only_the_cli_uses_it(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_lane="from . import errors, kinds\n", pkg_top="from . import lane\n")
    assert _problems(root) == [
        "upward import: pkg.lane (kernel-lane) imports pkg.kinds (model) at line 1",
        "upward import: pkg.top (cluster) imports pkg.lane (kernel-lane) at line 1"]


def test_every_module_needs_a_layer(tmp_path: Path) -> None:
    root = _package(tmp_path)
    (root / "newcomer.py").write_text("")
    assert _problems(root) == [
        "pkg.newcomer: has no layer (put it in a layer's package or a feature folder)"]


def test_a_feature_folder_module_is_feature_unless_it_declares_a_layer(tmp_path: Path) -> None:
    """pkg/sub/deep.py may run subprocess and import an apply module while it is feature, not once it is plan; a
    model module may import it only once it declares model."""
    feature = "import subprocess\nfrom pkg import helper\n"
    assert _problems(_package(tmp_path / "a", pkg_sub_deep=feature)) == []
    assert _problems(_package(tmp_path / "b", pkg_sub_deep='"""doc"""\nLAYER = "plan"\n' + feature)) == [
        "upward import: pkg.sub.deep (plan) imports pkg.helper (apply) at line 4",
        "pkg.sub.deep (plan) reaches subprocess: pkg.sub.deep:3 -> subprocess"]
    upward = ["upward import: pkg.kinds (model) imports pkg.sub.deep (feature) at line 1"]
    for i, deep in enumerate(("", 'def f():\n    LAYER = "model"\nif True:\n    LAYER = "model"\n')):
        assert _problems(_package(tmp_path / f"c{i}", pkg_kinds="from pkg.sub import deep\n",
                                  pkg_sub_deep=deep)) == upward  # no declaration inside a function or an if
    assert _problems(_package(tmp_path / "d", pkg_kinds="from pkg.sub import deep\n",
                              pkg_sub_deep='LAYER: str = "model"\n')) == []


def test_a_declared_module_is_held_to_the_cycle_rule(tmp_path: Path) -> None:
    root = _package(tmp_path, pkg_sub_deep='LAYER = "plan"\nfrom pkg import planning\n',
                    pkg_planning="from pkg.sub import deep\n")
    assert _problems(root) == ["import cycle: pkg.planning (plan) imports pkg.sub.deep (plan) at line 1 -> "
                               "pkg.sub.deep (plan) imports pkg.planning (plan) at line 2"]


NOT_A_LAYER = "is not a string literal naming a layer (" + ", ".join(ORDER) + ")"


@pytest.mark.parametrize("module, source, problem", [
    ("pkg_helper", 'LAYER = "plan"\n', "pkg.helper: declares its LAYER at line 1, but only a module of a feature "
                                       "folder (pkg.sub) may: elsewhere its package is its layer"),
    ("pkg_sub_deep", 'import os\nLAYER = "modle"\n', f"pkg.sub.deep: LAYER = 'modle' at line 2 {NOT_A_LAYER}"),
    ("pkg_sub_deep", 'LAYER = "mo" + "del"\n', f"pkg.sub.deep: LAYER = 'mo' + 'del' at line 1 {NOT_A_LAYER}"),
    ("pkg_sub_deep", 'LAYER = "kernel-lane"\n', f"pkg.sub.deep: LAYER = 'kernel-lane' at line 1 {NOT_A_LAYER}"),
])
def test_a_declaration_names_a_layer_in_a_feature_folder(tmp_path: Path, module: str, source: str,
                                                         problem: str) -> None:
    assert _problems(_package(tmp_path, **{module: source})) == [problem]


@pytest.mark.parametrize("key", [("upward", "pkg.kinds", "pkg.top"), ("cycle", "pkg.kinds", "pkg.top"),
                                 ("reaches", "pkg.kinds", "subprocess")])
def test_the_allow_list_only_shrinks(tmp_path: Path, key: tuple[str, str, str]) -> None:
    root = _package(tmp_path, pkg_top="from . import kinds\n", pkg_kinds="def f():\n    from . import top\n",
                    pkg_helper="import subprocess\n")
    real = {key: "known"}
    problems = _problems(root, real)
    if key[0] == "upward":  # the loop is still there: the allow-list entry covers only the layer rule
        assert problems[0] == ("import cycle: pkg.kinds (model) imports pkg.top (cluster) at line 2 (inside a "
                               "function) -> pkg.top (cluster) imports pkg.kinds (model) at line 1")
    elif key[0] == "cycle":
        assert problems == ["upward import: pkg.kinds (model) imports pkg.top (cluster) at line 2 (inside a function)"]
    else:
        assert problems[-1] == f"KNOWN_VIOLATIONS entry {key} (known) no longer occurs: remove it"
    (root / "kinds.py").write_text("")
    assert _problems(root, real) == [f"KNOWN_VIOLATIONS entry {key} (known) no longer occurs: remove it"]
