"""fsslab.data: episodic PASCAL-5i / COCO-20i / FSS-1000 / class-folder / synthetic datasets, lists, transforms
and weak labels."""

from __future__ import annotations

import importlib

from fsslab.data.classes import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    COCO_ID_TO_INDEX,
    PASCAL,
    PASCAL_CLASSES,
    Benchmark,
    coco_benchmark,
    get_benchmark,
    synthetic_benchmark,
)
from fsslab.data.episodes.benchmarks import CocoEpisodes, PascalEpisodes, SyntheticEpisodes, build_dataset
from fsslab.data.episodes.dataset import EpisodicDataset
from fsslab.data.episodes.folder import FolderEpisodes, FSS1000Episodes, fss1000_split, read_binary_mask
from fsslab.data.episodes.options import EpisodeOptions
from fsslab.data.episodes.sampler import Episode
from fsslab.data.episodes.stats import EpisodeStats
from fsslab.data.eval_protocols import EVAL_PROTOCOLS, eval_resize, get_protocol
from fsslab.data.io import DatasetError, read_image, read_label, read_pair
from fsslab.data.lists import (
    MIN_AREA,
    FoldIndex,
    IndexSummary,
    build_fold_index,
    read_list,
    to_base_mask,
    write_base_annotations,
)
from fsslab.data.official_io import from_official, official_forward_kwargs, to_official
from fsslab.data.transforms import TrainAugment, denormalize, normalize
from fsslab.data.weak import mask_to_boxes, mask_to_scribbles, weak_label

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "COCO_ID_TO_INDEX",
    "EVAL_PROTOCOLS",
    "MIN_AREA",
    "PASCAL",
    "PASCAL_CLASSES",
    "Benchmark",
    "CocoEpisodes",
    "DatasetError",
    "Episode",
    "EpisodeOptions",
    "EpisodeStats",
    "EpisodicDataset",
    "FSS1000Episodes",
    "FoldIndex",
    "FolderEpisodes",
    "IndexSummary",
    "PascalEpisodes",
    "SyntheticEpisodes",
    "TrainAugment",
    "build_dataset",
    "build_fold_index",
    "coco_benchmark",
    "denormalize",
    "eval_resize",
    "from_official",
    "fss1000_split",
    "generate_synthetic",
    "get_benchmark",
    "get_protocol",
    "mask_to_boxes",
    "mask_to_scribbles",
    "normalize",
    "official_forward_kwargs",
    "read_binary_mask",
    "read_image",
    "read_label",
    "read_list",
    "read_pair",
    "synthetic_benchmark",
    "to_base_mask",
    "to_official",
    "weak_label",
    "write_base_annotations",
]  # fmt: skip

# The generator and the real-data preparation are imported on first use (they pull in cv2 workers, pycocotools
# checks): `import fsslab.data` stays light. A name they do not define is an AttributeError; an import error
# inside them (a missing dependency) is raised as it is, not turned into "no attribute".
_SYNTHETIC_NAMES = {"generate_synthetic", "SyntheticConfig", "read_meta", "write_synthetic_if_missing"}
_PREP_NAMES = {"PrepError", "PrepSummary", "coco_semantic_label", "find_sbd_root", "find_voc_root",
               "pascal_name_sets", "pascal_train_names", "prepare_coco", "prepare_pascal", "read_sbd_label",
               "read_voc_label"}  # fsslab.data.prep.__all__ (tests/data/test_prep.py checks that they agree)


def __getattr__(name: str):
    if name in _SYNTHETIC_NAMES:
        return getattr(importlib.import_module("fsslab.data.synthetic"), name)
    if name in _PREP_NAMES:
        return getattr(importlib.import_module("fsslab.data.prep"), name)
    raise AttributeError(f"module 'fsslab.data' has no attribute {name!r}")
