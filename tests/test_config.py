"""Config loading: typed overrides, unknown-key errors listing valid keys, placeholders, shipped configs."""

from __future__ import annotations

import pytest

from fsslab.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_value,
    shipped_configs,
)
from fsslab.configs import generate


def test_override_values_are_typed():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("1e-4") == 1e-4
    assert parse_value("true") is True and parse_value("null") is None
    assert parse_value("[1, 2]") == [1, 2] and parse_value("data/synthetic") == "data/synthetic"
    cfg = load_config(
        "synthetic/ipmt_tiny",
        [
            "data.fold=2",
            "data.shot=5",
            "train.base_lr=1e-3",
            "train.channels_last=true",
            "train.grad_clip=null",
            "eval.seeds=[4,5]",
            "model.params.hidden_dim=32",
            "train.epochs=3",
        ],
    )
    assert (cfg.data.fold, cfg.data.shot, cfg.train.base_lr) == (2, 5, 1e-3)
    assert cfg.train.channels_last is True and cfg.train.grad_clip is None and cfg.eval.seeds == [4, 5]
    assert cfg.model.params["hidden_dim"] == 32 and cfg.train.epochs == 3
    assert isinstance(cfg.train.base_lr, float)


def test_placeholders_follow_overrides():
    cfg = load_config("synthetic/ipmt_tiny", ["data.fold=3", "data.shot=5"])
    assert cfg.train.out_dir == "runs/synthetic/ipmt_tiny_fold3_5shot"
    assert cfg.model.init_checkpoint.endswith("checkpoints/synthetic/shared/backbone_episodic.pt")  # {zoo}: any fold
    assert load_config("synthetic/amformer_tiny", ["data.fold=3"]).model.params["pretrained"] == \
        "runs/synthetic/pspnet_base_tiny_fold3/latest.pt"


@pytest.mark.parametrize(
    "override, valid",
    [
        ("train.lrr=0.1", "base_lr"),
        ("data.folds=1", "fold"),
        ("modl.name=ipmt", "expected"),
    ],
)
def test_unknown_keys_are_rejected_with_the_valid_ones(override, valid):
    with pytest.raises(ConfigError) as info:
        load_config("synthetic/ipmt_tiny", [override])
    message = str(info.value)
    assert override.split("=")[0].split(".")[-1] in message or override.split(".")[0] in message
    assert "valid" in message and valid in message


def test_unknown_key_in_a_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key\(s\) \['epoch'\].*'epochs'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, problem",
    [
        ("train.epochs=abc", "expected an integer"),
        ("train.amp=fp8", "not one of"),
        ("data.shot=0", "data.shot must be >= 1"),
        ("train.channels_last=maybe", "true/false"),
        ("train.base_lr", "section.key=value"),
        ("train.out_dir={nope}/x", "placeholder"),
        ("train.iterations=-3", "train.iterations must be >= 1"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("data.size=-5", "data.size .* must be >= 16"),
        ("data.val_size=-5", "data.val_size .* must be >= 16"),
        ("model.init_prefix=", "expected a string, got nothing"),
    ],
)
def test_bad_values_are_clear_errors(override, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config("synthetic/ipmt_tiny", [override])


def test_missing_config_names_where_it_looked():
    with pytest.raises(ConfigError, match="not found"):
        load_config("synthetic/does_not_exist")


def test_round_trip_through_dict():
    cfg = load_config("pascal/amformer_r50_fold1_5shot")
    assert config_from_dict(cfg.to_dict()) == cfg
    assert apply_overrides({}, ["name=x"]) == {"name": "x"}
    assert isinstance(cfg, RunConfig)


def test_every_shipped_config_loads_and_states_its_protocol():
    names = shipped_configs()
    assert len(names) >= 84 and "synthetic/ipmt_tiny" in names and "synthetic/amformer_tiny" in names
    for name in names:
        cfg = load_config(name)
        if name.startswith(("pascal/", "coco/")):
            assert cfg.expected.protocol in ("pfenet", "bam"), name
            assert cfg.data.protocol == cfg.expected.protocol, name
    ipmt = load_config("pascal/ipmt_r50_fold2_5shot")
    assert (ipmt.expected.miou, ipmt.data.protocol, ipmt.data.batch_size) == (68.2, "pfenet", 4)
    amformer = load_config("coco/amformer_r50_fold0_1shot")
    assert (amformer.expected.miou, amformer.data.protocol, amformer.data.size) == (51.0, "bam", 633)
    assert load_config("pascal/amformer_r101_fold0_1shot").expected.miou is None


def test_generated_configs_are_up_to_date():
    assert generate.main(["--check"]) == 0


def test_an_empty_string_is_written_as_two_quotes():
    assert load_config("synthetic/ipmt_tiny", ['model.init_prefix=""']).model.init_prefix == ""
