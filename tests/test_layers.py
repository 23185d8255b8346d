"""Lower layers never import higher ones: read every module's imports from its source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import promptcache

PACKAGE = Path(promptcache.__file__).parent
# What each layer may import from inside the package (besides itself).
ALLOWED = {
    "cache": {"util"},
    "model": {"util"},
    "engine": {"util", "config", "cache", "model"},
    "ledger": {"util", "config", "cache", "engine", "model"},
    "router": {"util", "config", "cache", "engine", "model"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n.split(".")[1] for n in names if n.startswith("promptcache.") and n.count(".")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_lower_layers(layer: str) -> None:
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files, f"no modules under {layer}/"
    for path in files:
        wrong = _imports(path) - ALLOWED[layer] - {layer}
        assert not wrong, f"{layer}/{path.name} imports {sorted(wrong)}"


def test_cache_imports_nothing_of_engine_api_or_model() -> None:
    for path in sorted((PACKAGE / "cache").glob("*.py")):
        assert not _imports(path) & {"engine", "api", "model"}, path.name
