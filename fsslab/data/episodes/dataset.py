"""``EpisodicDataset``: K-shot episodes over a class index, loaded, transformed and batched as fsslab's episode.

The dataset of each benchmark (PASCAL-5i, COCO-20i, synthetic) and ``build_dataset`` are in ``episodic``; the
class folders' (FSS-1000, your own) in ``folder``. What an episode is (``episode_sampler``), the options
(``episode_options``) and the loading counters (``episode_stats``) have their own modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fsslab.batch import IGNORE_INDEX
from fsslab.data.classes import Benchmark
from fsslab.data.episodes.options import EpisodeOptions, merge_options
from fsslab.data.episodes.sampler import Episode, EpisodeSampler, small_classes
from fsslab.data.episodes.stats import EpisodeStats, stats_line
from fsslab.data.eval_protocols import get_protocol
from fsslab.data.io import DatasetError, image_size, read_pair
from fsslab.data.lists import TRAINING_SPLITS, FoldIndex, base_label_table, build_fold_index
from fsslab.data.transforms import TrainAugment, normalize
from fsslab.data.weak import weak_label
from fsslab.errors import ConfigError

DEFAULT_SIZE = {"pascal": 473, "coco": 633, "synthetic": 160}
COCO_SCALE = (0.8, 1.25)  # AMFormer/BAM COCO configs; PASCAL uses the TrainAugment default 0.9-1.1


def _binary_target(label: np.ndarray, class_id: int) -> np.ndarray:
    """Target class → 1, every other class and background → 0, 255 stays 255 (uint8)."""
    out = (label == class_id).astype(np.uint8)
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


class EpisodicDataset(Dataset):
    """K-shot episodes over a VOC-layout root (`<root>/lists/<split>.txt`, two-column lines).

    Options: ``options`` (an ``EpisodeOptions``) and/or its fields as keyword arguments (``size=...``,
    ``support_label=...``: applied over ``options``); ``self.options`` holds them resolved (sizes and base
    labels filled in), so ``EpisodicDataset(..., options=ds.options)`` builds the same dataset again.

    Train mode (split "train", or the synthetic "pretrain"): item i is the i-th image with a qualifying
    base class; its class is drawn among the image's base classes (`query_class_rule="present"`: any base
    class with pixels in the image, as PFENet/IPMT/BAM/AMFormer `__getitem__` do; `"qualifying"`: only
    those covering `min_area` pixels); K supports are other images where that class qualifies, drawn without
    replacement; all draws and augmentations use a generator seeded from torch's RNG, so they follow
    `torch.manual_seed` and the DataLoader's per-worker seeds.
    Eval mode (any other split): a list of `episodes` episodes is drawn up front from `seed`
    (queries in list order, repeated, as the references iterate their val loader), so the same seed
    gives identical episodes whatever the number of workers.

    `query_base_mask` is the label with base classes renumbered 1..n_base and novel classes as 0 (BAM's
    base annotation, `base_label="base"`), or the full label (`"all"`: every class keeps its id, e.g. for a
    pretraining stand-in on a 20-class synthetic "pretrain" split; the default procedural one is read whole by
    `fsslab.data.base_data.BaseClassDataset`).

    Evaluation inputs follow `eval_protocol` (`fsslab.data.eval_protocols`: "fsslab", "ipmt" or
    "amformer"); each sample also carries its original label (`query_mask_ori`, on a canvas as large as the
    largest query label of the list, 255 outside), its size and where the content sits in the input
    (`query_valid_size`), so the evaluation maps the logits back by the exact inverse of the transform.

    A class of the split with fewer than shot+1 images raises (`on_small_class="error"`) or is left
    out and reported in `stats.excluded_classes` (`"exclude"`).
    """

    def __init__(self, root: str | Path, benchmark: Benchmark, split: str = "train", fold: int = 0, shot: int = 1,
                 *, options: EpisodeOptions | None = None, **kwargs: Any) -> None:  # fmt: skip
        if shot < 1:
            raise ConfigError(f"shot must be >= 1, got {shot}")
        o = merge_options(options, kwargs, type(self).__name__)
        self.root = Path(root)
        self.benchmark = benchmark
        self.split, self.fold, self.shot = split, fold, shot
        self.training = split in TRAINING_SPLITS
        family = benchmark.name.split("_")[0]
        self.size = int(o.size if o.size is not None else DEFAULT_SIZE.get(family, 473))
        self.support_label = o.support_label
        self.use_base_mask = True if o.use_base_mask is None else o.use_base_mask
        base_label = o.base_label or "base"
        self.query_class_rule = o.query_class_rule
        self.eval_pad = o.eval_pad
        self.augment_enabled = o.augment
        self.seed = o.seed
        self.eval_protocol = get_protocol(o.eval_protocol)
        self.weak_options = dict(o.weak_options or {})
        augmentation = o.augmentation
        if isinstance(augmentation, dict):
            augmentation = TrainAugment.from_options(self.size, augmentation)
        if augmentation is None:
            scale = COCO_SCALE if family == "coco" else (0.9, 1.1)
            augmentation = TrainAugment(size=self.size, scale=scale)
        self.augmentation = augmentation
        self.options = EpisodeOptions(**{**o.as_kwargs(), "size": self.size, "use_base_mask": self.use_base_mask,
                                         "base_label": base_label, "augmentation": augmentation})
        self.index: FoldIndex = self._build_index(split, fold, o.protocol, o.min_area, o.list_path, o.cache,
                                                  o.progress)
        self.classes = list(self.index.summary.classes)
        if base_label == "all":  # every class keeps its id: a pretraining stand-in that sees all classes
            self.base_table = np.arange(256, dtype=np.uint8)
        else:
            self.base_table = base_label_table(benchmark, fold)
        self.stats = EpisodeStats()
        self.on_small_class = o.on_small_class
        small = small_classes(self.index, shot)
        self._check_small_classes(small)
        self.sampler = EpisodeSampler(self.index, shot, o.query_class_rule, excluded=small)
        self.candidates, self.query_items = self.sampler.candidates, self.sampler.query_items
        self.stats.queries_without_candidates = len(self.candidates) - len(self.query_items)
        if not self.query_items:
            raise DatasetError(
                f"{self.root}: no {split} image of fold {fold} has a class with {shot} other images for supports"
            )
        self.episodes: list[Episode] = self.sampler.draw(o.episodes, o.seed) if not self.training else []
        # original query labels are batched on one canvas: the largest (h, w) among this list's queries
        self.label_canvas = self._label_canvas() if not self.training else (0, 0)

    # ----- episodes -----------------------------------------------------------------------------------
    def _check_small_classes(self, small: dict[int, int]) -> None:
        """Classes with fewer than shot+1 images: an error naming them, or left out and reported."""
        if not small:
            return
        if self.on_small_class == "error":
            details = ", ".join(f"{c} ({self.benchmark.class_name(c)}): {n}" for c, n in small.items())
            raise DatasetError(
                f"{self.root} {self.split} fold {self.fold}: {self.shot}-shot episodes need at least "
                f"{self.shot + 1} images per class; too few for class(es) {details}. "
                "Pass on_small_class='exclude' to leave them out (they are then reported)."
            )
        self.stats.excluded_classes = sorted(small)

    def sample_episode(self, item: int, rng: np.random.Generator) -> Episode:
        """Draw a class of image `item` and `shot` distinct support images of it (never `item`'s image)."""
        return self.sampler.sample(item, rng)

    def _label_canvas(self) -> tuple[int, int]:
        """Largest label height and width among the episodes' queries (PNG headers only)."""
        sizes = [image_size(self.root / self.index.items[item][1], "label") for item in {e.query for e in self.episodes}]
        return max(h for h, _ in sizes), max(w for _, w in sizes)

    # ----- hooks of datasets in another layout (fsslab.data.episodes.folder: FSS-1000, class folders) -----------
    def _build_index(self, split: str, fold: int, protocol: str, min_area: int, list_path: str | Path | None,
                     cache: bool, progress: bool) -> FoldIndex:  # fmt: skip
        """The split's class → image index: from the list files and labels of the VOC layout."""
        return build_fold_index(self.benchmark, self.root, split, fold, protocol, min_area, list_path, cache=cache,
                                progress=progress)  # fmt: skip

    def _target(self, label: np.ndarray, class_id: int) -> np.ndarray:
        """Binary target of ``class_id`` in a label from ``_read`` (1 the class, 0 the rest, 255 ignore)."""
        return _binary_target(label, class_id)

    def _read(self, item: int) -> tuple[np.ndarray, np.ndarray, tuple[Path, Path]]:
        image_rel, label_rel = self.index.items[item]
        paths = (self.root / image_rel, self.root / label_rel)
        image, label = read_pair(*paths, self.benchmark.n_classes)
        return image, label, paths

    # ----- loading ----------------------------------------------------------------------------------
    def _support_target(self, label: np.ndarray, class_id: int, seed: int) -> np.ndarray:
        mask = self._target(label, class_id)
        return weak_label(mask, self.support_label, seed=seed, **self.weak_options)

    def __len__(self) -> int:
        return len(self.query_items) if self.training else len(self.episodes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.training:
            # one generator per item, seeded from torch's RNG (seeded per DataLoader worker)
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            episode = self.sample_episode(self.query_items[index], rng)
        else:
            episode = self.episodes[index]
        item, class_id, supports = episode.query, episode.class_id, episode.supports
        if not self.training:
            rng = np.random.default_rng([self.seed, index])  # eval: only the scribble seeds draw from it
        image, label, _ = self._read(item)
        query_mask = self._target(label, class_id)
        base_mask = self.base_table[label] if self.use_base_mask else np.full_like(label, IGNORE_INDEX)
        sample: dict[str, torch.Tensor] = {}
        q_img, (q_mask, q_base), q_pad, q_valid = self._transform(image, [query_mask, base_mask], rng, False)
        self.stats.add("queries")
        # training learns from the crop; evaluation scores the label at its own resolution
        if not ((q_mask if self.training else query_mask) == 1).any():
            self.stats.add("empty_queries")
        s_imgs, s_masks, s_pads = [], [], []
        for support in supports:
            s_image, s_label, _ = self._read(support)
            target = self._support_target(s_label, class_id, seed=int(rng.integers(2**31)))
            s_img, (s_mask,), s_pad, _ = self._transform(s_image, [target], rng, True)
            self.stats.add("supports")
            if not (s_mask == 1).any():
                self.stats.add("empty_supports")
            s_imgs.append(normalize(s_img))
            s_masks.append(torch.from_numpy(s_mask.astype(np.int64)))
            s_pads.append(torch.from_numpy(s_pad))
        sample["query_img"] = normalize(q_img)  # [3,H,W]
        sample["query_mask"] = torch.from_numpy(q_mask.astype(np.int64))  # [H,W]
        sample["query_padding"] = torch.from_numpy(q_pad)  # [H,W] bool
        sample["support_imgs"] = torch.stack(s_imgs)  # [K,3,H,W]
        sample["support_masks"] = torch.stack(s_masks)  # [K,H,W]
        sample["support_padding"] = torch.stack(s_pads)  # [K,H,W]
        sample["class_id"] = torch.tensor(class_id, dtype=torch.long)
        sample["query_base_mask"] = torch.from_numpy(q_base.astype(np.int64))  # [H,W]
        sample["episode_index"] = torch.tensor(index, dtype=torch.long)
        if not self.training:  # what the evaluation needs to score at the label's own resolution
            sample["query_mask_ori"] = torch.from_numpy(self._on_canvas(query_mask, item))  # [Hc,Wc], 255 outside
            sample["query_ori_size"] = torch.tensor(label.shape, dtype=torch.long)  # (h, w) of the label
            sample["query_valid_size"] = torch.tensor(q_valid, dtype=torch.long)  # (h, w) of the content in the input
        return sample

    def _on_canvas(self, label: np.ndarray, item: int) -> np.ndarray:
        canvas_h, canvas_w = self.label_canvas
        height, width = label.shape
        if height > canvas_h or width > canvas_w:  # the file changed since the dataset was built
            raise DatasetError(
                f"{self.root / self.index.items[item][1]} is now {height}x{width}, larger than when this dataset "
                f"was built ({canvas_h}x{canvas_w} at most); build the dataset again"
            )
        out = np.full((canvas_h, canvas_w), IGNORE_INDEX, np.int64)
        out[:height, :width] = label
        return out

    def _transform(self, image, labels, rng, is_support: bool):
        """(image, labels, padding, valid size) of the model's input: training augmentation or the
        evaluation protocol (``fsslab.data.eval_protocols``), whose valid size the evaluation inverts."""
        if self.training and self.augment_enabled:
            image, labels, padding, crop = self.augmentation(image, labels, rng, require_foreground=is_support)
            if crop.fallback:
                self.stats.add("support_crop_fallbacks")
            return image, labels, padding, padding.shape
        return self.eval_protocol.apply(image, labels, self.size, pad_image=self.eval_pad)

    # ----- reporting --------------------------------------------------------------------------------
    def describe(self) -> str:
        s = self.stats
        excluded = f"; excluded classes {s.excluded_classes}" if s.excluded_classes else ""
        return (
            f"{self.benchmark.name} {self.split} fold {self.fold}, {self.shot}-shot, {len(self)} "
            f"{'queries' if self.training else 'episodes'}; {self.index.summary}; "
            f"{s.queries_without_candidates} images without a usable query class{excluded}; loaded so far: "
            f"{stats_line(s.to_dict())}"
        )


__all__ = ["COCO_SCALE", "DEFAULT_SIZE", "EpisodicDataset"]
