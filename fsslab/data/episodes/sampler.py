"""Which episodes a class index allows, and drawing them: the query's class among its image's classes, ``shot``
support images of that class (never the query's own image), the evaluation's fixed episode list.

Kept apart from loading (``episode_dataset``): this part reads only the index (which image shows which class),
never an image, so what it decides can be tested and reasoned about on the index alone.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fsslab.data.lists import FoldIndex
from fsslab.errors import ConfigError


@dataclass(frozen=True)
class Episode:
    """One evaluation episode: indices into the fold index's items."""

    query: int
    class_id: int
    supports: tuple[int, ...]


def small_classes(index: FoldIndex, shot: int) -> dict[int, int]:
    """Classes of the index with fewer than ``shot + 1`` images (no episode can draw ``shot`` other ones), with
    their number of images."""
    return {c: len(v) for c, v in index.class_to_items.items() if len(v) < shot + 1}


class EpisodeSampler:
    """The episodes of ``index`` at ``shot`` shots, the classes in ``excluded`` left out.

    query_class_rule: "present" (a query's class is any class of the index with pixels in its image) or
    "qualifying" (only those covering the index's minimum area). ``candidates[i]``: the classes image ``i`` can be
    a query for (enough supports besides its own image); ``query_items``: the images with at least one.
    """

    def __init__(self, index: FoldIndex, shot: int, query_class_rule: str = "present",
                 excluded: Iterable[int] = ()) -> None:
        self.index, self.shot, self.query_class_rule = index, shot, query_class_rule
        self.class_sets = {c: set(items) for c, items in index.class_to_items.items()}
        for c in excluded:
            self.class_sets[c] = set()
        self.same_image = self._same_image_items()
        self.candidates = self._query_candidates()
        self.query_items = [i for i, cands in enumerate(self.candidates) if cands]

    def _same_image_items(self) -> dict[int, set[int]]:
        """Items showing the same image file as another item (by normalised path), each mapped to that group.

        Lists are deduplicated by image path when read, so this is normally empty; it guards supports against
        the query's own image whatever the index holds (a FoldIndex built elsewhere, paths spelt differently).
        """
        by_path: dict[str, list[int]] = defaultdict(list)
        for i, (image_rel, _) in enumerate(self.index.items):
            by_path[os.path.normpath(image_rel)].append(i)
        return {i: set(group) for group in by_path.values() if len(group) > 1 for i in group}

    def not_supports_of(self, item: int) -> set[int]:
        """The items that can never support query ``item``: itself and any item showing the same image."""
        return self.same_image.get(item, {item})

    def _query_candidates(self) -> list[list[int]]:
        """Per indexed image, the classes it can be a query for (enough supports besides its own image)."""
        source = self.index.present if self.query_class_rule == "present" else self.index.qualifying
        out = []
        for item, classes in enumerate(source):
            own = self.not_supports_of(item)
            good = []
            for c in classes:
                members = self.class_sets.get(c, set())
                if len(members) - sum(j in members for j in own) >= self.shot:
                    good.append(c)
            out.append(good)
        return out

    def sample(self, item: int, rng: np.random.Generator) -> Episode:
        """Draw a class of image ``item`` and ``shot`` distinct support images of it (never ``item``'s image)."""
        candidates = self.candidates[item]
        class_id = candidates[int(rng.integers(len(candidates)))]
        own = self.not_supports_of(item)
        pool = [j for j in self.index.class_to_items[class_id] if j not in own]
        picks = rng.choice(len(pool), size=self.shot, replace=False)
        return Episode(item, class_id, tuple(pool[int(p)] for p in picks))

    def draw(self, count: int, seed: int) -> list[Episode]:
        """The evaluation's ``count`` episodes from ``seed``: queries in list order, repeated (as the references
        iterate their val loader), so the same seed gives the same episodes whatever the number of workers."""
        if count < 1:
            raise ConfigError(f"episodes must be >= 1, got {count}")
        rng = np.random.default_rng(seed)
        return [self.sample(self.query_items[e % len(self.query_items)], rng) for e in range(count)]


__all__ = ["Episode", "EpisodeSampler", "small_classes"]
