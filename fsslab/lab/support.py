"""Notebook 05 plumbing: a support you draw yourself, the models' answers live, and mask vs box vs scribble.

``LiveSupport`` picks a support image among the benchmark's images of a novel class, lets the student drag a
box or draw scribbles on it (``fsslab.viz.draw_widget.DrawSupport``; switching between the two keeps both
drawings, and the message says which one is used) and, after every finished box or stroke,
segments a few other images of the class with each model through ``fsslab.predict`` (the path of
``fsslab predict --box/--scribble``), scoring each prediction against the query's true mask. Until something is
drawn, the support's true mask is used. ``compare_support_labels`` evaluates the models with mask, box and
scribble supports on the same seeded episodes (``fsslab.engine.runner.run_evaluation``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fsslab.batch import IGNORE_INDEX
from fsslab.data.classes import Benchmark, synthetic_benchmark
from fsslab.data.io import read_pair
from fsslab.data.lists import FoldIndex, build_fold_index
from fsslab.data.weak import WEAK_LABELS
from fsslab.engine.metrics import mask_iou
from fsslab.predict import PredictError, Support, predict
from fsslab.viz._common import image_axes, new_figure
from fsslab.viz.episodes import outline_mask
from fsslab.viz.palette import BOX, FOREGROUND, PREDICTION, SCRIBBLE, overlay_mask
from fsslab.viz.widgets import figure_png

LABEL_COLOURS = {"mask": FOREGROUND, "box": BOX, "scribble": SCRIBBLE}


@dataclass
class ClassImages:
    """The images of a split's classes (a fold's novel classes for "val") in a VOC-layout benchmark."""

    root: Path
    benchmark: Benchmark
    index: FoldIndex

    @classmethod
    def load(cls, root: str | Path, fold: int = 0, split: str = "val", benchmark: Benchmark | None = None) -> ClassImages:
        """The synthetic benchmark at ``root`` (or ``benchmark``, e.g. ``fsslab.data.PASCAL``)."""
        bench = benchmark or synthetic_benchmark(root)
        return cls(Path(root), bench, build_fold_index(bench, root, split, fold))

    @property
    def classes(self) -> list[int]:
        """Class ids with at least two images (a support and a query)."""
        return [c for c, items in self.index.class_to_items.items() if len(items) >= 2]

    def items(self, class_id: int) -> list[int]:
        if class_id not in self.index.class_to_items:
            raise ValueError(f"class {class_id} is not a class of this split (it has {sorted(self.index.class_to_items)})")
        return list(self.index.class_to_items[class_id])

    def read(self, item: int, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 image, uint8 mask: 1 the class, 0 the rest, 255 ignore) of index item ``item``."""
        image_rel, label_rel = self.index.items[item]
        image, label = read_pair(self.root / image_rel, self.root / label_rel, self.benchmark.n_classes)
        mask = (label == class_id).astype(np.uint8)
        mask[label == IGNORE_INDEX] = IGNORE_INDEX
        return image, mask


def plot_support_predictions(support: Support, queries: Sequence[tuple[np.ndarray, np.ndarray]],
                             predictions: Mapping[str, Sequence[np.ndarray]], title: str = "") -> Figure:  # fmt: skip
    """Top row: the support with its label, then each query with its true mask outlined; one row per model
    below: its prediction on each query (filled, the true mask outlined), titled with the IoU against the true
    mask."""
    names = list(predictions)
    title = (f"{title} · " if title else "") + "true masks outlined"
    fig, axes = new_figure(1 + len(names), 1 + len(queries), cell=2.0, title=title)
    colour = LABEL_COLOURS.get(support.kind, FOREGROUND)
    axes[0, 0].imshow(overlay_mask(support.image / 255.0, support.label, colour=colour, alpha=0.55))
    image_axes(axes[0, 0], f"support ({support.kind})")
    for j, (image, mask) in enumerate(queries, start=1):
        axes[0, j].imshow(image)  # the true mask outlined, not filled: the objects' own colours stay visible
        outline_mask(axes[0, j], mask)
        image_axes(axes[0, j], f"query {j}")
        for i, name in enumerate(names, start=1):
            pred = predictions[name][j - 1]
            axes[i, j].imshow(overlay_mask(image / 255.0, pred, colour=PREDICTION))
            outline_mask(axes[i, j], mask)
            image_axes(axes[i, j], f"{name}: IoU {100 * mask_iou(pred, mask):.0f}")
    for i, name in enumerate(names, start=1):
        axes[i, 0].set_axis_off()
        axes[i, 0].text(0.5, 0.5, name, ha="center", va="center", fontsize=12, transform=axes[i, 0].transAxes)
    return fig


class LiveSupport:
    """Pick a support (class, image), draw a box or scribbles on it, and see every model's predictions on
    ``n_queries`` other images of the class update after each finished box or stroke.

    models: {name: model} (a ``fsslab.predict.PredictModel`` or an fsslab model). ``box`` is the widget to
    display; ``scores`` holds the last IoUs ({name: [per query]}), ``support`` the last support used and
    ``figure`` the last figure. ``select(class_id, position)`` does what the pickers do.
    """

    def __init__(self, models: Mapping[str, Any], images: ClassImages, n_queries: int = 3, scale: int = 2,
                 mode: str = "box", device: str = "auto", dpi: int = 70) -> None:  # fmt: skip
        import ipywidgets as widgets

        from fsslab.viz.draw_widget import DrawSupport

        if not models:
            raise ValueError("LiveSupport needs at least one model")
        if not images.classes:
            raise ValueError(f"{images.root}: no class with two images (a support and a query)")
        self.models, self.images = dict(models), images
        self.n_queries, self.device, self.dpi = int(n_queries), device, dpi
        self.scores: dict[str, list[float]] = {}
        self.support: Support | None = None
        self.figure: Figure | None = None
        first = images.classes[0]
        names = [(f"{images.benchmark.class_name(c)} (class {c})", c) for c in images.classes]
        self.class_picker = widgets.Dropdown(options=names, value=first, description="class")
        self.support_picker = widgets.IntSlider(value=0, min=0, max=len(images.items(first)) - 1,
                                                description="support image", continuous_update=False)
        self.message = widgets.HTML()
        self.result = widgets.Image(format="png")
        image, _ = images.read(images.items(first)[0], first)
        self.drawer = DrawSupport(image, mode=mode, scale=scale, on_change=self._drawn)
        self.box = widgets.VBox([widgets.HBox([self.class_picker, self.support_picker]),
                                 widgets.HBox([self.drawer.box, widgets.VBox([self.message, self.result])])])
        self.box.live = self  # keep the callbacks alive as long as the displayed box
        self.class_picker.observe(self._class_changed, names="value")
        self.support_picker.observe(lambda change: self.select(self.class_picker.value, change["new"]), names="value")
        self.select(first, 0)

    def _class_changed(self, change: dict[str, Any]) -> None:
        count = len(self.images.items(change["new"]))
        with self.support_picker.hold_trait_notifications():
            self.support_picker.value = 0
            self.support_picker.max = count - 1
        self.select(change["new"], 0)

    def select(self, class_id: int, position: int) -> None:
        """Use image ``position`` of class ``class_id`` as the support and the next ``n_queries`` images of the
        class (cyclically) as queries; predictions start from the support's true mask."""
        items = self.images.items(class_id)
        if not 0 <= position < len(items):
            raise ValueError(f"class {class_id} has {len(items)} images, no position {position}")
        self.class_id = class_id
        self.support_image, self.support_mask = self.images.read(items[position], class_id)
        others = [items[(position + k) % len(items)] for k in range(1, len(items))][: self.n_queries]
        self.queries = [self.images.read(item, class_id) for item in others]
        self.drawer.set_image(self.support_image)
        self.refresh(None)

    def _drawn(self, label: np.ndarray | None) -> None:
        self.refresh(label)

    def refresh(self, label: np.ndarray | None = None) -> None:
        """Predict every query with the drawn ``label`` (None: the support's true mask) and redraw the figure."""
        kind = self.drawer.sketch.mode if label is not None else "mask"
        try:
            support = Support(self.support_image, self.support_mask if label is None else label, kind, "drawn support")
            predictions = {name: [p.mask for p in predict(model, [support], [q for q, _ in self.queries],
                                                          device=self.device)]
                           for name, model in self.models.items()}  # fmt: skip
        except PredictError as err:  # e.g. a box so thin it vanishes at the model's input size
            self.message.value = f"<b>{err}</b>"
            return
        self.support = support
        self.scores = {name: [mask_iou(p, m) for p, (_, m) in zip(preds, self.queries)]
                       for name, preds in predictions.items()}  # fmt: skip
        mean = ", ".join(f"{name} {100 * np.mean(s):.0f}" for name, s in self.scores.items())
        self.message.value = (f"support label: <b>{kind}</b> ({int((support.label == 1).sum())} object pixels); "
                              f"mean IoU over the {len(self.queries)} queries: {mean}")
        sketch = self.drawer.sketch
        kept = [m for m in sketch.kept() if m != sketch.mode]
        if label is None and kept:  # a mode switch to an empty tool: say why the true mask is back
            self.message.value += (f"<br><b>nothing drawn in {sketch.mode} mode yet</b>: the true mask is used; "
                                   f"your {kept[0]} is kept (switch back to {kept[0]} to use it)")
        name = self.images.benchmark.class_name(self.class_id)
        self.figure = plot_support_predictions(support, self.queries, predictions, title=f"class {name}")
        self.result.value = figure_png(self.figure, dpi=self.dpi)


def compare_support_labels(entries: Mapping[str, tuple[Any, Any]], labels: Sequence[str] = WEAK_LABELS,
                           episodes: int | None = None, seeds: Sequence[int] | None = None) -> dict[str, dict[str, Any]]:
    """mIoU of each model with each kind of support label on the same seeded episodes.

    entries: {name: (RunConfig, model)}; each model is evaluated with its config's evaluation settings and
    ``eval.support_label`` set to each of ``labels`` (the episodes do not depend on it: same queries, same
    support images, only their labels differ). Returns {name: {label: mIoU, ..., "episodes": n}} for
    ``fsslab.viz.plot_results_table``.
    """
    from fsslab.config import replace_section
    from fsslab.engine.runner import run_evaluation

    for label in labels:
        if label not in WEAK_LABELS:
            raise ValueError(f"support label {label!r} is not one of {WEAK_LABELS}")
    rows: dict[str, dict[str, Any]] = {}
    for name, (cfg, model) in entries.items():
        changes: dict[str, Any] = {}
        if episodes is not None:
            changes["episodes"] = int(episodes)
        if seeds is not None:
            changes["seeds"] = list(seeds)
        row: dict[str, Any] = {}
        for label in labels:
            config = replace_section(cfg, "eval", support_label=label, **changes)
            result = run_evaluation(config, model, progress=False)
            row[label] = result.miou_mean
            row["episodes"] = result.episodes_per_seed * len(result.seeds)
        rows[name] = row
    return rows


__all__ = ["ClassImages", "LiveSupport", "compare_support_labels", "mask_iou", "plot_support_predictions"]
