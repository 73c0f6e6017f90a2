"""AMFormer-only analysis: what its discriminator D says about a given mask at test time (where the model does
not run D): ``AMFormer.discriminator_scores`` (``score_masks``), and the helpers of notebook 03's mask
perturbations and part-attention figures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import batch_of_one
from fsslab.models.amformer.discriminator import judge_masks


@torch.no_grad()
def score_masks(model: nn.Module, features_or_batch: Mapping[str, torch.Tensor] | torch.Tensor,
                masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """``AMFormer.discriminator_scores``: how D judges arbitrary foreground masks for an episode (eval-safe: no
    grads, no dropout; the model's train/eval mode is restored).

    features_or_batch: an episode batch (G runs on it; ``query_mask`` is not read) or G's fused maps
    [B,3,C,h,w] (trace ``fused_features``). masks: [B,H,W] or [B,M,H,W] soft/binary masks at any resolution
    (bilinearly resized to the feature size). Returns ``score`` [B,M,3] (D's P(real) averaged over parts),
    ``part_scores`` [B,M,3,N] and ``part_maps`` [B,M,3,N,h,w].
    """
    if getattr(model, "discriminator", None) is None:
        raise ValueError("this AMFormer has no discriminator (built with no_discriminator=True): nothing to score")
    was_training = model.training
    model.eval()
    try:
        if isinstance(features_or_batch, Mapping):
            episode = {k: v for k, v in features_or_batch.items() if k != "query_mask"}
            features = model.forward(episode, trace=True).trace["fused_features"]
        else:
            features = features_or_batch
        return judge_masks(model.discriminator, features, masks.unsqueeze(1) if masks.dim() == 3 else masks)
    finally:
        model.train(was_training)


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


__all__ = ["add_discriminator_trace", "discriminator_score_fn", "score_masks"]
