"""The architecture: notebooks import only the public API, imports point down the layers, no import cycle
(counting imports inside functions, under ``TYPE_CHECKING`` and ``importlib.import_module("fsslab....")``), and
loading a model for inference never imports the training loop."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fsslab"
# what notebooks (and users) import: the package's public modules
PUBLIC = {"fsslab", "fsslab.data", "fsslab.data.synthetic", "fsslab.models", "fsslab.models.amformer",
          "fsslab.models.ipmt", "fsslab.engine", "fsslab.engine.train", "fsslab.viz", "fsslab.zoo", "fsslab.lab",
          "fsslab.lab.support", "fsslab.lab.assignments", "fsslab.lab.ablation", "fsslab.lab.claims", "fsslab.config"}
# the layers, bottom first (README "Layout"): a module imports only from its own layer or the ones below
LAYERS = [
    ("fsslab.errors", "fsslab.batch", "fsslab.version", "fsslab.jsonl", "fsslab.files"),
    ("fsslab.config",),
    ("fsslab.data", "fsslab.models"),
    ("fsslab.engine",),
    ("fsslab.zoo", "fsslab.viz"),
    ("fsslab.predict",),
    ("fsslab.lab",),
    ("fsslab.cli",),
]
# packages of one layer that must not import each other, and sub-layers: (importer, what it must not import)
FORBIDDEN = [
    ("fsslab.data", "fsslab.models"), ("fsslab.models", "fsslab.data"),
    ("fsslab.viz", "fsslab.zoo"), ("fsslab.zoo", "fsslab.viz"),
    # the engine's evaluation and inference sit below its training loop
    *((f"fsslab.engine.{m}", "fsslab.engine.train") for m in
      ("build", "checkpoint", "controls", "distributed", "episodes", "evaluate", "inference", "metrics",
       "prerequisites", "runner", "sampling")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(target: str) -> str | None:
    """The fsslab module ``target`` names (a name inside a module: that module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(module: str) -> set[str]:
    """Every fsslab module ``module`` imports, wherever the import statement is (function bodies and
    ``TYPE_CHECKING`` blocks included) and ``importlib.import_module("fsslab...")`` calls."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from fsslab.engine import checkpoint` imports the module; `from fsslab.engine import x` the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        found |= {t for t in (_resolve(t) for t in targets if t.split(".")[0] == "fsslab") if t and t != module}
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def _layer(module: str) -> int | None:
    if module == "fsslab":  # the package's own __init__: the public entry points, above everything
        return len(LAYERS)
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None and not m.startswith("fsslab.configs")] == []


def test_imports_point_down_the_layers():
    wrong = {m: sorted(t for t in targets if (_layer(t) or 0) > (_layer(m) or 0)) for m, targets in GRAPH.items()}
    assert {m: t for m, t in wrong.items() if t} == {}


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN, ids=[f"{a}-x-{b}" for a, b in FORBIDDEN])
def test_siblings_stay_apart(importer, forbidden):
    wrong = {m: sorted(t for t in GRAPH[m] if t == forbidden or t.startswith(forbidden + "."))
             for m in GRAPH if m == importer or m.startswith(importer + ".")}
    assert {m: t for m, t in wrong.items() if t} == {}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in graph:
        if root in index:
            continue
        visit(root)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    visit(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    assert strongly_connected(GRAPH) == []


def test_the_cycle_finder_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_scan_sees_function_level_and_type_checking_imports(tmp_path):
    assert "fsslab.engine.train.trainer" in GRAPH["fsslab.engine.train.launch"]
    # `from fsslab.engine import distributed` names the module, not the package
    assert "fsslab.engine.distributed" in GRAPH["fsslab.engine.train.launch"]
    assert "fsslab.predict" in GRAPH["fsslab"]  # PEP 562 lazy exports through importlib.import_module
    # an import inside a function and one under TYPE_CHECKING count (parsed, not executed)
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fsslab.engine.train import trainer\n"
              "def f():\n    from fsslab.zoo import pack\n")
    MODULES["fsslab.scan_probe"] = probe = tmp_path / "probe.py"
    try:
        probe.write_text(source)
        assert imports_of("fsslab.scan_probe") == {"fsslab.engine.train.trainer", "fsslab.zoo.pack"}
    finally:
        del MODULES["fsslab.scan_probe"]


def test_loading_a_model_for_inference_does_not_import_the_training_loop():
    code = ("import sys, fsslab, fsslab.engine, fsslab.zoo, fsslab.viz\n"
            "fsslab.load_model(pretrained='baseline_tiny_fold0_1shot')\n"
            "print(sorted(m for m in sys.modules if m.startswith('fsslab.engine.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# JupyterLab autosaves into .ipynb_checkpoints/ (ignored by git): only the notebooks themselves
NOTEBOOKS = sorted(p for p in ROOT.glob("notebooks/**/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _notebook_imports(path: Path) -> set[str]:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    code = "\n".join("".join(c["source"]) for c in cells)
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fsslab":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fsslab"}
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebooks_import_only_the_public_api(path):
    assert _notebook_imports(path) - PUBLIC == set()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if "__all__" in MODULES[m].read_text()))
def test_modules_export_what_they_list(module):
    imported = importlib.import_module(module)
    assert [name for name in imported.__all__ if not hasattr(imported, name)] == []
