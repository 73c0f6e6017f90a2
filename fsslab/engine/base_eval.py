"""The base learner's own validation (stage 1 of the BAM lineage): base-class semantic mIoU on the val images.

BAM's ``train_base.py`` validates the PSPNet every epoch on the val list with its ``Resize`` (PFENet's: the long
side always to ``val_size``, both sides floored to a multiple of 8, zero-padded, the label padded with 255 and
resized by nearest neighbour; ``ori_resize: False``: scored there), sums each base class's intersection and union
over the val images (255 ignored) and keeps the best mean over the base classes (background excluded) as
``best.pth``. ``train.selection=bam_stage1`` selects with this number.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from fsslab.batch import IGNORE_INDEX
from fsslab.config import RunConfig
from fsslab.data.base_data import BaseClassDataset
from fsslab.data.classes import get_benchmark
from fsslab.data.eval_protocols import get_protocol
from fsslab.models.base import model_device

_EPS = 1e-10  # BAM's convention: a class whose union is 0 scores 0


class PaddedResize:
    """BAM's (PFENet's) ``Resize`` in the place of a training augmentation: ``(image, labels, rng)`` →
    (image, labels, padding, None) at ``size``² (the ``ipmt`` evaluation protocol's input transform)."""

    def __init__(self, size: int) -> None:
        self.size, self.protocol = size, get_protocol("ipmt")

    def __call__(self, image, labels, rng, require_foreground: bool = False):
        image, labels, padding, _ = self.protocol.apply(image, labels, self.size)
        return image, labels, padding, None


def base_val_set(cfg: RunConfig) -> BaseClassDataset:
    """The ``eval.split`` images with their base annotations, resized as BAM's ``Resize`` to ``data.val_size``."""
    benchmark = get_benchmark(cfg.data.dataset, cfg.data.root, cfg.data.coco_split)
    return BaseClassDataset(cfg.data.root, benchmark, cfg.eval.split, cfg.data.fold, size=cfg.data.val_size,
                            augmentation=PaddedResize(cfg.data.val_size))  # type: ignore[arg-type]


@torch.no_grad()
def evaluate_base_learner(model: nn.Module, dataset: Any, n_classes: int, batch_size: int = 4,
                          workers: int = 0) -> dict[str, Any]:  # fmt: skip
    """Class IoU of classes 1..n_classes-1 (the base classes; 0 is background) summed over ``dataset``, and
    their mean (``miou``, 0-100)."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    device = model_device(model)
    was_training = model.training
    model.eval()
    inter = torch.zeros(n_classes, dtype=torch.float64)
    union = torch.zeros(n_classes, dtype=torch.float64)
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        logits = model({"query_img": batch["query_img"].to(device)}).logits.float()
        target = batch["query_base_mask"].to(device)
        if logits.shape[-2:] != target.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                                                     align_corners=True)  # fmt: skip
        pred = logits.argmax(1)
        valid = target != IGNORE_INDEX
        for c in range(1, n_classes):
            p, t = (pred == c) & valid, (target == c) & valid
            inter[c] += float((p & t).sum())
            union[c] += float((p | t).sum())
    model.train(was_training)
    iou = inter[1:] / (union[1:] + _EPS)
    return {"miou": 100 * float(iou.mean()), "class_iou": {c + 1: 100 * float(v) for c, v in enumerate(iou)}}


__all__ = ["PaddedResize", "base_val_set", "evaluate_base_learner"]
