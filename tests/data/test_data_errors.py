"""Bad input: each case gets a clear error naming the file and the problem, or a counted fallback."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures.voc import draw_sample, write_list, write_pair
from PIL import Image

from fsslab.data import (
    PASCAL,
    DatasetError,
    PascalEpisodes,
    build_fold_index,
    read_image,
    read_label,
    read_pair,
)
from fsslab.data.transforms import TrainAugment


def _dataset(root, n=4, classes=(6, 7), hw=(64, 96)):
    """n images alternating between the given classes (one big rectangle each)."""
    pairs = []
    for i in range(n):
        image, label = draw_sample(*hw, [(classes[i % len(classes)], "rect", (2, 2, hw[0] - 2, 60))], seed=i)
        pair = (f"JPEGImages/{i}.jpg", f"SegmentationClassAug/{i}.png")
        write_pair(root, *pair, image, label)
        pairs.append(pair)
    write_list(root, "train", pairs)
    write_list(root, "val", pairs)
    return pairs


def test_missing_root_and_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root not found: .*nowhere"):
        PascalEpisodes(tmp_path / "nowhere", "train", 0, 1)
    with pytest.raises(FileNotFoundError, match=r"list file not found: .*lists/train\.txt"):
        PascalEpisodes(tmp_path, "train", 0, 1)


def test_image_without_label_names_line(tmp_path):
    pairs = _dataset(tmp_path)
    (tmp_path / pairs[2][1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.txt:3: label .*2\.png does not exist"):
        build_fold_index(PASCAL, tmp_path, "train", 0, cache=False)


def test_malformed_list_line(tmp_path):
    _dataset(tmp_path)
    with open(tmp_path / "lists" / "train.txt", "a") as f:
        f.write("JPEGImages/only_one_column.jpg\n")
    with pytest.raises(DatasetError, match=r"train\.txt:5: expected '<image> <label>'"):
        build_fold_index(PASCAL, tmp_path, "train", 0, cache=False)


def test_label_size_mismatch_names_both_files(tmp_path):
    pairs = _dataset(tmp_path)
    cv2.imwrite(str(tmp_path / pairs[1][1]), np.zeros((50, 96), np.uint8))
    with pytest.raises(DatasetError, match=r"size mismatch: .*1\.jpg is 64x96 .* but .*1\.png is 50x96"):
        build_fold_index(PASCAL, tmp_path, "train", 0, cache=False)
    with pytest.raises(DatasetError, match="size mismatch"):
        read_pair(tmp_path / pairs[1][0], tmp_path / pairs[1][1], 20)


def test_label_values_outside_class_range(tmp_path):
    pairs = _dataset(tmp_path)
    label = read_label(tmp_path / pairs[0][1])
    label[0, 0], label[0, 1] = 30, 254
    cv2.imwrite(str(tmp_path / pairs[0][1]), label)
    with pytest.raises(DatasetError, match=r"0\.png has values \[30, 254\] outside the class range 0\.\.20"):
        build_fold_index(PASCAL, tmp_path, "train", 0, cache=False)


def test_colour_label_is_rejected(tmp_path):
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="colour.png has mode RGB"):
        read_label(path)


def test_palette_label_gives_indices(tmp_path):
    path = tmp_path / "palette.png"
    pil = Image.fromarray(np.array([[0, 3], [255, 20]], np.uint8), mode="P")
    pil.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    pil.save(path)
    assert read_label(path, 20).tolist() == [[0, 3], [255, 20]]


@pytest.mark.parametrize("kind", ["garbage", "truncated_jpeg", "truncated_png", "empty"])
def test_corrupt_files(tmp_path, kind):
    image = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    if kind == "garbage":
        path = tmp_path / "bad.jpg"
        path.write_bytes(b"this is not a jpeg at all")
    elif kind == "empty":
        path = tmp_path / "bad.jpg"
        path.write_bytes(b"")
    else:
        ext = ".jpg" if kind == "truncated_jpeg" else ".png"
        path = tmp_path / f"bad{ext}"
        cv2.imwrite(str(path), image)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match=r"bad\.(jpg|png)"):
        read_image(path)
    if kind == "truncated_png":
        cv2.imwrite(str(path), image[..., 0])
        path.write_bytes(path.read_bytes()[:-40])
        with pytest.raises(DatasetError, match=r"corrupt label .*bad\.png"):
            read_label(path)


def test_corrupt_image_in_dataset_is_named(tmp_path):
    pairs = _dataset(tmp_path, n=4)
    index = build_fold_index(PASCAL, tmp_path, "val", 1, cache=False)  # novel 6..10 of fold 1
    ds = PascalEpisodes(tmp_path, "val", 1, 1, size=32, episodes=4, cache=False, on_small_class="exclude")
    assert len(index.items) == 4
    data = (tmp_path / pairs[0][0]).read_bytes()
    (tmp_path / pairs[0][0]).write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"corrupt image .*0\.jpg"):
        for i in range(len(ds)):
            ds[i]


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (6, 8, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    cv2.imwrite(str(tmp_path / "gray.jpg"), gray)
    assert read_image(tmp_path / "gray.jpg").shape == (6, 8, 3)
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 10, 20, 30
    rgba[:3, :, 3] = 0  # fully transparent top half: alpha is dropped, not composited
    rgba[3:, :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (6, 8, 3) and np.all(out == np.array([10, 20, 30], np.uint8))


def test_class_with_too_few_images(tmp_path):
    _dataset(tmp_path, n=5, classes=(6, 6, 7, 7, 8))  # class 8 has a single image
    with pytest.raises(DatasetError, match=r"at least 2 images per class; too few for class\(es\) 8 \(cat\): 1, 9"):
        PascalEpisodes(tmp_path, "train", 0, 1, size=32)
    with pytest.raises(DatasetError, match=r"too few for class\(es\) 6 \(bus\): 2, 7 \(car\): 2, 8 \(cat\): 1"):
        PascalEpisodes(tmp_path, "train", 0, 2, size=32)
    ds = PascalEpisodes(tmp_path, "train", 0, 1, size=32, on_small_class="exclude")
    assert ds.stats.excluded_classes == list(range(8, 21))  # 8 has one image, 9..20 none
    assert ds.stats.queries_without_candidates == 1  # the only image of class 8 cannot be a query
    assert len(ds) == 4 and "excluded classes [8, 9" in ds.describe()


def test_empty_support_after_crop_falls_back_and_is_counted(tmp_path):
    _dataset(tmp_path, n=4, hw=(64, 320))
    augmentation = TrainAugment(size=16, max_retries=0, rotate_p=0.0)
    ds = PascalEpisodes(tmp_path, "train", 0, 1, size=16, augmentation=augmentation, on_small_class="exclude")
    masks = [ds[i % len(ds)]["support_masks"] for i in range(12)]
    assert ds.stats.support_crop_fallbacks > 0  # objects cover 60 of 320 columns: most 16 px crops miss
    assert all((m == 1).any() for m in masks)  # every support still shows its class
    assert ds.stats.empty_supports == 0


def test_original_labels_of_any_size_need_no_canvas_knob(tmp_path):
    _dataset(tmp_path, n=4)  # 64x96 labels: the canvas is sized from the episodes' own labels
    ds = PascalEpisodes(tmp_path, "val", 1, 1, size=32, episodes=2, on_small_class="exclude")
    assert ds.label_canvas == (64, 96) and ds[0]["query_mask_ori"].shape == (64, 96)


def test_incomplete_synthetic_benchmark_is_refused(tmp_path):
    from fsslab.data import SyntheticEpisodes

    _dataset(tmp_path, n=4)
    (tmp_path / ".synthetic_incomplete").write_text("interrupted")
    with pytest.raises(DatasetError, match="incomplete"):
        SyntheticEpisodes(tmp_path, "val", 1, 1, on_small_class="exclude")
