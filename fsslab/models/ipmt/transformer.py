"""IPMT's intermediate prototype mining transformer: support-mined prototypes refined by the query, layer by layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.models.deformable import MultiScaleDeformableAttention, reference_grid
from fsslab.models.layers import FFN, SinePositionalEncoding, tokens_to_map

# Additive attention bias of masked-out tokens (the reference adds -10000, not -inf: a fully masked
# row then degrades to plain attention instead of NaN).
MASKED_LOGIT = -10000.0


def mask_to_bias(keep: torch.Tensor) -> torch.Tensor:
    """[B,N] bool (True = attend) -> [B,1,N] additive bias: 0 kept, -10000 masked."""
    return ((~keep).float() * MASKED_LOGIT).unsqueeze(1)


def map_to_tokens(feat: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] -> contiguous [B,h*w,C] (no copy when ``feat`` is channels_last; an NCHW map is copied).
    AMFormer's ``map_to_tokens`` returns a strided view instead (see there why both exist)."""
    return feat.permute(0, 2, 3, 1).reshape(feat.shape[0], -1, feat.shape[1])


class PrototypeAttention(nn.Module):
    """Single-head attention from prototype token(s) to feature tokens, with an additive mask bias.

    Projections have no bias (as the reference). Because the prototype is one token, the key and
    value projections are applied to the prototype side instead of to every token:
    ``q k^T = (q W_k) t^T`` and ``a (t W_v^T) = (a t) W_v^T`` -- same function, N times fewer FLOPs.
    """

    def __init__(self, dims: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dims, dims, bias=False)
        self.k_proj = nn.Linear(dims, dims, bias=False)
        self.v_proj = nn.Linear(dims, dims, bias=False)
        self.out_proj = nn.Linear(dims, dims, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)
        self.scale = dims ** -0.5

    def forward(self, prototype: torch.Tensor, tokens: torch.Tensor,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """prototype [B,P,C], tokens [B,N,C], bias [B,1,N] -> (update [B,P,C], attention [B,P,N])."""
        query_in_token_space = (self.q_proj(prototype) @ self.k_proj.weight) * self.scale  # [B,P,C]
        logits = query_in_token_space @ tokens.transpose(1, 2)  # [B,P,N]
        if bias is not None:
            logits = logits + bias
        attention = logits.softmax(dim=-1)
        pooled = self.attn_drop(attention).to(tokens.dtype) @ tokens  # [B,P,C]
        return self.proj_drop(self.out_proj(self.v_proj(pooled))), attention


class MaskHead(nn.Module):
    """Mask logits of a prototype on feature tokens: ``FFN(LayerNorm(p)) . t`` (reference decoder_norm + mask_embed)."""

    def __init__(self, dims: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dims)
        self.embed = FFN(dims, dims, dropout=dropout)  # with its residual, as the reference's mask_embed

    def forward(self, prototype: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """prototype [B,1,C], tokens [B,N,C] -> logits [B,N]."""
        kernel = self.embed(self.norm(prototype))  # [B,1,C]
        return (kernel.to(tokens.dtype) @ tokens.transpose(1, 2)).squeeze(1)


class SupportMiningLayer(nn.Module):
    """Prototype <- support: masked cross-attention on the support foreground, then FFN (post-norm)."""

    def __init__(self, dims: int, ffn_dims: int, dropout: float) -> None:
        super().__init__()
        self.attention = PrototypeAttention(dims, dropout)
        self.norm_attn = nn.LayerNorm(dims)
        self.ffn = FFN(dims, ffn_dims, dropout=dropout)
        self.norm_ffn = nn.LayerNorm(dims)

    def forward(self, prototype: torch.Tensor, support: torch.Tensor,
                support_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        update, attention = self.attention(prototype, support, support_bias)
        prototype = self.norm_attn(prototype + update)
        return self.norm_ffn(self.ffn(prototype)), attention


class QueryLayer(nn.Module):
    """Query self-attention (deformable) + FFN, then prototype <- query cross-attention masked by the
    current query prediction."""

    def __init__(self, dims: int, ffn_dims: int, num_heads: int, num_points: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = MultiScaleDeformableAttention(dims, num_levels=1, num_heads=num_heads,
                                                            num_points=num_points)
        self.drop = nn.Dropout(dropout)
        self.norm_self = nn.LayerNorm(dims)
        self.ffn = FFN(dims, ffn_dims, dropout=dropout)
        self.norm_ffn = nn.LayerNorm(dims)
        self.prototype_attention = PrototypeAttention(dims, dropout)

    def refine_query(self, query: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor,
                     shape: tuple[int, int], ignore: torch.Tensor | None):
        """query, pos [B,N,C]; ignore [B,N] (zeroed values). Returns (query, locations, weights)."""
        update, locations, weights = self.self_attention(query + pos, reference, query, [shape], ignore,
                                                         return_sampling=True)
        query = self.norm_self(query + self.drop(update))
        return self.norm_ffn(self.ffn(query)), locations, weights


class QueryUpdate(nn.Module):
    """Inject the prototype into the query map: 1x1 conv on [q, p] + ReLU, then a residual of two 3x3 conv+ReLU."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.merge = nn.Conv2d(2 * dims, dims, kernel_size=1, bias=False)
        self.residual = nn.Sequential(
            nn.Conv2d(dims, dims, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(dims, dims, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True))

    def forward(self, query: torch.Tensor, prototype: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """query [B,h*w,C], prototype [B,1,C] -> [B,h*w,C]."""
        dims = query.shape[-1]
        weight = self.merge.weight.flatten(1)  # [C, 2C]: the concat's two halves act separately
        # the prototype half is constant over positions: a per-image bias instead of a concat
        merged = F.relu(F.linear(query, weight[:, :dims]) + F.linear(prototype, weight[:, dims:]))
        feat = tokens_to_map(merged.contiguous(), (h, w))  # channels_last view
        return map_to_tokens(feat + self.residual(feat))


class IPMTransformer(nn.Module):
    """The IPMT layers (NeurIPS'22), as the reference runs them.

    1. ``num_layers`` support mining layers: a learned prototype attends to the support foreground
       tokens (K shots concatenated, K*h*w tokens), giving the intermediate prototypes p_1..p_L.
    2. ``num_layers`` query layers: the query map is refined by deformable self-attention; p_l (from
       step 1, not the previous query layer) attends to the query tokens masked by the current query
       prediction (the initial classifier's mask for l=0), giving q-side prototype p'_l; its mask on
       the query becomes the next layer's mask, and (except in the last layer) p'_l is merged into the
       query map. Returns the final query tokens (CyCTR-style, the network's fusion input).

    query_mining=False (the ablation without an intermediate prototype): step 2 keeps p'_l = p_l, the
    support-mined prototype, and never attends to the query (the query layers still refine the query map
    and p_l still activates it); the trace's ``query_attention`` is then zero.
    """

    def __init__(self, dims: int = 384, num_layers: int = 5, num_heads: int = 1, num_points: int = 9,
                 dropout: float = 0.1, ffn_ratio: int = 3, query_mining: bool = True) -> None:
        super().__init__()
        self.dims, self.num_layers, self.query_mining = dims, num_layers, query_mining
        self.initial_prototype = nn.Parameter(torch.randn(1, dims))  # reference: nn.Embedding(1, C), N(0,1)
        self.support_layers = nn.ModuleList(SupportMiningLayer(dims, ffn_ratio * dims, dropout)
                                            for _ in range(num_layers))
        self.query_layers = nn.ModuleList(QueryLayer(dims, ffn_ratio * dims, num_heads, num_points, dropout)
                                          for _ in range(num_layers))
        self.query_updates = nn.ModuleList(QueryUpdate(dims) for _ in range(num_layers - 1))
        self.mask_head = MaskHead(dims, dropout)
        self.level_embed = nn.Parameter(torch.empty(1, dims))
        nn.init.xavier_uniform_(self.level_embed)
        self.positional_encoding = SinePositionalEncoding(dims // 2, normalize=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference init: Xavier-uniform Linear weights, zero biases; deformable attention's own init."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()

    def forward(self, query_feat: torch.Tensor, query_ignore: torch.Tensor, support_feat: torch.Tensor,
                support_fg: torch.Tensor, initial_bias: torch.Tensor, need_masks: bool = False,
                trace: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        query_feat:   [B,C,h,w] merged query features.
        query_ignore: [B,h,w] bool, cells excluded from the positional count and zeroed as deformable
                      values (padding in fsslab; the label's 255 cells in the official code).
        support_feat: [B,K,C,h,w] merged support features.
        support_fg:   [B,K,h,w] bool foreground the prototype may attend to (guarded: never empty/full).
        initial_bias: [B,1,h*w] additive bias of the first prototype <- query attention.
        need_masks:   also compute every layer's query/support mask logits (training loss, trace).
        trace:        dict to fill with detached per-layer tensors (see ``TRACE_KEYS``), or None.
        Returns the final query map [B,C,h,w] and, with ``need_masks``, ``{"query_masks": [2L,B,h,w],
        "support_masks": [L,B,K,h,w]}`` (logits).
        """
        b, c, h, w = query_feat.shape
        k = support_feat.shape[1]
        query0 = map_to_tokens(query_feat)  # [B,hw,C]
        support = support_feat.permute(0, 1, 3, 4, 2).reshape(b, k * h * w, c)  # [B,K*hw,C], shot-major
        support_bias = mask_to_bias(support_fg.reshape(b, k * h * w))
        pos = map_to_tokens(self.positional_encoding(query_ignore)) + self.level_embed.view(1, 1, c)
        ignore_flat = query_ignore.reshape(b, h * w)
        reference = reference_grid([(h, w)], device=query_feat.device)
        record = {name: [] for name in ("support_prototypes", "support_attention", "query_prototypes",
                                        "query_attention", "sampling_locations", "sampling_weights")}
        query_masks, support_masks = [], []

        prototype = self.initial_prototype.unsqueeze(0).expand(b, 1, c)
        mined = []
        for layer in self.support_layers:
            prototype, attention = layer(prototype, support, support_bias)
            mined.append(prototype)
            if need_masks:
                query_masks.append(self.mask_head(prototype, query0))
            if trace is not None:
                record["support_prototypes"].append(prototype[:, 0])
                record["support_attention"].append(attention.reshape(b, k, h, w))

        query, bias = query0, initial_bias
        for index, layer in enumerate(self.query_layers):
            query, locations, weights = layer.refine_query(query, pos, reference, (h, w), ignore_flat)
            if self.query_mining:
                update, attention = layer.prototype_attention(mined[index], query, bias)
                prototype = mined[index] + update
            else:  # ablation: the support prototype as it is, no query attention
                prototype, attention = mined[index], query.new_zeros(b, 1, h * w)
            last = index == self.num_layers - 1
            if need_masks or not last:  # the last layer's mask only feeds the loss / trace
                logits = self.mask_head(prototype, query)  # [B,hw]
                bias = mask_to_bias(logits.float().sigmoid() >= 0.5)  # the next layer's attention mask
            if need_masks:
                query_masks.append(logits)
                support_masks.append(self.mask_head(prototype, support).reshape(b, k, h, w))
            if trace is not None:
                record["query_prototypes"].append(prototype[:, 0])
                record["query_attention"].append(attention.reshape(b, h, w))
                record["sampling_locations"].append(locations)
                record["sampling_weights"].append(weights)
            if not last:
                query = self.query_updates[index](query, prototype, h, w)

        if trace is not None:
            for name, items in record.items():
                trace[name] = torch.stack(items).detach().float()
        masks = {}
        if need_masks:
            masks = {"query_masks": torch.stack(query_masks).reshape(-1, b, h, w),
                     "support_masks": torch.stack(support_masks)}
        return tokens_to_map(query.contiguous(), (h, w)), masks
