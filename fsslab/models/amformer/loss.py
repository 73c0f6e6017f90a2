"""AMFormer's training losses (CE terms, attention distillation, adversarial G/D losses, part diversity), the sum
the model reports (``amformer_losses``) and train.py's schedule that turns them into G's or D's objective."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fsslab.batch import IGNORE_INDEX

REAL_LABEL_SMOOTHED = 0.9  # one-sided label smoothing of D's "real" target


def segmentation_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over [B,C,H,W] logits (fp32) with 255 ignored; 0 when every pixel is ignored."""
    # sum / count equals the reference's mean; the clamp makes an all-ignore batch give 0, not NaN
    total = F.cross_entropy(logits.float(), target.long(), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def attention_distillation(query_mask: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """KL(target || softmax(weight)) summed over positions, batch mean, summed over levels.

    query_mask [B,H,W] (1 fg, 0 bg, 255 ignore -> bg); weights: [[B,h_i,w_i]] mining attention weights.
    The target logits are 1 on foreground and -1e9 elsewhere, bilinearly resized (align_corners=False)
    to each level, so the target is uniform over the positions that are pure foreground.
    """
    target = (query_mask == 1).float()
    target = target.masked_fill(target == 0, -1e9)
    total = None
    for weight in weights:
        t = target
        if t.shape[-2:] != weight.shape[-2:]:
            t = F.interpolate(t.unsqueeze(1), size=weight.shape[-2:], mode="bilinear").squeeze(1)
        t = t.flatten(1).softmax(dim=1)
        s = weight.float().flatten(1).softmax(dim=1)
        loss = (t * torch.log(t + 1e-12) - t * torch.log(s + 1e-12)).sum(1).mean()
        total = loss if total is None else total + loss
    return total


def part_diversity(maps: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean |cosine| between the selected part maps (pairs i<j); maps [B,N,h,w], channels [c] long.

    The reference draws the c = int(2N/3) channels with Python's ``random.sample``; the caller passes
    indices drawn with a torch generator. The value does not depend on their order.
    """
    b = maps.shape[0]
    c = channels.numel()
    sel = maps[:, channels].flatten(2).float()  # [B,c,L]
    dots = torch.matmul(sel, sel.transpose(1, 2))  # [B,c,c]
    sq = dots.diagonal(dim1=1, dim2=2)  # [B,c]
    cosine = dots / torch.sqrt(sq[:, :, None] * sq[:, None, :] + 1e-8)
    upper = torch.triu(torch.ones(c, c, device=maps.device, dtype=cosine.dtype), diagonal=1)
    per_image = (cosine * upper).sum(dim=(1, 2)).abs()
    return per_image.sum() / (b * c * (c - 1) / 2)


def bce_on_probability(prob: torch.Tensor, target: float) -> torch.Tensor:
    """``BCEWithLogitsLoss(prob, target)`` on D's sigmoid output, exactly as the reference (double sigmoid)."""
    return F.binary_cross_entropy_with_logits(prob.float(), torch.full_like(prob.float(), target))


def generator_adversarial(fake_prob: torch.Tensor) -> torch.Tensor:
    """G wants D to call its parts real (target 1)."""
    return bce_on_probability(fake_prob, 1.0)


def discriminator_adversarial(real_prob: torch.Tensor, fake_prob: torch.Tensor) -> torch.Tensor:
    """0.5 * (BCE(fake, 0) + BCE(real, 0.9)): one-sided label smoothing on the real side."""
    return 0.5 * (bce_on_probability(fake_prob, 0.0) + bce_on_probability(real_prob, REAL_LABEL_SMOOTHED))


def amformer_losses(logits: torch.Tensor, aux: dict[str, Any], query_mask: torch.Tensor,
                    query_base_mask: torch.Tensor | None, aux_weight1: float = 1.0, aux_weight2: float = 1.0
                    ) -> dict[str, torch.Tensor]:
    """Every component; ``total`` = main + aux_weight1 * distillation + aux_weight2 * base_ce.

    logits: [B,2,H,W] final logits; aux: the forward's ``stage_logits`` (G's three stages), ``attention_weights``
    (mining attention per level), ``base_logits`` and, in training, ``adversarial_g``, ``adversarial_d``,
    ``diversity`` (each averaged over D's 3 levels), which are passed through. main = CE(final) + mean CE of the
    stage logits (the reference's ``main_loss + aux_loss1``); distillation = attention distillation / levels (its
    ``aux_loss1``); base_ce: base-learner CE against ``query_base_mask`` (its ``aux_loss2``; 0 without one, and
    constant w.r.t. the trainable parameters: the base learner is frozen).
    """
    final_ce = segmentation_ce(logits, query_mask)
    stage_ce = torch.stack([segmentation_ce(x, query_mask) for x in aux["stage_logits"]]).mean()
    weights = aux["attention_weights"]
    losses = {"final_ce": final_ce, "stage_ce": stage_ce, "main": final_ce + stage_ce,
              "distillation": attention_distillation(query_mask, weights) / len(weights)}
    if query_base_mask is not None:
        losses["base_ce"] = segmentation_ce(aux["base_logits"], query_base_mask)
    else:
        losses["base_ce"] = logits.new_zeros(())
    for name in ("adversarial_g", "adversarial_d", "diversity"):
        if name in aux:
            losses[name] = aux[name]
    losses["total"] = losses["main"] + aux_weight1 * losses["distillation"] + aux_weight2 * losses["base_ce"]
    return losses


def gd_objectives(losses: dict[str, torch.Tensor], iteration: int, adversarial_period: int = 5,
                  adversarial_weight: float = 0.1, adversarial_max_loss: float = 11.0,
                  diversity_weight: float = 0.01) -> dict[str, torch.Tensor]:
    """train.py's schedule; ``iteration`` is the batch index (the reference uses the index within the epoch).

    Even iterations step G: ``total + 1e-9 * adversarial_g``, except every ``adversarial_period``-th
    (``iteration % 5 == 4``) where the adversarial weight is 0.1 if ``adversarial_g <= 11`` and
    nothing is stepped otherwise. Odd iterations step D: ``adversarial_d + 0.01 * diversity``.
    """
    if "adversarial_g" not in losses:  # no adversarial branch (e.g. eval): plain segmentation step
        return {"generator": losses["total"]}
    if iteration % 2 == 1:
        return {"discriminator": losses["adversarial_d"] + diversity_weight * losses["diversity"]}
    if iteration % adversarial_period != adversarial_period - 1:
        return {"generator": losses["total"] + 1e-9 * losses["adversarial_g"]}
    if float(losses["adversarial_g"].detach()) <= adversarial_max_loss:
        return {"generator": losses["total"] + adversarial_weight * losses["adversarial_g"]}
    return {}


__all__ = [
    "REAL_LABEL_SMOOTHED",
    "amformer_losses",
    "attention_distillation",
    "bce_on_probability",
    "discriminator_adversarial",
    "gd_objectives",
    "generator_adversarial",
    "part_diversity",
    "segmentation_ce",
]
