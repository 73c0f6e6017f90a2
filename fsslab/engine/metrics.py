"""Few-shot segmentation metrics: class-wise mIoU and FB-IoU summed over episodes (PROTOCOLS.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fsslab.batch import IGNORE_INDEX
from fsslab.data.eval_protocols import to_label_resolution

_EPS = 1e-10  # PFENet's convention: a class whose union is 0 scores 0, not NaN


def intersection_union(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample background/foreground intersection and union, ignoring 255.

    pred [B,H,W] in {0,1}; target [B,H,W] in {0,1,255} → (intersection [B,2], union [B,2]) int64,
    column 0 background, column 1 foreground.
    """
    valid = target != IGNORE_INDEX
    inter, union = [], []
    for cls in (0, 1):
        p = (pred == cls) & valid
        t = (target == cls) & valid
        inter.append((p & t).flatten(1).sum(1))
        union.append((p | t).flatten(1).sum(1))
    return torch.stack(inter, 1), torch.stack(union, 1)


def mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Foreground IoU of two 0/1/255 masks (tensors or arrays), pixels labelled 255 in either ignored; 1.0 when
    both are empty. One episode's score for figures and widgets (the benchmark's mIoU sums over episodes:
    ``IoUAccumulator``)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    valid = (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
    a, b = (a == 1) & valid, (b == 1) & valid
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union



def logits_at_label_resolution(
    logits: torch.Tensor, batch: dict[str, torch.Tensor], mapping: str = "exact"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and labels at the label's original resolution, by the exact inverse of the input transform
    (``mapping="exact"``, fsslab's protocol) or by a reference's own mapping (``fsslab.data.eval_protocols``
    ``MAPPINGS``: ``square`` IPMT, ``stretch`` AMNet, ``input`` HSNet: scored at input resolution).

    logits [B,2,S,S] on the model's input. Evaluation batches carry ``query_mask_ori`` [B,Hc,Wc] (each
    original label at the top-left of a canvas, 255 outside), ``query_ori_size`` [B,2] its (h, w) and
    ``query_valid_size`` [B,2] the (h, w) of the image content in the input: the valid logits are resized to
    (h, w) (``fsslab.data.eval_protocols.to_label_resolution``). Returns (pred [B,Hc,Wc] long, target
    [B,Hc,Wc] long), 255 in ``target`` outside each label. Without the ``_ori`` keys, scores at input
    resolution against ``query_mask``.
    """
    if "query_mask_ori" not in batch or mapping == "input":
        target = batch["query_mask"].to(logits.device)
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=True
            )
        return logits.argmax(1), target
    missing = [k for k in ("query_ori_size", "query_valid_size") if k not in batch]
    if missing:
        raise KeyError(f"an evaluation batch with 'query_mask_ori' also needs {missing}")
    label = batch["query_mask_ori"].to(logits.device)  # [B,Hc,Wc]
    sizes = batch["query_ori_size"].to(logits.device)  # [B,2]
    if (sizes[:, 0] > label.shape[-2]).any() or (sizes[:, 1] > label.shape[-1]).any():
        raise ValueError(f"query_mask_ori canvas {tuple(label.shape[-2:])} is smaller than an original size "
                         f"{sizes.tolist()}")  # fmt: skip
    per_sample = to_label_resolution(logits, batch["query_valid_size"], batch["query_ori_size"], mapping)
    pred = torch.zeros_like(label)
    target = torch.full_like(label, IGNORE_INDEX)
    for i, resized in enumerate(per_sample):  # resized [2,h,w]
        height, width = resized.shape[-2:]
        pred[i, :height, :width] = resized.argmax(0)
        target[i, :height, :width] = label[i, :height, :width]
    return pred, target


def _all_reduce_sum(flat: torch.Tensor) -> torch.Tensor:
    """``flat`` summed over the ranks of torch.distributed (returned unchanged outside it)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flat
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flat = flat.to(device)
    dist.all_reduce(flat)
    return flat.cpu()


def base_object_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """[B,H,W] bool, the query's base-class objects at input resolution (``query_base_mask`` > 0, not 255, and
    not the target); None when the batch has no ``query_base_mask`` or no sample of it is annotated (a folder
    dataset writes an all-255 base mask)."""
    base = batch.get("query_base_mask")
    if base is None or bool((base == IGNORE_INDEX).all()):
        return None
    return (base > 0) & (base != IGNORE_INDEX) & (batch["query_mask"] != 1)


def suppress_base_objects(logits: torch.Tensor, base_objects: torch.Tensor) -> torch.Tensor:
    """logits [B,2,S,S] with the foreground pushed below the background on ``base_objects`` [B,H,W]: what a
    perfect base learner (BAM's idea: base-class objects are never a novel target) would leave."""
    if base_objects.shape[-2:] != logits.shape[-2:]:
        base_objects = F.interpolate(base_objects[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0]
    base_objects = base_objects.bool().to(logits.device)
    out = logits.clone()
    out[:, 1] = torch.where(base_objects, out[:, 0] - 1.0, out[:, 1])
    return out


class BaseObjectCounter:
    """Predicted foreground pixels (at input resolution, outside 255) and how many of them lie on base-class
    objects: the base-class bias of a meta-learner trained on those classes (BAM, CVPR 2022)."""

    def __init__(self) -> None:
        self.counts = torch.zeros(3, dtype=torch.float64)  # predicted fg, fg on base objects, annotated samples

    def update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor],
               base_objects: torch.Tensor | None = None) -> None:
        """Add a batch; ``base_objects``: ``base_object_mask(batch)`` when the caller has it already."""
        base_objects = base_object_mask(batch) if base_objects is None else base_objects
        if base_objects is None:
            return
        if base_objects.shape[-2:] != logits.shape[-2:]:
            logits = F.interpolate(logits.float(), size=base_objects.shape[-2:], mode="bilinear", align_corners=True)
        annotated = (batch["query_base_mask"] != IGNORE_INDEX).flatten(1).any(1).to(logits.device)  # [B]
        # only samples with a base annotation count: an all-255 one cannot say where its base objects are
        valid = (batch["query_mask"].to(logits.device) != IGNORE_INDEX) & annotated[:, None, None]
        foreground = (logits.argmax(1) == 1) & valid
        self.counts += torch.tensor([float(foreground.sum()), float((foreground & base_objects.to(logits.device)).sum()),
                                     float(annotated.sum())], dtype=torch.float64)

    def all_reduce(self) -> None:
        self.counts = _all_reduce_sum(self.counts)

    def share(self) -> float | None:
        """Fraction (0-1) of the predicted foreground on base-class objects; None without base annotation."""
        if self.counts[2] == 0:
            return None
        return float(self.counts[1] / self.counts[0]) if self.counts[0] > 0 else 0.0


class IoUAccumulator:
    """Running sums for class-wise mIoU (per benchmark class) and FB-IoU over episodes.

    ``update(pred, target, class_ids)`` adds a batch; ``all_reduce()`` sums across ranks; ``summary()``
    gives the metrics. Sums are integers, so the result does not depend on the order of episodes.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes  # benchmark classes are 1..num_classes
        self.class_inter = torch.zeros(num_classes + 1, dtype=torch.float64)
        self.class_union = torch.zeros(num_classes + 1, dtype=torch.float64)
        self.class_episodes = torch.zeros(num_classes + 1, dtype=torch.float64)
        self.fb_inter = torch.zeros(2, dtype=torch.float64)
        self.fb_union = torch.zeros(2, dtype=torch.float64)

    def update(self, pred: torch.Tensor, target: torch.Tensor, class_ids: torch.Tensor) -> None:
        """pred/target [B,H,W] (0/1, target 0/1/255), class_ids [B] 1-based."""
        inter, union = intersection_union(pred, target)
        inter, union = inter.double().cpu(), union.double().cpu()
        class_ids = class_ids.long().cpu()
        if class_ids.numel() and (class_ids.min() < 1 or class_ids.max() > self.num_classes):
            raise ValueError(f"class ids {class_ids.tolist()} outside 1..{self.num_classes}")
        self.class_inter.index_add_(0, class_ids, inter[:, 1])
        self.class_union.index_add_(0, class_ids, union[:, 1])
        self.class_episodes.index_add_(0, class_ids, torch.ones(len(class_ids), dtype=torch.float64))
        self.fb_inter += inter.sum(0)
        self.fb_union += union.sum(0)

    def state(self) -> torch.Tensor:
        return torch.cat(
            [self.class_inter, self.class_union, self.class_episodes, self.fb_inter, self.fb_union]
        )

    def load_state(self, flat: torch.Tensor) -> None:
        n = self.num_classes + 1
        parts = torch.split(flat.double().cpu(), [n, n, n, 2, 2])
        self.class_inter, self.class_union, self.class_episodes, self.fb_inter, self.fb_union = (
            p.clone() for p in parts
        )

    def all_reduce(self) -> None:
        """Sum the accumulators of every rank (no-op outside torch.distributed)."""
        self.load_state(_all_reduce_sum(self.state()))

    def class_iou(self) -> dict[int, float]:
        """IoU of every class that had at least one episode."""
        seen = (self.class_episodes > 0).nonzero().flatten().tolist()
        return {c: float(self.class_inter[c] / (self.class_union[c] + _EPS)) for c in seen}

    def summary(self, class_ids: list[int] | None = None, class_mean: str = "seen") -> dict[str, Any]:
        """mIoU (mean class IoU over ``class_ids``, default: classes seen), FB-IoU and per-class IoU (0–1).

        ``class_mean``: ``seen`` averages the classes of ``class_ids`` that had episodes (fsslab's rule);
        ``all`` divides by all of ``class_ids``, a class without episodes counting 0 (IPMT, AMNet and HSNet
        ``test.py``: their class meters start at 0 and the sum is divided by the 5 or 20 novel classes)."""
        if class_mean not in ("seen", "all"):
            raise ValueError(f"class_mean must be 'seen' or 'all', got {class_mean!r}")
        per_class = self.class_iou()
        classes = sorted(per_class) if class_ids is None else list(class_ids)
        missing = [c for c in classes if c not in per_class]
        scored = [per_class[c] for c in classes if c in per_class]
        if class_mean == "all":
            scored += [0.0] * len(missing)
        fb = self.fb_inter / (self.fb_union + _EPS)
        return {
            "miou": float(sum(scored) / len(scored)) if scored else float("nan"),
            "fbiou": float(fb.mean()) if self.fb_union.sum() > 0 else float("nan"),
            "iou_background": float(fb[0]),
            "iou_foreground": float(fb[1]),
            "class_iou": {int(c): per_class[c] for c in classes if c in per_class},
            "class_episodes": {int(c): int(self.class_episodes[c]) for c in classes if c in per_class},
            "classes_without_episodes": missing,
            "episodes": int(self.class_episodes.sum()),
        }


__all__ = [
    "IGNORE_INDEX",
    "BaseObjectCounter",
    "IoUAccumulator",
    "base_object_mask",
    "intersection_union",
    "logits_at_label_resolution",
    "mask_iou",
    "suppress_base_objects",
]
