"""Low-level conventions of fsslab's episodes, shared by data, models, engine and viz (imports torch only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

# The label value of pixels that are not scored (VOC's boundary band, padding, COCO crowds): every dataset
# writes it, every loss ignores it and the metrics leave it out.
IGNORE_INDEX = 255


def batch_of_one(sample: Mapping[str, Any], drop: Iterable[str] = ()) -> dict[str, Any]:
    """One un-batched episode as a batch of one: every tensor gets a leading dimension of 1, other values are
    kept as they are; the keys in ``drop`` (e.g. ``query_mask``, so that a model cannot read it) are left out."""
    dropped = set(drop)
    return {k: v.unsqueeze(0) if isinstance(v, torch.Tensor) else v for k, v in sample.items() if k not in dropped}


__all__ = ["IGNORE_INDEX", "batch_of_one"]
