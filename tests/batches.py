"""The episode batch the model tests feed (fsslab.batch.Batch), built in one place."""

from __future__ import annotations

import torch

from fsslab.batch import IGNORE_INDEX, Batch


def episode_batch(b: int = 2, k: int = 1, h: int = 50, w: int = 70, seed: int = 0, base_class: int = 3) -> Batch:
    """B episodes of K shots at H x W: random images, a centred ellipse as the object (class 1) in the query and
    every support. Ignored pixels on both sides: the query's 5 right columns are padding (``IGNORE_INDEX`` and
    ``query_padding``), the supports' 3 top rows are ``IGNORE_INDEX``. ``query_base_mask`` labels the object as
    base class ``base_class`` (ignored pixels stay ignored)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = (((ys - h / 2) / (h / 4)) ** 2 + ((xs - w / 2) / (w / 4)) ** 2 <= 1).long()  # a centred ellipse
    query_mask = blob.expand(b, h, w).clone()
    query_mask[:, :, -5:] = IGNORE_INDEX  # padding band on the right
    padding = torch.zeros(b, h, w, dtype=torch.bool)
    padding[:, :, -5:] = True
    support_masks = blob.expand(b, k, h, w).clone()
    support_masks[..., :3, :] = IGNORE_INDEX
    base_mask = torch.where(query_mask == 1, base_class, query_mask)
    return {"query_img": torch.randn(b, 3, h, w, generator=g), "query_mask": query_mask, "query_padding": padding,
            "support_imgs": torch.randn(b, k, 3, h, w, generator=g), "support_masks": support_masks,
            "support_padding": torch.zeros(b, k, h, w, dtype=torch.bool), "query_base_mask": base_mask,
            "class_id": torch.full((b,), 3, dtype=torch.long)}
