"""IPMT from the inside: per-layer prototype activations, prototype trajectory, deformable sampling, attention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from fsslab.viz._common import (
    blank_axes,
    cosine,
    heat_over_image,
    image_axes,
    masked_prototype,
    new_figure,
    select_sample,
)
from fsslab.viz.episodes import outline_mask
from fsslab.viz.palette import FOREGROUND, PREDICTION, denormalize, overlay_mask, series_colour, to_numpy
from fsslab.viz.trace_keys import IPMT_TRACE, episode_entry, find


def _get(trace: Mapping[str, Any], name: str, index: int, required: bool = True) -> torch.Tensor | None:
    return episode_entry(trace, IPMT_TRACE, name, index, required)


def num_layers(trace: Mapping[str, Any]) -> int:
    """Number of IPM layers recorded in the trace."""
    for name in ("query_prototypes", "query_layer_query_masks", "query_attention"):
        value = find(trace, IPMT_TRACE, name, required=False)
        if value is not None:
            return int(value.shape[0])
    raise KeyError(f"cannot tell the number of layers from trace keys {sorted(trace)}")


def _check_layer(layer: int, n: int) -> int:
    layer = n + layer if layer < 0 else layer
    if not 0 <= layer < n:
        raise IndexError(f"layer {layer} out of range: the trace has {n} layers")
    return layer


def prototype_activation(trace: Mapping[str, Any], index: int = 0, shot: int = 0) -> dict[str, torch.Tensor]:
    """Per-layer foreground probabilities [L,h,w]: "query" (query layers), "support" (support ``shot``, query
    layers) and, when traced, "query (mined)": the query as seen by the support-mined prototypes, before any
    query update — the gap between it and "query" is what the query layers recover."""
    out = {"query": _get(trace, "query_layer_query_masks", index).float().sigmoid()}  # logits -> probabilities
    mined = _get(trace, "support_layer_query_masks", index, required=False)
    if mined is not None:
        out["query (mined)"] = mined.float().sigmoid()
    support = _get(trace, "query_layer_support_masks", index, required=False)
    if support is not None:
        if support.dim() == 3:  # [L,h,w]: single shot without a K dimension
            support = support[:, None]
        if not 0 <= shot < support.shape[1]:
            raise IndexError(f"shot {shot} out of range: the trace has {support.shape[1]} supports")
        out["support"] = support[:, shot].float().sigmoid()
    return out


def plot_prototype_activation(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0,
                              shot: int = 0, layers: Sequence[int] | None = None) -> Figure:
    """Rows: the prototype's activation of the query (support-mined prototypes, if traced, then query layers)
    and of support ``shot``; one column per layer."""
    sample = select_sample(batch_or_sample, index)
    act = prototype_activation(trace, index, shot)
    n = act["query"].shape[0]
    layers = list(range(n)) if layers is None else [_check_layer(li, n) for li in layers]
    rows = []
    if "query (mined)" in act:
        rows.append(("query · mining", sample["query_img"], act["query (mined)"]))
    rows.append(("query · layer", sample["query_img"], act["query"]))
    if "support" in act:
        rows.append((f"support {shot + 1} · layer", sample["support_imgs"][shot], act["support"]))
    fig, axes = new_figure(len(rows), len(layers), title="Prototype activation per layer (foreground prob.)")
    for r, (name, img, maps) in enumerate(rows):
        for c, li in enumerate(layers):
            if li < maps.shape[0]:
                heat_over_image(axes[r, c], img, maps[li], f"{name} {li + 1}")
            else:
                blank_axes(axes[r, c])
    return fig


def _reference_prototypes(trace: Mapping[str, Any], sample: Mapping[str, Any] | None,
                          index: int) -> dict[str, torch.Tensor]:
    """{"support-only": [C], "query-only": [C]} as far as the trace allows.

    Pooled from the trace's features with the episode's GT masks (K shots: mean of the per-shot prototypes);
    without features the last support-mined prototype stands for the support-only one (it has seen nothing of
    the query) and no query-only reference exists.
    """
    refs: dict[str, torch.Tensor] = {}
    support = query = None
    qfeat = _get(trace, "query_feat", index, required=False)
    sfeat = _get(trace, "support_feat", index, required=False)
    if sfeat is not None and sample is not None:
        sfeat = sfeat[None] if sfeat.dim() == 3 else sfeat
        support = masked_prototype(sfeat.float(), (sample["support_masks"] == 1).float()).mean(0)
    if qfeat is not None and sample is not None:
        query = masked_prototype(qfeat[None].float(), (sample["query_mask"] == 1).float()[None])[0]
    if support is None:
        mined = _get(trace, "support_prototypes", index, required=False)
        if mined is not None:
            support = mined[-1]
    if support is not None:
        refs["support-only"] = support.float().flatten()
    if query is not None:
        refs["query-only"] = query.float().flatten()
    if not refs:
        raise KeyError("the prototype trajectory needs a reference prototype: 'support_prototypes' (mining "
                       "layers), 'query_feat'/'support_feat' with the episode, or references=...; trace keys are "
                       f"{sorted(trace)}")
    return refs


def pca_2d(points: torch.Tensor) -> torch.Tensor:
    """[N,C] -> [N,2] projection on the two leading principal axes (SVD; sign fixed for determinism)."""
    x = points.float() - points.float().mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]  # [2,C]
    # SVD signs are arbitrary: make each axis' largest-magnitude coordinate positive so figures are stable.
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = x @ axes.T
    if proj.shape[1] < 2:  # fewer points than two axes: pad with zeros so callers always get [N,2]
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 2 - proj.shape[1])], 1)
    return proj


def prototype_trajectory(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any] | None = None,
                         index: int = 0, references: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """How the intermediate prototype moves across layers, relative to the support-only and query-only ones.

    Returns {"labels": names of the path points ("mine 1".. for support mining layers, then "layer 1".. for
    the query layers), "path": [N,C], "cosine": {reference name: [N] cosine of each path point},
    "references": {name: [C]}, "projection": [R+N,2]} where the projection rows are the R references followed
    by the path, on the first two principal axes of those vectors. references: {name: [C]} prototypes to
    measure against (default: pooled from the trace's features and the episode's masks, see
    ``_reference_prototypes``).
    """
    prototypes = _get(trace, "query_prototypes", index).float()  # [L,C]
    prototypes = prototypes[:, 0] if prototypes.dim() == 3 else prototypes
    mined = _get(trace, "support_prototypes", index, required=False)
    labels = [f"layer {i + 1}" for i in range(prototypes.shape[0])]
    path = prototypes
    if mined is not None:
        mined = mined.float()[:, 0] if mined.dim() == 3 else mined.float()
        labels = [f"mine {i + 1}" for i in range(mined.shape[0])] + labels
        path = torch.cat([mined, prototypes], 0)
    sample = select_sample(batch_or_sample, index) if batch_or_sample is not None else None
    refs = ({name: ref.float().flatten() for name, ref in references.items()} if references
            else _reference_prototypes(trace, sample, index))
    for name, ref in refs.items():
        if ref.shape[-1] != path.shape[-1]:
            raise ValueError(f"prototype width {path.shape[-1]} differs from the {name} prototype's "
                             f"{ref.shape[-1]}: they must live in the same feature space")
    ref_stack = torch.stack(list(refs.values()))
    return {"labels": labels, "path": path, "references": refs,
            "cosine": {name: cosine(path, ref[None]) for name, ref in refs.items()},
            "projection": pca_2d(torch.cat([ref_stack, path], 0))}


def plot_prototype_trajectory(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any] | None = None,
                              index: int = 0, references: Mapping[str, torch.Tensor] | None = None) -> Figure:
    """Left: cosine of each layer's prototype to the reference prototypes. Right: the path in 2-D (PCA)."""
    traj = prototype_trajectory(trace, batch_or_sample, index, references)
    labels, n_refs = traj["labels"], len(traj["references"])
    steps = np.arange(len(labels))
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    ax, pax = fig.subplots(1, 2)
    fig.suptitle("Prototype trajectory: support mining, then query layers")
    for i, (name, cos) in enumerate(traj["cosine"].items()):
        ax.plot(steps, to_numpy(cos), "os"[i % 2] + "-", color=series_colour(i), label=f"vs {name}")
    n_mined = sum(1 for lab in labels if lab.startswith("mine"))
    if 0 < n_mined < len(labels):
        ax.axvline(n_mined - 0.5, color="0.6", ls="--", lw=0.8)
    ax.set_xticks(steps, labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine similarity")
    ax.set_title("Similarity to the reference prototypes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    proj = to_numpy(traj["projection"])
    path = proj[n_refs:]
    pax.plot(path[:, 0], path[:, 1], "-", color="0.5", zorder=1)
    pax.scatter(path[:, 0], path[:, 1], c=steps, cmap="viridis", zorder=2, label="layer prototypes")
    for lab, (x, y) in zip(labels, path):
        pax.annotate(lab.replace("layer ", "L").replace("mine ", "m"), (x, y), textcoords="offset points",
                     xytext=(4, 4), fontsize=8)
    for i, name in enumerate(traj["references"]):
        pax.scatter(*proj[i], marker="*P"[i % 2], s=160, color=series_colour(i), label=name, zorder=3)
    pax.set_xlabel("PC 1")
    pax.set_ylabel("PC 2")
    pax.set_title("2-D projection (PCA)")
    pax.legend(fontsize=8)
    return fig


def _feature_grid(trace: Mapping[str, Any], index: int) -> tuple[int, int]:
    for name in ("query_layer_query_masks", "prior", "query_attention"):
        value = _get(trace, name, index, required=False)
        if value is not None and value.dim() >= 2:
            return int(value.shape[-2]), int(value.shape[-1])
    raise KeyError(f"cannot tell the query feature grid from trace keys {sorted(trace)}")


def default_query_points(query_mask: torch.Tensor, grid: tuple[int, int]) -> list[tuple[int, int]]:
    """Two reference positions (row, col) on the feature grid: the object pixel nearest to the object's
    centroid, and the background pixel farthest from it (falls back to the grid centre)."""
    h, w = grid
    mask = torch.nn.functional.interpolate((query_mask == 1).float()[None, None], size=grid, mode="nearest")[0, 0]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    points = []
    if mask.any():
        cy, cx = ys[mask > 0].float().mean(), xs[mask > 0].float().mean()
        dist = (ys - cy) ** 2 + (xs - cx) ** 2
        fg = torch.where(mask > 0, dist, torch.full_like(dist, float("inf"))).argmin()
        points.append((int(fg // w), int(fg % w)))
        bg_mask = mask == 0
        if bg_mask.any():
            bg = torch.where(bg_mask, dist, torch.full_like(dist, -1.0)).argmax()
            points.append((int(bg // w), int(bg % w)))
    else:
        points.append((h // 2, w // 2))
    return points


def deformable_samples(trace: Mapping[str, Any], index: int, layer: int,
                       query_points: Sequence[tuple[int, int]],
                       image_size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each reference (row, col) on the feature grid: sampling points [P,2] as image (x, y) pixels and
    their attention weights [P]."""
    locations = _get(trace, "sampling_locations", index)  # [L,Nq,...,2]
    weights = _get(trace, "sampling_weights", index)  # [L,Nq,...]
    layer = _check_layer(layer, locations.shape[0])
    loc = locations[layer].flatten(1, -2).float()  # [Nq,P,2]
    wgt = weights[layer].flatten(1).float()  # [Nq,P]
    if loc.shape[:2] != wgt.shape:
        raise ValueError(f"sampling locations {tuple(loc.shape)} and weights {tuple(wgt.shape)} disagree")
    h, w = _feature_grid(trace, index)
    if loc.shape[0] < h * w:
        raise ValueError(f"{loc.shape[0]} query tokens cannot cover the {h}x{w} feature grid")
    height, width = image_size
    out = []
    for row, col in query_points:
        token = row * w + col  # level 0 comes first in the flattened multi-scale token list
        xy = to_numpy(loc[token]) * np.array([width, height], np.float32) - 0.5
        out.append((xy, to_numpy(wgt[token])))
    return out


def plot_deformable_sampling(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0,
                             layer: int = -1, query_points: Sequence[tuple[int, int]] | None = None) -> Figure:
    """Deformable-attention sampling points of a few query positions, sized and coloured by their weight."""
    sample = select_sample(batch_or_sample, index)
    fig, axes = new_figure(1, 1, cell=4.0)
    _draw_sampling(axes[0, 0], trace, sample, index, layer, query_points)
    return fig


def _draw_sampling(ax: Any, trace: Mapping[str, Any], sample: Mapping[str, Any], index: int, layer: int,
                   query_points: Sequence[tuple[int, int]] | None) -> None:
    img = denormalize(sample["query_img"])
    height, width = img.shape[:2]
    grid = _feature_grid(trace, index)
    points = list(query_points) if query_points is not None else default_query_points(sample["query_mask"], grid)
    n = find(trace, IPMT_TRACE, "sampling_locations").shape[0]
    layer = _check_layer(layer, n)
    ax.imshow(overlay_mask(img, sample["query_mask"], FOREGROUND, alpha=0.25))
    for i, ((row, col), (xy, wgt)) in enumerate(zip(points, deformable_samples(trace, index, layer, points,
                                                                               (height, width)))):
        ref = ((col + 0.5) * width / grid[1] - 0.5, (row + 0.5) * height / grid[0] - 0.5)
        size = 10 + 200 * wgt / max(float(wgt.max()), 1e-8)
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=wgt, cmap="viridis", edgecolors=series_colour(i), linewidths=0.8,
                   alpha=0.85)
        ax.scatter(*ref, marker="x", s=80, color=series_colour(i), linewidths=2, label=f"query pos. {i + 1}")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.legend(fontsize=7, loc="upper right")
    image_axes(ax, f"deformable sampling · layer {layer + 1}")


def _as_maps(att: torch.Tensor, grid: tuple[int, int], leading: int) -> torch.Tensor:
    """Attention [..., h*w] or [..., heads, h, w] or [..., h, w] -> [..., h, w] (heads averaged)."""
    h, w = grid
    if att.shape[-1] == h * w and (att.dim() == leading + 1 or att.shape[-2] != h):
        att = att.reshape(*att.shape[:-1], h, w)
    while att.dim() > leading + 2:  # head dimension(s)
        att = att.mean(dim=leading)
    return att.float()


def cross_attention_maps(trace: Mapping[str, Any], index: int = 0, shot: int = 0) -> dict[str, torch.Tensor]:
    """{"query": [L,h,w], "support": [L,h,w] of ``shot``}: the prototype's cross-attention over the pixels."""
    grid = _feature_grid(trace, index)
    query = _as_maps(_get(trace, "query_attention", index), grid, leading=1)
    out = {"query": query}
    support = _get(trace, "support_attention", index, required=False)
    if support is not None:
        if support.shape[-1] == grid[1] and support.dim() >= 4:  # [L,K,h,w] (or [L,K,heads,h,w])
            support = support[:, shot]
        else:  # [L, K*h*w] flattened over shots
            support = support.reshape(support.shape[0], -1, grid[0] * grid[1])[:, shot]
        out["support"] = _as_maps(support, grid, leading=1)
    return out


def plot_cross_attention(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0,
                         shot: int = 0, layers: Sequence[int] | None = None) -> Figure:
    """Cross-attention of the prototype over query (and support ``shot``) pixels, one column per layer.
    Each map is divided by its maximum: attention sums to one over many pixels, so raw values are tiny."""
    sample = select_sample(batch_or_sample, index)
    maps = cross_attention_maps(trace, index, shot)
    n = maps["query"].shape[0]
    layers = list(range(n)) if layers is None else [_check_layer(li, n) for li in layers]
    rows = [("query · layer", sample["query_img"], maps["query"])]
    if "support" in maps:  # the supports are attended by the mining layers, the query by the query layers
        rows.append((f"support {shot + 1} · mining", sample["support_imgs"][shot], maps["support"]))
    fig, axes = new_figure(len(rows), len(layers), title="Cross-attention of the prototype (normalised to max)")
    for r, (name, img, m) in enumerate(rows):
        for c, li in enumerate(layers):
            if li >= m.shape[0]:
                blank_axes(axes[r, c])
                continue
            heat = m[li] / m[li].max().clamp_min(1e-12)
            heat_over_image(axes[r, c], img, heat, f"{name} {li + 1}", cmap="inferno")
    return fig


def plot_prior_mask(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], index: int = 0) -> Figure:
    """The training-free prior (max cosine similarity to support foreground features) next to the target."""
    sample = select_sample(batch_or_sample, index)
    prior = _get(trace, "prior", index).float().reshape(-1, *_feature_grid(trace, index))[0]
    fig, axes = new_figure(1, 3, cell=2.8, title="Prior mask")
    img = denormalize(sample["query_img"])
    axes[0, 0].imshow(img)  # the target outlined, not filled: its own colours stay visible
    outline_mask(axes[0, 0], sample["query_mask"])
    image_axes(axes[0, 0], "query, target outlined")
    axes[0, 1].imshow(to_numpy(prior), cmap="jet", vmin=0, vmax=1)
    image_axes(axes[0, 1], "prior (feature grid)")
    heat_over_image(axes[0, 2], img, prior, "prior over the query")
    return fig


def final_prediction(trace: Mapping[str, Any], index: int = 0,
                     size: tuple[int, int] | None = None) -> torch.Tensor | None:
    """The model's 0/1 prediction [H,W] from the trace's ``final_logits`` [2,h,w], resized to ``size`` as the
    model resizes its output (bilinear, corners aligned: ``FSSOutput.logits`` is exactly this resize); None
    when the trace has no final logits."""
    logits = _get(trace, "final_logits", index, required=False)
    if logits is None:
        return None
    logits = logits.float()[None]
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    return logits.argmax(1)[0]


def foreground_iou(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Foreground IoU (%) of a 0/1 prediction with a 0/1/255 target (255 ignored; 100 when both are empty)."""
    valid = target != 255
    pred, true = (prediction == 1) & valid, (target == 1) & valid
    union = int((pred | true).sum())
    return 100.0 if union == 0 else 100.0 * int((pred & true).sum()) / union


def plot_ipmt_overview(trace: Mapping[str, Any], batch_or_sample: Mapping[str, Any], layer: int = -1,
                       index: int = 0, shot: int = 0) -> Figure:
    """One layer of IPMT at a glance (the explorer's figure). Top: the query with its target, the prior, the
    query activation of ``layer`` and the model's final prediction with its foreground IoU; bottom: support
    ``shot`` with its mask, its activation, the query cross-attention and the deformable sampling. Panels
    whose trace entries are missing are left blank."""
    sample = select_sample(batch_or_sample, index)
    n = num_layers(trace)
    layer = _check_layer(layer, n)
    shots = sample["support_imgs"].shape[0]
    if not 0 <= shot < shots:
        raise IndexError(f"support {shot + 1} out of range: the episode has {shots} support(s)")
    fig, axes = new_figure(2, 4, cell=2.6, title=f"IPMT · layer {layer + 1}/{n} · support {shot + 1} of {shots}")
    img = denormalize(sample["query_img"])
    axes[0, 0].imshow(img)  # the target outlined, not filled: its own colours stay visible
    outline_mask(axes[0, 0], sample["query_mask"])
    image_axes(axes[0, 0], "query, target outlined")
    prior = _get(trace, "prior", index, required=False)
    if prior is not None:
        heat_over_image(axes[0, 1], img, prior.float().reshape(-1, *prior.shape[-2:])[0], "prior mask")
    else:
        blank_axes(axes[0, 1])
    act = prototype_activation(trace, index, shot)
    heat_over_image(axes[0, 2], img, act["query"][layer], f"query activation · layer {layer + 1}")
    prediction = final_prediction(trace, index, tuple(img.shape[:2]))
    if prediction is not None:
        axes[0, 3].imshow(overlay_mask(img, prediction, PREDICTION))
        iou = foreground_iou(prediction, torch.as_tensor(sample["query_mask"]))
        image_axes(axes[0, 3], f"prediction (final) · IoU {iou:.0f}")
    else:
        blank_axes(axes[0, 3])
    axes[1, 0].imshow(denormalize(sample["support_imgs"][shot]))
    outline_mask(axes[1, 0], sample["support_masks"][shot])
    image_axes(axes[1, 0], f"support {shot + 1}, mask outlined")
    if "support" in act:
        heat_over_image(axes[1, 1], sample["support_imgs"][shot], act["support"][layer], "support activation")
    else:
        blank_axes(axes[1, 1])
    if find(trace, IPMT_TRACE, "query_attention", required=False) is not None:
        att = cross_attention_maps(trace, index, shot)["query"][layer]
        heat_over_image(axes[1, 2], img, att / att.max().clamp_min(1e-12), "query cross-attention", cmap="inferno")
    else:
        blank_axes(axes[1, 2])
    if find(trace, IPMT_TRACE, "sampling_locations", required=False) is not None:
        _draw_sampling(axes[1, 3], trace, sample, index, layer, None)
    else:
        blank_axes(axes[1, 3])
    return fig
