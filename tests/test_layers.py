"""Lower layers never import higher ones, and nothing imports in a circle: read every
module's imports from its source (top-level packages, and the rooms inside `model/`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import promptcache

PACKAGE = Path(promptcache.__file__).parent
# What each top-level package may import from inside the package (besides itself).
ALLOWED = {
    "util": set(),
    "config": {"util"},
    "cache": {"util"},
    "model": {"util"},
    "text": {"util"},
    "engine": {"util", "config", "cache", "model", "text"},
    "ledger": {"util", "config", "cache", "engine", "model", "text"},
    "router": {"util", "config", "cache", "engine", "model", "text"},
    "api": {"util", "config", "cache", "engine", "model", "text", "ledger"},
    "bench": {"util", "config", "cache", "engine", "model", "text", "ledger"},
    "cli": {"util", "config", "cache", "engine", "model", "text", "ledger", "router", "api"}
    | {"bench"},
}
# Inside model/: the modules at its top (errors, device, paths, spec, quant) are the base;
# the network (llama) is built from layers/ and attention/, which stand on kernels/;
# loading/ may use them all.
BASE = {"errors", "device", "paths", "spec", "quant"}
MODEL_ALLOWED = {
    "base": BASE,
    "kernels": BASE | {"kernels"},
    "layers": BASE | {"kernels", "layers"},
    "attention": BASE | {"kernels", "attention"},
    "llama": BASE | {"kernels", "layers", "attention"},
    "loading": BASE | {"kernels", "layers", "attention", "llama", "loading"},
}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name ("promptcache.model.llama")."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Dotted names of what `path` imports from the package (`from a import b` counts
    as a.b too, for `b` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("promptcache.")}


def _top(name: str) -> str:
    return name.split(".")[1]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_lower_layers(layer: str) -> None:
    modules = {n: p for n, p in _modules().items() if n.count(".") and _top(n) == layer}
    assert modules, f"no modules under {layer}"
    for name, path in sorted(modules.items()):
        wrong = {_top(n) for n in _imports(path)} - ALLOWED[layer] - {layer}
        assert not wrong, f"{name} imports {sorted(wrong)}"


def test_every_top_level_package_has_rules() -> None:
    tops = {_top(n) for n in _modules() if n.count(".")}
    assert tops == set(ALLOWED)


def _room(name: str) -> str:
    """A model module's room: base, kernels, layers, attention, llama or loading."""
    part = name.split(".")[2]
    return "base" if part in BASE else part


def test_model_rooms_import_only_rooms_below() -> None:
    modules = {n: p for n, p in _modules().items() if n.startswith("promptcache.model.")}
    assert {_room(n) for n in modules} == set(MODEL_ALLOWED)
    for name, path in sorted(modules.items()):
        inside = [n for n in _imports(path) if n.startswith("promptcache.model.")]
        wrong = {n.split(".")[2] for n in inside} - MODEL_ALLOWED[_room(name)]
        assert not wrong, f"{name} imports model.{sorted(wrong)}"


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {n: {d for d in _imports(p) if d in modules and d != n} for n, p in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_cache_imports_nothing_of_engine_api_or_model() -> None:
    for path in sorted((PACKAGE / "cache").rglob("*.py")):
        assert not {_top(n) for n in _imports(path)} & {"engine", "api", "model"}, path.name
