"""AMFormer-only analysis: what its discriminator D says about a given mask at test time (where the model does
not run D), for notebook 03's mask perturbations and the part-attention figures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import batch_of_one


def discriminator_score_fn(model: nn.Module) -> Callable[[Mapping[str, torch.Tensor], torch.Tensor], float]:
    """``score(sample, mask [H,W]) -> float``: AMFormer's D (mean over levels and parts) for ``mask`` as the
    query's segmentation. G's fused features are computed once per episode and cached."""
    cache: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def score(sample: Mapping[str, torch.Tensor], mask: torch.Tensor) -> float:
        key = int(sample.get("episode_index", torch.tensor(id(sample))))
        if key not in cache:
            batch = batch_of_one(sample, drop=("query_mask",))
            cache[key] = model.eval()(batch, trace=True).trace["fused_features"]
        fg = (torch.as_tensor(mask) == 1).float()[None]  # [1,H,W]; 255 and background count as background
        return float(model.discriminator_scores(cache[key], fg)["score"].mean())

    return score


@torch.no_grad()
def add_discriminator_trace(model: nn.Module, batch: Mapping[str, torch.Tensor], trace: dict[str, Any]
                            ) -> dict[str, Any]:
    """AMFormer's trace plus what D says at test time (where the model does not run D): ``part_maps_real`` /
    ``d_score_real`` for the ground truth and ``part_maps_fake`` / ``d_score_fake`` for G's final soft mask."""
    gt = (batch["query_mask"] == 1).float()  # [B,H,W]; 255 counts as background
    fake = trace["ensemble_logits"][:, -1].float().softmax(1)[:, 1:]  # [B,1,h,w] last stage, after the ensemble
    fake = F.interpolate(fake, size=gt.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    judged = model.discriminator_scores(trace["fused_features"], torch.stack([gt, fake], 1))  # masks [B,2,H,W]
    return {**trace, "part_maps_real": judged["part_maps"][:, 0], "part_maps_fake": judged["part_maps"][:, 1],
            "d_score_real": judged["score"][:, 0], "d_score_fake": judged["score"][:, 1]}


__all__ = ["add_discriminator_trace", "discriminator_score_fn"]
