"""fsslab.cli.bench's model configs: which models get the benchmarked shot is asked of the models themselves."""

from __future__ import annotations

import pytest
from torch import nn

from fsslab import models
from fsslab.cli import bench
from fsslab.errors import ConfigError


class ShotTakingToy(nn.Module):
    """A model registered only by this test: its constructor takes ``shot``, and nothing in bench.py names it."""

    def __init__(self, shot: int = 1, width: int = 4) -> None:
        super().__init__()
        self.shot, self.width = shot, width


@pytest.mark.parametrize("name", bench.MODELS)
def test_shot_goes_to_exactly_the_models_whose_constructor_takes_it(name):
    cfg = bench.model_config(name, "tiny", shots=5, mode="forward", overrides={})
    takes_shot = "shot" in models.model_options(name)
    assert takes_shot == (name in ("ipmt", "amformer"))  # today's shot-aware models, from their signatures
    assert cfg.get("shot") == (5 if takes_shot else None)
    models.build_model(cfg)  # every option it passes is one the constructor takes


def test_a_new_model_needs_no_entry_in_bench_to_get_its_shot(monkeypatch):
    monkeypatch.setitem(models.MODEL_REGISTRY, "shot_toy", f"{__name__}:ShotTakingToy")
    monkeypatch.setitem(bench.SETTINGS["tiny"], "shot_toy", {"width": 2})
    cfg = bench.model_config("shot_toy", "tiny", shots=3, mode="forward", overrides={})
    assert cfg == {"name": "shot_toy", "width": 2, "shot": 3}
    assert models.build_model(cfg).shot == 3


def test_model_options_are_the_constructor_parameters():
    assert models.model_options("oracle") == []
    assert models.model_options("amformer")[:4] == ["backbone", "pretrained", "n_base_classes", "shot"]
    with pytest.raises(ConfigError, match="unknown model 'nope'; valid models"):
        models.model_options("nope")


def test_train_rows_get_their_ratio_to_the_forward_of_the_same_configuration():
    from fsslab.cli.bench import _annotate_train_ratio

    base = {"model": "ipmt", "setting": "tiny", "device": "cpu", "precision": "fp32", "size": 96, "shots": 1,
            "channels_last": False, "batch_size": 8, "note": ""}
    rows = [{**base, "mode": "forward", "median_s": 0.1}, {**base, "shots": 5, "mode": "forward", "median_s": 0.3}]
    train = {**base, "mode": "train", "median_s": 0.25}
    rows.append(train)
    _annotate_train_ratio(train, rows)
    assert train["train_over_forward"] == pytest.approx(2.5)  # the 1-shot forward, not the 5-shot one
    assert train["train_episodes_per_s"] == pytest.approx(32.0)
    assert "train/forward 2.50x, 32.0 episodes/s" in train["note"]
    failed = {**base, "shots": 5, "mode": "train", "median_s": None, "note": "error: x"}
    rows.append(failed)
    _annotate_train_ratio(failed, rows)
    assert "train_over_forward" not in failed and failed["note"] == "error: x"
