"""``EpisodeOptions``: how an episodic dataset samples, augments and labels its episodes, checked when built.

One dataclass instead of a long keyword list: the config builds it (``fsslab.engine.build.dataset_options``),
a caller can keep one and change a field with ``dataclasses.replace``, and the keyword arguments of
``EpisodicDataset`` and ``build_dataset`` are its fields (``merge_options`` turns them into one). ``None`` in a
field means the dataset's own default (its benchmark's crop size, its layout's base annotation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsslab.data.eval_protocols import get_protocol
from fsslab.data.lists import MIN_AREA
from fsslab.data.transforms import TrainAugment
from fsslab.data.weak import WEAK_LABELS
from fsslab.errors import ConfigError

QUERY_CLASS_RULES = ("present", "qualifying")
BASE_LABELS = ("base", "all")
SMALL_CLASS_POLICIES = ("error", "exclude")
EVAL_PADS = ("zero", "mean")


@dataclass(frozen=True)
class EpisodeOptions:
    """Every option of an episodic dataset beyond its root, benchmark, split, fold and shot."""

    # --- which episodes: the training list, the query's class, evaluation episodes
    protocol: str = "pfenet"  # training-list protocol (fsslab.data.lists.PROTOCOLS): "pfenet" | "bam"
    min_area: int = MIN_AREA  # pixels for a class to count in an image (the lists' filter)
    list_path: str | Path | None = None  # another list file than <root>/lists/<split>.txt
    # "present": the query's class is any base class with pixels in the image (the references' __getitem__);
    # "qualifying": only those covering min_area pixels
    query_class_rule: str = "present"
    on_small_class: str = "error"  # a class with fewer than shot+1 images: "error" | "exclude" (reported)
    episodes: int = 1000  # evaluation: episodes drawn up front (training ignores it)
    seed: int = 123  # evaluation: the seed of those episodes (training draws from torch's RNG)
    # --- the model's input: training crop and augmentation, evaluation resize
    size: int | None = None  # training crop / evaluation size; None: the benchmark's (episode_dataset.DEFAULT_SIZE)
    augment: bool = True  # training: augment (False: the evaluation transform, e.g. for figures)
    augmentation: TrainAugment | dict | None = None  # TrainAugment or its options; None: the benchmark's scales
    eval_protocol: str = "fsslab"  # evaluation resize and its inverse (fsslab.data.eval_protocols)
    eval_pad: str = "zero"  # evaluation padding of the image: "zero" | "mean"
    # --- labels: the supports' and the base-class annotation of the query
    support_label: str = "mask"  # "mask" | "box" | "scribble" (fsslab.data.weak)
    weak_options: dict | None = None  # keyword arguments of weak_label (e.g. scribble width)
    use_base_mask: bool | None = None  # query_base_mask from the label; None: yes (class folders: no, all 255)
    base_label: str | None = None  # "base" (novel classes -> 0) | "all" (every class kept); None: "base"
    # --- the class index on disk
    cache: bool = True  # keep the index as JSON under <root>/fsslab_index
    progress: bool = False  # a progress bar while indexing

    def __post_init__(self) -> None:
        if self.support_label not in WEAK_LABELS:
            raise ConfigError(f"support_label must be one of {WEAK_LABELS}, got {self.support_label!r}")
        for name, choices in (("query_class_rule", QUERY_CLASS_RULES), ("base_label", BASE_LABELS),
                              ("on_small_class", SMALL_CLASS_POLICIES), ("eval_pad", EVAL_PADS)):
            value = getattr(self, name)
            if value not in choices and not (value is None and name == "base_label"):
                raise ConfigError(f"{name} must be {choices[0]!r} or {choices[1]!r}, got {value!r}")
        get_protocol(self.eval_protocol)  # an unknown name is an error naming the valid ones

    @classmethod
    def names(cls) -> list[str]:
        """The field names: the keyword options ``EpisodicDataset`` and ``data.params`` accept."""
        return [f.name for f in dataclasses.fields(cls)]

    def as_kwargs(self) -> dict[str, Any]:
        """Every field as a keyword argument (shallow: an ``augmentation`` object stays that object)."""
        return {name: getattr(self, name) for name in self.names()}


def merge_options(options: EpisodeOptions | None, kwargs: dict[str, Any], owner: str = "EpisodicDataset"
                  ) -> EpisodeOptions:
    """``options`` (default: all defaults) with the keyword arguments ``kwargs`` applied over it.

    An unknown keyword is a TypeError (as a misspelt argument always was) that lists the valid ones."""
    unknown = sorted(set(kwargs) - set(EpisodeOptions.names()))
    if unknown:
        raise TypeError(f"{owner}: unknown option(s) {unknown}; valid options: {sorted(EpisodeOptions.names())}")
    if options is not None and not isinstance(options, EpisodeOptions):
        raise TypeError(f"{owner}: options must be an EpisodeOptions, got {type(options).__name__}")
    return dataclasses.replace(options or EpisodeOptions(), **kwargs)


__all__ = ["BASE_LABELS", "EVAL_PADS", "QUERY_CLASS_RULES", "SMALL_CLASS_POLICIES", "EpisodeOptions",
           "merge_options"]
