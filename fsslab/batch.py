"""Low-level conventions of fsslab's episodes, shared by data, models, engine and viz (imports torch only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def random_episode_batch(batch: int = 2, shots: int = 1, height: int = 50, width: int | None = None, *, seed: int = 0,
                         centred: bool = False, n_base_classes: int = 15, base_class: int | None = None,
                         ignore_band: int = 0, padding_cols: int = 0, padding_rows: int = 0,
                         support_ignore_rows: int = 0, class_id: int | Sequence[int] | None = None) -> Batch:
    """``batch`` random episodes of ``shots`` shots at ``height`` x ``width`` that follow the batch contract: the one
    episode builder of the tests, the speed benchmarks (``fsslab bench``) and the figures' fixtures.

    Images are seeded noise. Each image holds one object (label 1): an ellipse at a random centre with a random
    radius (0.15-0.35 of the height), or the centred ellipse of half the image's size (``centred``). Optional
    ignored pixels (``IGNORE_INDEX``): a band of ``ignore_band`` pixels around every object (VOC's boundary band),
    the last ``padding_cols`` columns and ``padding_rows`` rows of every query (marked in ``query_padding``, as a
    transform's padding is) and the first ``support_ignore_rows`` rows of every support. ``query_base_mask`` labels
    the query's object as ``base_class`` (default: a random one of ``n_base_classes``) for the base learner;
    ``class_id``: every episode's class (one for all, or one per episode; default: 1, 2, ...)."""
    b, k, h = batch, shots, height
    w = width or height
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

    def masks(n: int) -> torch.Tensor:  # [n,H,W] long: 1 on the object, IGNORE_INDEX on its band
        if centred:
            centre = torch.tensor([[h / 2, w / 2]]).expand(n, 2)
            radii = torch.tensor([[h / 4, w / 4]]).expand(n, 2)
        else:
            centre = torch.rand(n, 2, generator=gen) * torch.tensor([h, w])
            radii = ((0.15 + 0.2 * torch.rand(n, generator=gen)) * h)[:, None].expand(n, 2)
        dist = (((ys[None] - centre[:, 0, None, None]) / radii[:, 0, None, None]) ** 2
                + ((xs[None] - centre[:, 1, None, None]) / radii[:, 1, None, None]) ** 2)  # [n,H,W], 1 on the rim
        mask = (dist <= 1).long() if centred else (dist < 1).long()
        if ignore_band:
            grown = torch.nn.functional.max_pool2d(mask[:, None].float(), 2 * ignore_band + 1, 1, ignore_band)[:, 0]
            mask[(grown > 0) & (mask == 0)] = IGNORE_INDEX
        return mask

    query_img = torch.randn(b, 3, h, w, generator=gen)
    query_mask = masks(b)
    support_imgs = torch.randn(b, k, 3, h, w, generator=gen)
    support_masks = masks(b * k).reshape(b, k, h, w)
    query_padding = torch.zeros(b, h, w, dtype=torch.bool)
    if padding_cols:
        query_padding[:, :, w - padding_cols:] = True
    if padding_rows:
        query_padding[:, h - padding_rows:] = True
    query_mask[query_padding] = IGNORE_INDEX
    support_masks[..., :support_ignore_rows, :] = IGNORE_INDEX
    if base_class is None:
        base = torch.randint(1, n_base_classes + 1, (b, 1, 1), generator=gen)
    else:
        base = torch.full((b, 1, 1), base_class)
    return {
        "query_img": query_img, "query_mask": query_mask, "query_padding": query_padding,
        "support_imgs": support_imgs, "support_masks": support_masks,
        "support_padding": torch.zeros(b, k, h, w, dtype=torch.bool),
        "query_base_mask": torch.where(query_mask == 1, base, query_mask),
        "class_id": (torch.as_tensor(class_id, dtype=torch.long).expand(b).clone() if class_id is not None
                     else torch.arange(1, b + 1)),
        "episode_index": torch.arange(b),
    }


__all__ = ["IGNORE_INDEX", "Batch", "batch_of_one", "random_episode_batch"]
