"""AMFormer's detail-mining part attention and discriminator D (training-time adversarial branch).

For each of the three refined query maps of G, a ``PartAttention`` module pools the masked query
tokens into ``parts`` part embeddings (learned part queries attend over the tokens with cosine
attention at temperature 0.1) and returns per-part attention maps ``sigmoid(mean_heads(score)) * mask``.
A small MLP classifier scores one part embedding as real (mined with the ground-truth mask) or
fake (mined with G's predicted mask). The reference ends the classifier with a sigmoid and then
applies ``BCEWithLogitsLoss`` to its output (a double sigmoid); fsslab keeps that so its losses equal
the reference's.

The part queries (``part_queries``) are never optimised by the reference: ``optimizer_D`` selects
parameters whose name contains "weight" or "bias", which ``part.i.parts`` does not. fsslab freezes
them by default (``train_part_queries=False``).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.models.amformer.loss import discriminator_adversarial, generator_adversarial, part_diversity


class PartAttention(nn.Module):
    """Part queries [N,C] attend over masked tokens: (part embeddings [B,N,C], part maps [B,N,L])."""

    def __init__(self, dims: int, parts: int = 14, heads: int = 4, drop: float = 0.1,
                 train_part_queries: bool = False) -> None:
        super().__init__()
        self.heads = heads
        # torch.rand as in the reference: part queries start in [0,1)^C
        self.part_queries = nn.Parameter(torch.rand(parts, dims), requires_grad=train_part_queries)
        self.q_proj = nn.Linear(dims, dims, bias=False)
        self.k_proj = nn.Linear(dims, dims, bias=False)
        self.v_proj = nn.Linear(dims, dims, bias=False)
        self.out_proj = nn.Linear(dims, dims, bias=False)
        self.norm = nn.LayerNorm(dims)
        self.ffn_in = nn.Linear(dims, 3 * dims, bias=False)
        self.ffn_out = nn.Linear(3 * dims, dims, bias=False)
        self.drop = nn.Dropout(drop)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: [B,L,C] already multiplied by the mask; mask: [B,L] in [0,1]."""
        b, _, c = tokens.shape
        queries = self.part_queries.unsqueeze(0).expand(b, -1, -1)  # [B,N,C]
        n_parts, d = queries.shape[1], c // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:  # [B,L,C] -> [B,h,L,d]
            return x.reshape(b, x.shape[1], self.heads, d).transpose(1, 2)

        q = F.normalize(split(self.q_proj(queries)), dim=-1)
        k = F.normalize(split(self.k_proj(tokens)), dim=-1)
        v = split(self.v_proj(tokens))
        scores = torch.matmul(q, k.transpose(-2, -1)) / 0.1  # [B,h,N,L]
        part_maps = torch.sigmoid(scores.mean(1)) * mask[:, None, :]  # [B,N,L]
        attn = self.drop(scores.softmax(dim=-1))
        x = torch.matmul(attn, v).transpose(1, 2).reshape(b, n_parts, c)
        x = self.drop(self.out_proj(x)) + queries
        x = x + self.drop(self.ffn_out(self.drop(F.relu(self.ffn_in(x)))))
        return self.norm(x), part_maps


class PartClassifier(nn.Module):
    """MLP C -> C/2 -> C/4 -> 1 with LeakyReLU(0.2) and a final sigmoid: P(real) of one part embedding."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dims, dims // 2), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(dims // 2, dims // 4), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(dims // 4, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., C] -> [..., 1]
        return self.net(x)


class PartDiscriminator(nn.Module):
    """D: one (PartAttention, PartClassifier) pair per refined level of G."""

    def __init__(self, dims: int, levels: int = 3, parts: int = 14, heads: int = 4, drop: float = 0.1,
                 train_part_queries: bool = False) -> None:
        super().__init__()
        self.part_attention = nn.ModuleList([PartAttention(dims, parts, heads, drop, train_part_queries)
                                             for _ in range(levels)])
        self.classifiers = nn.ModuleList([PartClassifier(dims) for _ in range(levels)])

    def parts(self, level: int, feat: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feat [B,C,h,w], mask [B,1,h,w] -> (parts [B,N,C], part maps [B,N,h,w])."""
        b, _, h, w = feat.shape
        tokens = feat.flatten(2).transpose(1, 2)  # [B,L,C]
        flat_mask = mask.flatten(1)  # [B,L]
        parts, maps = self.part_attention[level](tokens * flat_mask[..., None], flat_mask)
        return parts, maps.reshape(b, -1, h, w)

    def score(self, level: int, parts: torch.Tensor) -> torch.Tensor:
        """parts [..., C] -> P(real) [..., 1] (sigmoid output)."""
        return self.classifiers[level](parts)

    def optimizer_groups(self, base_lr: float, head_lr: float) -> list[dict[str, Any]]:
        """D's parameter groups with the learning rates the reference's poly schedule actually applies:
        part-attention weights at ``base_lr``; part-attention biases, classifier weights and biases at ``head_lr``.

        (``optimizer_D`` builds them with 1/2/2/4x, but ``poly_learning_rate(index_split=0)`` resets every group
        after the first to 10x before the first step.) Frozen parameters and empty groups are left out."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        part = [(n, p) for n, p in named if n.startswith("part_attention.")]
        cls = [(n, p) for n, p in named if n.startswith("classifiers.")]
        groups = [{"params": [p for n, p in part if not n.endswith("bias")], "lr": base_lr},
                  {"params": [p for n, p in part if n.endswith("bias")], "lr": head_lr},
                  {"params": [p for n, p in cls if n.endswith("weight")], "lr": head_lr},
                  {"params": [p for n, p in cls if n.endswith("bias")], "lr": head_lr}]
        return [g for g in groups if g["params"]]


def _detached_params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in module.named_parameters()}


@contextlib.contextmanager
def _rewound_rng(device: torch.device):
    """Run a block, then rewind the RNG so that the next block draws the same dropout masks."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # CPU state always; the CUDA device's when on GPU
        yield


def adversarial_branch(disc: PartDiscriminator, fused_maps: list[torch.Tensor], fake_mask: torch.Tensor,
                       real_mask: torch.Tensor, channel_draws: list[tuple[torch.Tensor, torch.Tensor]]
                       ) -> dict[str, torch.Tensor]:
    """The reference's adversarial branch, with G's and D's gradients kept apart.

    fused_maps: G's refined query maps [[B,C,h,w]] (one per D level); fake_mask: G's foreground map
    [B,1,h,w] (not thresholded); real_mask: the ground-truth foreground [B,1,h,w] (bilinear, 255 -> 0);
    channel_draws: per level, the part-map indices of the two diversity terms (fake, real).

    D's terms are computed on detached G outputs, so they reach only D's parameters. G's term runs
    the fake parts again through D with D's parameters detached, replaying the same dropout masks
    (the RNG is rewound), so its gradient w.r.t. G equals the reference's single-pass gradient and
    it reaches no D parameter. Returns per-level-averaged ``adversarial_g``, ``adversarial_d`` and
    ``diversity`` plus detached ``part_maps_{real,fake}`` [B,levels,N,h,w] and ``d_score_{real,fake}``
    [B,levels] for the trace.
    """
    levels = len(fused_maps)
    loss_g = loss_d = diversity = 0.0
    maps_real, maps_fake, scores_real, scores_fake = [], [], [], []
    for level, fused in enumerate(fused_maps):
        size = fused.shape[-2:]
        fake = F.interpolate(fake_mask, size=size, mode="bilinear", align_corners=True)
        real = F.interpolate(real_mask, size=size, mode="bilinear", align_corners=True)
        with _rewound_rng(fused.device):
            fake_parts, fake_maps = disc.parts(level, fused.detach(), fake.detach())
        tokens = fused.flatten(2).transpose(1, 2) * fake.flatten(1)[..., None]
        attention = disc.part_attention[level]
        fake_parts_g, _ = torch.func.functional_call(attention, _detached_params(attention),
                                                     (tokens, fake.flatten(1)))
        real_parts, real_maps = disc.parts(level, fused.detach(), real)
        # the pair of parts D finds most different (min cosine) is the one it judges
        index = F.cosine_similarity(fake_parts, real_parts, dim=2, eps=1e-6).argmin(dim=1)  # [B]
        rows = torch.arange(index.shape[0], device=index.device)
        prob_fake = disc.score(level, fake_parts[rows, index])
        prob_real = disc.score(level, real_parts[rows, index])
        classifier = disc.classifiers[level]
        prob_fake_g = torch.func.functional_call(classifier, _detached_params(classifier),
                                                 (fake_parts_g[rows, index],))
        loss_g = loss_g + generator_adversarial(prob_fake_g)
        loss_d = loss_d + discriminator_adversarial(prob_real, prob_fake)
        fake_draw, real_draw = channel_draws[level]
        diversity = diversity + 0.5 * (part_diversity(fake_maps, fake_draw) + part_diversity(real_maps, real_draw))
        maps_fake.append(fake_maps.detach())
        maps_real.append(real_maps.detach())
        scores_fake.append(prob_fake.detach().squeeze(1))
        scores_real.append(prob_real.detach().squeeze(1))
    return {"adversarial_g": loss_g / levels, "adversarial_d": loss_d / levels, "diversity": diversity / levels,
            "part_maps_fake": torch.stack(maps_fake, 1), "part_maps_real": torch.stack(maps_real, 1),
            "d_score_fake": torch.stack(scores_fake, 1), "d_score_real": torch.stack(scores_real, 1)}


def diversity_draws(levels: int, parts: int, device: torch.device, python_rng: bool = False
                    ) -> list[tuple[torch.Tensor, ...]]:
    """Per level, the (fake, real) part-map indices of the diversity terms: int(2N/3) of the N parts each.

    python_rng: draw them with Python's ``random.sample`` as the reference does (fake first, then real,
    per level); otherwise with torch's RNG.
    """
    count = int(parts * 2 / 3)
    if python_rng:
        draws = [tuple(torch.tensor(random.sample(range(parts), count)) for _ in range(2)) for _ in range(levels)]
    else:
        draws = [tuple(torch.randperm(parts)[:count] for _ in range(2)) for _ in range(levels)]
    return [tuple(d.to(device) for d in pair) for pair in draws]


def judge_generator(disc: PartDiscriminator, fused_maps: list[torch.Tensor], final: torch.Tensor,
                    query_mask: torch.Tensor, python_rng: bool = False) -> dict[str, torch.Tensor]:
    """The adversarial branch of an episode with its label: D judges the parts mined with G's foreground map
    (``final`` [B,2,h,w], the last ensemble, channel 1) against those mined with ``query_mask`` [B,H,W]
    (``== 1``; 255 counts as background), on G's fused maps. python_rng: the reference's diversity draws."""
    real = (query_mask == 1).to(final.dtype).unsqueeze(1)
    real = F.interpolate(real, size=final.shape[-2:], mode="bilinear", align_corners=True)
    parts = disc.part_attention[0].part_queries.shape[0]
    draws = diversity_draws(len(fused_maps), parts, final.device, python_rng=python_rng)
    return adversarial_branch(disc, fused_maps, final[:, 1:], real, draws)


@torch.no_grad()
def judge_masks(disc: PartDiscriminator, features: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """How D judges foreground masks ``masks`` [B,M,H,W] (any resolution, bilinearly resized) on G's fused
    maps ``features`` [B,levels,C,h,w]: ``score`` [B,M,levels] (P(real) averaged over parts), ``part_scores``
    [B,M,levels,N] and ``part_maps`` [B,M,levels,N,h,w]."""
    b, m = masks.shape[:2]
    levels = features.shape[1]
    feats = features.unsqueeze(1).expand(-1, m, -1, -1, -1, -1).flatten(0, 1)  # [B*M,levels,C,h,w]
    small = F.interpolate(masks.flatten(0, 1).unsqueeze(1).float(), size=features.shape[-2:],
                          mode="bilinear", align_corners=True).to(features.dtype)
    scores, maps = [], []
    for level in range(levels):
        parts, part_maps = disc.parts(level, feats[:, level], small)
        scores.append(disc.score(level, parts).squeeze(-1))  # [B*M,N]
        maps.append(part_maps)
    part_scores = torch.stack(scores, 1).view(b, m, levels, -1)
    return {"score": part_scores.mean(-1), "part_scores": part_scores,
            "part_maps": torch.stack(maps, 1).view(b, m, levels, *maps[0].shape[1:])}
