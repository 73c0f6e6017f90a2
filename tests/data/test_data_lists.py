"""Fold splits, the min-area rule, PFENet vs BAM list building, the index cache and base annotations."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures.voc import draw_sample, write_list, write_pair

from fsslab.data import (
    COCO_ID_TO_INDEX,
    PASCAL,
    build_fold_index,
    coco_benchmark,
    get_benchmark,
    read_label,
    read_list,
    synthetic_benchmark,
    to_base_mask,
    write_base_annotations,
)
from fsslab.data.lists import base_label_table
from fsslab.errors import FsslabWarning


def test_pascal_folds_are_blocks_of_five():
    for fold in range(4):
        assert PASCAL.novel_classes(fold) == list(range(5 * fold + 1, 5 * fold + 6))
        assert sorted(PASCAL.base_classes(fold) + PASCAL.novel_classes(fold)) == list(range(1, 21))
    assert PASCAL.class_name(1) == "aeroplane" and PASCAL.class_name(20) == "tvmonitor"


def test_coco_interleaved_and_contiguous_folds():
    interleaved, contiguous = coco_benchmark("interleaved"), coco_benchmark("contiguous")
    # BAM/AMFormer `use_split_coco`: sub_val_list = range(fold + 1, 81, 4)
    assert interleaved.novel_classes(0) == list(range(1, 78, 4))
    assert interleaved.novel_classes(3) == list(range(4, 81, 4))
    assert contiguous.novel_classes(2) == list(range(41, 61))
    for bench in (interleaved, contiguous):
        novel = [c for fold in range(4) for c in bench.novel_classes(fold)]
        assert sorted(novel) == list(range(1, 81))  # the four folds partition the 80 classes
        assert len(bench.base_classes(1)) == 60
    assert get_benchmark("coco_contiguous").fold_convention == "contiguous"
    with pytest.raises(ValueError, match="fold"):
        interleaved.novel_classes(4)


def test_coco_sparse_ids_map_to_1_80():
    assert len(COCO_ID_TO_INDEX) == 80
    assert sorted(COCO_ID_TO_INDEX.values()) == list(range(1, 81))
    assert COCO_ID_TO_INDEX[1] == 1 and COCO_ID_TO_INDEX[13] == 12 and COCO_ID_TO_INDEX[90] == 80


def test_synthetic_benchmark_reads_meta(voc_root):
    bench = synthetic_benchmark(voc_root)
    assert bench.class_names[0] == "shape_01" and bench.n_classes == 20
    assert len(bench.palette) == 21 and bench.palette[0] == (0, 0, 0)
    assert bench.novel_classes(2) == [11, 12, 13, 14, 15]


def test_read_list_resolves_pairs(voc_root):
    pairs = read_list(voc_root / "lists" / "train.txt", voc_root)
    assert len(pairs) == 40 and pairs[0] == ("JPEGImages/train_000.jpg", "SegmentationClassAug/train_000.png")


def test_min_area_rule_counts_class_pixels_only(tmp_path):
    # class 6: 2048 px (qualifies), class 7: 2047 px (does not), class 8: 2047 px plus 255 pixels (does not)
    label = np.zeros((100, 200), np.uint8)
    label[0:32, 0:64] = 6
    label[40:72, 0:64] = 7
    label[40, 63] = 0  # exactly 2047
    label[0:32, 100:164] = 8
    label[0, 100] = 255  # 2047 class-8 pixels: 255 does not count
    image = np.zeros((100, 200, 3), np.uint8)
    write_pair(tmp_path, "JPEGImages/a.jpg", "SegmentationClassAug/a.png", image, label)
    write_list(tmp_path, "train", [("JPEGImages/a.jpg", "SegmentationClassAug/a.png")])
    index = build_fold_index(PASCAL, tmp_path, "train", 0, cache=False)
    assert index.qualifying == [[6]]
    assert index.present == [[6, 7, 8]]
    assert index.class_to_items[6] == [0] and index.class_to_items[7] == []
    assert build_fold_index(PASCAL, tmp_path, "train", 0, min_area=2047, cache=False).qualifying == [[6, 7, 8]]


def _labels(root, index):
    return [read_label(root / label_rel) for _, label_rel in index.items]


def test_pfenet_protocol_keeps_images_with_novel_pixels(voc_root):
    index = build_fold_index(PASCAL, voc_root, "train", 0, "pfenet")
    novel = set(PASCAL.novel_classes(0))
    labels = _labels(voc_root, index)
    assert any(novel & set(np.unique(lab).tolist()) for lab in labels)  # novel pixels are allowed
    for lab, good in zip(labels, index.qualifying, strict=True):
        assert good and not novel & set(good)
        for c in good:
            assert (lab == c).sum() >= 2 * 32 * 32
    s = index.summary
    assert s.n_listed == s.n_kept + s.n_without_qualifying_class + s.n_dropped_with_novel
    assert s.n_dropped_with_novel == 0 and s.n_without_qualifying_class > 0


def test_bam_protocol_drops_any_novel_pixel(voc_root):
    pfenet = build_fold_index(PASCAL, voc_root, "train", 0, "pfenet")
    bam = build_fold_index(PASCAL, voc_root, "train", 0, "bam")
    novel = set(PASCAL.novel_classes(0))
    assert set(bam.items) < set(pfenet.items)
    for lab in _labels(voc_root, bam):
        assert not novel & set(np.unique(lab).tolist())
    # train_010 has big objects 11, 12, 13 and a small (non-qualifying) object of novel class 1:
    # PFENet keeps it, BAM drops it (any novel pixel counts, not only qualifying ones)
    item = ("JPEGImages/train_010.jpg", "SegmentationClassAug/train_010.png")
    assert item in pfenet.items and item not in bam.items
    s = bam.summary
    assert s.n_dropped_with_novel > 0
    assert s.n_listed == s.n_kept + s.n_without_qualifying_class + s.n_dropped_with_novel
    assert "bam protocol" in str(s)


def test_val_index_uses_novel_classes_only(voc_root):
    index = build_fold_index(PASCAL, voc_root, "val", 1)
    assert index.summary.classes == [6, 7, 8, 9, 10]
    assert all(set(good) <= {6, 7, 8, 9, 10} for good in index.qualifying)
    assert index.summary.images_per_class == {c: 6 for c in range(6, 11)}


def test_index_cache_is_reused_and_invalidated(tmp_path, voc_root):
    root = tmp_path / "data"
    root.mkdir()
    pairs = []
    for i in range(4):
        image, label = draw_sample(64, 96, [(6 + i % 2, "rect", (2, 2, 60, 60))], seed=i)
        pair = (f"JPEGImages/{i}.jpg", f"SegmentationClassAug/{i}.png")
        write_pair(root, *pair, image, label)
        pairs.append(pair)
    write_list(root, "train", pairs)
    first = build_fold_index(PASCAL, root, "train", 0)
    assert not first.summary.from_cache and first.summary.cache_path
    assert json.loads(Path(first.summary.cache_path).read_text())["params"]["protocol"] == "pfenet"
    second = build_fold_index(PASCAL, root, "train", 0)
    assert second.summary.from_cache and second.items == first.items
    assert second.class_to_items == first.class_to_items
    assert not build_fold_index(PASCAL, root, "train", 0, min_area=100).summary.from_cache  # params changed
    write_list(root, "train", pairs[:3])  # list changed
    third = build_fold_index(PASCAL, root, "train", 0)
    assert not third.summary.from_cache and len(third.items) == 3


def test_base_annotations(voc_root, tmp_path):
    table = base_label_table(PASCAL, 0)
    label = np.array([[0, 1, 5, 6, 20, 255]], np.uint8)
    assert to_base_mask(label, PASCAL, 0).tolist() == [[0, 0, 0, 1, 15, 255]]
    assert table[11] == 6  # base classes 6..20 of fold 0 become 1..15 in order
    assert to_base_mask(label, PASCAL, 3).tolist() == [[0, 1, 5, 6, 0, 255]]
    out = write_base_annotations(voc_root, PASCAL, 2, "val", out_dir=tmp_path / "base")
    assert out["written"] == 40 and out["n_base"] == 15
    written = cv2.imread(str(tmp_path / "base" / "val_000.png"), cv2.IMREAD_UNCHANGED)
    original = read_label(voc_root / "SegmentationClassAug" / "val_000.png")
    assert np.array_equal(written, to_base_mask(original, PASCAL, 2))
    assert set(np.unique(written).tolist()) <= set(range(16)) | {255}


def _small_root(root: Path, classes: tuple[int, ...] = (6, 6, 6, 7)) -> list[tuple[str, str]]:
    """One 64x96 image per entry of ``classes``, each a single large rectangle of that class."""
    pairs = []
    for i, class_id in enumerate(classes):
        image, label = draw_sample(64, 96, [(class_id, "rect", (2, 2, 60, 60))], seed=i)
        pair = (f"JPEGImages/{i}.jpg", f"SegmentationClassAug/{i}.png")
        write_pair(root, *pair, image, label)
        pairs.append(pair)
    return pairs


def test_duplicate_list_lines_are_dropped_and_counted(tmp_path):
    pairs = _small_root(tmp_path)
    # an exact repeat, the same image spelt ./JPEGImages/..., and the same image with another label
    listed = [*pairs, pairs[0], (f"./{pairs[0][0]}", pairs[0][1]), (pairs[1][0], pairs[2][1])]
    write_list(tmp_path, "train", listed)
    with pytest.warns(FsslabWarning, match=r"train\.txt: 3 duplicate line\(s\) ignored.*line 5 repeats"):
        assert read_list(tmp_path / "lists" / "train.txt", tmp_path) == pairs
    with pytest.warns(FsslabWarning, match="another label"):
        index = build_fold_index(PASCAL, tmp_path, "train", 0)
    assert index.items == pairs and index.summary.n_duplicate_lines == 3
    assert "3 duplicate list lines" in str(index.summary)
    with pytest.warns(FsslabWarning, match="3 duplicate"):  # still said when the index comes from the cache
        assert build_fold_index(PASCAL, tmp_path, "train", 0).summary.from_cache


def test_index_cache_follows_edited_labels(tmp_path):
    pairs = _small_root(tmp_path)
    write_list(tmp_path, "train", pairs)
    first = build_fold_index(PASCAL, tmp_path, "train", 0)
    assert first.class_to_items[6] == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unchanged dataset is read from the cache without a word
        assert build_fold_index(PASCAL, tmp_path, "train", 0).summary.from_cache
    # relabel image 2 from class 6 to class 8 (same size: the list text is unchanged)
    label = read_label(tmp_path / pairs[2][1])
    label[label == 6] = 8
    assert cv2.imwrite(str(tmp_path / pairs[2][1]), label)
    with pytest.warns(FsslabWarning, match=r"1 of 4 label files changed .*2\.png.*rebuilding"):
        edited = build_fold_index(PASCAL, tmp_path, "train", 0)
    assert not edited.summary.from_cache and edited.class_to_items[6] == [0, 1] and edited.class_to_items[8] == [2]
    assert build_fold_index(PASCAL, tmp_path, "train", 0).summary.from_cache
    Path(edited.summary.cache_path).write_text("{ torn")  # an unreadable cache is rebuilt, not a JSON error
    with pytest.warns(FsslabWarning, match="unreadable"):
        assert not build_fold_index(PASCAL, tmp_path, "train", 0).summary.from_cache
