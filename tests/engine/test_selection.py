"""Model selection (train.selection): when a run validates, which validation becomes best.pt, when it stops
early and which file is the run's model; toy models and scripted validation scores (tests/fixtures/toys.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.toys import ToyEpisodes, ToyNet, toy_config

from fsslab.config import load_config
from fsslab.engine.base_eval import evaluate_base_learner
from fsslab.engine.checkpoint import load_checkpoint
from fsslab.engine.prerequisites import prerequisite_config
from fsslab.engine.selection import SELECTIONS, selection_plan
from fsslab.engine.train import Trainer
from fsslab.errors import ConfigError
from fsslab.models.output import FSSOutput


class Scripted:
    """An evaluate_fn returning the scores it is given, in order, and recording the iterations it ran at."""

    def __init__(self, trainer_ref: list, scores: list[float]):
        self.trainer_ref, self.scores, self.at = trainer_ref, list(scores), []

    def __call__(self, model):
        self.at.append(self.trainer_ref[0].iteration)
        return {"miou": self.scores.pop(0)}


def _train(tmp_path, scores, episodes=8, **train):
    """ToyEpisodes(episodes) in batches of 2: episodes/2 iterations per epoch."""
    cfg = toy_config(tmp_path / "run", **train)
    ref: list = []
    scripted = Scripted(ref, scores)
    trainer = Trainer.from_config(cfg, ToyNet(dropout=0.0), ToyEpisodes(episodes), evaluate_fn=scripted)
    ref.append(trainer)
    return trainer.fit(), scripted, tmp_path / "run"


def test_latest_and_best_val_validate_alike_and_name_different_models(tmp_path):
    latest, scripted, run = _train(tmp_path / "a", [0.3, 0.5, 0.4], iterations=6, eval_every=2)
    assert scripted.at == [2, 4, 6] and latest["model_file"] == str(run / "latest.pt")
    assert load_checkpoint(run / "best.pt")["iteration"] == 4  # kept and logged, not the run's model
    best, scripted, run = _train(tmp_path / "b", [0.3, 0.5, 0.4], iterations=6, eval_every=2, selection="best_val")
    assert scripted.at == [2, 4, 6] and best["model_file"] == str(run / "best.pt") and best["best_metric"] == 0.5


def test_amnet_validates_every_epoch_and_stops_after_stop_interval(tmp_path):
    # 4 iterations per epoch; best at epoch 2, then two epochs without a new best: stop after epoch 4
    summary, scripted, run = _train(tmp_path, [0.5, 0.6, 0.55, 0.6, 0.9, 0.9], iterations=40, selection="amnet",
                                    stop_interval=2, eval_every=3)  # eval_every is not amnet's: every epoch
    assert scripted.at == [4, 8, 12, 16]
    assert summary["stopped_early"] and summary["iteration"] == 16 and summary["best_metric"] == 0.6
    assert load_checkpoint(run / "best.pt")["iteration"] == 8
    assert load_checkpoint(run / "latest.pt")["selection"]["stopped_early"] is True


def test_amnet_without_stop_interval_runs_to_the_end(tmp_path):
    summary, scripted, _ = _train(tmp_path, [0.5, 0.4, 0.3], iterations=12, selection="amnet")
    assert scripted.at == [4, 8, 12] and not summary["stopped_early"] and summary["best_metric"] == 0.5


def test_ipmt_keeps_the_best_after_select_after_epochs(tmp_path):
    # IPMT validates when the 0-based epoch > 70, i.e. after 72 epochs: here select_after=2 -> after epoch 3
    summary, scripted, run = _train(tmp_path, [0.4, 0.7, 0.6], iterations=20, selection="ipmt", select_after=2)
    assert scripted.at == [12, 16, 20]
    assert load_checkpoint(run / "best.pt")["iteration"] == 16 and summary["model_file"] == str(run / "best.pt")


def test_bam_stage1_validates_every_epoch_and_may_stop(tmp_path):
    summary, scripted, _ = _train(tmp_path, [0.2, 0.1, 0.1, 0.9], iterations=40, selection="bam_stage1",
                                  stop_interval=2)  # fmt: skip
    assert scripted.at == [4, 8, 12] and summary["stopped_early"] and summary["best_metric"] == 0.2


def test_plans_of_every_rule():
    assert set(SELECTIONS) == {"latest", "best_val", "amnet", "ipmt", "bam_stage1"}
    plan = selection_plan("ipmt", 100, select_after=71)
    assert not plan.due(7100, 20000) and plan.due(7200, 20000) and not plan.may_keep(7100)
    assert selection_plan("latest", 100, eval_every=5000).eval_every == 5000
    assert selection_plan("amnet", 131, eval_every=5000, stop_interval=100).eval_every == 131
    with pytest.raises(ConfigError, match="valid"):
        selection_plan("best", 10)


@pytest.mark.parametrize(("changes", "message"), [
    ({"train.selection": "best_val", "train.validate": False}, "set train.validate=true"),
    ({"train.selection": "ipmt", "train.stop_interval": 5}, "stop_interval stops early"),
    ({"train.selection": "amnet", "train.stop_interval": 0}, "stop_interval must be >= 1"),
    ({"train.selection": "best"}, "selection"),
])  # fmt: skip
def test_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic/ipmt_tiny", changes=changes)


def test_paper_configs_select_as_their_references():
    ipmt = load_config("pascal/ipmt_r50_fold0_1shot")
    assert (ipmt.train.selection, ipmt.train.select_after) == ("ipmt", 71)
    amformer = load_config("pascal/amformer_r50_fold0_1shot")
    assert (amformer.train.selection, amformer.train.stop_interval) == ("amnet", 100)
    assert load_config("coco/amformer_r50_fold0_1shot").train.stop_interval == 75
    stage1 = load_config("pascal/pspnet_base_r50_fold0")
    assert (stage1.train.selection, stage1.train.stop_interval, stage1.train.validate) == ("bam_stage1", 75, True)
    # AMFormer starts from stage 1's model file, best.pt, and still knows it as its prerequisite's run
    assert amformer.model.params["pretrained"].endswith("pspnet_base_r50_fold0/best.pt")
    assert prerequisite_config(amformer) is not None


class _PerfectBaseLearner(torch.nn.Module):
    def __init__(self, labels):
        super().__init__()
        self.labels, self.anchor, self.calls = labels, torch.nn.Parameter(torch.zeros(())), 0

    def forward(self, batch):
        label = self.labels[self.calls]
        self.calls += 1
        return FSSOutput(logits=torch.nn.functional.one_hot(label.clamp(max=3), 4).permute(0, 3, 1, 2).float())


def test_base_learner_validation_is_base_class_miou():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.integers(0, 4, (4, 6, 6))).long()
    masks[0, 0, :] = 255
    dataset = [{"query_img": torch.zeros(3, 6, 6), "query_base_mask": m} for m in masks]
    perfect = evaluate_base_learner(_PerfectBaseLearner([masks[:2], masks[2:]]), dataset, 4, batch_size=2)
    assert perfect["miou"] == pytest.approx(100.0) and set(perfect["class_iou"]) == {1, 2, 3}
    shifted = [(m + 1) % 4 for m in (masks[:2], masks[2:])]
    assert evaluate_base_learner(_PerfectBaseLearner(shifted), dataset, 4, batch_size=2)["miou"] < 50
