"""Weak support labels made from a 0/1/255 mask: filled component boxes and scribbles."""

from __future__ import annotations

import cv2
import numpy as np

from fsslab.batch import IGNORE_INDEX
from fsslab.errors import ConfigError, DatasetError

WEAK_LABELS = ("mask", "box", "scribble")


def _components(foreground: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    # 8-connectivity, as cv2.connectedComponentsWithStats' default in AMFormer/BAM `get_weak_anns.py`
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    return count, labels, stats


def mask_to_boxes(mask: np.ndarray, ignore_index: int = IGNORE_INDEX, reference_extent: bool = False) -> np.ndarray:
    """Box label: every connected component of `mask == 1` replaced by its filled bounding box.

    Pixels labelled `ignore_index` in `mask` stay ignored, also inside a box (the references put the
    255 pixels back after drawing the boxes). `reference_extent=True` reproduces the references'
    `cv2.rectangle((x, y), (x + w, y + h))`, whose box is one pixel wider and taller than the component.
    Returns uint8 [H,W] with values 0/1/255.
    """
    _, _, stats = _components(mask == 1)
    out = np.zeros(mask.shape, np.uint8)
    extra = 1 if reference_extent else 0
    for x, y, w, h, _ in stats[1:]:
        out[y : y + h + extra, x : x + w + extra] = 1
    out[mask == ignore_index] = ignore_index
    return out


def _stroke_points(region: np.ndarray, rng: np.random.Generator, n_points: int) -> np.ndarray:
    """Anchor points deep inside `region` (distance ≥ half the maximum), ordered along its main axis."""
    distance = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    ys, xs = np.nonzero(distance >= 0.5 * distance.max())
    picks = rng.choice(len(ys), size=min(n_points, len(ys)), replace=False)
    points = np.stack([xs[picks], ys[picks]], axis=1).astype(np.float64)
    all_ys, all_xs = np.nonzero(region)
    coords = np.stack([all_xs, all_ys], axis=1).astype(np.float64)
    centred = coords - coords.mean(0)
    # main axis of the region: order the anchors along it so the stroke does not zig-zag back
    axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(coords) > 1 else np.array([1.0, 0.0])
    order = np.argsort(points @ axis)
    peak = np.unravel_index(int(distance.argmax()), distance.shape)
    return np.vstack([points[order], [[peak[1], peak[0]]]]).round().astype(np.int32)


def _draw_strokes(region: np.ndarray, rng: np.random.Generator, width: int, n_points: int) -> np.ndarray:
    canvas = np.zeros(region.shape, np.uint8)
    count, labels, _ = _components(region)
    for component in range(1, count):
        part = labels == component
        points = _stroke_points(part, rng, n_points)
        cv2.polylines(canvas, [points[:-1].reshape(-1, 1, 2)], False, 1, thickness=width)
        cv2.circle(canvas, tuple(int(v) for v in points[-1]), max(width // 2, 0), 1, thickness=-1)
        # the innermost point always belongs to the scribble, so even thin components get one
        canvas[points[-1][1], points[-1][0]] = 1
    return canvas.astype(bool) & region


def mask_to_scribbles(
    mask: np.ndarray,
    seed: int,
    width: int = 3,
    points_per_stroke: int = 4,
    unlabeled: str = "background",
    background_strokes: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Scribble label: one stroke per connected component of `mask == 1`, a polyline `width` pixels
    wide through interior points of the component, clipped to it (so the scribble is a subset of the
    mask). Deterministic given `seed`.

    unlabeled="background": pixels off the scribbles are background (0), like the box variant.
    unlabeled="ignore": pixels off the scribbles are 255; with `background_strokes`, strokes drawn in
    the background components get 0, as in scribble-supervised benchmarks.
    Pixels ignored in `mask` stay `ignore_index`. Returns uint8 [H,W] with values 0/1/255.
    """
    if unlabeled not in ("background", "ignore"):
        raise ConfigError(f"unlabeled must be 'background' or 'ignore', got {unlabeled!r}")
    rng = np.random.default_rng(seed)
    foreground = _draw_strokes(mask == 1, rng, width, points_per_stroke)
    if unlabeled == "background":
        out = np.zeros(mask.shape, np.uint8)
    else:
        out = np.full(mask.shape, ignore_index, np.uint8)
        if background_strokes:
            out[_draw_strokes(mask == 0, rng, width, points_per_stroke)] = 0
    out[foreground] = 1
    out[mask == ignore_index] = ignore_index
    return out


def weak_label(mask: np.ndarray, kind: str, seed: int = 0, **options) -> np.ndarray:
    """Dispatch: "mask" (unchanged copy), "box" or "scribble"."""
    if kind == "mask":
        return mask.copy()
    if kind == "box":
        return mask_to_boxes(mask, **options)
    if kind == "scribble":
        return mask_to_scribbles(mask, seed, **options)
    raise ConfigError(f"support_label must be one of {WEAK_LABELS}, got {kind!r}")


def box_to_label(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Box label from corners ``(x0, y0, x1, y1)`` (pixels, x1/y1 exclusive) on an (H, W) image: the filled
    box is 1, the rest 0, the encoding ``mask_to_boxes`` gives a single-component mask. uint8 [H,W]."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = shape
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise DatasetError(f"box {box} does not fit a {height}x{width} (HxW) image")
    out = np.zeros(shape, np.uint8)
    out[y0:y1, x0:x1] = 1
    return out


def strokes_to_label(strokes: np.ndarray, unlabeled: str = "background",
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Scribble label from drawn strokes (bool [H,W]): strokes 1, the rest 0 (``unlabeled="background"``,
    the default of ``mask_to_scribbles``) or ``ignore_index`` (``"ignore"``). uint8 [H,W]."""
    if unlabeled not in ("background", "ignore"):
        raise ConfigError(f"unlabeled must be 'background' or 'ignore', got {unlabeled!r}")
    out = np.full(strokes.shape, 0 if unlabeled == "background" else ignore_index, np.uint8)
    out[strokes.astype(bool)] = 1
    return out
