"""Control evaluations: does a model use its supports, or does it segment salient objects regardless?"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from fsslab.config.schema import SUPPORT_MODES
from fsslab.errors import ConfigError, DatasetError


class MismatchedSupports(Dataset):
    """The evaluation episodes of ``dataset``, each query paired with the supports of another class.

    Episode ``i`` keeps its query, query mask and class; every ``support_*`` tensor comes from the first
    later episode (cyclically) whose class differs. (The donor episode is loaded whole: its support masks
    must be those of its own class, which only the episode itself computes.) A model that reads its supports loses accuracy on this
    control; a model that ignores them (a class-agnostic foreground segmenter) scores as on the real
    episodes. The pairing is fixed by the episode list, so the control is as deterministic as the
    evaluation itself.
    """

    def __init__(self, dataset: Dataset) -> None:
        listed = getattr(dataset, "episodes", None)
        if listed is None:
            raise TypeError(
                f"{type(dataset).__name__} has no `episodes` list: mismatched supports need an evaluation "
                "(non-training) episodic dataset"
            )
        classes = [episode.class_id for episode in listed]
        if len(set(classes)) < 2:
            raise DatasetError(
                f"mismatched supports need episodes of at least two classes; all {len(classes)} are of class "
                f"{classes[0] if classes else None}"
            )
        self.dataset = dataset
        self.episodes = listed
        self.donor = [self._next_other(classes, i) for i in range(len(classes))]

    @staticmethod
    def _next_other(classes: list[int], index: int) -> int:
        n = len(classes)
        for step in range(1, n):
            other = (index + step) % n
            if classes[other] != classes[index]:
                return other
        raise AssertionError("unreachable: at least two classes were checked")

    def __len__(self) -> int:
        return len(self.donor)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        donor = self.dataset[self.donor[index]]
        for key, value in donor.items():
            if key.startswith("support_"):
                sample[key] = value
        return sample

    def __getattr__(self, name: str) -> Any:  # benchmark, stats, ... of the wrapped episodes
        if name == "dataset":  # not set yet (unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self.dataset, name)


def with_supports(dataset: Dataset, mode: str) -> Dataset:
    """``dataset`` unchanged (``"matched"``) or wrapped in ``MismatchedSupports`` (``"mismatched"``)."""
    if mode not in SUPPORT_MODES:
        raise ConfigError(f"eval.supports must be one of {SUPPORT_MODES}, got {mode!r}")
    return dataset if mode == "matched" else MismatchedSupports(dataset)


__all__ = ["SUPPORT_MODES", "MismatchedSupports", "with_supports"]
