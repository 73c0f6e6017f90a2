"""Layers shared by the few-shot models: 1x1/3x3 conv + ReLU blocks, masked pooling, the PFENet prior, tokens <->
maps, sine positions, FFN, Dice loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Cap on the elements of one [.., support positions, query positions] cosine block in ``prior_mask``:
# the references hold three full (h*w)^2 tensors per shot; chunking keeps the peak at ~64 MB.
_PRIOR_BLOCK_ELEMENTS = 1 << 24


def conv_relu(cin: int, cout: int, kernel: int, dropout: float = 0.0) -> nn.Sequential:
    """Conv (no bias, same padding) + ReLU (+ Dropout2d): the feature reductions and fusions of IPMT and AMFormer.

    A Sequential, so that the parameter names (``<name>.0.weight``) are the ones their checkpoints hold."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def masked_average_pool(feat: torch.Tensor, mask: torch.Tensor, eps: float = 5e-4) -> torch.Tensor:
    """Prototype of the masked region: sum(feat * mask) / (sum(mask) + eps).

    feat: [N,C,h,w]; mask: [N,1,h,w] soft or binary, already at the feature size (the caller picks the
    resize). Returns [N,C,1,1]. ``eps`` = 0.0005 is the references' area offset: an empty mask yields
    a zero prototype instead of NaN.
    """
    area = mask.sum(dim=(2, 3), keepdim=True)  # [N,1,1,1]
    return (feat * mask).sum(dim=(2, 3), keepdim=True) / (area + eps)


def foreground_window(fg: torch.Tensor, halo: int = 0) -> tuple[slice, slice] | None:
    """[N,h,w] bool -> (rows, cols) of the union bounding box of ``fg`` widened by ``halo`` cells, or None when
    that is the whole map or ``fg`` is empty (then nothing is saved by a window). IPMT crops the supports'
    layer4 with it (halo = layer4's receptive-field radius), AMFormer their PSPNet embedding."""
    h, w = fg.shape[-2:]
    rows, cols = torch.nonzero(fg.any(0), as_tuple=True)
    if rows.numel() == 0:
        return None
    top, bottom = max(int(rows.min()) - halo, 0), min(int(rows.max()) + halo + 1, h)
    left, right = max(int(cols.min()) - halo, 0), min(int(cols.max()) + halo + 1, w)
    if (bottom - top) * (right - left) >= h * w:
        return None
    return slice(top, bottom), slice(left, right)


def tokens_to_map(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[B,h*w,C] tokens -> [B,C,h,w]; a channels_last view (no copy) when ``tokens`` is contiguous."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], hw[0], hw[1])


def _pool_channels(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """[..., L, C] -> [..., L, size]: average over ``size`` uneven channel bins (AdaptiveAvgPool1d)."""
    lead = tokens.shape[:-2]
    pooled = F.adaptive_avg_pool1d(tokens.reshape(-1, *tokens.shape[-2:]), size)
    return pooled.reshape(*lead, tokens.shape[-2], size)


def _max_cosine(query_feat: torch.Tensor, support: torch.Tensor, eps: float,
                channel_pool: int | None) -> torch.Tensor:
    """query [B,C,h,w], masked support [B,K,C,L] -> [B,K,h*w] max over the L support positions of
    ``dot / (|s| |q| + eps)``, in blocks of rows: exact (max is order-free) and memory-bounded."""
    b, k = support.shape[:2]
    h, w = query_feat.shape[-2:]
    supp = support.transpose(-2, -1)  # [B,K,L,C]
    query = query_feat.flatten(2).transpose(-2, -1)  # [B,h*w,C]
    if channel_pool is not None:
        supp, query = _pool_channels(supp, channel_pool), _pool_channels(query, channel_pool)
    query_t = query.transpose(-2, -1).unsqueeze(1)  # [B,1,C',h*w]
    supp_norm = supp.float().norm(dim=-1, keepdim=True)  # [B,K,L,1]
    query_norm = query_t.float().norm(dim=-2, keepdim=True)  # [B,1,1,h*w]
    rows = max(1, _PRIOR_BLOCK_ELEMENTS // max(1, b * k * h * w))
    best = None
    for start in range(0, supp.shape[2], rows):
        dots = torch.matmul(supp[:, :, start:start + rows], query_t).float()  # [B,K,rows,h*w]
        cosine = dots / (supp_norm[:, :, start:start + rows] * query_norm + eps)
        block_best = cosine.amax(dim=2)  # [B,K,h*w]
        best = block_best if best is None else torch.maximum(best, block_best)
    return best


def prior_mask(query_feat: torch.Tensor, support_feats: torch.Tensor, support_masks: torch.Tensor,
               normalize: bool = True, eps: float = 1e-7, channel_pool: int | None = None) -> torch.Tensor:
    """Training-free prior (PFENet): how well each query position matches its best foreground support position.

    query_feat:    [B,C,h,w] high-level query features.
    support_feats: [B,K,C,hs,ws] support features of the K shots.
    support_masks: [B,K,1,hs,ws] foreground masks at the support feature size (bilinear for IPMT,
                   nearest for AMFormer; resized by the caller).
    normalize:     per-image min-max over query positions (PFENet / IPMT); AMFormer uses none.
    channel_pool:  if set, average the C channels into this many uneven bins before the cosine
                   (IPMT: 2048 -> 384 with AdaptiveAvgPool1d).
    Returns [B,1,h,w]: max over support positions of cos(query, masked support), per shot
    (``dot / (|s| |q| + eps)``, so background support positions score 0), min-max normalised when
    asked, averaged over shots.
    """
    b, k, c, hs, ws = support_feats.shape
    h, w = query_feat.shape[-2:]
    # A support position whose mask is exactly 0 is a zero vector after masking: its cosine to every query
    # position is exactly 0 (0 / eps). Only the positions of the largest foreground enter the products, the
    # rest count as that one 0 -- the same maximum, (hs*ws / foreground) times fewer FLOPs on small objects.
    nonzero = support_masks.flatten(2) != 0  # [B,K,hs*ws]
    count = int(nonzero.sum(-1).max())
    has_background = count < hs * ws
    if has_background:  # foreground first in each shot, then the first `count` positions
        order = nonzero.to(torch.uint8).argsort(dim=-1, descending=True)[..., :count]  # [B,K,count]
        support_feats = support_feats.flatten(3).gather(3, order[:, :, None].expand(b, k, c, count))
        support_masks = support_masks.flatten(3).gather(3, order[:, :, None])  # [B,K,1,count]
    if count == 0:  # no foreground anywhere: every cosine is 0
        best = torch.zeros(b, k, h * w, device=query_feat.device)
    else:
        best = _max_cosine(query_feat, support_feats.flatten(3) * support_masks.flatten(3), eps, channel_pool)
    if has_background:
        best = best.clamp_min(0.0)  # the background positions' exact 0
    if normalize:
        low, high = best.amin(dim=-1, keepdim=True), best.amax(dim=-1, keepdim=True)
        best = (best - low) / (high - low + eps)
    return best.mean(dim=1).reshape(b, 1, h, w)


class SinePositionalEncoding(nn.Module):
    """DETR sine/cosine position encoding over (y, x), normalised to [0, 2*pi] by default.

    Positions are cumulative counts of valid cells along each axis, so cells marked True in ``mask``
    (padding / ignored) do not advance the count; with ``normalize`` each count is divided by the
    column's / row's total (+eps) and multiplied by ``scale``. Channel 2i of each half holds
    sin(pos / T^(2i/F)) and channel 2i+1 cos(pos / T^(2i/F)); the y half comes first.
    """

    def __init__(self, num_feats: int, temperature: float = 10000, normalize: bool = True,
                 scale: float = 2 * math.pi, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_feats, self.temperature = num_feats, temperature
        self.normalize, self.scale, self.eps = normalize, scale, eps

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask: [B,h,w] bool, True = excluded cell. Returns [B, 2*num_feats, h, w] float32."""
        valid = ~mask.bool()
        y_pos = valid.cumsum(1, dtype=torch.float32)  # [B,h,w]: valid cells above, inclusive
        x_pos = valid.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_pos = y_pos / (y_pos[:, -1:, :] + self.eps) * self.scale
            x_pos = x_pos / (x_pos[:, :, -1:] + self.eps) * self.scale
        index = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        wavelengths = self.temperature ** (2 * (index // 2) / self.num_feats)  # [F], equal within (2i, 2i+1)

        def encode(pos: torch.Tensor) -> torch.Tensor:  # [B,h,w] -> [B,h,w,F], sin/cos interleaved
            phase = pos[..., None] / wavelengths
            return torch.stack((phase[..., 0::2].sin(), phase[..., 1::2].cos()), dim=-1).flatten(-2)

        return torch.cat((encode(y_pos), encode(x_pos)), dim=-1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"num_feats={self.num_feats}, temperature={self.temperature}, normalize={self.normalize}, "
                f"scale={self.scale}, eps={self.eps}")


class FFN(nn.Module):
    """Transformer feed-forward block with its residual: ``x + drop(fc2(drop(relu(fc1(x)))))``.

    ``bias=False`` matches IPMT's / AMFormer's FFN; mmcv's FFN uses biases. ``add_identity=False``
    returns the branch alone.
    """

    def __init__(self, dims: int, hidden_dims: int, dropout: float = 0.0, bias: bool = False,
                 add_identity: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims, bias=bias)
        self.fc2 = nn.Linear(hidden_dims, dims, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        """x: [..., dims]; identity defaults to x."""
        out = self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True))))
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out


def weighted_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: float = 1.0,
                       reduction: str = "sum", eps: float = 1e-8) -> torch.Tensor:
    """IPMT's Dice loss on the background and foreground channels, each through a sigmoid.

    logits: [N,2,h,w] (bg, fg scores); target: [N,h,w] with 0 bg, 1 fg, 255 ignore.
    Per image and channel: ``1 - 2 sum(p t) / max(sum(p^2) + sum(t^2), eps)`` with ``p = sigmoid``.
    Ignored pixels are 0 in both target channels, so they still add their ``p^2`` to the
    denominator (the reference's behaviour: predictions there are pushed towards 0).
    reduction: ``"sum"`` (sum over images and channels / N, the reference), ``"mean"`` or ``"none"``
    ([N,2]). Computed in float32.
    """
    n, channels = logits.shape[:2]
    if channels != 2:
        raise ValueError(f"weighted_dice_loss expects [N,2,h,w] logits, got {tuple(logits.shape)}")
    truth = torch.stack((target == 0, target == 1), dim=1).flatten(2).float()  # [N,2,h*w]
    prob = torch.sigmoid(logits.float()).flatten(2)  # [N,2,h*w]
    denominator = (prob * prob).sum(-1) + (truth * truth).sum(-1)
    loss = (1 - 2 * (truth * prob).sum(-1) / denominator.clamp(min=eps)) * weight  # [N,2]
    if reduction == "sum":
        return loss.sum() / n
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}; valid: 'sum', 'mean', 'none'")


__all__ = ["FFN", "SinePositionalEncoding", "conv_relu", "masked_average_pool", "prior_mask", "tokens_to_map",
           "weighted_dice_loss"]
