"""Episode figures: query and K supports with their masks and ignore band, weak supports, class statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fsslab.batch import IGNORE_INDEX
from fsslab.viz._common import blank_axes, image_axes, new_figure, select_sample
from fsslab.viz.palette import (
    BOX,
    FOREGROUND,
    IGNORE,
    OUTLINE,
    PREDICTION,
    SCRIBBLE,
    denormalize,
    overlay_mask,
    series_colour,
)

_WEAK_COLOURS = {"mask": FOREGROUND, "box": BOX, "bbox": BOX, "scribble": SCRIBBLE}


def _class_label(class_id: Any, class_names: Sequence[str] | Mapping[int, str] | None) -> str:
    cid = int(class_id) if class_id is not None else None
    if cid is None:
        return "?"
    if class_names is None:
        return f"class {cid}"
    if isinstance(class_names, Mapping):
        return f"{class_names.get(cid, cid)} ({cid})"
    # A plain sequence is 1-based as class_id is: names[0] is class 1 unless it names the background.
    names = list(class_names)
    offset = 0 if names and names[0].lower() in {"background", "bg", "_background_"} else 1
    return f"{names[cid - offset]} ({cid})" if 0 <= cid - offset < len(names) else f"class {cid}"


def _weak_for_sample(weak: torch.Tensor, batched: bool, index: int, shots: int) -> torch.Tensor:
    weak = torch.as_tensor(weak)
    if batched and weak.dim() == 4:
        weak = weak[index]
    if weak.dim() == 2:
        weak = weak[None]
    if weak.dim() != 3 or weak.shape[0] != shots:
        raise ValueError(f"weak support masks must be [K,H,W] (or [B,K,H,W]) with K={shots}, "
                         f"got shape {tuple(weak.shape)}")
    return weak


def show_episode(batch_or_sample: Mapping[str, Any], index: int = 0,
                 class_names: Sequence[str] | Mapping[int, str] | None = None,
                 weak_masks: Mapping[str, torch.Tensor] | None = None,
                 prediction: torch.Tensor | None = None) -> Figure:
    """Figure of one episode: the query (raw, with its mask) and the K supports with their masks.

    batch_or_sample: an episode batch (query_img [B,3,H,W], ...) or one dataset sample (query_img [3,H,W]).
    weak_masks: optional {"box": [K,H,W] or [B,K,H,W], "scribble": ...}: one extra row of supports per entry,
                so mask, box and scribble supports sit side by side.
    prediction: optional [H,W] (or [B,H,W]) predicted query mask, drawn as a third query panel.
    The 255 band (boundaries and padding) is drawn white; the legend says so.
    """
    batched = "query_img" in batch_or_sample and batch_or_sample["query_img"].dim() == 4
    sample = select_sample(batch_or_sample, index)
    supports = sample["support_imgs"]  # [K,3,H,W]
    support_masks = sample["support_masks"]  # [K,H,W]
    shots = supports.shape[0]
    rows = [("mask", support_masks)]
    for kind, weak in (weak_masks or {}).items():
        rows.append((kind, _weak_for_sample(weak, batched, index, shots)))
    query_panels = 2 + (prediction is not None)
    nrows, ncols = max(len(rows), query_panels), 1 + shots
    label = _class_label(sample.get("class_id"), class_names)
    episode = sample.get("episode_index")
    title = f"{shots}-shot episode" + (f" #{int(episode)}" if episode is not None else "") + f": {label}"
    fig, axes = new_figure(nrows, ncols, title=title)

    query = denormalize(sample["query_img"])
    axes[0, 0].imshow(query)
    image_axes(axes[0, 0], "query")
    axes[1, 0].imshow(overlay_mask(query, sample["query_mask"], FOREGROUND))
    image_axes(axes[1, 0], "query + target mask")
    if prediction is not None:
        pred = torch.as_tensor(prediction)
        pred = pred[index] if batched and pred.dim() == 3 else pred
        axes[2, 0].imshow(overlay_mask(query, pred, (0.12, 0.47, 0.85)))
        image_axes(axes[2, 0], "query + prediction")
    for r in range(query_panels, nrows):
        blank_axes(axes[r, 0])

    for r, (kind, masks) in enumerate(rows):
        colour = _WEAK_COLOURS.get(kind, series_colour(r))
        for k in range(shots):
            ax = axes[r, 1 + k]
            ax.imshow(overlay_mask(denormalize(supports[k]), masks[k], colour))
            image_axes(ax, f"support {k + 1} · {kind}")
    for r in range(len(rows), nrows):
        for k in range(shots):
            blank_axes(axes[r, 1 + k])

    handles = [Patch(color=FOREGROUND, label="target class"),
               Patch(facecolor=IGNORE, edgecolor="k", label=f"ignore ({IGNORE_INDEX})")]
    handles += [Patch(color=_WEAK_COLOURS.get(kind, series_colour(i)), label=f"{kind} support")
                for i, (kind, _) in enumerate(rows[1:], start=1)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def outline_mask(ax: Axes, mask: torch.Tensor | np.ndarray, colour: Sequence[float] = OUTLINE,
                 width: float = 1.6) -> None:
    """Draw the outline of a mask's foreground (value 1) on ``ax``, over whatever the panel shows: a coloured
    line on a dark halo, so the object's own colours stay visible (a filled overlay hides them) and the line
    reads on light and dark objects alike."""
    fg = (np.asarray(torch.as_tensor(mask).cpu()) == 1).astype(np.float32)
    if not fg.any():
        return
    fg = np.pad(fg, 1)  # an object touching the border still gets a closed outline
    extent = (-1.5, fg.shape[1] - 1.5, fg.shape[0] - 1.5, -1.5)
    ax.contour(fg, levels=[0.5], colors=["k"], linewidths=width + 1.6, extent=extent, origin="upper")
    ax.contour(fg, levels=[0.5], colors=[tuple(colour)], linewidths=width, extent=extent, origin="upper")
    ax.set_xlim(-0.5, fg.shape[1] - 2.5)
    ax.set_ylim(fg.shape[0] - 2.5, -0.5)


def plot_support_conditions(episodes: Sequence[Mapping[str, Any]],
                            class_names: Sequence[str] | Mapping[int, str] | None = None,
                            title: str | None = None) -> Figure:
    """The same queries under several support conditions (e.g. their own support vs another class's):
    one row per condition, one group of three panels per episode: the support with its object outlined, the
    query with its target outlined (not filled: the objects' colours matter), and the prediction (filled)
    titled with its foreground IoU.

    episodes: [{"label": "episode 3 (largest change)", "conditions": [{"name": "matched support",
              "sample": episode sample (the batch contract, un-batched), "prediction": [H,W] 0/1,
              "iou": foreground IoU in %}, ...]}, ...]; every episode lists the same conditions in the same
              order (they become the rows). The query's target is the sample's query_mask; the support panel
              names the support's class (the sample's class_id, or the condition's "support_class").
    """
    if not episodes:
        raise ValueError("plot_support_conditions got no episodes")
    names = [c["name"] for c in episodes[0]["conditions"]]
    for ep in episodes:
        if [c["name"] for c in ep["conditions"]] != names:
            raise ValueError(f"every episode must list the conditions {names}, got "
                             f"{[c['name'] for c in ep['conditions']]}")
    fig = Figure(figsize=(0.6 + 5.4 * len(episodes), 0.9 + 2.05 * len(names)), layout="constrained")
    if title:
        fig.suptitle(title)
    groups = fig.subfigures(1, len(episodes), squeeze=False)[0]
    for group, ep in zip(groups, episodes):
        group.suptitle(str(ep.get("label", "")), fontsize=10)
        axes = group.subplots(len(names), 3, squeeze=False)
        for r, condition in enumerate(ep["conditions"]):
            sample = select_sample(condition["sample"])
            query = denormalize(sample["query_img"])
            shots = sample["support_imgs"].shape[0]
            support_class = condition.get("support_class", sample.get("class_id"))
            support_name = _class_label(support_class, class_names).split(" (")[0]
            target_name = _class_label(condition.get("query_class", sample.get("class_id")), class_names).split(" (")[0]
            ax = axes[r, 0]
            ax.imshow(denormalize(sample["support_imgs"][0]))
            outline_mask(ax, sample["support_masks"][0])
            image_axes(ax, f"support: {support_name}" + (f" (1 of {shots})" if shots > 1 else ""))
            ax.set_ylabel(condition["name"], fontsize=9)
            ax = axes[r, 1]
            ax.imshow(query)
            outline_mask(ax, sample["query_mask"])
            image_axes(ax, f"query: target {target_name}")
            ax = axes[r, 2]
            prediction = torch.as_tensor(condition["prediction"])
            ax.imshow(overlay_mask(query, prediction, PREDICTION, alpha=0.55))
            outline_mask(ax, sample["query_mask"])
            iou = condition.get("iou")
            image_axes(ax, "prediction" + (f" · IoU {float(iou):.0f}" if iou is not None else ""))
    handles = [Line2D([], [], color=OUTLINE, lw=2, path_effects=None, label="object of the support / target (outline)"),
               Patch(color=PREDICTION, alpha=0.55, label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def ignore_fraction(mask: torch.Tensor) -> float:
    """Fraction of pixels labelled 255 (boundary band + padding) in a mask."""
    return float((torch.as_tensor(mask) == IGNORE_INDEX).float().mean())


def _as_series(stats: Mapping[Any, Any]) -> dict[str, dict[Any, float]]:
    """{class: count} -> {"images": {...}}; {series: {class: count}} stays as it is."""
    if not stats:
        raise ValueError("show_class_statistics got empty statistics")
    first = next(iter(stats.values()))
    if isinstance(first, Mapping):
        return {str(name): {c: float(v) for c, v in series.items()} for name, series in stats.items()}
    return {"images": {c: float(v) for c, v in stats.items()}}


def show_class_statistics(stats: Mapping[Any, Any], class_names: Sequence[str] | Mapping[int, str] | None = None,
                          folds: Mapping[int, Sequence[int]] | None = None,
                          title: str = "Images per class", ylabel: str = "images") -> Figure:
    """Grouped bar chart of per-class counts, one bar colour per series (e.g. protocol or split).

    stats: {class_id: count} or {series_name: {class_id: count}} (e.g. {"PFENet": {...}, "BAM": {...}}).
    folds: optional {fold: [class ids]}: classes are ordered fold by fold, the folds are shaded, and a second
           panel shows the per-fold totals of every series.
    """
    series = _as_series(stats)
    classes = sorted({c for s in series.values() for c in s}, key=lambda c: (str(type(c)), c))
    if folds:
        in_folds = [c for f in sorted(folds) for c in folds[f] if c in set(classes)]
        classes = in_folds + [c for c in classes if c not in set(in_folds)]
    ncols = 2 if folds else 1
    fig = Figure(figsize=(max(6.0, 0.42 * len(classes) * max(1, len(series) ** 0.5)) + 3.0 * (ncols - 1), 3.6),
                 layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, width_ratios=[3, 1] if folds else None)[0]
    ax = axes[0]
    x = np.arange(len(classes), dtype=float)
    width = 0.8 / len(series)
    for i, (name, counts) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [counts.get(c, 0.0) for c in classes], width,
               label=name, color=series_colour(i))
    if folds:
        start = 0
        for j, f in enumerate(sorted(folds)):
            n = sum(1 for c in folds[f] if c in set(classes))
            if j % 2 == 0:
                ax.axvspan(start - 0.5, start + n - 0.5, color="0.92", zorder=0)
            ax.text(start + (n - 1) / 2, 1.0, f"fold {f}", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8)
            start += n
    labels = [_class_label(c, class_names).split(" (")[0] if isinstance(c, (int, np.integer)) else str(c)
              for c in classes]
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_title(title, pad=14 if folds else None)
    if len(series) > 1:
        ax.legend(fontsize=8)
    if folds:
        fax = axes[1]
        fx = np.arange(len(folds), dtype=float)
        for i, (name, counts) in enumerate(series.items()):
            totals = [sum(counts.get(c, 0.0) for c in folds[f]) for f in sorted(folds)]
            fax.bar(fx + (i - (len(series) - 1) / 2) * width, totals, width, label=name, color=series_colour(i))
        fax.set_xticks(fx, [f"fold {f}" for f in sorted(folds)])
        fax.set_xlabel("fold")
        fax.set_ylabel(f"{ylabel} (sum over the fold's classes)")
        fax.set_title("Per fold")
    return fig


def weak_supports(support_masks: torch.Tensor, kinds: Sequence[str] = ("box", "scribble"),
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """{kind: [K,H,W] long} weak variants of [K,H,W] (or [B,K,H,W]) support masks, made by ``fsslab.data.weak``
    exactly as the datasets make them (``support_label="box" | "scribble"``), for side-by-side figures."""
    from fsslab.data.weak import weak_label  # data sits below viz; imported here to keep viz import light

    masks = torch.as_tensor(support_masks)
    flat = masks.reshape(-1, *masks.shape[-2:]).cpu().numpy().astype(np.uint8)
    out = {}
    for kind in kinds:
        weak = [torch.from_numpy(weak_label(m, kind, seed=seed + i).astype(np.int64)) for i, m in enumerate(flat)]
        out[kind] = torch.stack(weak).reshape(masks.shape)
    return out


def show_protocol_comparison(summaries: Sequence[Any], title: str = "Training images per fold") -> Figure:
    """Kept training images per fold under each protocol (PFENet vs BAM), with the images BAM drops.

    summaries: ``fsslab.data.IndexSummary`` objects (or anything with fold, protocol, n_kept, n_listed and
    n_dropped_with_novel), typically one per (fold, protocol) of the training split.
    """
    if not summaries:
        raise ValueError("show_protocol_comparison got no summaries")
    protocols = list(dict.fromkeys(s.protocol for s in summaries))
    folds = sorted({s.fold for s in summaries})
    table = {(s.fold, s.protocol): s for s in summaries}
    fig = Figure(figsize=(max(5.0, 1.6 * len(folds) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(folds), dtype=float)
    width = 0.8 / len(protocols)
    for i, protocol in enumerate(protocols):
        kept = [table[(f, protocol)].n_kept if (f, protocol) in table else 0 for f in folds]
        bars = ax.bar(x + (i - (len(protocols) - 1) / 2) * width, kept, width, label=f"{protocol} protocol",
                      color=series_colour(i))
        ax.bar_label(bars, fontsize=8)
    listed = max(s.n_listed for s in summaries)
    ax.axhline(listed, color="0.4", ls="--", lw=0.8, label=f"listed ({listed})")
    ax.set_xticks(x, [f"fold {f}" for f in folds])
    ax.set_xlabel("fold")
    ax.set_ylabel("training images kept")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return fig
