"""On-the-fly VOC- and COCO-layout fixtures (images, labels, lists) shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

VOC_N_CLASSES = 20
VOC_HW = (144, 192)
COCO_HW = (96, 128)


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour per class (so tests can check that colours stay on labels)."""
    hue = int(180 * ((class_id - 1) % 20) / 20)
    hsv = np.uint8([[[hue, 220, 230]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_sample(height: int, width: int, objects: list[tuple[int, str, tuple[int, int, int, int]]], seed: int,
                band: int = 1):  # fmt: skip
    """RGB image + label with objects (class, "rect"|"ellipse", (y0, x0, y1, x1)) and a 255 boundary band."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), np.uint8)
    for class_id, kind, (y0, x0, y1, x1) in objects:
        region = np.zeros((height, width), np.uint8)
        if kind == "rect":
            region[y0:y1, x0:x1] = 1
        else:
            centre = ((x0 + x1) // 2, (y0 + y1) // 2)
            cv2.ellipse(region, centre, ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 1, -1)
        label[region == 1] = class_id
        image[region == 1] = class_colour(class_id)
    if band:
        kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
        boundary = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
        label[boundary] = 255
    return image, label


def write_pair(root: Path, image_rel: str, label_rel: str, image: np.ndarray, label: np.ndarray) -> None:
    for rel in (image_rel, label_rel):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert cv2.imwrite(str(root / label_rel), label)


def write_list(root: Path, split: str, pairs: list[tuple[str, str]]) -> Path:
    path = root / "lists" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{image} {label}\n" for image, label in pairs))
    return path


def voc_objects(index: int, offset: int) -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """Three large objects of consecutive classes (3i+offset ...) and one small one (< 2x32x32 px)."""
    start = (3 * index + offset) % VOC_N_CLASSES
    objects = []
    for column in range(3):
        class_id = (start + column) % VOC_N_CLASSES + 1
        kind = "rect" if (index + column) % 2 == 0 else "ellipse"
        x0 = 2 + 64 * column
        objects.append((class_id, kind, (6, x0, 6 + 64, x0 + 60)))
    small_class = (start + 10) % VOC_N_CLASSES + 1
    objects.append((small_class, "rect", (100, 20 + 4 * (index % 10), 120, 40 + 4 * (index % 10))))
    return objects


def write_voc_dataset(root: Path, n_train: int = 40, n_val: int = 40, meta: bool = True) -> Path:
    """VOC layout: JPEGImages/, SegmentationClassAug/, lists/{train,val}.txt and meta.json.

    Every image has 3 qualifying objects of consecutive classes and 1 small object, so with 40 images
    per split each class qualifies in exactly 6 images of the split.
    """
    for split, count, offset in (("train", n_train, 0), ("val", n_val, 0)):
        pairs = []
        for i in range(count):
            name = f"{split}_{i:03d}"
            image, label = draw_sample(*VOC_HW, voc_objects(i, offset), seed=i + (1000 if split == "val" else 0))
            pair = (f"JPEGImages/{name}.jpg", f"SegmentationClassAug/{name}.png")
            write_pair(root, *pair, image, label)
            pairs.append(pair)
        write_list(root, split, pairs)
    if meta:
        names = [f"shape_{c:02d}" for c in range(1, VOC_N_CLASSES + 1)]
        palette = [list(class_colour(c)) for c in range(1, VOC_N_CLASSES + 1)]
        (root / "meta.json").write_text(json.dumps({"class_names": names, "palette": palette, "seed": 0}))
    return root


# COCO: each class pair appears in two images per split, so every listed class has 2 qualifying images.
COCO_PAIRS = {
    "train": [(2, 3), (6, 7), (10, 22), (42, 79), (44, 60)],
    "val": [(1, 2), (5, 21), (9, 41), (61, 80)],
}


def write_coco_dataset(root: Path) -> Path:
    """COCO layout after prep: {train,val}2014/*.jpg, SegmentationClass/{train,val}2014/*.png, lists."""
    for split, class_pairs in COCO_PAIRS.items():
        pairs = []
        for i, (a, b) in enumerate(class_pairs * 2):
            name = f"COCO_{split}2014_{i:012d}"
            objects = [(a, "rect", (8, 4, 60, 60)), (b, "rect", (30, 66, 86, 122))]
            image, label = draw_sample(*COCO_HW, objects, seed=i)
            pair = (f"{split}2014/{name}.jpg", f"SegmentationClass/{split}2014/{name}.png")
            write_pair(root, *pair, image, label)
            pairs.append(pair)
        write_list(root, split, pairs)
    return root


