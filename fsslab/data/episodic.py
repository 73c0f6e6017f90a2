"""Episodic few-shot datasets (PASCAL-5i, COCO-20i, synthetic) yielding fsslab's episode batch."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fsslab.batch import IGNORE_INDEX
from fsslab.data.classes import PASCAL, Benchmark, coco_benchmark, get_benchmark, synthetic_benchmark
from fsslab.data.eval_protocols import get_protocol
from fsslab.data.io import DatasetError, read_pair
from fsslab.data.lists import MIN_AREA, TRAINING_SPLITS, FoldIndex, base_label_table, build_fold_index
from fsslab.data.transforms import TrainAugment, normalize
from fsslab.data.weak import WEAK_LABELS, weak_label
from fsslab.errors import ConfigError

DEFAULT_SIZE = {"pascal": 473, "coco": 633, "synthetic": 160}
COCO_SCALE = (0.8, 1.25)  # AMFormer/BAM COCO configs; PASCAL uses the TrainAugment default 0.9-1.1


@dataclass(frozen=True)
class Episode:
    """One evaluation episode: indices into the fold index's items."""

    query: int
    class_id: int
    supports: tuple[int, ...]


# Counted while loading samples. They live in a shared-memory tensor so that DataLoader workers (which hold
# copies of the dataset) add to the same totals; each process writes only its own row, so no increment is
# lost to a race. Row 0: the main process; row 1 + worker id: a worker.
STAT_COUNTERS = (
    "queries",  # query images loaded
    "empty_queries",  # ... whose target has no pixel (training: after the crop; evaluation: in the label)
    "supports",  # support images loaded
    "support_crop_fallbacks",  # support crop had no foreground → whole image resized (see random_crop)
    "empty_supports",  # support mask without foreground after every fallback
)
_STAT_ROWS = 65


class EpisodeStats:
    """Counters of fallbacks taken while loading, summed over the main process and its DataLoader workers
    (per dataset and per rank); ``excluded_classes`` and ``queries_without_candidates`` are set when the
    dataset is built."""

    def __init__(self) -> None:
        self._counts = torch.zeros(_STAT_ROWS, len(STAT_COUNTERS), dtype=torch.int64).share_memory_()
        self.excluded_classes: list[int] = []  # fewer than shot+1 images (on_small_class="exclude")
        self.queries_without_candidates = 0  # no class of the query has `shot` other images for supports

    def add(self, name: str, n: int = 1) -> None:
        info = torch.utils.data.get_worker_info()
        row = 0 if info is None else 1 + info.id % (_STAT_ROWS - 1)
        self._counts[row, STAT_COUNTERS.index(name)] += n

    def __getattr__(self, name: str) -> int:  # stats.support_crop_fallbacks etc.: the total over processes
        if name in STAT_COUNTERS:
            return int(self.__dict__["_counts"][:, STAT_COUNTERS.index(name)].sum())
        raise AttributeError(name)

    def to_dict(self) -> dict[str, int | list[int]]:
        totals = self._counts.sum(0).tolist()
        return {**dict(zip(STAT_COUNTERS, totals)), "excluded_classes": list(self.excluded_classes),
                "queries_without_candidates": self.queries_without_candidates}  # fmt: skip


def sum_stats(stats: Iterable[EpisodeStats | Mapping[str, int]]) -> dict[str, int]:
    """The loading counters of several datasets (e.g. the evaluation's, one per seed) added up."""
    total = dict.fromkeys(STAT_COUNTERS, 0)
    for item in stats:
        counts = item.to_dict() if isinstance(item, EpisodeStats) else item
        for name in STAT_COUNTERS:
            total[name] += int(counts.get(name, 0))
    return total


def stats_line(counts: Mapping[str, int]) -> str:
    """One line for a run's summary: the empty queries and the supports that fell back or stayed empty."""
    def get(name: str) -> int:
        return int(counts.get(name, 0))

    return (f"{get('empty_queries')} of {get('queries')} queries without target pixels; "
            f"{get('support_crop_fallbacks')} of {get('supports')} support crops fell back to the whole image "
            f"(no crop window held the object), {get('empty_supports')} supports without foreground")


def _binary_target(label: np.ndarray, class_id: int) -> np.ndarray:
    """Target class → 1, every other class and background → 0, 255 stays 255 (uint8)."""
    out = (label == class_id).astype(np.uint8)
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


class EpisodicDataset(Dataset):
    """K-shot episodes over a VOC-layout root (`<root>/lists/<split>.txt`, two-column lines).

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
    base annotation, `base_label="base"`), or the full label (`"all"`: for a pretraining stand-in on the
    synthetic "pretrain" split, which sees every class as ImageNet has seen PASCAL's).

    Evaluation inputs follow `eval_protocol` (`fsslab.data.eval_protocols`: "fsslab", "ipmt" or
    "amformer"); each sample also carries its original label (`query_mask_ori`, on a canvas as large as the
    largest query label of the list, 255 outside), its size and where the content sits in the input
    (`query_valid_size`), so the evaluation maps the logits back by the exact inverse of the transform.

    A class of the split with fewer than shot+1 images raises (`on_small_class="error"`) or is left
    out and reported in `stats.excluded_classes` (`"exclude"`).
    """

    def __init__(
        self,
        root: str | Path,
        benchmark: Benchmark,
        split: str = "train",
        fold: int = 0,
        shot: int = 1,
        *,
        size: int | None = None,
        protocol: str = "pfenet",
        support_label: str = "mask",
        episodes: int = 1000,
        seed: int = 123,
        augment: bool = True,
        augmentation: TrainAugment | dict | None = None,
        use_base_mask: bool = True,
        base_label: str = "base",
        min_area: int = MIN_AREA,
        list_path: str | Path | None = None,
        query_class_rule: str = "present",
        on_small_class: str = "error",
        eval_protocol: str = "fsslab",
        eval_pad: str = "zero",
        weak_options: dict | None = None,
        cache: bool = True,
        progress: bool = False,
    ) -> None:
        if shot < 1:
            raise ConfigError(f"shot must be >= 1, got {shot}")
        if support_label not in WEAK_LABELS:
            raise ConfigError(f"support_label must be one of {WEAK_LABELS}, got {support_label!r}")
        if query_class_rule not in ("present", "qualifying"):
            raise ConfigError(f"query_class_rule must be 'present' or 'qualifying', got {query_class_rule!r}")
        if base_label not in ("base", "all"):
            raise ConfigError(f"base_label must be 'base' or 'all', got {base_label!r}")
        if on_small_class not in ("error", "exclude"):
            raise ConfigError(f"on_small_class must be 'error' or 'exclude', got {on_small_class!r}")
        self.root = Path(root)
        self.benchmark = benchmark
        self.split, self.fold, self.shot = split, fold, shot
        self.training = split in TRAINING_SPLITS
        family = benchmark.name.split("_")[0]
        self.size = int(size if size is not None else DEFAULT_SIZE.get(family, 473))
        self.support_label = support_label
        self.use_base_mask = use_base_mask
        self.query_class_rule = query_class_rule
        self.eval_pad = eval_pad
        self.augment_enabled = augment
        self.seed = seed
        self.eval_protocol = get_protocol(eval_protocol)
        self.weak_options = dict(weak_options or {})
        if isinstance(augmentation, dict):
            augmentation = TrainAugment.from_options(self.size, augmentation)
        if augmentation is None:
            scale = COCO_SCALE if family == "coco" else (0.9, 1.1)
            augmentation = TrainAugment(size=self.size, scale=scale)
        self.augmentation = augmentation
        self.index: FoldIndex = self._build_index(split, fold, protocol, min_area, list_path, cache, progress)
        self.classes = list(self.index.summary.classes)
        if base_label == "all":  # every class keeps its id: a pretraining stand-in that sees all classes
            self.base_table = np.arange(256, dtype=np.uint8)
        else:
            self.base_table = base_label_table(benchmark, fold)
        self.stats = EpisodeStats()
        self.on_small_class = on_small_class
        self._class_sets = {c: set(items) for c, items in self.index.class_to_items.items()}
        self._same_image = self._same_image_items()
        self._check_small_classes()
        self.candidates = self._query_candidates()
        self.query_items = [i for i, cands in enumerate(self.candidates) if cands]
        self.stats.queries_without_candidates = len(self.candidates) - len(self.query_items)
        if not self.query_items:
            raise DatasetError(
                f"{self.root}: no {split} image of fold {fold} has a class with {shot} other images for supports"
            )
        self.episodes: list[Episode] = self._draw_episodes(episodes, seed) if not self.training else []
        # original query labels are batched on one canvas: the largest (h, w) among this list's queries
        self.label_canvas = self._label_canvas() if not self.training else (0, 0)

    # ----- index bookkeeping -------------------------------------------------------------------------
    def _check_small_classes(self) -> None:
        small = {c: len(v) for c, v in self.index.class_to_items.items() if len(v) < self.shot + 1}
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
        for c in small:
            self._class_sets[c] = set()

    def _same_image_items(self) -> dict[int, set[int]]:
        """Items showing the same image file as another item (by normalised path), each mapped to that group.

        Lists are deduplicated by image path when read, so this is normally empty; it guards supports against
        the query's own image whatever the index holds (a FoldIndex built elsewhere, paths spelt differently).
        """
        by_path: dict[str, list[int]] = defaultdict(list)
        for i, (image_rel, _) in enumerate(self.index.items):
            by_path[os.path.normpath(image_rel)].append(i)
        return {i: set(group) for group in by_path.values() if len(group) > 1 for i in group}

    def _not_supports_of(self, item: int) -> set[int]:
        """The items that can never support query `item`: itself and any item showing the same image."""
        return self._same_image.get(item, {item})

    def _query_candidates(self) -> list[list[int]]:
        """Per indexed image, the classes it can be a query for (enough supports besides its own image)."""
        source = self.index.present if self.query_class_rule == "present" else self.index.qualifying
        out = []
        for item, classes in enumerate(source):
            own = self._not_supports_of(item)
            good = []
            for c in classes:
                members = self._class_sets.get(c, set())
                if len(members) - sum(j in members for j in own) >= self.shot:
                    good.append(c)
            out.append(good)
        return out

    def sample_episode(self, item: int, rng: np.random.Generator) -> Episode:
        """Draw a class of image `item` and `shot` distinct support images of it (never `item`'s image)."""
        candidates = self.candidates[item]
        class_id = candidates[int(rng.integers(len(candidates)))]
        own = self._not_supports_of(item)
        pool = [j for j in self.index.class_to_items[class_id] if j not in own]
        picks = rng.choice(len(pool), size=self.shot, replace=False)
        return Episode(item, class_id, tuple(pool[int(p)] for p in picks))

    def _draw_episodes(self, count: int, seed: int) -> list[Episode]:
        if count < 1:
            raise ConfigError(f"episodes must be >= 1, got {count}")
        rng = np.random.default_rng(seed)
        episodes = []
        for e in range(count):
            episodes.append(self.sample_episode(self.query_items[e % len(self.query_items)], rng))
        return episodes

    def _label_canvas(self) -> tuple[int, int]:
        """Largest label height and width among the episodes' queries (PNG headers only)."""
        sizes = [_label_size(self.root / self.index.items[item][1]) for item in {e.query for e in self.episodes}]
        return max(h for h, _ in sizes), max(w for _, w in sizes)

    # ----- hooks of datasets in another layout (fsslab.data.folder: FSS-1000, class folders) -----------
    def _build_index(self, split: str, fold: int, protocol: str, min_area: int, list_path: str | Path | None,
                     cache: bool, progress: bool) -> FoldIndex:  # fmt: skip
        """The split's class → image index: from the list files and labels of the VOC layout."""
        return build_fold_index(self.benchmark, self.root, split, fold, protocol, min_area, list_path, cache=cache,
                                progress=progress)  # fmt: skip

    def _target(self, label: np.ndarray, class_id: int) -> np.ndarray:
        """Binary target of ``class_id`` in a label from ``_read`` (1 the class, 0 the rest, 255 ignore)."""
        return _binary_target(label, class_id)

    # ----- loading ----------------------------------------------------------------------------------
    def _read(self, item: int) -> tuple[np.ndarray, np.ndarray, tuple[Path, Path]]:
        image_rel, label_rel = self.index.items[item]
        paths = (self.root / image_rel, self.root / label_rel)
        image, label = read_pair(*paths, self.benchmark.n_classes)
        return image, label, paths

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


class PascalEpisodes(EpisodicDataset):
    """PASCAL-5i (VOC 2012 + SBD in `SegmentationClassAug`), fold i novel = 5i+1..5i+5."""

    def __init__(self, root, split: str = "train", fold: int = 0, shot: int = 1, **kwargs) -> None:
        super().__init__(root, PASCAL, split, fold, shot, **kwargs)


class CocoEpisodes(EpisodicDataset):
    """COCO-20i after `fsslab.data.prep`: `<root>/{train,val}2014/`, `<root>/SegmentationClass/<split>2014/`
    and `<root>/lists/{train,val}.txt`; `folds` "interleaved" (FWB, default) or "contiguous" (PANet)."""

    def __init__(self, root, split: str = "train", fold: int = 0, shot: int = 1, folds: str = "interleaved",
                 **kwargs) -> None:  # fmt: skip
        super().__init__(root, coco_benchmark(folds), split, fold, shot, **kwargs)


class SyntheticEpisodes(EpisodicDataset):
    """The embedded synthetic benchmark: VOC layout plus `<root>/meta.json` (class names, palette)."""

    def __init__(self, root, split: str = "train", fold: int = 0, shot: int = 1, **kwargs) -> None:
        root = Path(root)
        if (root / ".synthetic_incomplete").exists():
            raise DatasetError(f"the synthetic benchmark at {root} is incomplete (generation was interrupted); "
                               "generate it again")  # fmt: skip
        super().__init__(root, synthetic_benchmark(root), split, fold, shot, **kwargs)


def _label_size(path: Path) -> tuple[int, int]:
    """(h, w) of a label image from its header, without decoding it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the label {path}: {exc}") from exc
    return height, width


def build_dataset(name: str, root: str | Path, split: str = "train", fold: int = 0, shot: int = 1,
                  **kwargs) -> EpisodicDataset:  # fmt: skip
    """Episodic dataset by benchmark name: "pascal", "coco" (kwarg `folds`), "coco_interleaved",
    "coco_contiguous", "synthetic", or a dataset in the class-folder layout (``fsslab.data.folder``):
    "fss1000" (HSNet's class split) or "folder" (kwarg ``classes`` or ``split_file``: your own split)."""
    key = name.lower()
    if key in ("fss1000", "folder"):
        from fsslab.data.folder import FolderEpisodes, FSS1000Episodes

        return (FSS1000Episodes if key == "fss1000" else FolderEpisodes)(root, split, fold, shot, **kwargs)
    if key == "coco":
        return CocoEpisodes(root, split, fold, shot, **kwargs)
    if key in ("coco_interleaved", "coco_contiguous"):
        return CocoEpisodes(root, split, fold, shot, folds=key.split("_", 1)[1], **kwargs)
    if key == "pascal":
        return PascalEpisodes(root, split, fold, shot, **kwargs)
    if key == "synthetic":
        return SyntheticEpisodes(root, split, fold, shot, **kwargs)
    return EpisodicDataset(root, get_benchmark(name, root), split, fold, shot, **kwargs)
