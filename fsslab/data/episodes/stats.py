"""Counters of the fallbacks an episodic dataset takes while loading (empty queries, support crops that fell back,
empty supports), summed over the main process and its DataLoader workers, and their one-line report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

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


__all__ = ["STAT_COUNTERS", "EpisodeStats", "stats_line", "sum_stats"]
