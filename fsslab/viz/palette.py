"""Colours and image helpers shared by every fsslab figure: de-normalisation and mask overlays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fsslab.batch import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Overlay colours (RGB in [0, 1]); chosen to stay distinguishable for the common colour-vision deficiencies.
FOREGROUND = (0.90, 0.16, 0.12)  # target class
PREDICTION = (0.12, 0.47, 0.85)  # model prediction
OUTLINE = (1.0, 0.87, 0.0)  # outlined targets (drawn on a dark halo): yellow reads on red, blue and grey objects
BOX = (0.98, 0.60, 0.05)  # bounding-box weak support
SCRIBBLE = (0.10, 0.70, 0.30)  # scribble weak support
IGNORE = (1.0, 1.0, 1.0)  # 255: boundary band and padding, drawn white so it never looks like an object
PADDING = (0.35, 0.35, 0.35)

# Series colours for curves and bar charts (model comparison, protocols, folds).
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def series_colour(i: int) -> str:
    """Colour of the i-th series, cycling."""
    return SERIES[i % len(SERIES)]


def to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Detached CPU numpy view of a tensor (or the array itself)."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def denormalize(img: torch.Tensor | np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """[3,H,W] ImageNet-normalised image -> [H,W,3] float array in [0, 1], ready for ``imshow``."""
    arr = to_numpy(img).astype(np.float32)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"denormalize expects a [3,H,W] image, got shape {tuple(arr.shape)}")
    arr = arr * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    return np.clip(arr.transpose(1, 2, 0), 0.0, 1.0)


def overlay_mask(img: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 colour: Sequence[float] = FOREGROUND, alpha: float = 0.5,
                 ignore_colour: Sequence[float] | None = IGNORE, ignore_alpha: float = 0.75) -> np.ndarray:
    """Blend a 0/1/255 mask onto an image.

    img:  [H,W,3] float in [0, 1] (a [3,H,W] normalised tensor is de-normalised first).
    mask: [H,W]; 1 (or any value in (0, 1] for soft masks) is blended with ``colour`` at ``alpha`` times the
          mask value; 255 is drawn with ``ignore_colour`` so the ignore band stays distinct from the object.
    Returns a new [H,W,3] float array in [0, 1].
    """
    if isinstance(img, torch.Tensor) and img.dim() == 3 and img.shape[0] == 3:
        img = denormalize(img)
    base = np.array(to_numpy(img), dtype=np.float32, copy=True)
    m = to_numpy(mask).astype(np.float32)
    if base.ndim != 3 or base.shape[2] != 3:
        raise ValueError(f"overlay_mask expects an [H,W,3] image, got shape {tuple(base.shape)}")
    if m.shape != base.shape[:2]:
        raise ValueError(f"mask shape {tuple(m.shape)} does not match image shape {tuple(base.shape[:2])}")
    ignore = m == IGNORE_INDEX
    weight = np.where(ignore, 0.0, np.clip(m, 0.0, 1.0))[..., None] * alpha
    out = base * (1.0 - weight) + np.asarray(colour, np.float32) * weight
    if ignore_colour is not None and ignore.any():
        out[ignore] = out[ignore] * (1.0 - ignore_alpha) + np.asarray(ignore_colour, np.float32) * ignore_alpha
    return np.clip(out, 0.0, 1.0)


def class_colour(class_id: int, palette: Sequence[Sequence[int]] | None = None) -> tuple[float, float, float]:
    """RGB in [0, 1] of a benchmark class: from a dataset palette (0..255 triplets) or the series cycle."""
    if palette is not None and 0 <= class_id < len(palette):
        r, g, b = palette[class_id]
        return (r / 255.0, g / 255.0, b / 255.0)
    hexcol = series_colour(class_id).lstrip("#")
    return tuple(int(hexcol[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
