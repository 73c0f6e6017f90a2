"""AMFormer's object-mining transformer G: a SegFormer-style query encoder and masked query-mining layers.

G works on the query alone. ``encode`` builds a three-level pyramid (strides 1, 2, 4 of the 1/8 map)
with efficient self-attention (keys/values spatially reduced by ``sr_ratios``); ``mine`` runs one
masked mining layer per level, coarse to fine, fusing the levels into one map and predicting
[B,2,h,w] logits; ``refine`` repeats a mining layer on the fused map with a sharper (binary) mask.

Masked mining attention (the reference's "cross" attention of the query with itself): q and k are
L2-normalised per head, scores are ``q.k / 0.1``, the softmax runs over the **query** axis (each key
distributes its mass over the query positions), the columns of keys whose mask is exactly 0 are
zeroed afterwards (no renormalisation) and the mask's other values do not scale anything. The
layer also returns the per-query-position attention "weight" used by the distillation loss: the
mask-weighted mean of the scores over keys, averaged over heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.errors import ConfigError
from fsslab.models.layers import tokens_to_map

LN_EPS = 1e-6  # every LayerNorm of G (mmcv norm_cfg=dict(type='LN', eps=1e-6))
MINING_TEMPERATURE = 0.1


def map_to_tokens(feat: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] -> [B,h*w,C], always a view (strided for an NCHW map). IPMT's ``map_to_tokens`` copies an NCHW
    map instead; the two stay apart because either choice for both would change the memory layout that one
    model's layers read, and with it their float rounding."""
    return feat.flatten(2).transpose(1, 2)


def masked_mining_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                            temperature: float = MINING_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine attention normalised over queries, keys with mask 0 removed.

    q, k, v: [B,heads,L,d]; key_mask: [B,L] (soft or binary). Returns (out [B,heads,L,d],
    weight [B,L]: per query, sum_n s[m,n] mask[n] / (sum_n mask[n] + 1e-9), averaged over heads).
    Computed as softmax over the last axis of the transposed scores [B,heads,keys,queries] so that
    the reduction is contiguous; the [L,L] key mask of the reference is never materialised.
    """
    qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    # 1/temperature folded into the [L,d] operand instead of dividing the [L,L] scores
    scores_t = torch.matmul(kn, (qn * (1.0 / temperature)).transpose(-2, -1))  # [B,h,Lk,Lq]
    attn_t = scores_t.softmax(dim=-1)  # over queries
    keep = (key_mask != 0).to(v.dtype)[:, None, :, None]  # [B,1,Lk,1]
    out = torch.matmul(attn_t.transpose(-2, -1), v * keep)  # [B,h,Lq,d]
    mask = key_mask.to(kn.dtype)
    pooled_key = torch.einsum("bhnd,bn->bhd", kn, mask)  # [B,h,d]
    weight = torch.einsum("bhmd,bhd->bhm", qn, pooled_key) / temperature
    weight = weight / (mask.sum(-1)[:, None, None] + 1e-9)
    return out, weight.mean(1)


class EfficientAttention(nn.Module):
    """Multi-head attention without biases; keys/values optionally reduced by a strided conv + LN."""

    def __init__(self, dims: int, heads: int, sr_ratio: int = 1, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dims % heads:
            raise ConfigError(f"dims ({dims}) must be divisible by heads ({heads})")
        self.heads, self.sr_ratio = heads, sr_ratio
        self.q_proj = nn.Linear(dims, dims, bias=False)
        self.k_proj = nn.Linear(dims, dims, bias=False)
        self.v_proj = nn.Linear(dims, dims, bias=False)
        self.out_proj = nn.Linear(dims, dims, bias=False)
        if sr_ratio > 1:
            self.reduce = nn.Conv2d(dims, dims, sr_ratio, stride=sr_ratio)
            self.reduce_norm = nn.LayerNorm(dims, eps=LN_EPS)
        self.proj_drop = nn.Dropout(proj_drop)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B,L,C] -> [B,heads,L,C/heads]
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], key_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [B,L,C] (already normalised). Self-attention if key_mask is None, else masked mining.

        Returns (attention output [B,L,C] after the output projection and dropout, weight [B,L] or None).
        """
        kv = x
        if self.sr_ratio > 1:
            kv = self.reduce_norm(map_to_tokens(self.reduce(tokens_to_map(x, hw))))
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(kv)), self._split(self.v_proj(kv))
        weight = None
        if key_mask is None:
            scale = 1.0 / (math.sqrt(q.shape[-1]) + 1e-9)  # the reference's 1/(sqrt(d) + 1e-9)
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:
            out, weight = masked_mining_attention(q, k, v, key_mask)
        b, _, n, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, -1))
        return self.proj_drop(out), weight


class MixFFN(nn.Module):
    """SegFormer FFN on the token map: 1x1 -> depthwise 3x3 -> GELU -> drop -> 1x1 -> drop."""

    def __init__(self, dims: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dims, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dims, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:  # [B,L,C] -> [B,L,C]
        out = F.gelu(self.dwconv(self.fc1(tokens_to_map(x, hw))))
        return map_to_tokens(self.drop(self.fc2(self.drop(out))))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)); x + ffn(LN(x)) (optionally with masked mining attention)."""

    def __init__(self, dims: int, heads: int, mlp_ratio: int = 4, sr_ratio: int = 1, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dims, eps=LN_EPS)
        self.attn = EfficientAttention(dims, heads, sr_ratio, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dims, eps=LN_EPS)
        self.ffn = MixFFN(dims, mlp_ratio * dims, drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], key_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weight = self.attn(self.norm1(x), hw, key_mask)
        x = x + out
        return x + self.ffn(self.norm2(x), hw), weight


class EncoderStage(nn.Module):
    """Patch embedding (conv + LN), two self-attention blocks, a closing LN."""

    def __init__(self, dims: int, heads: int, patch: int, stride: int, sr_ratio: int, mlp_ratio: int,
                 drop: float) -> None:
        super().__init__()
        self.embed = nn.Conv2d(dims, dims, patch, stride=stride, padding=stride // 2)
        self.embed_norm = nn.LayerNorm(dims, eps=LN_EPS)
        self.blocks = nn.ModuleList([EncoderBlock(dims, heads, mlp_ratio, sr_ratio, drop) for _ in range(2)])
        self.norm = nn.LayerNorm(dims, eps=LN_EPS)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:  # [B,C,h,w] -> [B,C,h',w']
        feat = self.embed(feat)
        hw = (feat.shape[2], feat.shape[3])
        x = self.embed_norm(map_to_tokens(feat))
        for block in self.blocks:
            x = block(x, hw)[0]
        return tokens_to_map(self.norm(x), hw)


def conv_bn_stack(dims: int, out_dims: int, final_norm_relu: bool) -> nn.Sequential:
    """1x1 (C->4C)+BN, 3x3 (4C->4C)+BN, 1x1 (4C->out) [+BN+ReLU]; no ReLU between convs (as in G)."""
    wide = 4 * dims
    layers: list[nn.Module] = [nn.Conv2d(dims, wide, 1), nn.BatchNorm2d(wide),
                               nn.Conv2d(wide, wide, 3, padding=1), nn.BatchNorm2d(wide),
                               nn.Conv2d(wide, out_dims, 1)]
    if final_norm_relu:
        layers += [nn.BatchNorm2d(out_dims), nn.ReLU()]
    return nn.Sequential(*layers)


class MiningLayer(nn.Module):
    """Masked mining block on the query tokens, then conv(+similarity channels)-BN-ReLU."""

    def __init__(self, dims: int, heads: int, sim_channels: int, mlp_ratio: int, drop: float) -> None:
        super().__init__()
        self.block = EncoderBlock(dims, heads, mlp_ratio, 1, drop)
        self.fuse = nn.Sequential(nn.Conv2d(dims + sim_channels, dims, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(dims), nn.ReLU(inplace=True))

    def forward(self, feat: torch.Tensor, key_mask: torch.Tensor, similarity: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """feat [B,C,h,w], key_mask [B,h*w], similarity [B,S,h,w] -> ([B,C,h,w], weight [B,h,w])."""
        hw = (feat.shape[2], feat.shape[3])
        x, weight = self.block(map_to_tokens(feat), hw, key_mask)
        out = self.fuse(torch.cat([tokens_to_map(x, hw), similarity], dim=1))
        return out, weight.reshape(-1, hw[0], hw[1])


class ObjectMiningTransformer(nn.Module):
    """G: query pyramid encoder, three coarse-to-fine mining levels, two refinement passes, mask heads."""

    def __init__(self, dims: int = 64, heads: tuple[int, ...] = (2, 4, 8), mining_heads: int = 2,
                 patch_sizes: tuple[int, ...] = (1, 3, 3), strides: tuple[int, ...] = (1, 2, 2),
                 sr_ratios: tuple[int, ...] = (4, 2, 1), mlp_ratio: int = 4, sim_channels: int = 2,
                 drop: float = 0.1, refinements: int = 2) -> None:
        super().__init__()
        levels = len(heads)
        self.levels = levels
        self.geometry = tuple(zip(patch_sizes, strides, sr_ratios))  # for min_feature_size
        self.encoder_stages = nn.ModuleList([
            EncoderStage(dims, heads[i], patch_sizes[i], strides[i], sr_ratios[i], mlp_ratio, drop)
            for i in range(levels)])
        # mining_layers[0..levels-1]: coarse-to-fine levels; then one per refinement pass.
        self.mining_layers = nn.ModuleList([MiningLayer(dims, mining_heads, sim_channels, mlp_ratio, drop)
                                            for _ in range(levels + refinements)])
        self.fusion_heads = nn.ModuleList([conv_bn_stack(dims, dims, True) for _ in range(levels + refinements)])
        self.mask_heads = nn.ModuleList([conv_bn_stack(dims, 2, False) for _ in range(1 + refinements)])
        self.refinements = refinements

    def min_feature_size(self) -> int:
        """Smallest side of the input feature map the pyramid accepts: every stage's patch conv needs its
        kernel to fit (padding included) and its key/value reduction (kernel = stride = sr_ratio) needs at
        least sr_ratio cells, else torch fails with a kernel-size error that names no input size."""
        for side in range(1, 4096):
            size, fits = side, True
            for patch, stride, sr_ratio in self.geometry:
                padded = size + 2 * (stride // 2)
                if padded < patch:
                    fits = False
                    break
                size = (padded - patch) // stride + 1
                if size < sr_ratio:
                    fits = False
                    break
            if fits:
                return side
        raise AssertionError("no feature size fits the pyramid")  # unreachable for sane geometries

    def check_input_size(self, size: tuple[int, int], hw: tuple[int, int]) -> None:
        """Inputs (``size``) whose feature map (``hw``) is too small for the pyramid: say the minimum input size
        instead of torch's kernel-size error."""
        need = self.min_feature_size()
        if min(hw) >= need:
            return
        stride = max(1, round(size[0] / hw[0]))  # input pixels per feature cell (8 for the dilated ResNets)
        raise ConfigError(
            f"AMFormer needs inputs of at least {need * stride}x{need * stride} pixels (its 1/{stride} feature map "
            f"must be at least {need}x{need} for the transformer's pyramid), got {size[0]}x{size[1]}; raise "
            "data.size / data.val_size")

    def encode(self, feat: torch.Tensor) -> list[torch.Tensor]:
        """[B,C,h,w] -> pyramid coarse to fine: [[B,C,h/4,w/4], [B,C,h/2,w/2], [B,C,h,w]] (ceil sizes)."""
        pyramid = []
        for stage in self.encoder_stages:
            feat = stage(feat)
            pyramid.append(feat)
        return pyramid[::-1]

    def mine(self, pyramid: list[torch.Tensor], init_mask: torch.Tensor, similarity: torch.Tensor
             ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """pyramid (coarse to fine), init_mask [B,1,h,w] soft, similarity [B,S,h,w].

        Returns (logits [B,2,h,w], attention weights per level [[B,h_i,w_i]], fused features [B,C,h,w]).
        """
        fused, weights = None, []
        for level, feat in enumerate(pyramid):
            size = feat.shape[-2:]
            key_mask = F.interpolate(init_mask, size=size, mode="bilinear", align_corners=True).flatten(1)
            sim = F.interpolate(similarity, size=size, mode="bilinear", align_corners=True)
            out, weight = self.mining_layers[level](feat, key_mask, sim)
            weights.append(weight)
            if fused is None:
                fused = self.fusion_heads[level](out)
            else:  # coarse-to-fine upsampling uses align_corners=False (mmseg resize default)
                fused = F.interpolate(fused, size=size, mode="bilinear", align_corners=False)
                fused = fused + self.fusion_heads[level](out + fused)
        return self.mask_heads[0](fused), weights, fused

    def refine(self, index: int, fused: torch.Tensor, mask: torch.Tensor, similarity: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refinement pass ``index`` (0-based): fused [B,C,h,w], binary mask [B,1,h,w] at the same size.

        Returns (logits [B,2,h,w], weight [B,h,w], new fused features [B,C,h,w]).
        """
        size = fused.shape[-2:]
        sim = F.interpolate(similarity, size=size, mode="bilinear", align_corners=True)
        out, weight = self.mining_layers[self.levels + index](fused, mask.flatten(1), sim)
        fused = self.fusion_heads[self.levels + index](out)
        return self.mask_heads[1 + index](fused), weight, fused
