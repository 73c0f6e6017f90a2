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


# JupyterLab autosaves into .ipynb_checkpoints/ (ignored by git): only the notebooks themselves
NOTEBOOKS = sorted(p for p in ROOT.glob("notebooks/**/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


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


# The config modules sit between models and engine: config reads the model registry; its schema and value
# coercion read nothing of fsslab but its errors.
CONFIG_MAY_IMPORT = {
    "config.py": ("fsslab.config_schema", "fsslab.config_values", "fsslab.errors", "fsslab.models"),
    "config_schema.py": ("fsslab.errors",),
    "config_values.py": ("fsslab.errors",),
}


@pytest.mark.parametrize("module", sorted(CONFIG_MAY_IMPORT))
def test_config_modules_import_only_what_sits_below(module):
    imported = _fsslab_imports(ast.parse((ROOT / "fsslab" / module).read_text()))
    assert {m for m in imported if not m.startswith(CONFIG_MAY_IMPORT[module])} == set()


# Modules split by job: each new module exports what it lists, and every name keeps the import path it had
# before the split (the old module re-exports it).
SPLIT_MODULES = ["fsslab.config_schema", "fsslab.data.episode_dataset", "fsslab.data.episode_options",
                 "fsslab.data.episode_sampler", "fsslab.data.episode_stats", "fsslab.data.episodic",
                 "fsslab.engine.sampling", "fsslab.engine.step", "fsslab.engine.stops", "fsslab.engine.train_state",
                 "fsslab.models.amformer.analysis", "fsslab.models.amformer.loss", "fsslab.models.layers"]
OLD_PATHS = {
    "fsslab.config": ("CHOICES", "SUPPORT_MODES", "_CHOICES", "DataConfig", "EvalConfig", "ExpectedConfig",
                      "ModelConfig", "RunConfig", "TrainConfig", "flow_yaml", "parse_value"),
    "fsslab.data.episodic": ("COCO_SCALE", "DEFAULT_SIZE", "STAT_COUNTERS", "CocoEpisodes", "Episode", "EpisodeStats",
                             "EpisodicDataset", "PascalEpisodes", "SyntheticEpisodes", "build_dataset", "stats_line",
                             "sum_stats"),
    "fsslab.engine.resume": ("restore_state", "resume_advice"),
    "fsslab.engine.trainer": ("BuiltOptimizer", "Trainer", "TrainingStopped", "build_optimizers", "poly_factor",
                              "seed_everything"),
    "fsslab.models.amformer.model": ("TRACE_KEYS", "AMFormer", "REFINE_THRESHOLD", "up"),
}


@pytest.mark.parametrize("module", SPLIT_MODULES)
def test_split_modules_export_what_they_list(module):
    imported = importlib.import_module(module)
    assert [name for name in imported.__all__ if not hasattr(imported, name)] == []


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_moved_names_keep_their_old_import_path(module):
    imported = importlib.import_module(module)
    assert [name for name in OLD_PATHS[module] if not hasattr(imported, name)] == []
