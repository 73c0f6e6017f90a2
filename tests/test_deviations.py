"""Every deviation a shipped config states (a comment with the word 'deviation' above a key) has its row in
docs/deviations.md, and the paper configs state the ones the generator knows."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from fsslab.configs import generate

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "fsslab" / "configs"
DOC = ROOT / "docs" / "deviations.md"


def commented_deviations(path: Path) -> list[str]:
    """Dotted keys of ``path`` preceded by a comment block that mentions a deviation."""
    keys, stack, block = [], [], []
    for line in path.read_text().splitlines():
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if stripped.startswith("#"):
            if indent:  # a file's header comment describes the whole run, not a key
                block.append(stripped)
            continue
        match = re.match(r"([A-Za-z_]+):", stripped)
        if match:
            stack = [*stack[: indent // 2], match.group(1)]
            if any("deviation" in c.lower() for c in block):
                keys.append(".".join(stack))
        block = []
    return keys


def doc_rows() -> list[tuple[list[str], list[str]]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[1])))
    return rows


SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if "backbone_pretrain_wide" not in p.name)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_stated_deviation_has_its_row(path):
    name = str(path.relative_to(CONFIGS).with_suffix(""))
    rows = doc_rows()
    for key in commented_deviations(path):
        assert any(key in keys and any(fnmatch.fnmatch(name, g) for g in globs) for globs, keys in rows), (
            f"{name}: {key} is commented as a deviation but has no row in docs/deviations.md")


def test_the_generator_writes_its_deviations_as_comments():
    rows = generate.deviation_rows()
    assert {key for _, key, _ in rows} >= {"eval.episodes", "data.protocol", "data.batch_size", "train.epochs"}
    for rel, key, _ in rows:
        assert key in commented_deviations(CONFIGS / rel), (rel, key)


def test_the_cpu_recipes_state_theirs():
    expected = {
        "ipmt_tiny": {"train.base_lr", "data.batch_size", "train.selection", "eval.protocol"},
        "pspnet_base_tiny": {"model.params", "train.base_lr"},
        "amformer_tiny": {"train.objective_index", "train.selection"},
    }
    for name, keys in expected.items():
        assert keys <= set(commented_deviations(CONFIGS / "synthetic" / f"{name}.yaml")), name


def test_selecting_on_test_episodes_is_called_optimistic():
    for rel in ("pascal/ipmt_r50_fold0_1shot.yaml", "pascal/amformer_r50_fold0_1shot.yaml",
                "coco/amformer_r50_fold0_1shot.yaml", "pascal/pspnet_base_r50_fold0.yaml"):  # fmt: skip
        lines = (CONFIGS / rel).read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("  selection:"))
        block = []
        for line in reversed(lines[:at]):
            if not line.lstrip().startswith("#"):
                break
            block.append(line)
        assert "optimistic" in " ".join(block), rel
