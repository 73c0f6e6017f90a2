"""Synthetic episodes and traces (shaped as the models' TRACE_KEYS) shared by the fsslab.viz tests."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

H = W = 32  # image size
h = w = 8  # feature grid
LAYERS = 3


def make_batch(shots: int, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """An episode batch following the contract: a square object, a 255 boundary band, padding at the bottom."""
    g = torch.Generator().manual_seed(seed)

    def mask(n: int) -> torch.Tensor:
        m = torch.zeros(n, H, W, dtype=torch.long)
        for i in range(n):
            y, x = torch.randint(4, 16, (2,), generator=g).tolist()
            m[i, y - 1:y + 11, x - 1:x + 11] = 255
            m[i, y:y + 10, x:x + 10] = 1
        m[:, -3:] = 255  # padding rows
        return m

    return {"query_img": torch.randn(batch, 3, H, W, generator=g), "query_mask": mask(batch),
            "support_imgs": torch.randn(batch, shots, 3, H, W, generator=g),
            "support_masks": mask(batch * shots).view(batch, shots, H, W),
            "class_id": torch.tensor([3, 7][:batch]), "episode_index": torch.arange(batch)}


def make_ipmt_trace(shots: int, batch: int = 2, channels: int = 6) -> dict[str, torch.Tensor]:
    """Shaped as fsslab.models.ipmt.model.TRACE_KEYS: per-layer entries layer-first [L,B,...]."""
    g = torch.Generator().manual_seed(1)
    heads, points = 2, 9
    return {
        "prior": torch.rand(batch, 1, h, w, generator=g),
        "support_prototypes": torch.randn(LAYERS, batch, channels, generator=g),
        "query_prototypes": torch.randn(LAYERS, batch, channels, generator=g),
        "support_attention": torch.rand(LAYERS, batch, shots, h, w, generator=g),
        "query_attention": torch.rand(LAYERS, batch, h, w, generator=g),
        "query_layer_query_masks": torch.randn(LAYERS, batch, h, w, generator=g),
        "support_layer_query_masks": torch.randn(LAYERS, batch, h, w, generator=g),
        "query_layer_support_masks": torch.randn(LAYERS, batch, shots, h, w, generator=g),
        "sampling_locations": torch.rand(LAYERS, batch, h * w, heads, 1, points, 2, generator=g),
        "sampling_weights": torch.rand(LAYERS, batch, h * w, heads, 1, points, generator=g).softmax(-1),
    }


def make_amformer_trace(batch: int = 2, parts: int = 5, stages: int = 3, levels: int = 2) -> dict[str, torch.Tensor]:
    """Shaped as the AMFormer trace (fsslab/models/amformer/model.py ``TRACE_KEYS``)."""
    g = torch.Generator().manual_seed(2)
    return {
        "initial_prediction": torch.rand(batch, 1, h, w, generator=g) * 10,
        "similarity": torch.rand(batch, 2, h, w, generator=g),
        "meta_logits": torch.randn(batch, stages, 2, h, w, generator=g),
        "refine_masks": (torch.rand(batch, stages - 1, h, w, generator=g) > 0.5).float(),
        "ensemble_logits": torch.rand(batch, stages, 2, h, w, generator=g),
        "mined_mask": torch.rand(batch, 1, h, w, generator=g),
        "base_map": torch.rand(batch, 1, h, w, generator=g),
        "gram_estimate": torch.rand(batch, generator=g),
        "part_maps_real": torch.rand(batch, levels, parts, h, w, generator=g),
        "part_maps_fake": torch.rand(batch, levels, parts, h, w, generator=g),
        "d_score_real": torch.rand(batch, levels, generator=g),
        "d_score_fake": torch.rand(batch, levels, generator=g),
    }


def assert_labelled(fig: Figure) -> None:
    """Every visible axes carries a title or an axis label; the figure is not empty."""
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert visible, "figure has no visible axes"
    for ax in visible:
        assert ax.get_title() or ax.get_xlabel() or ax.get_ylabel(), f"unlabelled axes in {fig}"
