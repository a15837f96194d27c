"""The package graph of src/sipbridge, read from the source (ast), not by importing it.

Arrows only point down (see the architecture): sip, media and store import nothing above
them, media imports nothing from sip (the audio stream's types live below both, in
`sipbridge.audiostream`), and no module takes part in an import cycle. Every import
counts: at module level, inside a function, under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "sipbridge"

LOWER = ("sip", "media", "store")  # the planes that import nothing above them
UPPER = ("calls", "api", "agent", "localmodel", "realtime", "gateway", "cli", "demo")
BOTTOM = ("sipbridge.audiostream", "sipbridge.records")  # types every plane may use

# Import cycles that exist today, each as the set of modules it runs through. Each one
# listed here is a fault still to be mended; the test fails on any cycle not listed, and on
# a listed one that is gone (so that the list only ever shrinks).
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset({
    frozenset({"sipbridge.localmodel.server", "sipbridge.localmodel.response"}),
})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of the package that `module` imports (a name imported from a package is
    the submodule when there is one, else the package itself)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield sub
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    """Each module of src/sipbridge and the modules of the package it imports."""
    modules = _modules()
    known = set(modules)
    return {m: set(_imported(m, p, known)) - {m} for m, p in modules.items()}


def _area(module: str) -> str:
    """The package or top-level module right under sipbridge: "sip", "gateway", ..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Each set of modules that import one another, directly or through each other (the
    strongly connected components of more than one module)."""
    reach = {module: reachable(graph, module) for module in graph}
    return {frozenset({m, *(n for n in reach[m] if m in reach.get(n, ()))})
            for m in graph if m in reach[m]}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    """The reader finds what is known to be there, so the checks below check something."""
    assert "sipbridge.sip.sdp" in graph["sipbridge.calls.manager"]
    assert "sipbridge.audiostream" in graph["sipbridge.media.session"]
    assert "sipbridge.store" in graph["sipbridge.gateway"]  # imported inside a method
    assert len(graph) > 50


def crossings(graph: dict[str, set[str]], source: str, targets: tuple[str, ...]) -> list[str]:
    """Each import from a module of area `source` into one of `targets`."""
    return sorted(f"{m} imports {d}" for m, deps in graph.items() if _area(m) == source
                  for d in deps if _area(d) in targets)


def test_media_imports_nothing_from_sip(graph: dict[str, set[str]]) -> None:
    assert crossings(graph, "media", ("sip",)) == []


@pytest.mark.parametrize("plane", LOWER)
def test_lower_planes_import_nothing_above_them(graph: dict[str, set[str]], plane: str) -> None:
    assert crossings(graph, plane, UPPER) == []


@pytest.mark.parametrize("module", BOTTOM)
def test_the_shared_types_import_nothing_of_sipbridge(graph: dict[str, set[str]],
                                                       module: str) -> None:
    assert graph[module] == set()


def test_crossings_are_found() -> None:
    graph = {"sipbridge.media.engine": {"sipbridge.sip.sdp", "sipbridge.audiostream"},
             "sipbridge.store.base": {"sipbridge.calls.call", "sipbridge.records"},
             "sipbridge.sip.sdp": {"sipbridge.audiostream"}}
    assert crossings(graph, "media", ("sip",)) == [
        "sipbridge.media.engine imports sipbridge.sip.sdp"]
    assert crossings(graph, "store", UPPER) == ["sipbridge.store.base imports sipbridge.calls.call"]
    assert crossings(graph, "sip", UPPER) == []


def test_no_import_cycles_but_the_known_ones(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    new = sorted(sorted(c) for c in found - KNOWN_CYCLES)
    gone = sorted(sorted(c) for c in KNOWN_CYCLES - found)
    assert new == [], f"import cycles: {new}"
    assert gone == [], f"no longer cycles, to be removed from KNOWN_CYCLES: {gone}"


def test_cycles_are_found() -> None:
    """The cycle check on made-up graphs: a three-module loop beside a chain; two loops,
    one importing the other."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}}
    assert cycles(graph) == {frozenset({"a", "b"}), frozenset({"c", "d"})}
