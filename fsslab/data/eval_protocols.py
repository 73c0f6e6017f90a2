"""Evaluation protocols: how a query is resized for the model, how its logits are mapped back to the label,
and how class IoUs are averaged.

One table, ``EVAL_PROTOCOLS``, maps each protocol name to its input transform, its mapping back (``mapping``)
and its class-averaging rule (``class_mean``). Each transform records where the image content sits in the
model's input (``valid_size``), so the default ``fsslab`` protocol maps back by the *exact inverse*: that
top-left region of the logits resized to the label's original (H, W); a ground-truth "prediction" scores 100
through it whatever the image size or batch mix (``fsslab eval ... model.name=oracle`` checks exactly this).
The reference protocols score as the references' ``test.py`` do, the losses of their mappings included, so
that a number measured under ``ipmt``/``amformer``/``hsnet`` is comparable with the paper's:

| name | input | back to the label | mIoU over | as in |
|---|---|---|---|---|
| ``fsslab`` | long side → ``size`` only when larger (small images keep their pixels), sides floored to a multiple of 8, padded bottom/right | exact inverse (``exact``) | classes with episodes | fsslab's default |
| ``ipmt`` | long side → ``size`` always (small images are upscaled), floored to a multiple of 8, padded | the whole square → L×L, L the long side, ``align_corners=True``; label padded with 255 to L×L (``square``) | all novel classes of the fold | PFENet/IPMT ``Resize`` (``resized_val: True``) + ``test.py`` (``ori_resize: True``) |
| ``amformer`` | stretched to size×size (aspect not kept), no padding | the square → H×W, ``align_corners=True`` (``stretch``) | all novel classes | AMNet ``Resize`` + ``test.py`` |
| ``hsnet`` | the same stretch (HSNet: ``Resize((400, 400))``, FSS-1000 at data.val_size=400) | none: scored at the input resolution against the label resized with the image, nearest (``input``) | all novel classes | HSNet ``test.py`` (without ``--use_original_imgsize``) + ``common/evaluation.py`` |

IPMT's mapping is not an inverse: both sides of the input were floored to a multiple of 8 (and small images
upscaled), but the whole square is stretched back, so a perfect prediction loses a few IoU (docs/protocols.md
measures how much). AMNet's ``align_corners=True`` shifts a stretched prediction by up to half a pixel of the
input. fsslab's exact inverse uses ``align_corners=False``: the geometry of OpenCV's bilinear resize (pixel
centres at +0.5), so that every pixel lands back where it came from. The class-wise IoU arithmetic itself is
the references' (``fsslab.engine.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fsslab.data.transforms import MEAN_255, pad_to, resize_all
from fsslab.errors import ConfigError


@dataclass(frozen=True)
class EvalProtocol:
    """An evaluation protocol: the input transform, a long-side resize (``upscale``: also for smaller images)
    + padding or a stretch to the square (``stretch``); how logits go back to the label (``mapping``, one of
    ``MAPPINGS``); which classes the mIoU averages (``class_mean``: ``seen``, the classes with episodes, or
    ``all`` the fold's novel classes, a class without episodes counting 0)."""

    name: str
    upscale: bool = False
    stretch: bool = False
    multiple: int = 8  # both sides of a long-side resize are floored to a multiple of this
    source: str = ""
    mapping: str = "exact"
    class_mean: str = "seen"

    def __post_init__(self) -> None:
        if self.mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {sorted(MAPPINGS)}, got {self.mapping!r}")
        if self.class_mean not in CLASS_MEANS:
            raise ValueError(f"class_mean must be one of {CLASS_MEANS}, got {self.class_mean!r}")

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
            image, labels, padding = resize_all(image, labels, padding, new_w, new_h)
        fill = (0.0, 0.0, 0.0) if pad_image == "zero" else MEAN_255
        image, labels, padding = pad_to(image, labels, padding, size, size, centred=False, fill=fill)
        return image, labels, padding.astype(bool), (new_h, new_w)


# how the logits on the model's input go back to the label (fsslab.engine.metrics.logits_at_label_resolution)
MAPPINGS = {
    "exact": "the valid region resized to the label's H×W (align_corners=False): the exact inverse",
    "square": "the whole input square resized to L×L (L = the label's long side, align_corners=True), scored "
              "against the label padded with 255 to L×L (PFENet/IPMT test.py, ori_resize)",
    "stretch": "the whole input square resized to the label's H×W (align_corners=True; AMNet test.py)",
    "input": "no mapping: scored at the input resolution against the label resized with the image (nearest; "
             "HSNet test.py)",
}
CLASS_MEANS = ("seen", "all")

EVAL_PROTOCOLS: dict[str, EvalProtocol] = {
    "fsslab": EvalProtocol("fsslab", upscale=False, source="fsslab default: no upscaling, exact inverse"),
    "ipmt": EvalProtocol("ipmt", upscale=True, mapping="square", class_mean="all",
                         source="PFENet/IPMT Resize (resized_val: True) and test.py (ori_resize: True)"),
    "amformer": EvalProtocol("amformer", stretch=True, mapping="stretch", class_mean="all",
                             source="AMNet/AMFormer Resize and test.py (square stretch, ori_resize: True)"),
    "hsnet": EvalProtocol("hsnet", stretch=True, mapping="input", class_mean="all",
                          source="HSNet test.py (Resize to a 400x400 square, scored there)"),
}


def get_protocol(name: str) -> EvalProtocol:
    """The protocol called ``name`` (clear error listing the valid names)."""
    if name not in EVAL_PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {name!r}; valid: {sorted(EVAL_PROTOCOLS)}")
    return EVAL_PROTOCOLS[name]


def long_side_size(height: int, width: int, size: int, upscale: bool = False, multiple: int = 8):
    """PFENet/IPMT ``Resize`` output size (``upscale``; ``test_Resize`` without it): long side → ``size``,
    aspect kept, both sides floored to a multiple of ``multiple`` (at least ``multiple``); images already
    within ``size`` keep their size unless ``upscale``."""
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


def to_label_resolution(logits: torch.Tensor, valid_size: torch.Tensor, ori_size: torch.Tensor,
                        mapping: str = "exact") -> list[torch.Tensor]:  # fmt: skip
    """Logits on the model's input mapped to each label's original (H, W) by ``mapping`` (``MAPPINGS``).

    ``exact`` (the exact inverse of every protocol): per sample, logits[:, :h_valid, :w_valid] resized
    (bilinear, align_corners=False: OpenCV's pixel-centre geometry, which the input resize used) to (H, W).
    ``square`` (IPMT test.py): the whole S×S input resized to L×L, L = max(H, W), align_corners=True, of which
    the top-left H×W is kept (the official code scores the L×L square against the label padded with 255,
    so the rest is ignored anyway). ``stretch`` (AMNet test.py): the whole S×S input resized to (H, W),
    align_corners=True. (``input``, HSNet's, scores without mapping back: it is not a mapping to the label.)

    logits [B,C,S,S]; valid_size, ori_size [B,2] (h, w) → list of B tensors [C,H_b,W_b] (float32).
    Samples sharing (valid, original) sizes go through one interpolate call.
    """
    if mapping not in ("exact", "square", "stretch"):
        raise ValueError(f"to_label_resolution maps by 'exact', 'square' or 'stretch', got {mapping!r}")
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
        if mapping == "exact":
            region = logits[idx, :, :vh, :vw].float()
            if (vh, vw) != (oh, ow):
                region = F.interpolate(region, size=(oh, ow), mode="bilinear", align_corners=False)
        elif mapping == "square":
            side = max(oh, ow)
            region = F.interpolate(logits[idx].float(), size=(side, side), mode="bilinear", align_corners=True)
            region = region[:, :, :oh, :ow]
        else:
            region = F.interpolate(logits[idx].float(), size=(oh, ow), mode="bilinear", align_corners=True)
        for j, i in enumerate(idx):
            out[i] = region[j]
    return out  # type: ignore[return-value]


__all__ = ["CLASS_MEANS", "EVAL_PROTOCOLS", "MAPPINGS", "EvalProtocol", "eval_resize", "get_protocol", "long_side_size", "to_label_resolution"]
