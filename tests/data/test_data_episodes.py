"""Episode contents (1 and 5 shots, train and eval), determinism, weak supports, COCO, official mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.voc import draw_sample, write_list, write_pair
from torch.utils.data import DataLoader

from fsslab.data import (
    PASCAL,
    CocoEpisodes,
    PascalEpisodes,
    SyntheticEpisodes,
    build_dataset,
    coco_benchmark,
    from_official,
    official_forward_kwargs,
    read_label,
    to_official,
)
from fsslab.data.episodes.stats import stats_line, sum_stats
from fsslab.data.eval_protocols import long_side_size
from fsslab.errors import FsslabWarning

SIZE = 96


def _check_batch(batch, batch_size, shot, size=SIZE):
    assert batch["query_img"].shape == (batch_size, 3, size, size) and batch["query_img"].dtype == torch.float32
    assert batch["support_imgs"].shape == (batch_size, shot, 3, size, size)
    assert batch["query_mask"].shape == (batch_size, size, size) and batch["query_mask"].dtype == torch.long
    assert batch["support_masks"].shape == (batch_size, shot, size, size)
    assert batch["support_masks"].dtype == torch.long
    assert batch["query_padding"].dtype == torch.bool and batch["support_padding"].shape == (batch_size, shot, size, size)
    assert batch["class_id"].shape == (batch_size,) and batch["episode_index"].shape == (batch_size,)
    for key in ("query_mask", "support_masks"):
        assert set(torch.unique(batch[key]).tolist()) <= {0, 1, 255}
    # every support shows the class; padded pixels are ignored
    assert (batch["support_masks"] == 1).flatten(2).any(-1).all()
    assert torch.all(batch["query_mask"][batch["query_padding"]] == 255)
    assert torch.all(batch["support_masks"][batch["support_padding"]] == 255)


@pytest.mark.parametrize("shot", [1, 5])
def test_train_episodes(voc_root, shot):
    torch.manual_seed(0)
    ds = PascalEpisodes(voc_root, "train", 0, shot, size=SIZE)
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=True)))
    _check_batch(batch, 3, shot)
    assert set(batch["class_id"].tolist()) <= set(PASCAL.base_classes(0))
    base = batch["query_base_mask"]
    assert set(torch.unique(base).tolist()) <= set(range(16)) | {255}
    # the query's target pixels carry the chosen class in the base annotation (base id = rank in base list)
    for b in range(3):
        base_id = PASCAL.base_classes(0).index(int(batch["class_id"][b])) + 1
        target = batch["query_mask"][b] == 1
        assert torch.all(base[b][target] == base_id)


def test_base_label_all_keeps_every_class_id(voc_root):
    torch.manual_seed(0)
    ds = PascalEpisodes(voc_root, "train", 0, 1, size=SIZE, base_label="all", augment=False)
    assert ds.base_table[3] == 3 and ds.base_table[17] == 17 and ds.base_table[255] == 255
    base_only = PascalEpisodes(voc_root, "train", 0, 1, size=SIZE)
    assert base_only.base_table[1] == 0 and base_only.base_table[6] == 1  # novel → 0, base renumbered
    sample = ds[0]
    target = sample["query_mask"] == 1
    assert torch.all(sample["query_base_mask"][target] == sample["class_id"])  # ids kept, not renumbered
    with pytest.raises(ValueError, match="base_label must be 'base' or 'all'"):
        PascalEpisodes(voc_root, "train", 0, 1, size=SIZE, base_label="novel")


def test_train_sampling_rules(voc_root):
    ds = PascalEpisodes(voc_root, "train", 0, 5, size=SIZE)
    index = ds.index
    for seed in range(30):
        item = ds.query_items[seed % len(ds.query_items)]
        episode = ds.sample_episode(item, np.random.default_rng(seed))
        assert item not in episode.supports and len(set(episode.supports)) == 5
        assert episode.class_id in index.present[item]
        for s in episode.supports:
            assert episode.class_id in index.qualifying[s]  # supports: class covers >= 2x32x32 px
    strict = PascalEpisodes(voc_root, "train", 0, 1, size=SIZE, query_class_rule="qualifying")
    for item, candidates in enumerate(strict.candidates):
        assert set(candidates) <= set(index.qualifying[item])


@pytest.mark.parametrize("shot", [1, 5])
def test_eval_episodes(voc_root, shot):
    ds = PascalEpisodes(voc_root, "val", 1, shot, size=SIZE, episodes=6, seed=5)
    assert len(ds) == 6
    batch = next(iter(DataLoader(ds, batch_size=2)))
    _check_batch(batch, 2, shot)
    assert set(batch["class_id"].tolist()) <= set(PASCAL.novel_classes(1))
    assert batch["query_mask_ori"].shape == (2, 144, 192) and batch["query_ori_size"].tolist() == [[144, 192]] * 2
    # SIZE is below 192: the long side goes to SIZE, both sides floored to a multiple of 8
    assert batch["query_valid_size"].tolist() == [list(long_side_size(144, 192, SIZE))] * 2
    for b in range(2):
        episode = ds.episodes[b]
        assert episode.query not in episode.supports and len(set(episode.supports)) == shot
        label = read_label(voc_root / ds.index.items[episode.query][1])
        expected = np.where(label == 255, 255, (label == episode.class_id).astype(np.int64))
        ori = batch["query_mask_ori"][b].numpy()
        assert np.array_equal(ori[:144, :192], expected)
        assert np.all(ori[144:] == 255) and np.all(ori[:, 192:] == 255)
        # 144x192 -> long side 96: 72x96, padded at the bottom
        assert batch["query_padding"][b, 72:].all() and not batch["query_padding"][b, :72].any()


def test_eval_is_deterministic_across_workers_and_seeds(voc_root):
    def first_batches(seed, workers):
        ds = PascalEpisodes(voc_root, "val", 0, 1, size=SIZE, episodes=4, seed=seed)
        return ds.episodes, list(DataLoader(ds, batch_size=2, num_workers=workers))

    episodes_a, batches_a = first_batches(7, 0)
    episodes_b, batches_b = first_batches(7, 2)
    assert episodes_a == episodes_b
    for a, b in zip(batches_a, batches_b, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    episodes_c, _ = first_batches(8, 0)
    assert episodes_c != episodes_a


def test_weak_support_variants(voc_root):
    kw = {"size": SIZE, "episodes": 3, "seed": 1}
    masks = PascalEpisodes(voc_root, "val", 0, 1, **kw)
    boxes = PascalEpisodes(voc_root, "val", 0, 1, support_label="box", **kw)
    scribbles = PascalEpisodes(voc_root, "val", 0, 1, support_label="scribble", **kw)
    for i in range(3):
        m = masks[i]["support_masks"]
        b = boxes[i]["support_masks"]
        s = scribbles[i]["support_masks"]
        assert torch.equal(masks[i]["query_mask"], boxes[i]["query_mask"])  # only supports change
        assert torch.all(b[m == 1] == 1) and (b == 1).sum() >= (m == 1).sum()
        assert (s == 1).any() and torch.all(m[s == 1] == 1) and (s == 1).sum() < (m == 1).sum()


def test_synthetic_layout_reads_like_pascal(voc_root):
    ds = SyntheticEpisodes(voc_root, "val", 3, 1, episodes=2)
    assert ds.benchmark.name == "synthetic" and ds.benchmark.class_name(16) == "shape_16"
    sample = ds[0]
    assert sample["query_img"].shape == (3, 160, 160)  # synthetic default test size
    assert 16 <= int(sample["class_id"]) <= 20
    assert isinstance(build_dataset("synthetic", voc_root, "val", 3, 1, episodes=2), SyntheticEpisodes)


@pytest.mark.parametrize("folds", ["interleaved", "contiguous"])
def test_coco_episodes_follow_the_fold_convention(coco_root, folds):
    ds = CocoEpisodes(coco_root, "val", 0, 1, folds=folds, size=64, episodes=8, on_small_class="exclude")
    novel = set(coco_benchmark(folds).novel_classes(0))
    classes = {e.class_id for e in ds.episodes}
    assert classes <= novel and classes
    expected = {1, 5, 9, 21, 41, 61} if folds == "interleaved" else {1, 2, 5, 9}
    assert {c for c, n in ds.index.summary.images_per_class.items() if n} == expected
    batch = next(iter(DataLoader(ds, batch_size=2)))
    _check_batch(batch, 2, 1, size=64)
    train = build_dataset(f"coco_{folds}", coco_root, "train", 0, 1, size=64, on_small_class="exclude")
    assert {train.sample_episode(i, np.random.default_rng(i)).class_id for i in train.query_items} <= set(
        coco_benchmark(folds).base_classes(0)
    )


def test_official_mapping_round_trip(voc_root):
    torch.manual_seed(0)
    train = PascalEpisodes(voc_root, "train", 2, 1, size=SIZE)
    batch = next(iter(DataLoader(train, batch_size=2)))
    official = to_official(batch, PASCAL, 2, training=True)
    base = PASCAL.base_classes(2)
    assert official["cat_idx"][0].tolist() == [base.index(int(c)) for c in batch["class_id"]]
    assert official["x"] is batch["query_img"] and official["y_b"] is batch["query_base_mask"]
    back = from_official(official, PASCAL, 2, training=True)
    for key, value in back.items():
        assert torch.equal(value, batch[key]), key
    kwargs = official_forward_kwargs(batch, "amformer", PASCAL, 2, training=True)
    assert set(kwargs) == {"x", "y_m", "y_b", "s_x", "s_y", "cat_idx"}
    assert set(official_forward_kwargs(batch, "ipmt", PASCAL, 2, training=True)) == {"x", "s_x", "s_y", "y"}
    val = PascalEpisodes(voc_root, "val", 2, 1, size=SIZE, episodes=2)
    vbatch = next(iter(DataLoader(val, batch_size=2)))
    vofficial = to_official(vbatch, PASCAL, 2, training=False)
    assert vofficial["cat_idx"][0].tolist() == [int(c) - 11 for c in vbatch["class_id"]]  # novel 11..15
    assert torch.equal(from_official(vofficial, PASCAL, 2, training=False)["class_id"], vbatch["class_id"])
    with pytest.raises(ValueError, match="not a base class"):
        to_official(vbatch, PASCAL, 2, training=True)


def _one_class_root(root: Path, n: int = 4) -> list[tuple[str, str]]:
    """n images of class 6 (a large rectangle each), VOC layout, listed for train and val."""
    pairs = []
    for i in range(n):
        image, label = draw_sample(64, 96, [(6, "rect", (2, 2, 60, 60))], seed=i)
        pair = (f"JPEGImages/{i}.jpg", f"SegmentationClassAug/{i}.png")
        write_pair(root, *pair, image, label)
        pairs.append(pair)
    return pairs


def test_a_support_is_never_the_query_image(tmp_path, monkeypatch):
    pairs = _one_class_root(tmp_path, 3)
    write_list(tmp_path, "val", [*pairs, *pairs, pairs[0]])  # every image listed two or three times
    with pytest.warns(FsslabWarning, match="4 duplicate"):
        ds = PascalEpisodes(tmp_path, "val", 1, 2, size=64, episodes=30, seed=0, on_small_class="exclude")
    assert ds.index.items == pairs
    for episode in ds.episodes:  # 3 distinct images, 2 shots: the supports are exactly the two others
        assert sorted(episode.supports) == sorted(set(range(3)) - {episode.query})
    # an index that still holds one image under two spellings (built elsewhere): the path decides, not the index
    from fsslab.data.episodes import dataset as episode_dataset  # where EpisodicDataset builds its index

    real = episode_dataset.build_fold_index

    def aliased(*args, **kwargs):
        index = real(*args, **kwargs)
        index.items = [*index.items, (f"./{pairs[0][0]}", pairs[0][1])]
        index.qualifying, index.present = [*index.qualifying, [6]], [*index.present, [6]]
        index.class_to_items = {6: [0, 1, 2, 3]}
        return index

    monkeypatch.setattr(episode_dataset, "build_fold_index", aliased)
    with pytest.warns(FsslabWarning):
        ds = PascalEpisodes(tmp_path, "val", 1, 2, size=64, episodes=40, seed=0, on_small_class="exclude")
    image = [str(Path(p).resolve()) for p, _ in ((tmp_path / i, lab) for i, lab in ds.index.items)]
    for episode in ds.episodes:
        assert all(image[s] != image[episode.query] for s in episode.supports)
    rng = np.random.default_rng(0)
    for _ in range(40):
        episode = ds.sample_episode(0, rng)
        assert all(image[s] != image[0] for s in episode.supports)


def test_loading_counters_add_up_over_dataloader_workers(tmp_path):
    pairs = _one_class_root(tmp_path)
    write_list(tmp_path, "train", pairs)
    torch.manual_seed(0)
    # 16-pixel crops of 64x96 images whose object spans 58x58: some support crops miss it and fall back
    ds = PascalEpisodes(tmp_path, "train", 0, 1, size=16, on_small_class="exclude")
    for _ in range(3):
        list(DataLoader(ds, batch_size=2, num_workers=2))  # every sample is loaded in a worker process
    stats = ds.stats.to_dict()
    assert stats["queries"] == stats["supports"] == 3 * len(ds)
    assert ds.stats.queries == 3 * len(ds) and 0 <= stats["empty_queries"] <= stats["queries"]
    assert "queries without target pixels" in stats_line(stats) and "support crops fell back" in ds.describe()
    assert sum_stats([ds.stats, ds.stats])["supports"] == 6 * len(ds)
