"""The cross-domain preset (another domain for evaluation only) and the wide pretraining vocabulary (#25)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fsslab.data.synthetic import (
    CLASS_NAMES,
    IGNORE_LABEL,
    PRESETS,
    SyntheticConfig,
    generate_synthetic,
    label_classes_on_disk,
    render_sample,
    write_synthetic_if_missing,
)
from fsslab.data.synthetic.crossdomain import (
    CROSSDOMAIN_FAMILIES,
    CROSSDOMAIN_NAMES,
    canonical_mask,
    max_aligned_iou,
)
from fsslab.data.synthetic.procedural import procedural_parts
from fsslab.data.synthetic.shapes import SHAPE_FAMILIES
from fsslab.data.synthetic.wide import WIDE_KINDS, WideEpisodes, WideShapes, render_wide, wide_class

SMALL = {"min_size": 128, "max_size": 128}


def _objects(label: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(label) if 0 < c < IGNORE_LABEL]


def test_crossdomain_preset_is_another_domain_for_evaluation_only():
    config = SyntheticConfig.preset("crossdomain")
    assert config.class_names() == CROSSDOMAIN_NAMES and not set(CROSSDOMAIN_NAMES) & set(CLASS_NAMES)
    assert config.n_train == 0 and config.n_pretrain == 0 and config.n_val > 0  # nothing to train on
    labels = [render_sample(config, "val", i)[1] for i in range(30)]
    counts = [len(_objects(lab)) for lab in labels]
    assert min(counts) >= 1 and max(counts) <= 3 and np.mean(counts) > 2.0
    assert set().union(*map(_objects, labels)) <= set(range(1, 21))


def test_crossdomain_objects_occlude_each_other_by_20_to_40_percent():
    config = SyntheticConfig.preset("crossdomain", **SMALL)
    covered, on_top = [], []
    for i in range(40):
        occlusion: dict = {}
        render_sample(config, "val", i, occlusion)
        layers = sorted(occlusion["drawn"])
        covered += [1 - occlusion["visible"][k] / occlusion["drawn"][k] for k in layers[:-1]]
        on_top.append(occlusion["visible"][layers[-1]] == occlusion["drawn"][layers[-1]])
    covered = np.array(covered)
    assert len(covered) >= 40 and all(on_top)
    assert np.mean((covered >= 0.2 - 1e-9) & (covered <= 0.4 + 1e-9)) >= 0.9  # the nearest miss otherwise
    assert covered.max() < 0.6


def test_crossdomain_appearance_does_not_tell_the_class():
    # every object random colours: a class's mean colour varies as much as that of all objects together
    config = SyntheticConfig.preset("crossdomain", **SMALL)
    colours: dict[int, list[np.ndarray]] = {}
    for i in range(80):
        image, label = render_sample(config, "val", i)
        for c in _objects(label):
            colours.setdefault(c, []).append(image[label == c].mean(0))
    everything = np.concatenate([np.stack(v) for v in colours.values()])
    spread = [np.stack(v).std(0).mean() for v in colours.values() if len(v) >= 5]
    assert len(spread) >= 10 and np.median(spread) > 0.7 * everything.std(0).mean()


def test_mosaic_background_and_random_surface_are_knobs_that_change_the_pixels():
    base = SyntheticConfig(seed=2, n_train=2, n_val=0, **SMALL)
    plain = render_sample(base, "train", 0)
    for knob in ({"background": "mosaic"}, {"surface": "random"}, {"families": "crossdomain"},
                 {"placement": "overlap"}):
        other = render_sample(SyntheticConfig.from_dict({**base.to_dict(), **knob}), "train", 0)
        assert not np.array_equal(plain[0], other[0]), knob
    with pytest.raises(ValueError, match="families must be one of"):
        SyntheticConfig(families="other")
    with pytest.raises(ValueError, match="distractors must be 0"):
        SyntheticConfig(placement="overlap", distractors=1)
    with pytest.raises(ValueError, match="occlusion"):
        SyntheticConfig(occlusion=(0.5, 0.2))


def test_crossdomain_is_written_in_the_voc_layout_with_its_class_names(tmp_path):
    config = SyntheticConfig.preset("crossdomain", n_val=16, **SMALL)
    summary = generate_synthetic(tmp_path, config, progress=False, workers=0)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["class_names"] == list(CROSSDOMAIN_NAMES) and summary["config"]["families"] == "crossdomain"
    assert (tmp_path / "lists" / "train.txt").read_text() == ""
    assert len((tmp_path / "lists" / "val.txt").read_text().splitlines()) == 16
    assert label_classes_on_disk(tmp_path, "val") == 20
    write_synthetic_if_missing(tmp_path, SyntheticConfig.from_dict({"preset": "crossdomain", "n_val": 16, **SMALL}))
    # a benchmark written before the new knobs existed reads them as their defaults
    old = tmp_path / "old"
    plain = SyntheticConfig(seed=5, n_train=3, n_val=2, min_size=48, max_size=48)
    write_synthetic_if_missing(old, plain, workers=0)
    meta = json.loads((old / "meta.json").read_text())
    for key in ("occlusion", "families", "surface", "background"):
        del meta["config"][key]
    (old / "meta.json").write_text(json.dumps(meta))
    write_synthetic_if_missing(old, plain)


def test_crossdomain_families_are_neither_the_benchmark_nor_the_pretraining_shapes():
    # the nearest training shape (over rotations and mirror images, outlines at equal area) is further from each
    # cross-domain family than two of its own instances are; benchmarks/crossdomain_disjointness.py runs the
    # comparison with all 4,000 wide classes
    zero = lambda: 0.0
    training = [f(zero) for _, f in SHAPE_FAMILIES] + [procedural_parts(c, zero) for c in range(1, 101)]
    training += [list(wide_class(c)[1]) for c in range(1, 201)]
    masks = np.stack([canonical_mask(p) for p in training])
    for name, family in CROSSDOMAIN_FAMILIES:
        itself = max_aligned_iou(family(lambda: 0.4), canonical_mask(family(lambda: -0.4))[None])[0]
        nearest = max_aligned_iou(family(zero), masks).max()
        assert nearest < 0.86 and nearest < itself, (name, nearest, itself)


def test_presets_other_than_crossdomain_are_unchanged_by_it():
    assert "crossdomain" in PRESETS and PRESETS["default"].get("families", "benchmark") == "benchmark"


# ------------------------------------------------------------------------------------- wide vocabulary
def test_wide_classes_are_fixed_by_their_id_and_span_every_kind():
    assert wide_class(17) == wide_class(17)
    kinds = {wide_class(c)[0] for c in range(1, 400)}
    assert kinds == set(WIDE_KINDS)
    a, b = render_wide(0, 3, 64, 4000), render_wide(0, 3, 64, 4000)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], render_wide(1, 3, 64, 4000)[0])


def test_wide_scenes_are_dense_multi_class_targets_with_ids_past_255():
    data = WideShapes(size=64, n_classes=4000, images=100, seed=0)
    assert len(data) == 100
    ids: set[int] = set()
    per_scene = []
    for i in range(30):
        item = data[i]
        assert item["query_img"].shape == (3, 64, 64) and item["query_img"].dtype == torch.float32
        assert item["query_base_mask"].dtype == torch.long and item["query_base_mask"].max() <= 4000
        assert torch.equal(item["query_mask"], (item["query_base_mask"] > 0).long())
        present = set(item["query_base_mask"].unique().tolist()) - {0}
        per_scene.append(len(present))
        ids |= present
    assert max(ids) > 255 and np.mean(per_scene) > 1.5


def test_wide_pretraining_config_trains_a_dense_head_at_feature_resolution():
    from fsslab.config import load_config
    from fsslab.engine.build import build_train_set
    from fsslab.models import build_model

    cfg = load_config("synthetic/backbone_pretrain_wide", ["data.params.images=16"])
    data = build_train_set(cfg)
    assert isinstance(data, WideShapes) and data.n_classes == 4000 and data.size == cfg.data.size
    model = build_model({"name": cfg.model.name, **cfg.model.params, "n_classes": 4001})
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("query_img", "query_base_mask")}
    model.train()
    out = model(batch)
    assert out.logits.shape[-2:] == (12, 12)  # 96 px at output stride 8
    loss = model.loss(out, batch)["total"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert model(batch).logits.shape[-2:] == (96, 96)


def test_wide_episodes_find_the_target_again_under_another_look():
    data = WideEpisodes(size=64, shot=2, n_classes=4000, images=50, seed=0)
    first = data[7]
    assert torch.equal(first["query_img"], data[7]["query_img"])  # a pure function of (seed, index)
    assert first["support_imgs"].shape == (2, 3, 64, 64) and first["support_masks"].shape == (2, 64, 64)
    for i in range(12):
        item = data[i]
        target = int(item["class_id"])
        assert 1 <= target <= 4000
        # the target is visible in the query and in every support; masks are binary (no ignore band)
        assert item["query_mask"].sum() >= WideEpisodes.MIN_VISIBLE
        assert all(m.sum() >= WideEpisodes.MIN_VISIBLE for m in item["support_masks"])
        assert set(item["query_mask"].unique().tolist()) <= {0, 1}
    # the query holds other shapes besides the target (1-3 distractors): pixels neither target nor background
    image, mask = data._scene(3, 0, 17, (2, 2), on_top=False)
    assert mask.sum() >= WideEpisodes.MIN_VISIBLE and (image.std(axis=2) > 0).mean() > mask.mean()
    with pytest.raises(ValueError, match="others"):
        WideEpisodes(n_classes=3, others=(1, 3))


def test_episodic_pretraining_config_trains_the_whole_backbone_of_the_baseline():
    from fsslab.config import load_config
    from fsslab.engine.build import build_train_set
    from fsslab.models import build_model

    cfg = load_config("synthetic/backbone_pretrain_episodic", ["data.params.images=8"])
    data = build_train_set(cfg)
    assert isinstance(data, WideEpisodes) and data.size == cfg.data.size and data.shot == cfg.data.shot
    model = build_model({"name": cfg.model.name, **cfg.model.params})
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in
             ("query_img", "query_mask", "support_imgs", "support_masks")}
    model.train()
    loss = model.loss(model(batch), batch)["total"]
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert torch.isfinite(loss) and all(g is not None for g in grads)  # every backbone weight learns
    (spec,) = model.optimizer_specs(1e-3, 1e-4)
    assert spec.kind == "adamw" and sum(len(g["params"]) for g in spec.param_groups) == \
        len(list(model.parameters()))
