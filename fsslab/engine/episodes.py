"""Per-episode scores (foreground IoU and what went wrong) to rank the hardest episodes of an evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from fsslab.batch import IGNORE_INDEX
from fsslab.engine.metrics import intersection_union, logits_at_label_resolution
from fsslab.models.base import model_device

# A failure mode is read off the areas: how much of the target the prediction covers (recall) and how much of
# the prediction is target (precision), both over valid (non-255) pixels.
FAILURE_MODES = {
    "empty": "no foreground predicted at all",
    "missed": "the target is mostly missed (recall < 0.3)",
    "false positives": "foreground spills onto background/other objects (precision < 0.5)",
    "partial": "target found but incomplete (recall < 0.7)",
    "loose": "target covered but with extra area (precision < 0.7)",
    "good": "recall and precision both >= 0.7",
}


@dataclass
class EpisodeScore:
    """One episode's scores at the label's original resolution (IoU values in [0, 1])."""

    episode: int
    class_id: int
    fg_iou: float
    bg_iou: float
    recall: float
    precision: float
    target_fraction: float  # target pixels / valid pixels
    predicted_fraction: float  # predicted foreground / valid pixels
    failure: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_mode(recall: float, precision: float, predicted: int) -> str:
    """Name of the failure mode (keys of ``FAILURE_MODES``) from recall, precision and the predicted area."""
    if predicted == 0:
        return "empty"
    if recall < 0.3:
        return "missed"
    if precision < 0.5:
        return "false positives"
    if recall < 0.7:
        return "partial"
    if precision < 0.7:
        return "loose"
    return "good"


@torch.no_grad()
def episode_scores(model: nn.Module, dataset: Dataset, episodes: int | None = None, batch_size: int = 4,
                   device: torch.device | str | None = None) -> list[EpisodeScore]:
    """Score the first ``episodes`` episodes of ``dataset`` one by one (same resizing as the evaluation)."""
    n = len(dataset) if episodes is None else episodes  # type: ignore[arg-type]
    if n > len(dataset):  # type: ignore[arg-type]
        raise ValueError(f"asked for {n} episodes, the dataset has {len(dataset)}")  # type: ignore[arg-type]
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    scores: list[EpisodeScore] = []
    loader = DataLoader(Subset(dataset, list(range(n))), batch_size=batch_size, shuffle=False)
    start = 0
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        pred, target = logits_at_label_resolution(model(batch).logits.float(), batch)  # [B,C,C] each
        inter, union = intersection_union(pred, target)  # [B,2]
        valid = target != IGNORE_INDEX
        tp = inter[:, 1].double()
        target_area = ((target == 1) & valid).flatten(1).sum(1).double()
        pred_area = ((pred == 1) & valid).flatten(1).sum(1).double()
        n_valid = valid.flatten(1).sum(1).clamp_min(1).double()
        iou = inter.double() / union.double().clamp_min(1)
        recall = tp / target_area.clamp_min(1)
        precision = tp / pred_area.clamp_min(1)
        indices = batch.get("episode_index", torch.arange(start, start + len(tp)))
        for i in range(len(tp)):
            scores.append(EpisodeScore(
                episode=int(indices[i]), class_id=int(batch["class_id"][i]), fg_iou=float(iou[i, 1]),
                bg_iou=float(iou[i, 0]), recall=float(recall[i]), precision=float(precision[i]),
                target_fraction=float(target_area[i] / n_valid[i]), predicted_fraction=float(pred_area[i] / n_valid[i]),
                failure=failure_mode(float(recall[i]), float(precision[i]), int(pred_area[i]))))
        start += len(tp)
    model.train(was_training)
    return scores


def hardest(scores: Sequence[EpisodeScore], n: int = 5) -> list[EpisodeScore]:
    """The ``n`` episodes with the lowest foreground IoU (ties: smaller episode index first)."""
    return sorted(scores, key=lambda s: (s.fg_iou, s.episode))[:n]


def failure_summary(scores: Sequence[EpisodeScore]) -> dict[str, int]:
    """How many episodes fall in each failure mode (every mode listed, in ``FAILURE_MODES`` order)."""
    counts = dict.fromkeys(FAILURE_MODES, 0)
    for s in scores:
        counts[s.failure] += 1
    return counts


__all__ = ["FAILURE_MODES", "EpisodeScore", "episode_scores", "failure_mode", "failure_summary", "hardest"]
