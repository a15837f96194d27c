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

# Import cycles that exist today, each as the set of modules it runs through. Each one
# listed here is a fault still to be mended; the test fails on any cycle not listed, and on
# a listed one that is gone (so that the list only ever shrinks).
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset({
    frozenset({"sipbridge.calls.manager", "sipbridge.calls.transfers"}),
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


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_is_read(graph: dict[str, set[str]]) -> None:
    """The reader finds what is known to be there, so the checks below check something."""
    assert "sipbridge.sip.sdp" in graph["sipbridge.calls.manager"]
    assert "sipbridge.audiostream" in graph["sipbridge.media.session"]
    assert "sipbridge.store" in graph["sipbridge.gateway"]  # imported inside a method
    assert len(graph) > 50


def test_media_imports_nothing_from_sip(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() if _area(m) == "media"
                   for d in deps if _area(d) == "sip")
    assert wrong == []


@pytest.mark.parametrize("plane", LOWER)
def test_lower_planes_import_nothing_above_them(graph: dict[str, set[str]], plane: str) -> None:
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() if _area(m) == plane
                   for d in deps if _area(d) in UPPER)
    assert wrong == []


def test_no_import_cycles_but_the_known_ones(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    new = sorted(sorted(c) for c in found - KNOWN_CYCLES)
    gone = sorted(sorted(c) for c in KNOWN_CYCLES - found)
    assert new == [], f"import cycles: {new}"
    assert gone == [], f"no longer cycles, to be removed from KNOWN_CYCLES: {gone}"


def test_cycles_are_found() -> None:
    """The cycle check on a made-up graph: a three-module loop, a self-contained chain."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"})}
