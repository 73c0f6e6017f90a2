"""The public surface: notebooks import only fsslab's public modules, and imports point down the layers
(data -> models -> engine -> viz -> lab/notebooks)."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what notebooks (and users) import: the package's public modules
PUBLIC = {"fsslab", "fsslab.data", "fsslab.models", "fsslab.models.amformer", "fsslab.models.ipmt", "fsslab.engine",
          "fsslab.viz", "fsslab.zoo", "fsslab.lab", "fsslab.support_lab", "fsslab.assignments", "fsslab.config"}
# package -> the fsslab packages/modules it must not import (they sit above it)
# (fsslab.config reads the model registry, so it sits above models)
ABOVE = {
    "data": ("fsslab.models", "fsslab.config", "fsslab.engine", "fsslab.viz", "fsslab.lab", "fsslab.zoo"),
    "models": ("fsslab.data", "fsslab.config", "fsslab.engine", "fsslab.viz", "fsslab.lab", "fsslab.zoo"),
    "engine": ("fsslab.viz", "fsslab.lab", "fsslab.zoo"),
    "viz": ("fsslab.lab", "fsslab.zoo"),
}


def _fsslab_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fsslab":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fsslab"}
    return found


NOTEBOOKS = sorted(ROOT.glob("notebooks/**/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebooks_import_only_the_public_api(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    code = "\n".join("".join(c["source"]) for c in cells)
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    assert _fsslab_imports(tree) <= PUBLIC, sorted(_fsslab_imports(tree) - PUBLIC)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_modules_export_what_they_list(module):
    imported = importlib.import_module(module)
    missing = [name for name in getattr(imported, "__all__", []) if not hasattr(imported, name)]
    assert missing == []


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_imports_point_down_the_layers(package):
    wrong = {}
    for path in sorted((ROOT / "fsslab" / package).rglob("*.py")):
        bad = {m for m in _fsslab_imports(ast.parse(path.read_text())) if m.startswith(ABOVE[package])}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}
