"""Joint image/label transforms (numpy + OpenCV) of the PFENet/BAM pipelines, with padding masks."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch

from fsslab.batch import IGNORE_INDEX
from fsslab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_255 = tuple(m * 255 for m in IMAGENET_MEAN)
STD_255 = tuple(s * 255 for s in IMAGENET_STD)

# Throughout: `image` float32 [H,W,3] RGB in 0..255, `labels` a list of uint8 [H,W] maps that move with
# it (the first one is the binary 0/1/255 target that the crop check looks at), `padding` uint8 [H,W]
# with 1 where a pixel was added by padding/rotation borders (returned as bool at the end).


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_all(image: np.ndarray, labels: list[np.ndarray], padding: np.ndarray, width: int, height: int
               ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """The image (bilinear) and its label maps and padding mask (nearest: labels stay labels) at width x height."""
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    labels = [cv2.resize(lab, (width, height), interpolation=cv2.INTER_NEAREST) for lab in labels]
    padding = cv2.resize(padding, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, labels, padding


def random_scale(image, labels, padding, rng: np.random.Generator, scale=(0.9, 1.1)):
    """Resize by a factor drawn uniformly in `scale` (bilinear image, nearest labels)."""
    factor = scale[0] + (scale[1] - scale[0]) * rng.random()
    height, width = image.shape[:2]
    # cv2.resize with fx/fy rounds the output size like this
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    return resize_all(image, labels, padding, new_w, new_h)


def random_rotate(image, labels, padding, rng: np.random.Generator, angle=(-10.0, 10.0), p=0.5,
                  fill=MEAN_255):  # fmt: skip
    """With probability p rotate about the centre; borders: image `fill`, labels 255, padding 1."""
    if rng.random() >= p:
        return image, labels, padding
    degrees = angle[0] + (angle[1] - angle[0]) * rng.random()
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1)

    def warp(array, flags, border):
        return cv2.warpAffine(array, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=border)  # fmt: skip

    image = warp(image, cv2.INTER_LINEAR, tuple(fill))
    labels = [warp(lab, cv2.INTER_NEAREST, IGNORE_INDEX) for lab in labels]
    padding = warp(padding, cv2.INTER_NEAREST, 1)
    return image, labels, padding


def random_blur(image, rng: np.random.Generator, p=0.5, kernel=5):
    """With probability p a Gaussian blur (kernel×kernel, sigma from the kernel size)."""
    if rng.random() < p:
        image = cv2.GaussianBlur(image, (kernel, kernel), 0)
    return image


def random_hflip(image, labels, padding, rng: np.random.Generator, p=0.5):
    if rng.random() < p:
        image = np.ascontiguousarray(image[:, ::-1])
        labels = [np.ascontiguousarray(lab[:, ::-1]) for lab in labels]
        padding = np.ascontiguousarray(padding[:, ::-1])
    return image, labels, padding


def pad_to(image, labels, padding, height: int, width: int, centred: bool = True, fill=MEAN_255):
    """Pad up to at least height×width: image with `fill`, labels 255, padding 1."""
    pad_h, pad_w = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return image, labels, padding
    top, left = (pad_h // 2, pad_w // 2) if centred else (0, 0)
    border = (top, pad_h - top, left, pad_w - left)
    image = cv2.copyMakeBorder(image, *border, cv2.BORDER_CONSTANT, value=tuple(fill))
    labels = [cv2.copyMakeBorder(lab, *border, cv2.BORDER_CONSTANT, value=IGNORE_INDEX) for lab in labels]
    padding = cv2.copyMakeBorder(padding, *border, cv2.BORDER_CONSTANT, value=1)
    return image, labels, padding


@dataclass
class CropResult:
    retries: int = 0  # extra crops drawn because the first lost too much foreground
    fallback: bool = False  # the crop kept no foreground at all: the whole image was resized instead


def random_crop(image, labels, padding, rng: np.random.Generator, size, keep_ratio=0.85, max_retries=31,
                require_foreground=False, fill=MEAN_255):  # fmt: skip
    """PFENet/BAM `Crop(crop_type='rand')`: centred padding up to the crop size, then a random window;
    while it keeps < `keep_ratio` of the target pixels (label 1 of `labels[0]`), draw again (at most
    `max_retries` more times; the last window is kept, as in the references).

    Fallback (documented, counted by the caller): with `require_foreground`, if the final window has
    no target pixel although the image has some, the whole padded image is resized to the crop size
    instead — the fallback the reference code intended (its `crop_cnt >= 50` branch never fires).
    """
    crop_h, crop_w = _size_hw(size)
    image, labels, padding = pad_to(image, labels, padding, crop_h, crop_w, centred=True, fill=fill)
    height, width = labels[0].shape
    total = int((labels[0] == 1).sum())
    result = CropResult()
    while True:
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        kept = int((labels[0][window] == 1).sum())
        if kept >= keep_ratio * total or result.retries > max_retries - 1:
            break
        result.retries += 1
    if require_foreground and total > 0 and kept == 0:
        result.fallback = True
        return (*resize_all(image, labels, padding, crop_w, crop_h), result)
    cropped = [lab[window] for lab in labels]
    return image[window], cropped, padding[window], result


@dataclass
class TrainAugment:
    """The training pipeline of PFENet/IPMT/BAM: random scale → rotate (p=0.5) → Gaussian blur (p=0.5)
    → horizontal flip (p=0.5) → random crop with 255 padding (image padded with the ImageNet mean).

    Defaults are the IPMT/AMFormer PASCAL configs (scale 0.9–1.1, rotation ±10°, crop 473); COCO uses
    scale 0.8–1.25. `final="resize"` replaces the crop by a plain resize to `size`, as AMFormer's
    `train.py` does (`transform.Resize([train_h, train_w])`).
    """

    size: int | tuple[int, int] = 473
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: tuple[float, float] = (-10.0, 10.0)
    rotate_p: float = 0.5
    blur_p: float = 0.5
    blur_kernel: int = 5
    flip_p: float = 0.5
    final: str = "crop"  # "crop" (PFENet, IPMT, BAM) | "resize" (AMFormer)
    keep_ratio: float = 0.85
    max_retries: int = 31  # PFENet's `while ... and crop_cnt <= 30` allows 31 redraws

    def __post_init__(self) -> None:  # checked when built (from the config), not at the first sample
        if self.final not in ("crop", "resize"):
            raise ConfigError(f"augmentation final must be 'crop' or 'resize', got {self.final!r}")

    @classmethod
    def from_options(cls, size: int | tuple[int, int], options: dict[str, Any]) -> TrainAugment:
        """From ``data.params.augmentation``-style options; an unknown key is named with the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f"unknown augmentation option(s) {unknown} (data.params.augmentation); valid: {valid}")
        return cls(**{"size": size, **options})

    def __call__(self, image: np.ndarray, labels: list[np.ndarray], rng: np.random.Generator,
                 require_foreground: bool = False):  # fmt: skip
        """Returns (image float32 [h,w,3], labels, padding bool [h,w], CropResult)."""
        image = image.astype(np.float32, copy=False)
        padding = np.zeros(image.shape[:2], np.uint8)
        image, labels, padding = random_scale(image, labels, padding, rng, self.scale)
        image, labels, padding = random_rotate(image, labels, padding, rng, self.rotate, self.rotate_p)
        image = random_blur(image, rng, self.blur_p, self.blur_kernel)
        image, labels, padding = random_hflip(image, labels, padding, rng, self.flip_p)
        if self.final == "resize":
            crop_h, crop_w = _size_hw(self.size)
            image, labels, padding = resize_all(image, labels, padding, crop_w, crop_h)
            return image, labels, padding.astype(bool), CropResult()
        image, labels, padding, result = random_crop(
            image, labels, padding, rng, self.size, self.keep_ratio, self.max_retries, require_foreground
        )
        return image, labels, padding.astype(bool), result


def normalize(image: np.ndarray) -> torch.Tensor:
    """float [H,W,3] RGB 0..255 → float32 tensor [3,H,W] normalised with ImageNet mean/std.

    Same arithmetic as the references' `Normalize` (subtract, then divide, in float32)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return tensor.sub_(torch.tensor(MEAN_255).view(3, 1, 1)).div_(torch.tensor(STD_255).view(3, 1, 1))


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of `normalize` for display: [3,H,W] → uint8 [H,W,3]."""
    mean = torch.tensor(MEAN_255).view(3, 1, 1)
    std = torch.tensor(STD_255).view(3, 1, 1)
    image = (tensor.detach().cpu().float() * std + mean).clamp(0, 255)
    return image.permute(1, 2, 0).round().to(torch.uint8).numpy()
