"""AMFormer's training-free inputs: the foreground similarity prior, the Gram-matrix distance and the base
learner's probability of the episode's own class."""

from __future__ import annotations

import torch

from fsslab.models.layers import prior_mask


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """[N,C,h,w] -> [N,C,C] channel-cosine Gram matrix (eps 1e-7 as the reference), always in fp32.

    The Gram distance is one scalar per episode that shifts every ensemble output: under autocast
    it is kept in fp32 (bf16 would round cosines near 1 to 3 digits).
    """
    with torch.autocast(feat.device.type, enabled=False):
        flat = feat.flatten(2).float()
        norm = flat.norm(dim=2, keepdim=True)  # [N,C,1]
        return torch.bmm(flat, flat.transpose(1, 2)) / (norm * norm.transpose(1, 2) + 1e-7)


def foreground_similarity(query: torch.Tensor, support: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """Max cosine over masked support positions, mean over shots: [B,1,h,w] (PFENet's prior, not normalised).

    query [B,C,h,w]; support [B,K,C,hs,ws]; fg [B,K,hs*ws] binary. ``prior_mask`` computes only the
    foreground positions (the masked-out ones score exactly 0): equal to the reference's dense computation,
    2-5x cheaper on typical masks.
    """
    b, k, _, hs, ws = support.shape
    return prior_mask(query, support, fg.view(b, k, 1, hs, ws).to(support.dtype), normalize=False, eps=1e-7)


def target_class_probability(query_mask: torch.Tensor, query_base_mask: torch.Tensor,
                             base_prob: torch.Tensor) -> torch.Tensor:
    """[B,1,h,w] probability of the episode's own class in the base learner (training, BAM 'Base').

    The reference indexes it with the class's base-list position; fsslab reads the channel from
    ``query_base_mask`` under the target pixels (the most frequent base label there; none -> 0).
    """
    target, base = query_mask, query_base_mask.long()
    n = base_prob.shape[1]
    under = torch.where((target == 1) & (base > 0) & (base < n), base, torch.zeros_like(base)).flatten(1)
    counts = torch.zeros(base.shape[0], n, device=base.device).scatter_add_(1, under, torch.ones_like(
        under, dtype=torch.float32))
    counts[:, 0] = 0
    channel = counts.argmax(dim=1)  # [B]; 0 when no target pixel carries a base label
    picked = base_prob.gather(1, channel.view(-1, 1, 1, 1).expand(-1, 1, *base_prob.shape[-2:]))
    return picked * (channel > 0).view(-1, 1, 1, 1).to(picked.dtype)


__all__ = ["foreground_similarity", "gram_matrix", "target_class_probability"]
