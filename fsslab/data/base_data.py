"""Stage-1 data of the BAM lineage: every training image, labelled with the fold's base classes only.

BAM's ``BaseData`` (used to train the PSPNet base learner that AMFormer freezes) reads the *whole* training
list: no area filter, no image removed for its novel classes (unlike the BAM episodic lists), novel-class
pixels relabelled as background 0, base classes renumbered 1..n_base, 255 kept. ``data.train_data=base``
selects this set; ``episodes`` (fsslab's earlier stage-1 data) trains on the episodic training set of
``data.protocol`` instead (on PASCAL fold 0 under the BAM protocol: 4,208 images instead of 5,953).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fsslab.batch import IGNORE_INDEX
from fsslab.data.classes import Benchmark
from fsslab.data.io import read_pair
from fsslab.data.lists import base_label_table, default_list_path, read_list
from fsslab.data.transforms import TrainAugment, normalize
from fsslab.errors import ConfigError


class BaseClassDataset(Dataset):
    """Item i: the i-th image of ``<root>/lists/<split>.txt`` with its base annotation.

    Yields ``query_img`` [3,H,W], ``query_base_mask`` [H,W] (0 background and novel, 1..n_base, 255),
    ``query_mask`` [H,W] (1 on any base class: what the training image logs show) and ``query_padding``.
    Augmentation draws from a generator seeded from torch's RNG, so it follows ``torch.manual_seed`` and the
    DataLoader's worker seeds, as the episodic datasets do.
    """

    def __init__(self, root: str | Path, benchmark: Benchmark, split: str = "train", fold: int = 0, *,
                 size: int = 473, augmentation: TrainAugment | dict | None = None,
                 list_path: str | Path | None = None, base_label: str = "base",
                 n_label_classes: int | None = None) -> None:  # fmt: skip
        if base_label not in ("base", "all"):
            raise ConfigError(f"base_label must be 'base' (BAM: novel classes as background) or 'all' (every class "
                              f"keeps its id: a pretraining corpus), got {base_label!r}")
        self.root, self.benchmark, self.split, self.fold = Path(root), benchmark, split, fold
        self.base_label = base_label
        # ids the labels may hold: the benchmark's, or a pretraining corpus's own (a procedural synthetic split)
        self.n_label_classes = n_label_classes or benchmark.n_classes
        self.items = read_list(list_path or default_list_path(self.root, split), self.root)
        if isinstance(augmentation, dict):
            augmentation = TrainAugment.from_options(size, augmentation)
        self.augmentation = augmentation or TrainAugment(size=size)
        if base_label == "all":
            self.base_table = np.arange(256, dtype=np.uint8)  # every id kept, 255 stays
        else:
            self.base_table = base_label_table(benchmark, fold)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        image_rel, label_rel = self.items[index]
        image, label = read_pair(self.root / image_rel, self.root / label_rel, self.n_label_classes)
        base = self.base_table[label]  # novel → 0, base → 1..n_base, 255 stays (base_label "all": unchanged)
        foreground = np.where(base == IGNORE_INDEX, IGNORE_INDEX, base > 0).astype(np.uint8)
        image, (foreground, base), padding, _ = self.augmentation(image, [foreground, base], rng)
        return {
            "query_img": normalize(image),  # [3,H,W]
            "query_base_mask": torch.from_numpy(base.astype(np.int64)),  # [H,W]
            "query_mask": torch.from_numpy(foreground.astype(np.int64)),  # [H,W]
            "query_padding": torch.from_numpy(padding),  # [H,W] bool
        }

    def describe(self) -> str:
        if self.base_label == "all":
            return (f"{self.benchmark.name} {self.split}: {len(self)} images, every class id kept "
                    f"({self.n_label_classes} classes)")
        return (f"{self.benchmark.name} {self.split} fold {self.fold}: {len(self)} images with base annotations "
                "(BAM BaseData: whole list, novel classes as background)")  # fmt: skip


__all__ = ["BaseClassDataset"]
