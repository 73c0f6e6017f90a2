"""The benchmarks' episodic datasets (PASCAL-5i, COCO-20i, synthetic) and ``build_dataset``, which picks one by
benchmark name (class folders and FSS-1000 included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsslab.data.classes import PASCAL, coco_benchmark, get_benchmark, synthetic_benchmark
from fsslab.data.episodes.dataset import EpisodicDataset
from fsslab.data.episodes.folder import FolderEpisodes, FSS1000Episodes
from fsslab.data.episodes.options import EpisodeOptions
from fsslab.data.io import DatasetError


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


def build_dataset(name: str, root: str | Path, split: str = "train", fold: int = 0, shot: int = 1, *,
                  options: EpisodeOptions | None = None, **kwargs: Any) -> EpisodicDataset:  # fmt: skip
    """Episodic dataset by benchmark name: "pascal", "coco" (kwarg `folds`), "coco_interleaved",
    "coco_contiguous", "synthetic", or a dataset in the class-folder layout (``fsslab.data.episodes.folder``):
    "fss1000" (HSNet's class split) or "folder" (kwarg ``classes`` or ``split_file``: your own split).

    ``options``: the episodes' ``EpisodeOptions``; the other keyword arguments are the dataset's own (``folds``,
    ``classes``, ...) or fields of ``EpisodeOptions``, applied over ``options``."""
    key = name.lower()
    kwargs["options"] = options
    if key in ("fss1000", "folder"):
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


