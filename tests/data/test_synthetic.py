"""The synthetic benchmark generator: determinism, layout, label values, coverage and idempotence."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import torch

from fsslab.data.synthetic import (
    CLASS_NAMES,
    IGNORE_LABEL,
    MIN_AREA,
    PALETTE,
    SPLITS,
    SyntheticConfig,
    boundary_band,
    generate_synthetic,
    label_classes_on_disk,
    render_sample,
    write_synthetic_if_missing,
)
from fsslab.data.synthetic.textures import TEXTURES, class_signature
from fsslab.errors import DatasetError

TINY = {"n_train": 40, "n_val": 12, "min_size": 96, "max_size": 112}


def _labels(root, split):
    lines = (root / "lists" / f"{split}.txt").read_text().splitlines()
    return [cv2.imread(str(root / line.split()[1]), cv2.IMREAD_UNCHANGED) for line in lines]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "bench"
    summary = generate_synthetic(root, SyntheticConfig(seed=3, **TINY), progress=False, workers=1)
    return root, summary


def test_layout_lists_and_meta(tiny_root):
    root, summary = tiny_root
    for split, n in (("train", 40), ("val", 12)):
        lines = (root / "lists" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            image_rel, label_rel = line.split()
            assert image_rel.startswith("JPEGImages/") and image_rel.endswith(".jpg")
            assert label_rel.startswith("SegmentationClassAug/") and label_rel.endswith(".png")
            image = cv2.imread(str(root / image_rel))
            label = cv2.imread(str(root / label_rel), cv2.IMREAD_UNCHANGED)
            assert image.ndim == 3 and label.ndim == 2 and label.dtype == np.uint8
            assert image.shape[:2] == label.shape and 96 <= min(label.shape) <= max(label.shape) <= 112
    meta = json.loads((root / "meta.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES) and len(set(CLASS_NAMES)) == 20
    assert len(meta["palette"]) == 21 and len({tuple(c) for c in meta["palette"]}) == 21
    assert meta["seed"] == 3 and SyntheticConfig.from_dict(meta["config"]) == SyntheticConfig(seed=3, **TINY)
    assert meta["folds"]["1"] == [6, 7, 8, 9, 10]
    assert not (root / ".synthetic_incomplete").exists()
    # the summary's per-class counts agree with the labels on disk
    qualifying = np.zeros(20, int)
    for label in _labels(root, "val"):
        hist = np.bincount(label.ravel(), minlength=256)[1:21]
        qualifying += hist >= MIN_AREA
    assert qualifying.tolist() == summary["class_counts"]["val"]["qualifying"]


def test_pretrain_split_is_a_separate_training_corpus(tmp_path):
    from fsslab.data import build_dataset

    config = SyntheticConfig(seed=2, n_train=16, n_val=8, n_pretrain=24, min_size=96, max_size=96, max_objects=4)
    summary = write_synthetic_if_missing(tmp_path, config, workers=0)
    lines = {split: (tmp_path / "lists" / f"{split}.txt").read_text().splitlines() for split in SPLITS}
    assert [len(lines[s]) for s in SPLITS] == [16, 8, 24] and summary["class_counts"]["pretrain"]
    assert not set(lines["pretrain"]) & (set(lines["train"]) | set(lines["val"]))  # images no episode uses
    # seeded per split: adding the pretrain split leaves train and val byte-identical
    plain = SyntheticConfig.from_dict({**config.to_dict(), "n_pretrain": 0})
    assert np.array_equal(render_sample(plain, "train", 3)[0], render_sample(config, "train", 3)[0])
    assert plain.split_sizes() == [("train", 16), ("val", 8)]
    # sampled in training mode (random episodes with augmentation), labels keep every class id
    torch.manual_seed(0)
    corpus = build_dataset("synthetic", tmp_path, "pretrain", 0, 1, size=64, base_label="all", on_small_class="exclude")
    assert corpus.training and len(corpus) > 0
    sample = corpus[0]
    assert sample["query_img"].shape == (3, 64, 64)
    assert set(torch.unique(sample["query_base_mask"]).tolist()) <= set(range(21)) | {255}
    with pytest.raises(ValueError, match="n_pretrain must be >= 0"):
        SyntheticConfig(n_pretrain=-1)


def test_procedural_pretrain_classes_are_their_own_ids_and_leave_the_benchmark_unchanged(tmp_path):
    from fsslab.data.base_data import BaseClassDataset
    from fsslab.data.classes import synthetic_benchmark
    from fsslab.data.synthetic.procedural import procedural_parts

    config = SyntheticConfig(seed=2, n_train=8, n_val=4, n_pretrain=30, min_size=96, max_size=96, max_objects=3,
                             distinct_classes=True, class_appearance=0.8, pretrain_classes=50)
    summary = write_synthetic_if_missing(tmp_path, config, workers=0)
    assert len(summary["class_counts"]["pretrain"]["images"]) == 50  # counted over the corpus's own classes
    assert (label_classes_on_disk(tmp_path, "pretrain"), label_classes_on_disk(tmp_path, "train")) == (50, 20)
    ids = set()
    for label in _labels(tmp_path, "pretrain"):
        ids |= set(np.unique(label).tolist())
    assert ids - {0, 255} and max(ids - {255}) <= 50 and len(ids - {0, 255}) > 20  # beyond the benchmark's 20
    # the episodes' splits are those of the same config without procedural classes, byte for byte
    plain = SyntheticConfig.from_dict({**config.to_dict(), "pretrain_classes": 0})
    for split in ("train", "val"):
        assert all(np.array_equal(a, b) for a, b in zip(render_sample(plain, split, 1), render_sample(config, split, 1),
                                                        strict=True))
    assert not np.array_equal(render_sample(plain, "pretrain", 1)[1], render_sample(config, "pretrain", 1)[1])
    # a class is its id: the same canonical parts whatever the seed, different parts for another id
    canonical = [procedural_parts(c, lambda: 0.0)[0][1] for c in (7, 7, 8)]
    assert np.array_equal(canonical[0], canonical[1]) and not np.array_equal(canonical[0], canonical[2])
    # stage-1 style reading with every id kept (base_label "all"); the benchmark's own 20 ids would reject them
    corpus = BaseClassDataset(tmp_path, synthetic_benchmark(tmp_path), "pretrain", size=64, base_label="all",
                              n_label_classes=50)
    seen = set()
    for i in range(len(corpus)):
        seen |= set(torch.unique(corpus[i]["query_base_mask"]).tolist())
    assert max(seen - {255}) > 20 and seen <= set(range(51)) | {255}
    with pytest.raises(DatasetError, match="pretrain"):
        BaseClassDataset(tmp_path, synthetic_benchmark(tmp_path), "pretrain", size=64, base_label="all")[0]
    with pytest.raises(ValueError, match="pretrain_classes must be in 0..200"):
        SyntheticConfig(pretrain_classes=300)
    with pytest.raises(ValueError, match="base_label must be"):
        BaseClassDataset(tmp_path, synthetic_benchmark(tmp_path), "pretrain", base_label="novel")


def test_label_values_and_boundary_bands(tiny_root):
    root, _ = tiny_root
    labels = _labels(root, "train")
    values = set(np.unique(np.concatenate([lb.ravel() for lb in labels])).tolist())
    assert values <= set(range(21)) | {IGNORE_LABEL}
    assert IGNORE_LABEL in values and len(values - {0, IGNORE_LABEL}) >= 10
    for label in labels:
        objects = (label > 0) & (label < IGNORE_LABEL)
        if objects.sum() > 200:
            # every object is outlined: ignore pixels surround it, and they are thin (a band, not a fill)
            assert (label == IGNORE_LABEL).any()
            assert (label == IGNORE_LABEL).sum() < objects.sum()
    # the band separates an object from its background: no object pixel touches a background pixel
    label = labels[0]
    fg = ((label > 0) & (label < IGNORE_LABEL)).astype(np.uint8)
    grown = cv2.dilate(fg, np.ones((3, 3), np.uint8)).astype(bool)
    assert not (grown & (label == 0)).any()


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, tiny_root):
    root, _ = tiny_root
    again = tmp_path / "again"
    generate_synthetic(again, SyntheticConfig(seed=3, **TINY), progress=False, workers=1)
    for split in ("train", "val"):
        names = (root / "lists" / f"{split}.txt").read_text()
        assert names == (again / "lists" / f"{split}.txt").read_text()
        for line in names.splitlines():
            for rel in line.split():
                assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    _image_a, label_a = render_sample(SyntheticConfig(seed=3, **TINY), "train", 0)
    _image_b, label_b = render_sample(SyntheticConfig(seed=4, **TINY), "train", 0)
    assert label_a.shape != label_b.shape or not np.array_equal(label_a, label_b)
    # train and val draw from different streams even at the same index
    assert not np.array_equal(render_sample(SyntheticConfig(seed=3, **TINY), "val", 0)[1], label_a)


def test_workers_do_not_change_the_output(tmp_path):
    config = SyntheticConfig(seed=5, n_train=70, n_val=0, min_size=64, max_size=64)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    generate_synthetic(serial, config, progress=False, workers=1)
    generate_synthetic(parallel, config, progress=False, workers=2)
    for i in (0, 33, 69):
        rel = f"SegmentationClassAug/train_{i:05d}.png"
        assert (serial / rel).read_bytes() == (parallel / rel).read_bytes()


def test_every_class_qualifies_in_both_splits_at_moderate_size():
    # Class coverage under the 2x32x32 rule, computed in memory (no disk) on a mid-sized sample.
    config = SyntheticConfig(seed=0)
    for split, n in (("train", 200), ("val", 150)):
        qualifying = np.zeros(20, int)
        for i in range(n):
            _, label = render_sample(config, split, i)
            qualifying += np.bincount(label.ravel(), minlength=256)[1:21] >= MIN_AREA
        assert qualifying.min() >= 2, (split, qualifying.tolist())


def _object_colours(config: SyntheticConfig, n: int = 60) -> dict[int, np.ndarray]:
    """Mean colour of every object of more than 300 pixels in the first n training images, by class."""
    colours: dict[int, list[np.ndarray]] = {}
    for i in range(n):
        image, label = render_sample(config, "train", i)
        for c in np.unique(label):
            if 0 < c < IGNORE_LABEL and (label == c).sum() > 300:
                colours.setdefault(int(c), []).append(image[label == c].mean(0))
    return {c: np.stack(v) for c, v in colours.items() if len(v) >= 4}


@pytest.mark.parametrize(("preset", "min_spread"), [("salient", 20.0), ("multi", 20.0), ("medium", 25.0)])
def test_colour_does_not_identify_the_class(preset, min_spread):
    # Mean object colour varies within a class far more than a prototype could exploit (more so with the
    # diversity of the harder presets).
    spreads = [np.std(v, axis=0).mean() for v in _object_colours(SyntheticConfig.preset(preset, seed=1)).values()]
    assert spreads and np.median(spreads) > min_spread  # uint8 units


def test_default_preset_colour_hints_at_the_class_without_deciding_it():
    # 80% of the objects wear their class's typical look, 20% random colours: most objects sit near their class's
    # median colour, but a real share (the random ones) lies far from it, where only the shape names the class.
    config = SyntheticConfig.preset("default", seed=1)
    assert config.distinct_classes and config.min_objects >= 2 and 0 < config.class_appearance < 1
    distances = np.concatenate([np.linalg.norm(v - np.median(v, axis=0), axis=1)
                                for v in _object_colours(config).values()])
    far = (distances > 60).mean()  # uint8 units; measured 0.15 on these 60 images
    assert len(distances) > 100 and 0.08 < far < 0.4, far


def test_a_preset_key_names_the_starting_preset():
    config = SyntheticConfig.from_dict({"preset": "default", "seed": 3, "n_train": 10})
    assert config == SyntheticConfig.preset("default", seed=3, n_train=10)
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        SyntheticConfig.from_dict({"preset": "nope"})


def test_class_appearance_ties_colour_to_the_class():
    # class_appearance=1: every object wears its class's jittered signature, so a class's mean colours
    # cluster (small spread) while classes differ; 0 (see above) leaves colour uninformative.
    config = SyntheticConfig(seed=1, class_appearance=1.0, outline_prob=0.0)
    colours: dict[int, list[np.ndarray]] = {}
    for i in range(60):
        image, label = render_sample(config, "train", i)
        for c in np.unique(label):
            if 0 < c < IGNORE_LABEL and (label == c).sum() > 300:
                colours.setdefault(int(c), []).append(image[label == c].astype(float).mean(0))
    tied = {c: np.stack(v) for c, v in colours.items() if len(v) >= 4}
    within = np.median([v.std(axis=0).mean() for v in tied.values()])
    between = np.stack([v.mean(0) for v in tied.values()]).std(axis=0).mean()
    assert len(tied) >= 8 and within < 20.0 and between > 2 * within, (within, between)
    assert [class_signature(c)[2] for c in range(1, 6)] == list(TEXTURES[1:]) + [TEXTURES[0]]


def test_added_knobs_at_their_defaults_reproduce_earlier_output(tmp_path):
    # min_objects=1 and class_appearance=0 draw nothing extra from the RNG: benchmarks written before
    # these knobs existed stay valid (their meta.json lacks the keys and is accepted as the defaults)
    plain = SyntheticConfig(seed=5, n_train=3, n_val=2, min_size=48, max_size=48)
    tied = SyntheticConfig.from_dict({**plain.to_dict(), "class_appearance": 0.5})
    assert any(
        not np.array_equal(render_sample(plain, "train", i)[0], render_sample(tied, "train", i)[0]) for i in range(3)
    )
    write_synthetic_if_missing(tmp_path, plain, workers=0)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for key in ("min_objects", "class_appearance"):
        del meta["config"][key]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    write_synthetic_if_missing(tmp_path, plain)  # accepted
    with pytest.raises(ValueError, match="class_appearance: on disk 0.0, requested 0.5"):
        write_synthetic_if_missing(tmp_path, tied)
    def classes_per_image(config):
        labels = [render_sample(config, "train", i)[1] for i in range(8)]
        return [len([c for c in np.unique(lab) if 0 < c < IGNORE_LABEL]) for lab in labels]

    assert max(classes_per_image(SyntheticConfig(seed=5, max_objects=1))) == 1
    assert np.mean(classes_per_image(SyntheticConfig(seed=5, min_objects=3, max_objects=3))) > 2
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        SyntheticConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="class_appearance"):
        SyntheticConfig(class_appearance=-0.1)


def test_knobs_change_the_scenes():
    base = {"seed": 2, "n_train": 1, "n_val": 0}
    plain = SyntheticConfig(
        **base, diversity=0.0, clutter=0.0, distractors=0, max_objects=1, outline_prob=0.0
    )
    images = [render_sample(plain, "train", i) for i in range(6)]
    # diversity 0: one fixed object colour; clutter 0: no noise layers, so objects are nearly flat
    for image, label in images:
        inside = (label > 0) & (label < IGNORE_LABEL)
        assert np.std(image[inside].astype(float), axis=0).mean() < 12.0
    no_band = SyntheticConfig(**base, boundary_width=0)
    assert IGNORE_LABEL not in render_sample(no_band, "train", 0)[1]
    assert boundary_band(np.zeros((8, 8), np.uint8), 2).sum() == 0


def test_config_validation_and_round_trip():
    config = SyntheticConfig(seed=9, object_scale=[0.2, 0.5])
    assert config.object_scale == (0.2, 0.5)
    assert SyntheticConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown SyntheticConfig keys.*colour"):
        SyntheticConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="diversity"):
        SyntheticConfig(diversity=1.5)
    with pytest.raises(ValueError, match="object_scale"):
        SyntheticConfig(object_scale=(0.6, 0.2))
    assert len(PALETTE) == 21
    hard = SyntheticConfig.preset("hard", seed=4)
    assert hard.seed == 4 and hard.diversity == 1.0 and hard.distractors == 4
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        SyntheticConfig.preset("extreme")


def test_write_if_missing_is_idempotent_and_checks_the_config(tmp_path, tiny_root):
    root, _ = tiny_root
    start = time.perf_counter()
    meta = write_synthetic_if_missing(root, SyntheticConfig(seed=3, **TINY))
    assert time.perf_counter() - start < 0.5 and meta["seed"] == 3
    with pytest.raises(ValueError, match="seed: on disk 3, requested 4"):
        write_synthetic_if_missing(root, SyntheticConfig(seed=4, **TINY))
    # an interrupted run (marker present, no meta.json) is regenerated
    fresh = tmp_path / "fresh"
    small = SyntheticConfig(seed=1, n_train=3, n_val=2, min_size=48, max_size=48)
    fresh.mkdir()
    (fresh / ".synthetic_incomplete").write_text("")
    write_synthetic_if_missing(fresh, small)
    assert (fresh / "meta.json").is_file() and len(
        (fresh / "lists" / "val.txt").read_text().splitlines()
    ) == 2
    # a truncated list on disk is reported rather than trusted
    (fresh / "lists" / "train.txt").write_text("")
    with pytest.raises(ValueError, match="train.txt"):
        write_synthetic_if_missing(fresh, small)


def test_regenerating_clears_stale_samples_and_index_cache(tmp_path):
    root = tmp_path / "bench"
    generate_synthetic(
        root, SyntheticConfig(seed=1, n_train=4, n_val=2, min_size=48, max_size=48), progress=False
    )
    (root / "fsslab_index").mkdir()
    (root / "fsslab_index" / "scan_train_x.json").write_text("{}")
    generate_synthetic(
        root, SyntheticConfig(seed=2, n_train=2, n_val=2, min_size=48, max_size=48), progress=False
    )
    assert sorted(p.stem for p in (root / "SegmentationClassAug").iterdir()) == [
        "train_00000",
        "train_00001",
        "val_00000",
        "val_00001",
    ]
    assert not (root / "fsslab_index").exists()


def test_refuses_to_write_into_an_unrelated_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic(tmp_path, SyntheticConfig(n_train=1, n_val=1), progress=False)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_distinct_classes_and_spread_placement():
    multi = SyntheticConfig.preset("multi", seed=1, n_train=1, n_val=0, n_pretrain=0)
    assert multi.distinct_classes and multi.placement == "spread" and multi.min_objects == 2
    plain = SyntheticConfig(seed=1, min_objects=3, max_objects=3)
    for i in range(10):
        label = render_sample(multi, "train", i)[1]
        classes = [c for c in np.unique(label) if 0 < c < IGNORE_LABEL]
        assert len(classes) >= 2  # side by side, 2-3 objects of different classes stay visible
    # distinct classes: never the same class twice among the drawn objects
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert len(set((rng.choice(20, 3, replace=False) + 1).tolist())) == 3
    # spread: one object per grid cell, so their centres are at least a third of a cell apart
    from fsslab.data.synthetic.render import _spread_centres

    centres = np.asarray(_spread_centres(np.random.default_rng(3), 4))
    gaps = [np.abs(a - b).max() for i, a in enumerate(centres) for b in centres[i + 1 :]]
    assert min(gaps) >= 0.5 / 3 and ((centres > 0) & (centres < 1)).all()
    assert plain.placement == "random" and not plain.distinct_classes  # the earlier behaviour by default
    with pytest.raises(ValueError, match="placement"):
        SyntheticConfig(placement="grid")


def test_new_knobs_missing_from_an_older_meta_are_their_defaults(tmp_path):
    plain = SyntheticConfig(seed=5, n_train=3, n_val=2, min_size=48, max_size=48)
    write_synthetic_if_missing(tmp_path, plain, workers=0)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for key in ("distinct_classes", "placement"):
        del meta["config"][key]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    write_synthetic_if_missing(tmp_path, plain)  # accepted: written before the knobs existed
    with pytest.raises(ValueError, match="placement: on disk 'random', requested 'spread'"):
        write_synthetic_if_missing(tmp_path, SyntheticConfig.from_dict({**plain.to_dict(), "placement": "spread"}))


# sha256 (first 16 hex digits) of images and labels 0-3 of every split of each preset, recorded before the
# cross-domain knobs (families, surface, background, placement "overlap", occlusion) were added: they draw nothing
# from the RNG at their defaults, so every earlier preset renders byte for byte as before
PRESET_DIGESTS = {"default": "6a39adcf077af557", "easy": "f840f536ddce56d2", "hard": "c0ee2bdb25114bdf",
                  "medium": "92bbcb0c7c372da9", "multi": "b3604253d5d172b7", "salient": "28acfce7756ce091"}


@pytest.mark.parametrize("preset", sorted(PRESET_DIGESTS))
def test_earlier_presets_are_byte_identical(preset):
    import hashlib

    config = SyntheticConfig.preset(preset)
    digest = hashlib.sha256()
    for split in ("train", "val", "pretrain"):
        for index in range(4):
            image, label = render_sample(config, split, index)
            digest.update(image.tobytes())
            digest.update(label.tobytes())
    assert digest.hexdigest()[:16] == PRESET_DIGESTS[preset]
