"""Training curves from the trainer's JSONL log and result charts (per-class IoU, model comparison)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fsslab.jsonl import read_jsonl
from fsslab.viz.palette import series_colour

_X_KEYS = ("iteration", "iter", "step", "global_step", "epoch")
# AMFormer's adversarial objectives get their own panel: their scale and dynamics differ from the CE losses.
_ADVERSARIAL_MARKERS = ("loss_g", "loss_d", "g_loss", "d_loss", "generator", "discriminator", "adv", "diversity")
_METRIC_MARKERS = ("miou", "fb_iou", "fbiou", "iou")


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"loss": {"total": 1}} -> {"loss/total": 1} so nested trainer records plot like flat ones."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix=f"{name}/"))
        else:
            out[name] = value
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _is_adversarial(key: str) -> bool:
    low = key.lower()
    return any(m in low for m in _ADVERSARIAL_MARKERS)


def _is_metric(key: str) -> bool:
    low = key.lower()
    return any(m in low for m in _METRIC_MARKERS) and "loss" not in low


def curve_series(records: Iterable[Mapping[str, Any]], keys: Sequence[str] | None = None,
                 x_key: str | None = None) -> tuple[str, dict[str, tuple[list[float], list[float]]]]:
    """(x_key, {key: (xs, ys)}) from log records; records lacking a key are skipped for that key only."""
    flat = [_flatten(r) for r in records]
    if not flat:
        raise ValueError("no records to plot")
    if x_key is None:
        x_key = next((k for k in _X_KEYS if any(k in r for r in flat)), None) or "record"
    numeric = sorted({k for r in flat for k, v in r.items() if _is_number(v) and k != x_key})
    if keys is None:
        keys = [k for k in numeric if "loss" in k.lower() or _is_metric(k)]
    missing = [k for k in keys if k not in numeric]
    if missing:
        raise KeyError(f"keys {missing} not found in the log; numeric keys are {numeric}")
    out: dict[str, tuple[list[float], list[float]]] = {}
    for key in keys:
        xs, ys = [], []
        for i, r in enumerate(flat):
            if _is_number(r.get(key)):
                xs.append(float(r[x_key]) if _is_number(r.get(x_key)) else float(i))
                ys.append(float(r[key]))
        out[key] = (xs, ys)
    return x_key, out


def plot_training_curves(jsonl_path_or_records: str | Path | Iterable[Mapping[str, Any]],
                         keys: Sequence[str] | None = None, x_key: str | None = None,
                         smooth: int = 1, title: str = "Training curves") -> Figure:
    """Loss (and metric) curves from a trainer JSONL log or a list of record dicts.

    keys: which numeric entries to plot (nested records are flattened to "a/b"); default: every key with
          "loss" in its name plus mIoU/FB-IoU metrics. Panels: losses; AMFormer's generator/discriminator
          losses (keys such as loss_G, loss_D); evaluation metrics (if any).
    smooth: moving-average window over the logged points (1 = raw).
    """
    if isinstance(jsonl_path_or_records, (str, Path)):
        records = read_jsonl(jsonl_path_or_records)
    else:
        records = list(jsonl_path_or_records)
    x_key, series = curve_series(records, keys, x_key)
    groups = {"losses": [k for k in series if not _is_adversarial(k) and not _is_metric(k)],
              "generator / discriminator losses": [k for k in series if _is_adversarial(k) and not _is_metric(k)],
              "evaluation metrics": [k for k in series if _is_metric(k)]}
    groups = {name: ks for name, ks in groups.items() if ks}
    fig = Figure(figsize=(4.6 * len(groups), 3.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    fig.suptitle(title)
    for ax, (name, ks) in zip(axes, groups.items()):
        for i, key in enumerate(ks):
            xs, ys = series[key]
            if smooth > 1 and len(ys) >= smooth:
                ys = list(np.convolve(ys, np.ones(smooth) / smooth, mode="valid"))
                xs = xs[smooth - 1:]
            ax.plot(xs, ys, label=key, color=series_colour(i), marker="o" if len(xs) < 12 else None, ms=3)
        ax.set_xlabel(x_key)
        ax.set_ylabel("metric" if name == "evaluation metrics" else "loss")
        ax.set_title(name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def _as_entry(entry: Any) -> Mapping[str, Any]:
    """An ``fsslab.engine.evaluate.EvalResult`` (anything with ``to_dict``) or a mapping."""
    return entry.to_dict() if hasattr(entry, "to_dict") else entry


def _per_class(entry: Mapping[str, Any]) -> dict[Any, float]:
    for key in ("per_class_iou", "class_iou", "iou_per_class"):
        if key in entry:
            return {c: float(v) for c, v in entry[key].items()}
    return {c: float(v) for c, v in entry.items() if _is_number(v) and (not isinstance(c, str) or c.isdigit())}


def _mean_iou(entry: Mapping[str, Any], per_class: Mapping[Any, float]) -> float:
    for key in ("miou", "mIoU", "mean_iou"):
        if key in entry:
            return float(entry[key])
    return float(np.mean(list(per_class.values()))) if per_class else float("nan")


def bar_miou(results: Mapping[str, Mapping[str, Any]],
             class_names: Sequence[str] | Mapping[Any, str] | None = None,
             title: str = "Per-class IoU") -> Figure:
    """Grouped bars of per-class IoU for several models, plus their mean (mIoU) as the last group.

    results: {model_name: EvalResult} (``fsslab.engine.evaluate``), {model_name: {"class_iou": {class_id: iou},
             "miou": ...}} or {model_name: {class_id: iou}}.
    """
    if not results:
        raise ValueError("bar_miou got no results")
    results = {name: _as_entry(entry) for name, entry in results.items()}
    per_model = {name: _per_class(entry) for name, entry in results.items()}
    classes = sorted({c for pc in per_model.values() for c in pc}, key=lambda c: int(c))
    fig = Figure(figsize=(max(5.0, 0.55 * (len(classes) + 1) * max(1, len(results)) ** 0.5 + 2), 3.6),
                 layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(classes) + 1, dtype=float)
    width = 0.8 / len(results)
    for i, (name, pc) in enumerate(per_model.items()):
        values = [pc.get(c, float("nan")) for c in classes] + [_mean_iou(results[name], pc)]
        ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=name, color=series_colour(i))
    names = []
    for c in classes:
        if isinstance(class_names, Mapping):
            names.append(str(class_names.get(c, class_names.get(int(c), c))))
        elif class_names is not None and 1 <= int(c) <= len(class_names):
            names.append(class_names[int(c) - 1])
        else:
            names.append(str(c))
    ax.set_xticks(x, names + ["mean"], rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6
                  else "center", fontsize=8)
    ax.axvline(len(classes) - 0.5, color="0.5", lw=0.8, ls="--")
    top = max((v for pc in per_model.values() for v in pc.values()), default=1.0)
    ax.set_ylabel("IoU (%)" if top > 1.0 else "IoU")
    ax.set_xlabel("novel class")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


# Columns that describe a row rather than score it: never set in bold.
UNRANKED_COLUMNS = ("episodes", "mIoU std", "FB-IoU std", "shot", "weights")


def _cell_text(value: Any, fmt: str) -> str:
    """Counts as integers ("8", not "8.0"), other numbers with ``fmt``, anything else as text."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if _is_number(value):
        return fmt.format(value)
    return "–" if value is None else str(value)


def plot_results_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str] | None = None,
                       title: str = "Results", fmt: str = "{:.1f}",
                       lower_is_better: Sequence[str] = (), unranked: Sequence[str] = UNRANKED_COLUMNS,
                       reference_rows: Sequence[str] = ()) -> Figure:
    """A rendered table: one row per model/setting, one column per metric (e.g. mIoU 1-shot, FB-IoU 1-shot).

    rows: {row_label: {column: value}}; integers (episode counts) are printed as integers, other numbers with
    ``fmt``, anything else as text. The best value of each ranked numeric column is set in bold: the largest,
    or the smallest for the columns named in ``lower_is_better`` (e.g. the mIoU with another class's
    supports, where lower means the model reads its support). Columns in ``unranked`` (counts, spreads, text)
    and the rows in ``reference_rows`` (controls such as the oracle, which are not competitors) are never
    bold. Column widths follow their longest text.
    """
    if not rows:
        raise ValueError("plot_results_table got no rows")
    if columns is None:
        columns = list(dict.fromkeys(c for r in rows.values() for c in r if c not in ("per_class_iou",)))
    unknown = [name for name in reference_rows if name not in rows]
    if unknown:
        raise KeyError(f"reference rows {unknown} are not rows of the table ({list(rows)})")
    competing = [r for name, r in rows.items() if name not in reference_rows]
    best: dict[str, float | None] = {}
    for c in columns:
        vals = [float(r[c]) for r in competing if _is_number(r.get(c))]
        ranked = c not in unranked and len(vals) > 1
        best[c] = (min(vals) if c in lower_is_better else max(vals)) if ranked else None
    cells = [[_cell_text(r.get(c), fmt) for c in columns] for r in rows.values()]
    # widths from the longest text of each column (about 0.075 inch per character at 9 pt, plus padding)
    chars = [max([len(str(c))] + [len(row[j]) for row in cells]) for j, c in enumerate(columns)]
    label_chars = max(len(str(name)) for name in rows)
    widths = [0.3 + 0.075 * n for n in chars]
    label_width = 0.3 + 0.075 * label_chars
    total = label_width + sum(widths)
    fig = Figure(figsize=(max(3.0, total + 0.4, 0.1 * len(title)), 0.55 + 0.25 * (len(rows) + 1)), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_title(title)
    table = ax.table(cellText=cells, rowLabels=list(rows), colLabels=list(columns), loc="center",
                     cellLoc="center", colWidths=[w / total for w in widths])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    for i in range(len(rows) + 1):  # the row-label column (index -1) gets its share of the width too
        if (i, -1) in table.get_celld():
            table[i, -1].set_width(label_width / total)
    for j, c in enumerate(columns):
        for i, (name, r) in enumerate(rows.items()):
            if (best[c] is not None and name not in reference_rows and _is_number(r.get(c))
                    and float(r[c]) == best[c]):
                table[i + 1, j].get_text().set_fontweight("bold")
    return fig
