"""EpisodeOptions: the episodic datasets' options as one dataclass; keyword arguments still build it, the config
builds it (fsslab.engine.build.dataset_options), and a bad value is an error naming it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fsslab.config import load_config
from fsslab.data import EpisodeOptions, PascalEpisodes, build_dataset
from fsslab.engine.build import dataset_kwargs, dataset_options
from fsslab.errors import ConfigError

SIZE = 64


def _same_samples(a, b) -> None:
    assert a.episodes == b.episodes and len(a) == len(b)
    for key, value in a[0].items():
        assert torch.equal(value, b[0][key]), key


def test_keyword_arguments_and_the_options_build_the_same_dataset(voc_root):
    by_keywords = PascalEpisodes(voc_root, "val", 0, 1, size=SIZE, episodes=4, seed=3, support_label="box")
    options = EpisodeOptions(size=SIZE, episodes=4, seed=3, support_label="box")
    _same_samples(by_keywords, PascalEpisodes(voc_root, "val", 0, 1, options=options))
    # keywords apply over the options; the dataset keeps them resolved, enough to build it again
    overridden = PascalEpisodes(voc_root, "val", 0, 1, options=dataclasses.replace(options, seed=9), seed=3)
    _same_samples(by_keywords, overridden)
    assert overridden.options.seed == 3 and overridden.options.size == SIZE
    assert (overridden.options.use_base_mask, overridden.options.base_label) == (True, "base")
    _same_samples(by_keywords, PascalEpisodes(voc_root, "val", 0, 1, options=by_keywords.options))
    assert isinstance(build_dataset("pascal", voc_root, "val", 0, 1, options=options), PascalEpisodes)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("support_label", "polygon", "support_label must be one of ('mask', 'box', 'scribble'), got 'polygon'"),
    ("query_class_rule", "sometimes", "query_class_rule must be 'present' or 'qualifying', got 'sometimes'"),
    ("base_label", "novel", "base_label must be 'base' or 'all', got 'novel'"),
    ("on_small_class", "skip", "on_small_class must be 'error' or 'exclude', got 'skip'"),
    ("eval_pad", "edge", "eval_pad must be 'zero' or 'mean', got 'edge'"),
    ("eval_protocol", "bogus", "unknown evaluation protocol 'bogus'; valid:"),
])
def test_a_bad_value_is_an_error_that_names_it(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EpisodeOptions(**{field: value})
    with pytest.raises(ValueError, match=field if field != "eval_protocol" else "bogus"):  # ConfigError is one
        dataclasses.replace(EpisodeOptions(), **{field: value})


def test_an_unknown_keyword_names_the_valid_options(voc_root):
    with pytest.raises(TypeError, match=r"PascalEpisodes: unknown option\(s\) \['sizes'\]; valid options: .*'size'"):
        PascalEpisodes(voc_root, "val", 0, 1, sizes=SIZE)
    with pytest.raises(TypeError, match="options must be an EpisodeOptions, got dict"):
        PascalEpisodes(voc_root, "val", 0, 1, options={"size": SIZE})


def test_the_config_builds_the_options():
    cfg = load_config("synthetic/ipmt_tiny", ["data.params.on_small_class=exclude", "data.params.augmentation={flip_p: 0.0}"])
    train, own = dataset_options(cfg, "train")
    assert own == {} and train.size == cfg.data.size and train.on_small_class == "exclude"
    assert train.augmentation["flip_p"] == 0.0 and train.augmentation["scale"] == (cfg.data.scale_min, cfg.data.scale_max)
    val, _ = dataset_options(cfg, "val")
    assert (val.size, val.eval_protocol, val.augmentation) == (cfg.data.val_size, cfg.eval.protocol, None)
    # the mapping of keyword arguments is the same options
    assert EpisodeOptions(**{k: v for k, v in dataset_kwargs(cfg, "val").items()}) == val
    coco = load_config("coco/ipmt_r101_fold0_1shot", ["data.coco_split=contiguous"])
    assert dataset_options(coco, "val")[1] == {"folds": "contiguous"}


def test_a_bad_data_param_is_named_when_the_options_are_built():
    cfg = load_config("synthetic/ipmt_tiny", ["data.params.query_class_rule=sometimes"])
    with pytest.raises(ConfigError, match="query_class_rule must be 'present' or 'qualifying', got 'sometimes'"):
        dataset_options(cfg, "train")
    cfg = load_config("synthetic/ipmt_tiny", ["data.params.sizes=3"])
    with pytest.raises(ConfigError, match=r"unknown data.params key\(s\) \['sizes'\]; valid keys: .*'size'"):
        dataset_options(cfg, "train")
