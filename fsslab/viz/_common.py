"""Internal helpers of fsslab.viz: picking one episode out of a batch, figure grids, heat-map overlays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fsslab.models.layers import masked_average_pool
from fsslab.viz.palette import denormalize, to_numpy

# Keys whose tensors carry no batch dimension in a single dataset sample: decides batch vs sample.
_BATCHED_IMAGE_DIMS = {"query_img": 4, "support_imgs": 5}


def is_batched(batch_or_sample: Mapping[str, Any]) -> bool:
    """True when ``batch_or_sample`` is a collated batch (query_img [B,3,H,W]) rather than one sample."""
    if "query_img" not in batch_or_sample:
        raise KeyError(f"expected an episode with a 'query_img' entry, got keys {sorted(batch_or_sample)}")
    return batch_or_sample["query_img"].dim() == _BATCHED_IMAGE_DIMS["query_img"]


def select_sample(batch_or_sample: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """One episode as an unbatched dict (query_img [3,H,W], support_imgs [K,3,H,W], ...)."""
    if not is_batched(batch_or_sample):
        return dict(batch_or_sample)
    size = batch_or_sample["query_img"].shape[0]
    if not 0 <= index < size:
        raise IndexError(f"episode index {index} out of range for a batch of {size}")
    out: dict[str, Any] = {}
    for key, value in batch_or_sample.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == size or isinstance(value, (list, tuple)) and len(value) == size:
            out[key] = value[index]
        else:
            out[key] = value
    return out


def trace_item(trace: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The entries of a batched trace for one episode (tensors indexed on their first dimension)."""
    return {k: (v[index] if isinstance(v, torch.Tensor) and v.dim() >= 1 else v) for k, v in trace.items()}


def new_figure(nrows: int, ncols: int, cell: float = 2.3, title: str | None = None) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure (no global state, nothing shown twice in notebooks) with a 2-D array of axes."""
    fig = Figure(figsize=(max(3.0, cell * ncols), max(2.5, cell * nrows + (0.4 if title else 0.0))),
                 layout="constrained")
    axes = np.atleast_2d(np.asarray(fig.subplots(nrows, ncols, squeeze=False)))
    if title:
        fig.suptitle(title)
    return fig, axes


def image_axes(ax: Axes, title: str) -> None:
    """Title an image panel and hide its ticks (the pixel grid carries no information)."""
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def blank_axes(ax: Axes) -> None:
    """Switch off an unused grid cell."""
    ax.set_axis_off()


def as_image(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """[3,H,W] normalised tensor or [H,W,3] array -> [H,W,3] float in [0, 1]."""
    arr = to_numpy(img)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:
        return denormalize(arr)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def fg_probability(x: torch.Tensor, two_channel: bool = False) -> torch.Tensor:
    """Foreground probability maps.

    two_channel=True: x is [...,2,h,w] background/foreground logits (softmax). Otherwise x is [...,h,w] (or
    [...,1,h,w]) maps: values already in [0, 1] are returned as they are, anything else goes through a sigmoid.
    The caller says which, because a stack of two single-channel maps looks exactly like bg/fg logits.
    """
    x = x.detach().float().cpu()
    if two_channel:
        if x.dim() < 3 or x.shape[-3] != 2:
            raise ValueError(f"expected [...,2,h,w] background/foreground logits, got shape {tuple(x.shape)}")
        return x.softmax(dim=-3)[..., 1, :, :]
    if x.dim() >= 3 and x.shape[-3] == 1:
        x = x.squeeze(-3)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        return x.sigmoid()
    return x


def resize_map(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a [h,w] map to ``size`` (H, W)."""
    m = m.detach().float().cpu()
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def heat_over_image(ax: Axes, img: torch.Tensor | np.ndarray | None, heat: torch.Tensor, title: str,
                    cmap: str = "jet", alpha: float = 0.5, vmin: float | None = 0.0,
                    vmax: float | None = 1.0) -> Any:
    """Draw ``heat`` [h,w] (any resolution) over ``img``; returns the heat AxesImage (for tests/widgets)."""
    heat_np = to_numpy(heat).astype(np.float32)
    if img is not None:
        rgb = as_image(img)
        h, w = rgb.shape[:2]
        ax.imshow(rgb)
        artist = ax.imshow(heat_np, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax,
                           extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
    else:
        artist = ax.imshow(heat_np, cmap=cmap, vmin=vmin, vmax=vmax)
    image_axes(ax, title)
    return artist


def masked_prototype(feat: torch.Tensor, mask: torch.Tensor, eps: float = 5e-4) -> torch.Tensor:
    """[N,C,h,w] features, [N,H,W] 0/1 mask -> [N,C]: the models' ``masked_average_pool``, the mask resized to
    the features as the models resize theirs (bilinear, corners aligned)."""
    mask = mask.float()
    if mask.shape[-2:] != feat.shape[-2:]:
        mask = F.interpolate(mask[:, None], size=feat.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    return masked_average_pool(feat, mask[:, None], eps).flatten(1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1)
