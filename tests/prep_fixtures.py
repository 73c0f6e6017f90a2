"""Writers of tiny VOC 2012, SBD and COCO 2014 trees in their real on-disk formats, for the prep tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from fsslab.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES, voc_palette


def write_jpeg(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


def box_label(height: int, width: int, class_id: int, box: tuple[int, int, int, int], band: bool = True):
    """[H, W] uint8: background with one filled box (y0, x0, y1, x1) of `class_id`, VOC-style 255 rim."""
    label = np.zeros((height, width), np.uint8)
    y0, x0, y1, x1 = box
    if band:
        label[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    label[y0:y1, x0:x1] = class_id
    return label


def write_palette_png(path: Path, label: np.ndarray) -> None:
    """A VOC SegmentationClass file: palette ("P" mode) PNG whose indices are the class ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label, mode="P")
    image.putpalette([v for rgb in voc_palette(256) for v in rgb])
    image.save(path)


def write_voc(
    root: Path,
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    main_val: list[str] = (),
    extra_images: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """VOCdevkit/VOC2012 with JPEGImages, palette SegmentationClass PNGs and ImageSets lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    for seed, (name, label) in enumerate({**train, **val}.items()):
        write_jpeg(voc / "JPEGImages" / f"{name}.jpg", *label.shape, seed=seed)
        write_palette_png(voc / "SegmentationClass" / f"{name}.png", label)
    for name, (h, w) in (extra_images or {}).items():  # images only SBD annotates
        write_jpeg(voc / "JPEGImages" / f"{name}.jpg", h, w)
    seg = voc / "ImageSets" / "Segmentation"
    seg.mkdir(parents=True, exist_ok=True)
    (seg / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (seg / "val.txt").write_text("".join(f"{n}\n" for n in val))
    (seg / "trainval.txt").write_text("".join(f"{n}\n" for n in [*train, *val]))
    if main_val:
        (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Main" / "val.txt").write_text("".join(f"{n}\n" for n in main_val))
    return voc


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """SBD's cls/<name>.mat: a 1x1 struct GTcls with Segmentation, Boundaries (cell of sparse edge maps,
    one per class) and CategoriesPresent, as in benchmark_RELEASE."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        edges = (cv2.Canny((label == c + 1).astype(np.uint8) * 255, 50, 150) > 0).astype(np.float64)
        boundaries[c, 0] = scipy.sparse.csc_matrix(edges)
    present = np.unique(label[(label > 0) & (label < 255)]).astype(np.uint8).reshape(-1, 1)
    gtcls = {"Segmentation": label.astype(np.uint8), "Boundaries": boundaries, "CategoriesPresent": present}
    scipy.io.savemat(str(path), {"GTcls": gtcls}, do_compression=True)


def write_sbd(
    root: Path, train: dict[str, np.ndarray], val: dict[str, np.ndarray], without_mat: list[str] = ()
) -> Path:
    """benchmark_RELEASE/dataset with cls/*.mat, img/*.jpg, train.txt and val.txt."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    for seed, (name, label) in enumerate({**train, **val}.items()):
        write_sbd_mat(dataset / "cls" / f"{name}.mat", label)
        write_jpeg(dataset / "img" / f"{name}.jpg", *label.shape, seed=100 + seed)
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "train.txt").write_text("".join(f"{n}\n" for n in [*train, *without_mat]))
    (dataset / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return dataset


def coco_categories() -> list[dict]:
    return [
        {"id": cid, "name": name, "supercategory": "thing"}
        for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES)
    ]


def polygon_annotation(ann_id: int, image_id: int, category_id: int, box: tuple[int, int, int, int]) -> dict:
    """A polygon annotation covering the box (x0, y0, x1, y1) in COCO's [x, y, x, y, ...] format."""
    x0, y0, x1, y1 = box
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        "area": float((x1 - x0) * (y1 - y0)),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
    }


def rle_annotation(
    ann_id: int,
    image_id: int,
    category_id: int,
    mask: np.ndarray,
    crowd: bool = False,
    compressed: bool = True,
) -> dict:
    """An RLE annotation of `mask`: compressed (pycocotools.mask.encode) or uncompressed (crowd style)."""
    from pycocotools import mask as coco_mask

    if compressed:
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    else:  # column-major run lengths starting with a run of zeros, as COCO stores crowd regions
        flat = mask.astype(np.uint8).ravel(order="F")
        changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
        counts = np.diff(np.concatenate([[0], changes])).tolist()
        segmentation = {"size": list(mask.shape), "counts": counts}
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": int(crowd),
        "segmentation": segmentation,
        "area": float(mask.sum()),
        "bbox": [0, 0, 1, 1],
    }


def write_coco(
    root: Path, split: str, images: list[dict], annotations: list[dict], missing_files: tuple[str, ...] = ()
) -> Path:
    """<root>/annotations/instances_<split>.json and JPEGs under <root>/<split>/ (but missing_files)."""
    for info in images:
        if info["file_name"] not in missing_files:
            write_jpeg(root / split / info["file_name"], info["height"], info["width"], seed=info["id"])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(
        json.dumps(
            {"info": {}, "images": images, "annotations": annotations, "categories": coco_categories()}
        )
    )
    return path


def coco_image(image_id: int, split: str, height: int, width: int) -> dict:
    return {
        "id": image_id,
        "file_name": f"COCO_{split}_{image_id:012d}.jpg",
        "height": height,
        "width": width,
    }
