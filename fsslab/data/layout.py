"""Checks, in seconds, that a dataset root holds what a run will read: the root, the lists, every listed file,
the fold indices and labels with the fold's base classes. ``fsslab doctor`` runs them before a long run
(``fsslab.engine.prerequisites.preflight``); each problem names the command that fixes it.

Nothing here reads an image: files are only stat-ed, and at most ``LABEL_SAMPLE`` labels are opened.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsslab.data.classes import get_benchmark
from fsslab.data.io import read_label
from fsslab.data.lists import default_list_path, fold_index_cache, read_list_with_duplicates
from fsslab.errors import FsslabError

LABEL_SAMPLE = 40  # training labels opened to look for the fold's base classes
VOC_LAYOUTS = ("pascal", "coco", "synthetic")


@dataclass(frozen=True)
class Problem:
    """One thing a run lacks: ``what`` is missing or wrong, ``fix`` the command (or step) that mends it;
    ``blocking``: the run would fail (a notice only costs time)."""

    what: str
    fix: str
    blocking: bool = True

    def line(self) -> str:
        return f"{'MISSING' if self.blocking else 'NOTICE '} {self.what}\n        fix: {self.fix}"


def prepare_command(dataset: str, root: str | Path) -> str:
    """The command that writes a ``dataset`` root with its lists."""
    root = shlex.quote(str(root))
    if dataset == "pascal":
        return f"fsslab data pascal --voc VOCdevkit/VOC2012 --sbd benchmark_RELEASE --out {root}"
    if dataset == "coco":
        return f"fsslab data coco --coco COCO2014 --out {root}"
    if dataset == "fss1000":
        return f"download FSS-1000 (HSNet's README links it) and unpack it so that {root}/<class>/1.jpg, 1.png exist"
    return f"fsslab data synth --root {root}"


def lists_command(dataset: str, root: str | Path, fold: int, protocol: str, coco_split: str) -> str:
    words = ["fsslab", "data", "lists", "--dataset", dataset, "--root", str(root), "--folds", str(fold),
             "--protocol", protocol]  # fmt: skip
    if dataset == "coco":
        words += ["--coco-folds", coco_split]
    return shlex.join(words)


def check_layout(dataset: str, root: str | Path, fold: int, *, splits: tuple[str, ...] = ("train", "val"),
                 protocol: str = "pfenet", coco_split: str = "interleaved", base_labels: bool = False,
                 indexed: tuple[str, ...] | None = None) -> list[Problem]:  # fmt: skip
    """Problems of a VOC-layout root (pascal, coco, synthetic) for ``fold``: the root, ``lists/<split>.txt``,
    the files they list, the cached fold indices (of the ``indexed`` splits, default all: episodic data reads
    one; BAM's BaseData does not) and, with ``base_labels``, base classes in the training labels. Other datasets
    (class folders) are checked for their root only."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(f"data.root {root} does not exist", prepare_command(dataset, root))]
    if dataset not in VOC_LAYOUTS:
        return []
    problems: list[Problem] = []
    benchmark = get_benchmark(dataset, root, coco_split)
    for split in splits:
        list_path = default_list_path(root, split)
        if not list_path.is_file():
            problems.append(Problem(f"list {list_path} does not exist", prepare_command(dataset, root)))
            continue
        try:
            pairs, _ = read_list_with_duplicates(list_path, root, check_files=False)
        except (FsslabError, OSError, ValueError) as exc:  # a malformed line
            problems.append(Problem(f"list {list_path} cannot be read: {exc}", prepare_command(dataset, root)))
            continue
        if not pairs:
            problems.append(Problem(f"list {list_path} is empty", prepare_command(dataset, root)))
            continue
        missing = [rel for pair in pairs for rel in pair if not (root / rel).is_file()]
        if missing:
            problems.append(Problem(
                f"{len(missing)} file(s) listed in {list_path} do not exist, e.g. {missing[:3]}",
                f"{prepare_command(dataset, root)} (or remove their lines from the list)"))
            pairs = [pair for pair in pairs if all((root / rel).is_file() for rel in pair)]
        training = split in ("train", "pretrain")
        cache = fold_index_cache(benchmark, root, split, fold, protocol if training else "pfenet")
        if (indexed is None or split in indexed) and not missing and not cache.is_file():
            problems.append(Problem(
                f"fold index of {split} fold {fold} ({protocol if training else 'novel classes'}) is not built: the "
                f"run scans all {len(pairs)} labels at its start", lists_command(dataset, root, fold, protocol,
                                                                                 coco_split), blocking=False))  # fmt: skip
        if training and base_labels:
            base = set(benchmark.base_classes(fold))
            step = max(1, len(pairs) // LABEL_SAMPLE)
            seen: set[int] = set()
            try:
                for _, label_rel in pairs[::step][:LABEL_SAMPLE]:
                    seen.update(int(v) for v in np.unique(read_label(root / label_rel, benchmark.n_classes)))
            except (FsslabError, OSError, ValueError) as exc:  # ids outside the benchmark's, a corrupt file
                problems.append(Problem(f"a {split} label cannot be read as this benchmark's: {exc}",
                                        prepare_command(dataset, root)))
                continue
            if not seen & base:
                problems.append(Problem(
                    f"no base class of fold {fold} in {min(len(pairs), LABEL_SAMPLE)} sampled {split} labels (ids "
                    f"{sorted(seen)}): the base annotations this model learns from are derived from semantic labels "
                    "(class ids 1..N), not binary masks", prepare_command(dataset, root)))
    return problems


__all__ = ["LABEL_SAMPLE", "Problem", "check_layout", "lists_command", "prepare_command"]
