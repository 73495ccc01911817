"""The import graph: no cycles, and each layer imports only the layers below it.

docs/architecture.md draws the layers; this test is that drawing checked on the source (no
module is imported, so it runs anywhere). KNOWN lists the edges that still point the wrong
way, each waiting for the work named beside it: the list may only shrink.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# folder -> the package it installs as (unionfs/runtime and unionfs/benchmarks are links)
SOURCES = {"unionfs": ROOT / "unionfs", "unionfs.runtime": ROOT / "runtime",
           "unionfs.benchmarks": ROOT / "benchmarks"}
LINKS = {ROOT / "unionfs" / "runtime", ROOT / "unionfs" / "benchmarks"}

# A layer and the layers it may import, top to bottom (unionfs.errors: anyone).
ALLOWED: dict[str, set[str]] = {
    "unionfs.cli": {"*"},
    "unionfs.benchmarks": {"unionfs.api", "unionfs.mount", "unionfs.cli", "unionfs.fuse",
                           "unionfs.engine", "unionfs.core"},
    "unionfs.build": {"unionfs.runtime", "unionfs.store", "unionfs.api", "unionfs.core"},
    "unionfs.runtime": {"unionfs.store", "unionfs.api", "unionfs.core"},
    "unionfs.store": {"unionfs.api", "unionfs.mount", "unionfs.core", "unionfs.layers"},
    "unionfs.api": {"unionfs.mount"},  # the public names of the mount API
    # the mount API: options, spec, records, control client; its server entry point
    # builds the engine and hands it to the adapter
    "unionfs.mount": {"unionfs.fuse", "unionfs.engine", "unionfs.core"},
    "unionfs.fuse": {"unionfs.engine", "unionfs.core", "unionfs.layers"},
    "unionfs.engine": {"unionfs.core", "unionfs.layers"},
    "unionfs.layers": {"unionfs.core"},
    "unionfs.core": set(),
    "unionfs.errors": set(),
}
# Edges against the layering, each waiting for the work named beside it (none left).
KNOWN: set[tuple[str, str]] = set()
CORE_FORBIDDEN = {"pyfuse3", "trio", "subprocess", "socket", "threading", "shutil"}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, base in SOURCES.items():
        for path in sorted(base.rglob("*.py")):
            if any(path.is_relative_to(link) for link in LINKS):
                continue
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


MODULES = modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:`` (imports for annotations, not at run time)."""
    return {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body for sub in ast.walk(stmt)}


def imported(name: str, path: Path) -> Iterator[str]:
    """The absolute names a module imports at run time (relative ones resolved)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            yield from subs or [base]


def own(target: str) -> str | None:
    """The project module ``target`` names (a name inside a module counts as the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {name: {m for t in imported(name, p) if (m := own(t)) and m != name}
         for name, p in MODULES.items()}


def layer(module: str) -> str:
    for name in sorted(ALLOWED, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return module


def test_every_module_has_a_layer() -> None:
    assert sorted(m for m in MODULES if layer(m) not in ALLOWED) == [
        "unionfs", "unionfs.__main__"]


def test_layers_import_only_downwards() -> None:
    wrong = {(layer(m), layer(d)) for m, deps in GRAPH.items() for d in deps
             if layer(m) in ALLOWED and "*" not in ALLOWED[layer(m)]
             and layer(d) not in {layer(m), "unionfs.errors"}
             and layer(d) not in ALLOWED[layer(m)]}
    assert wrong - KNOWN == set()
    assert KNOWN - wrong == set(), "fixed: remove these from KNOWN"


def test_the_store_knows_neither_runtime_nor_cli() -> None:
    assert not {d for m, deps in GRAPH.items() if layer(m) == "unionfs.store" for d in deps
                if layer(d) in ("unionfs.runtime", "unionfs.cli", "unionfs.build")}


def test_core_is_pure() -> None:
    impure = sorted(f"{m} -> {t}" for m, p in MODULES.items() if layer(m) == "unionfs.core"
                    for t in imported(m, p) if t.split(".")[0] in CORE_FORBIDDEN)
    assert impure == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (each an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = [stack.pop()]
            while comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert strongly_connected(GRAPH) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]]


def test_runtime_and_benchmarks_are_not_top_level_names() -> None:
    assert not sorted(f"{m} -> {t}" for m, p in MODULES.items() for t in imported(m, p)
                      if t.split(".")[0] in ("runtime", "benchmarks"))
    for link in LINKS:
        assert link.is_symlink() and link.resolve() == ROOT / link.name


def test_every_package_is_installed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert packages == listed
