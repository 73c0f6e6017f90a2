"""Evaluation protocols: how a query is resized for the model, and the exact inverse back to its label.

One table, ``EVAL_PROTOCOLS``, maps each protocol name to its input transform; ``to_label_resolution``
undoes every one of them the same way, because each transform records where the image content sits in the
model's input (``valid_size``): take that top-left region of the logits, resize it to the label's original
(H, W). A ground-truth "prediction" therefore scores 100 through the evaluation path whatever the protocol,
image size or batch mix (``fsslab eval ... model.name=oracle`` checks exactly this).

| name | input | as in |
|---|---|---|
| ``fsslab`` | long side → ``size`` only when larger (small images keep their pixels), sides floored to a multiple of 8, padded bottom/right to size×size | fsslab's default |
| ``ipmt`` | long side → ``size`` always (small images are upscaled), floored to a multiple of 8, padded | PFENet/IPMT ``test_Resize`` |
| ``amformer`` | stretched to size×size (aspect not kept), no padding | AMNet/AMFormer ``test.py`` |
| ``hsnet`` | the same stretch (HSNet: ``Resize((400, 400))``, FSS-1000 at data.val_size=400) | HSNet ``test.py`` |

The references map back slightly differently: PFENet/IPMT resize the whole square to L×L and score against
the label padded to L×L, which ignores the flooring of the long side (472 of 473); both use
``align_corners=True``. fsslab always applies the exact inverse above, with ``align_corners=False``: the
geometry of OpenCV's bilinear resize (pixel centres at +0.5), so that the inverse lands every pixel back where
it came from. The
class-wise IoU arithmetic is the references' (``fsslab.engine.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fsslab.data.transforms import MEAN_255, _resize_all, pad_to
from fsslab.errors import ConfigError


@dataclass(frozen=True)
class EvalProtocol:
    """An evaluation input transform: long-side resize (``upscale``: also for smaller images) + padding,
    or a stretch to the square (``stretch``)."""

    name: str
    upscale: bool = False
    stretch: bool = False
    multiple: int = 8  # both sides of a long-side resize are floored to a multiple of this
    source: str = ""

    def input_size(self, height: int, width: int, size: int) -> tuple[int, int]:
        """(h, w) of the image content in the model's input for an original height×width image."""
        if self.stretch:
            return size, size
        return long_side_size(height, width, size, self.upscale, self.multiple)

    def apply(self, image: np.ndarray, labels: list[np.ndarray], size: int, pad_image: str = "zero"):
        """Resize ``image`` (float [H,W,3], 0..255) and ``labels`` for the model; returns
        (image [size,size,3], labels, padding bool [size,size], valid_size (h, w) of the content)."""
        if pad_image not in ("zero", "mean"):
            raise ConfigError(f"pad_image must be 'zero' or 'mean', got {pad_image!r}")
        new_h, new_w = self.input_size(*image.shape[:2], size)
        image = image.astype(np.float32, copy=False)
        padding = np.zeros(image.shape[:2], np.uint8)
        if (new_h, new_w) != image.shape[:2]:
            image, labels, padding = _resize_all(image, labels, padding, new_w, new_h)
        fill = (0.0, 0.0, 0.0) if pad_image == "zero" else MEAN_255
        image, labels, padding = pad_to(image, labels, padding, size, size, centred=False, fill=fill)
        return image, labels, padding.astype(bool), (new_h, new_w)


EVAL_PROTOCOLS: dict[str, EvalProtocol] = {
    "fsslab": EvalProtocol("fsslab", upscale=False, source="fsslab default: no upscaling, exact inverse"),
    "ipmt": EvalProtocol("ipmt", upscale=True, source="PFENet/IPMT test_Resize (test.py)"),
    "amformer": EvalProtocol("amformer", stretch=True, source="AMNet/AMFormer test.py (square stretch)"),
    # HSNet scores at the resized 400x400 mask (nearest); fsslab at the label's own size, by the exact inverse
    "hsnet": EvalProtocol("hsnet", stretch=True, source="HSNet test.py (Resize to a 400x400 square)"),
}


def get_protocol(name: str) -> EvalProtocol:
    """The protocol called ``name`` (clear error listing the valid names)."""
    if name not in EVAL_PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {name!r}; valid: {sorted(EVAL_PROTOCOLS)}")
    return EVAL_PROTOCOLS[name]


def long_side_size(height: int, width: int, size: int, upscale: bool = False, multiple: int = 8):
    """PFENet ``test_Resize`` output size: long side → ``size``, aspect kept, both sides floored to a
    multiple of ``multiple`` (at least ``multiple``); images already within ``size`` keep their size unless
    ``upscale``."""
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"sizes must be positive, got image {height}x{width} and size {size}")
    if max(height, width) <= size and not upscale:
        return height, width
    if height >= width:
        new_h, new_w = size, int(width * size / height)
    else:
        new_h, new_w = int(height * size / width), size
    if multiple > 1:
        new_h, new_w = max(multiple, new_h // multiple * multiple), max(multiple, new_w // multiple * multiple)
    return max(new_h, 1), max(new_w, 1)


def eval_resize(image: np.ndarray, labels: list[np.ndarray], size: int, pad_image: str = "zero",
                protocol: str = "fsslab"):  # fmt: skip
    """``get_protocol(protocol).apply`` without the valid size: (image, labels, padding bool)."""
    return get_protocol(protocol).apply(image, labels, size, pad_image)[:3]


def to_label_resolution(logits: torch.Tensor, valid_size: torch.Tensor, ori_size: torch.Tensor) -> list[torch.Tensor]:
    """The exact inverse of every protocol: per sample, logits[:, :h_valid, :w_valid] resized (bilinear,
    align_corners=False: OpenCV's pixel-centre geometry, which the input resize used) to the original (H, W).

    logits [B,C,S,S]; valid_size, ori_size [B,2] (h, w) → list of B tensors [C,H_b,W_b] (float32).
    Samples sharing (valid, original) sizes go through one interpolate call.
    """
    if logits.dim() != 4 or valid_size.shape != (logits.shape[0], 2) or ori_size.shape != valid_size.shape:
        raise ValueError(
            f"expected logits [B,C,S,S] with valid_size/ori_size [B,2], got {tuple(logits.shape)}, "
            f"{tuple(valid_size.shape)}, {tuple(ori_size.shape)}"
        )
    keys = [tuple(int(v) for v in (*valid_size[i].tolist(), *ori_size[i].tolist())) for i in range(len(logits))]
    out: list[torch.Tensor | None] = [None] * len(keys)
    for key in dict.fromkeys(keys):
        vh, vw, oh, ow = key
        if vh > logits.shape[-2] or vw > logits.shape[-1]:
            raise ValueError(f"valid size {vh}x{vw} exceeds the logits' {tuple(logits.shape[-2:])}")
        idx = [i for i, k in enumerate(keys) if k == key]
        region = logits[idx, :, :vh, :vw].float()
        if (vh, vw) != (oh, ow):
            region = F.interpolate(region, size=(oh, ow), mode="bilinear", align_corners=False)
        for j, i in enumerate(idx):
            out[i] = region[j]
    return out  # type: ignore[return-value]


__all__ = ["EVAL_PROTOCOLS", "EvalProtocol", "eval_resize", "get_protocol", "long_side_size", "to_label_resolution"]
