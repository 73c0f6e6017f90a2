"""AMFormer from the inside: mask evolution, G's mined region, discriminator scores, parts, the ensemble."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from fsslab.engine.metrics import mask_iou
from fsslab.viz._common import (
    blank_axes,
    fg_probability,
    heat_over_image,
    image_axes,
    new_figure,
    resize_map,
    select_sample,
)
from fsslab.viz.episodes import outline_mask
from fsslab.viz.palette import BOX, FOREGROUND, PREDICTION, denormalize, overlay_mask, series_colour
from fsslab.viz.trace_keys import AMFORMER_TRACE, episode_entry

PERTURBATIONS = ("erode", "dilate", "shift", "holes")


def _get(trace: Mapping[str, Any], name: str, index: int, required: bool = True) -> torch.Tensor | None:
    return episode_entry(trace, AMFORMER_TRACE, name, index, required)


def _probability(x: torch.Tensor) -> torch.Tensor:
    """Scores already in [0, 1] stay as they are; anything else is a logit."""
    x = x.float()
    return x if x.numel() == 0 or (x.min() >= 0 and x.max() <= 1) else x.sigmoid()


def _disc(radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2 + 0.5).float()


def _morph(fg: torch.Tensor, radius: int, dilate: bool) -> torch.Tensor:
    """Binary dilation/erosion of [H,W] float with a disc (a convolution counts covered disc pixels)."""
    if radius <= 0:
        return fg
    kernel = _disc(radius)
    hits = F.conv2d(fg[None, None], kernel[None, None], padding=radius)[0, 0]
    return (hits > 0.5).float() if dilate else (hits >= kernel.sum() - 0.5).float()


def perturb_mask(mask: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """A controlled corruption of a binary mask, deterministic for a given seed.

    mask:     [H,W] with 1 foreground (255 ignore and everything else count as background).
    kind:     "erode" | "dilate" (disc of radius strength x the object's equivalent radius), "shift" (by strength
              x the object's bounding-box size in a seeded direction), "holes" (seeded discs removing about
              ``strength`` of the object's area).
    strength: in [0, 1]; 0 returns the binary mask unchanged.
    Returns [H,W] long 0/1.
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {PERTURBATIONS}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"perturbation strength must be in [0, 1], got {strength}")
    mask = torch.as_tensor(mask)
    if mask.dim() != 2:
        raise ValueError(f"perturb_mask expects an [H,W] mask, got shape {tuple(mask.shape)}")
    fg = (mask == 1).float()
    area = float(fg.sum())
    if strength == 0.0 or area == 0.0:
        return fg.long()
    gen = torch.Generator().manual_seed(seed)
    h, w = fg.shape
    if kind in ("erode", "dilate"):
        radius = max(1, round(strength * math.sqrt(area / math.pi)))
        return _morph(fg, radius, dilate=kind == "dilate").long()
    if kind == "shift":
        ys, xs = torch.nonzero(fg, as_tuple=True)
        size = torch.tensor([float(ys.max() - ys.min() + 1), float(xs.max() - xs.min() + 1)])
        angle = float(torch.rand((), generator=gen)) * 2 * math.pi
        dy, dx = (round(strength * size[0].item() * math.sin(angle)), round(strength * size[1].item() * math.cos(angle)))
        out = torch.zeros_like(fg)
        src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
        src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
        out[dst_y, dst_x] = fg[src_y, src_x]
        return out.long()
    # holes: drop discs centred on object pixels until about `strength` of the area is gone.
    out = fg.clone()
    hole_radius = max(1, round(0.15 * math.sqrt(area / math.pi)))
    ys_grid, xs_grid = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    target = area * (1.0 - strength)
    for _ in range(200):  # bounded: each hole removes at least one pixel while the object is non-empty
        if float(out.sum()) <= target:
            break
        candidates = torch.nonzero(out)
        cy, cx = candidates[int(torch.randint(len(candidates), (), generator=gen))]
        out[(ys_grid - cy) ** 2 + (xs_grid - cx) ** 2 <= hole_radius ** 2] = 0
    return out.long()


def mask_evolution(trace: Mapping[str, Any], index: int = 0) -> dict[str, torch.Tensor]:
    """Ordered {stage: [h,w] foreground map}: the initial prediction (scaled to [0, 1] by its maximum), G's
    object mining (stage 0), each refinement, and the final ensembled mask."""
    stages = {}
    init = _get(trace, "initial_prediction", index, required=False)
    if init is not None:
        init = init.float().reshape(-1, *init.shape[-2:])[0]
        stages["initial"] = init / init.max().clamp_min(1.0)
    logits = _get(trace, "meta_logits", index)  # [S,2,h,w]
    probs = fg_probability(logits[None] if logits.dim() == 3 else logits, two_channel=True)
    for s in range(probs.shape[0]):
        stages["mined" if s == 0 else f"refined {s}"] = probs[s]
    final = _get(trace, "ensemble_logits", index, required=False)
    if final is not None:
        stages["final"] = fg_probability(final[-1] if final.dim() == 4 else final, two_channel=True)
    return stages


def plot_mask_evolution(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0) -> Figure:
    """Initial, refined and final foreground probabilities over the query, next to the target."""
    sample = select_sample(batch_or_sample, index)
    stages = mask_evolution(trace, index)
    fig, axes = new_figure(1, len(stages) + 1, title="AMFormer: initial → refined → final mask")
    img = denormalize(sample["query_img"])
    axes[0, 0].imshow(img)  # the target outlined, not filled: its own colours stay visible
    outline_mask(axes[0, 0], sample["query_mask"])
    image_axes(axes[0, 0], "query, target outlined")
    target = sample["query_mask"]
    for ax, (name, prob) in zip(axes[0, 1:], stages.items()):
        pred = (resize_map(prob, tuple(target.shape)) > 0.5).long()
        heat_over_image(ax, img, prob, f"{name} (IoU {mask_iou(pred, target):.2f})")
    return fig


def plot_mining(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0) -> Figure:
    """What G's object mining adds: the support-activated region, G's mined region and their difference."""
    sample = select_sample(batch_or_sample, index)
    img = denormalize(sample["query_img"])
    activated = _get(trace, "similarity", index).float()
    activated = activated.reshape(-1, *activated.shape[-2:]).mean(0).clamp(0, 1)  # mean over feature levels
    mined = _get(trace, "mined_mask", index, required=False)
    mined = mask_evolution(trace, index)["mined"] if mined is None else fg_probability(mined)
    if activated.shape != mined.shape:
        activated = resize_map(activated, tuple(mined.shape))
    fig, axes = new_figure(1, 4, cell=2.6, title="Object mining: G versus the support-activated region")
    axes[0, 0].imshow(img)
    outline_mask(axes[0, 0], sample["query_mask"])
    image_axes(axes[0, 0], "query, target outlined")
    heat_over_image(axes[0, 1], img, activated, "support-activated")
    heat_over_image(axes[0, 2], img, mined, "G's mined region")
    # the difference on its own scale (it rarely spans ±1) over a grey copy of the query, strongly coloured:
    # red = G adds, blue = G removes; the target outlined for reference
    diff = mined - activated
    span = max(0.05, float(diff.abs().max()))
    grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    artist = heat_over_image(axes[0, 3], grey, diff, f"mined − activated (±{span:.2f})", cmap="RdBu_r",
                             alpha=0.8, vmin=-span, vmax=span)
    outline_mask(axes[0, 3], sample["query_mask"])
    fig.colorbar(artist, ax=axes[0, 3], fraction=0.046, pad=0.02).set_label("G adds (+) / removes (−)", fontsize=8)
    return fig


def discriminator_scores(trace: Mapping[str, Any], index: int = 0) -> dict[str, float]:
    """{"ground truth": D(real), "G's mask": D(fake)}: P(real), averaged over D's levels (logits get a sigmoid)."""
    out = {}
    for name, label in (("d_score_real", "ground truth"), ("d_score_fake", "G's mask")):
        value = _get(trace, name, index, required=False)
        if value is not None:
            out[label] = float(_probability(value).mean())
    return out


def perturbation_scores(score_fn: Callable[[torch.Tensor], float], mask: torch.Tensor,
                        kinds: Sequence[str] = PERTURBATIONS, strengths: Sequence[float] = (0.25, 0.5),
                        seed: int = 0) -> dict[str, float]:
    """{"erode 0.25": score, ...}: ``score_fn`` (a mask [H,W] -> D score) on controlled perturbations."""
    return {f"{kind} {s:g}": float(score_fn(perturb_mask(mask, kind, s, seed))) for kind in kinds for s in strengths}


def plot_discriminator_scores(scores: Mapping[str, float], title: str = "Discriminator scores",
                              ylabel: str = "D(mask) (probability of 'real')") -> Figure:
    """Bar chart of D's scores for the ground truth, the prediction and perturbations of them."""
    if not scores:
        raise ValueError("no discriminator scores to plot")
    fig = Figure(figsize=(max(4.0, 0.6 * len(scores) + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    names = list(scores)
    ax.bar(np.arange(len(names)), [scores[n] for n in names],
           color=[series_colour(0 if "truth" in n or n == "gt" else 1 if "pred" in n or "G" in n else 2)
                  for n in names])
    ax.set_xticks(np.arange(len(names)), names, rotation=45 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("mask")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig


def part_maps(trace: Mapping[str, Any], index: int = 0, kind: str = "real", level: int = -1) -> torch.Tensor:
    """[N,h,w] part-attention maps (``kind`` "real" = GT-masked, "fake" = G-masked) of one D level."""
    if kind not in ("real", "fake"):
        raise ValueError(f"part attention kind must be 'real' or 'fake', got {kind!r}")
    att = _get(trace, f"part_maps_{kind}", index).float()
    return att[level] if att.dim() == 4 else att


def part_diversity(maps: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of the N part maps [N,h,w] (lower = more diverse parts)."""
    flat = F.normalize(maps.flatten(1).float(), dim=1)
    n = flat.shape[0]
    if n < 2:
        return float("nan")
    sim = flat @ flat.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def plot_part_attention(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0,
                        kind: str = "real", level: int = -1, max_parts: int = 8) -> Figure:
    """The first ``max_parts`` part-attention maps over the query, with the parts' diversity in the title."""
    sample = select_sample(batch_or_sample, index)
    maps = part_maps(trace, index, kind, level)
    shown = maps[:max_parts]
    ncols = min(4, shown.shape[0])
    nrows = math.ceil(shown.shape[0] / ncols)
    fig, axes = new_figure(nrows, ncols, title=f"Part attention ({kind}); mean pairwise cosine "
                                               f"{part_diversity(maps):.2f} over {maps.shape[0]} parts")
    img = denormalize(sample["query_img"])
    for i, ax in enumerate(axes.flat):
        if i < shown.shape[0]:
            heat = shown[i] / shown[i].max().clamp_min(1e-12)
            heat_over_image(ax, img, heat, f"part {i + 1}", cmap="magma")
        else:
            blank_axes(ax)
    return fig


def plot_ensemble_effect(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0) -> Figure:
    """The base-learner ensemble: meta-learner foreground, base-class map, final foreground, and their IoUs."""
    sample = select_sample(batch_or_sample, index)
    img = denormalize(sample["query_img"])
    target = sample["query_mask"]
    stages = mask_evolution(trace, index)
    if "final" not in stages:
        raise KeyError("the ensemble figure needs 'ensemble_logits' in the trace")
    meta = stages[[k for k in stages if k not in ("final", "initial")][-1]]  # the last generator stage
    final = stages["final"]
    base = _probability(_get(trace, "base_map", index)).reshape(-1, *meta.shape[-2:])[0]
    gram = _get(trace, "gram_estimate", index, required=False)
    gram_text = f" (Gram gap {float(gram.float().mean()):.2f})" if gram is not None else ""
    fig, axes = new_figure(1, 4, cell=2.6, title="Base-learner ensemble" + gram_text)
    axes[0, 0].imshow(img)
    outline_mask(axes[0, 0], target)
    image_axes(axes[0, 0], "query, target outlined")
    for ax, (name, prob) in zip(axes[0, 1:], (("meta learner", meta), ("base classes", base), ("final", final))):
        if name == "base classes":
            heat_over_image(ax, img, prob, "base-class map")
        else:
            pred = (resize_map(prob, tuple(target.shape)) > 0.5).long()
            heat_over_image(ax, img, prob, f"{name} (IoU {mask_iou(pred, target):.2f})")
    return fig


def plot_perturbation(batch_or_sample: Mapping[str, Any], perturbed: torch.Tensor, scores: Mapping[str, float],
                      index: int = 0, prediction: torch.Tensor | None = None, label: str = "perturbed") -> Figure:
    """Query with target, the perturbed mask (and prediction), and D's scores: the analyser's figure."""
    sample = select_sample(batch_or_sample, index)
    img = denormalize(sample["query_img"])
    panels = 3 + (prediction is not None)
    fig = Figure(figsize=(2.8 * panels, 3.2), layout="constrained")
    axes = fig.subplots(1, panels)
    axes[0].imshow(overlay_mask(img, sample["query_mask"], FOREGROUND))
    image_axes(axes[0], "query + ground truth")
    axes[1].imshow(overlay_mask(img, perturbed, BOX))
    image_axes(axes[1], label)
    if prediction is not None:
        axes[2].imshow(overlay_mask(img, prediction, PREDICTION))
        image_axes(axes[2], "prediction")
    bar_ax = axes[-1]
    names = list(scores)
    bar_ax.bar(np.arange(len(names)), [scores[n] for n in names], color=[series_colour(i) for i in range(len(names))])
    bar_ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    bar_ax.set_ylabel("D score")
    bar_ax.set_xlabel("mask")
    bar_ax.set_title("discriminator")
    return fig

