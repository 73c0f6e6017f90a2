"""Per-episode IoU, failure modes and ranking of the hardest episodes (fsslab.engine.episodes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fsslab.engine.episodes import episode_scores, failure_mode, failure_summary, hardest
from fsslab.models.output import FSSOutput


class PredictionInImage(nn.Module):
    """Predicts foreground wherever channel 0 of the query image is positive (so tests choose the prediction)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, batch, trace=False):
        p = batch["query_img"][:, 0]  # [B,H,W]
        return FSSOutput(logits=torch.stack([-p, p], 1), aux={}, trace=None)


def _episode(index: int, prediction: torch.Tensor, class_id: int = 1) -> dict[str, torch.Tensor]:
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[2:6, 2:6] = 1  # 16 target pixels
    mask[0, :] = 255  # an ignore row: never counted
    img = torch.zeros(3, 8, 8)
    img[0] = prediction.float() * 2 - 1
    return {"query_img": img, "query_mask": mask, "class_id": torch.tensor(class_id),
            "episode_index": torch.tensor(index)}


def _pred(rows: slice, cols: slice) -> torch.Tensor:
    p = torch.zeros(8, 8, dtype=torch.long)
    p[rows, cols] = 1
    return p


def test_scores_failure_modes_and_ranking():
    episodes = [
        _episode(0, _pred(slice(2, 6), slice(2, 6))),  # perfect
        _episode(1, torch.zeros(8, 8, dtype=torch.long)),  # empty
        _episode(2, _pred(slice(2, 4), slice(2, 6)), class_id=2),  # half the target: partial
        _episode(3, _pred(slice(0, 8), slice(0, 8))),  # everything (ignore row excluded): false positives
        _episode(4, _pred(slice(6, 8), slice(6, 8))),  # beside the target: missed
    ]
    scores = episode_scores(PredictionInImage(), episodes, batch_size=2)
    assert [s.episode for s in scores] == [0, 1, 2, 3, 4]
    assert [s.failure for s in scores] == ["good", "empty", "partial", "false positives", "missed"]
    assert scores[0].fg_iou == 1.0 and scores[1].fg_iou == 0.0
    assert scores[2].fg_iou == pytest.approx(8 / 16) and scores[2].class_id == 2
    assert scores[3].fg_iou == pytest.approx(16 / 56)  # 7 valid rows x 8 columns predicted
    assert scores[3].predicted_fraction == pytest.approx(1.0) and scores[0].target_fraction == pytest.approx(16 / 56)
    assert scores[3].bg_iou == 0.0 and scores[0].bg_iou == 1.0
    assert [s.episode for s in hardest(scores, 3)] == [1, 4, 3]
    summary = failure_summary(scores)
    assert summary["good"] == 1 and sum(summary.values()) == 5 and summary["loose"] == 0


def test_failure_mode_thresholds_and_errors():
    assert failure_mode(0.9, 0.6, 10) == "loose"
    assert failure_mode(0.0, 0.0, 0) == "empty"
    with pytest.raises(ValueError, match="asked for 3 episodes"):
        episode_scores(PredictionInImage(), [_episode(0, torch.zeros(8, 8, dtype=torch.long))], episodes=3)
