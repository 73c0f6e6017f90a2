"""IPMT's training losses: weighted Dice on the final and initial predictions, BCE on every layer's masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsslab.models.layers import weighted_dice_loss


def _nearest_foreground(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N,H,W] labels -> [N,h,w] float 1 where label == 1 (255 counts as background), nearest-resized."""
    return F.interpolate((labels == 1).unsqueeze(1).float(), size=size, mode="nearest")[:, 0]


def ipmt_losses(logits: torch.Tensor, aux: dict[str, torch.Tensor], query_mask: torch.Tensor,
                support_masks: torch.Tensor, dice_weights: tuple[float, float] = (0.7, 0.3),
                bce_weights: tuple[float, float] = (0.3, 0.7), aux_weight: float = 1.0,
                deep_supervision: bool = True) -> dict[str, torch.Tensor]:
    """Reference training objective (IPMTnetwork.forward + train.py).

    logits:        [B,2,H,W] final logits at input size.
    aux:           ``initial_logits`` [B,2,h,w], ``query_masks`` [2L,B,h,w] (L support-mined + L query-layer
                   prototypes), ``support_masks`` [L,B,K,h,w] (query-layer prototypes on the supports).
    query_mask:    [B,H,W] 0/1/255; support_masks: [B,K,H,W] 0/1/255.
    main = 0.7 Dice(final) + 0.3 Dice(initial, bilinearly upsampled); aux = 0.3 mean_l BCE(query masks)
    + 0.7 mean_l BCE(support masks) against nearest-resized ``label == 1``; total = main + aux_weight * aux.
    deep_supervision=False (the ablation): total = main, no ``aux``/``bce_*`` entries (``aux`` needs no masks).
    """
    height, width = logits.shape[-2:]
    initial = F.interpolate(aux["initial_logits"].float(), size=(height, width), mode="bilinear",
                            align_corners=True)
    dice_final = weighted_dice_loss(logits.float(), query_mask)
    dice_initial = weighted_dice_loss(initial, query_mask)
    main = dice_weights[0] * dice_final + dice_weights[1] * dice_initial
    if not deep_supervision:
        return {"total": main, "main": main, "dice_final": dice_final, "dice_initial": dice_initial}

    query_logits, support_logits = aux["query_masks"].float(), aux["support_masks"].float()
    size = tuple(query_logits.shape[-2:])
    query_target = _nearest_foreground(query_mask, size)  # [B,h,w]
    support_target = _nearest_foreground(support_masks.flatten(0, 1), size).view(support_logits.shape[1:])
    # mean over layers of each layer's mean BCE (all layers have the same number of cells)
    bce_query = F.binary_cross_entropy_with_logits(query_logits, query_target.expand_as(query_logits))
    bce_support = F.binary_cross_entropy_with_logits(support_logits, support_target.expand_as(support_logits))
    aux_loss = bce_weights[0] * bce_query + bce_weights[1] * bce_support
    return {"total": main + aux_weight * aux_loss, "main": main, "aux": aux_loss, "dice_final": dice_final,
            "dice_initial": dice_initial, "bce_query": bce_query, "bce_support": bce_support}
