"""Low-level conventions of fsslab's episodes, shared by data, models, engine and viz (imports torch only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

import torch


class Batch(TypedDict, total=False):
    """The episode batch every fsslab model's ``forward(batch)`` and ``loss(output, batch)`` read (DESIGN.md,
    contract 1). Datasets yield one sample (the same keys without the leading B); the default ``DataLoader``
    collate stacks them. B = episodes, K = shots, H,W = input size; labels: 1 target class, 0 background,
    ``IGNORE_INDEX`` not scored. Which keys a model reads: ``query_img``, ``support_imgs``, ``support_masks``
    always; ``query_mask`` and ``query_base_mask`` for its loss (and AMFormer's D in training); the rest are
    for the evaluation and analysis."""

    query_img: torch.Tensor  # [B,3,H,W] float, normalised with ImageNet mean/std
    query_mask: torch.Tensor  # [B,H,W] long
    support_imgs: torch.Tensor  # [B,K,3,H,W] float
    support_masks: torch.Tensor  # [B,K,H,W] long; a weak label (box, scribble) replaces the mask
    class_id: torch.Tensor  # [B] long, benchmark class index (1-based)
    query_base_mask: torch.Tensor  # [B,H,W] long: 0 background, 1..n_base base classes, IGNORE_INDEX
    query_padding: torch.Tensor  # [B,H,W] bool: padding added by the transform
    support_padding: torch.Tensor  # [B,K,H,W] bool
    episode_index: torch.Tensor  # [B] long: the episode's index in its dataset
    # evaluation only: the original label, so that metrics are computed at the label's own resolution
    query_mask_ori: torch.Tensor  # [B,Hc,Wc] long, the label on a canvas, IGNORE_INDEX outside it
    query_ori_size: torch.Tensor  # [B,2] long: (h, w) of the original label
    query_valid_size: torch.Tensor  # [B,2] long: (h, w) of the image content in the input


# The label value of pixels that are not scored (VOC's boundary band, padding, COCO crowds): every dataset
# writes it, every loss ignores it and the metrics leave it out.
IGNORE_INDEX = 255


def batch_of_one(sample: Mapping[str, Any], drop: Iterable[str] = ()) -> dict[str, Any]:
    """One un-batched episode as a batch of one: every tensor gets a leading dimension of 1, other values are
    kept as they are; the keys in ``drop`` (e.g. ``query_mask``, so that a model cannot read it) are left out."""
    dropped = set(drop)
    return {k: v.unsqueeze(0) if isinstance(v, torch.Tensor) else v for k, v in sample.items() if k not in dropped}


__all__ = ["IGNORE_INDEX", "Batch", "batch_of_one"]
