"""COCO 2014 preparation: instance annotations (polygons, RLE) into semantic label PNGs with values 1..80."""

from __future__ import annotations

import json
import math
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fsslab.batch import IGNORE_INDEX
from fsslab.data.io import read_header
from fsslab.data.prep.coco_checks import (
    as_integer,
    check_categories,
    check_images,
    clean_polygons,
    rle_counts,
)
from fsslab.data.prep.common import (
    Outcome,
    PrepError,
    PrepSummary,
    place_image,
    require_dir,
    require_file,
    run_items,
    write_label_png,
    write_list,
)

CROWD_MODES = ("ignore", "class", "background")


def load_instances(path: Path) -> dict[str, Any]:
    """An instances JSON, checked for the keys the conversion needs and for well-formed category and image
    records (prep_coco_checks); errors name the file and the record."""
    require_file(path, "COCO annotation file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrepError(f"{path}: not valid JSON ({err}); the file is corrupt or truncated") from err
    if not isinstance(data, dict):
        raise PrepError(f"{path}: the top level is a JSON {type(data).__name__}, not an object with 'images', "
                        "'annotations' and 'categories'; expected a COCO instances file")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise PrepError(f"{path}: missing or malformed key(s) {missing}; expected a COCO instances file")
    check_categories(data["categories"], path)
    data["images"] = check_images(data["images"], path)
    return data


def category_index(categories: list[dict]) -> dict[int, int]:
    """Sparse COCO category id -> dense class index 1..N in increasing id order (the 80 things -> 1..80).

    The records were checked by load_instances (each has an integer id)."""
    ids = sorted(int(c["id"]) for c in categories)
    if len(ids) != len(set(ids)) or not 0 < len(ids) < IGNORE_INDEX:
        raise PrepError(f"expected 1..254 distinct category ids, got {len(ids)} ({len(set(ids))} distinct)")
    return {cid: i + 1 for i, cid in enumerate(ids)}


def _annotation_mask(segmentation: Any, height: int, width: int) -> tuple[np.ndarray, list[str]]:
    """[H, W] bool mask of one annotation (polygon list, uncompressed or compressed RLE) and the problems of
    the polygons dropped from it. Everything pycocotools sees was validated first (prep_coco_checks): its C
    code crashes or allocates without bound on NaN, huge coordinates or malformed RLE."""
    from pycocotools import mask as coco_mask

    problems: list[str] = []
    if isinstance(segmentation, list):
        polygons, problems = clean_polygons(segmentation, height, width)
        if not polygons:
            raise ValueError("no usable polygon: " + "; ".join(problems) if problems else "no polygon")
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        counts = rle_counts(segmentation, height, width)
        rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    with warnings.catch_warnings():
        # pycocotools < 2.0.9 trips numpy 2's copy-keyword deprecation inside decode; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool), problems


def coco_semantic_label(
    annotations: list[dict], height: int, width: int, index_of: dict[int, int], crowd: str = "ignore"
) -> tuple[np.ndarray, list[str]]:
    """Semantic label [H, W] uint8 of one image (0 bg, 1..N, 255 crowd) and the problems met.

    Overlaps: crowd regions are painted first (255 with crowd="ignore", their class with "class", nothing
    with "background"); instances are then painted from the largest to the smallest area, so a small
    object lying on a large one (a cup on a table) keeps its pixels. Ties keep annotation-id order.
    """
    if crowd not in CROWD_MODES:
        raise ValueError(f"crowd must be one of {CROWD_MODES}, got {crowd!r}")
    label = np.zeros((height, width), dtype=np.uint8)
    problems: list[str] = []

    def area(ann: dict) -> float:  # a malformed area only changes the painting order, not the pixels
        value = ann.get("area", 0.0)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0

    def order(ann: dict) -> tuple:
        return (0 if ann.get("iscrowd", 0) else 1, -area(ann), str(ann.get("id", "")).zfill(20))

    for ann in sorted(annotations, key=order):
        is_crowd = bool(ann.get("iscrowd", 0))
        if is_crowd and crowd == "background":
            continue
        category = as_integer(ann.get("category_id"))
        if category is None:
            problems.append(f"annotation {ann.get('id')}: category_id {ann.get('category_id')!r} is not an integer")
            continue
        class_index = index_of.get(category)
        if class_index is None:
            problems.append(f"annotation {ann.get('id')}: unknown category_id {category}")
            continue
        try:
            mask, dropped = _annotation_mask(ann.get("segmentation"), height, width)
        except (ValueError, TypeError, KeyError) as err:
            problems.append(f"annotation {ann.get('id')}: bad segmentation ({err})")
            continue
        problems.extend(f"annotation {ann.get('id')}: {problem} (dropped; the rest kept)" for problem in dropped)
        label[mask] = IGNORE_INDEX if is_crowd and crowd == "ignore" else class_index
    return label, problems


def _convert_image(
    item: tuple[str, dict, list[dict], str, str], index_of: dict[int, int], crowd: str, overwrite: bool
) -> Outcome:
    name, image_info, annotations, out_png, image_path = item
    out = Path(out_png)
    if out.exists() and not overwrite:
        return "existing", name, "", []
    height, width = int(image_info["height"]), int(image_info["width"])
    try:  # the JSON's size is what the polygons are checked against; the image file must agree with it
        header = read_header(image_path)
    except (OSError, ValueError) as err:
        return "skipped", name, f"unreadable image ({err})", []
    if (height, width) not in (header.shape, header.stored_shape):  # as displayed (EXIF) or as stored
        return "skipped", name, "image file size differs from the JSON's height x width", []
    label, problems = coco_semantic_label(annotations, height, width, index_of, crowd)
    write_label_png(label, out)
    return "written", name, "", problems


def _list_name(split: str) -> str:
    for prefix in ("train", "val", "test"):
        if split.startswith(prefix):
            return prefix
    return split


def prepare_coco(
    coco_root: str | os.PathLike,
    out_root: str | os.PathLike | None = None,
    splits: tuple[str, ...] = ("train2014", "val2014"),
    crowd: str = "ignore",
    keep_empty: bool = False,
    images: str = "symlink",
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    strict: bool = False,
) -> PrepSummary:
    """Write `<out_root>/SegmentationClass/<split>/<name>.png` (0 bg, 1..80, 255 crowd) and `lists/*.txt`.

    Reads `<coco_root>/annotations/instances_<split>.json` and images from `<coco_root>/<split>/`.
    Images without any annotation are not listed (as in the references' 82,081 / 40,137-image lists)
    unless `keep_empty`; they are counted in the summary. Bad annotations are dropped and reported.
    """
    if crowd not in CROWD_MODES:
        raise ValueError(f"crowd must be one of {CROWD_MODES}, got {crowd!r}")
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError as err:
        raise ImportError("COCO preparation needs pycocotools: pip install 'fsslab[coco]'") from err
    root = require_dir(Path(coco_root), "COCO root")
    out = Path(out_root) if out_root is not None else root
    summary = PrepSummary(f"coco ({', '.join(splits)}; crowd={crowd})", str(out))
    index_of: dict[int, int] | None = None
    for split in splits:
        data = load_instances(root / "annotations" / f"instances_{split}.json")
        image_dir = require_dir(root / split, f"COCO {split} image directory")
        split_index = category_index(data["categories"])
        if index_of is not None and split_index != index_of:
            raise PrepError(f"instances_{split}.json has other categories than the previous split")
        index_of = split_index
        by_image: dict[int, list[dict]] = {info["id"]: [] for info in data["images"]}
        for position, ann in enumerate(data["annotations"]):
            image_id = as_integer(ann.get("image_id")) if isinstance(ann, dict) else None
            if image_id is None:
                summary.skip(f"instances_{split}.json: annotation record without an integer image_id",
                             f"annotations[{position}] = {str(ann)[:80]}")
            elif image_id not in by_image:
                summary.skip(f"{split}: annotation of an image not in the JSON", str(ann.get("id")))
            else:
                by_image[image_id].append(ann)
        (out / "SegmentationClass" / split).mkdir(parents=True, exist_ok=True)
        if out.resolve() != root.resolve():
            (out / split).mkdir(parents=True, exist_ok=True)
        items = []
        for info in sorted(data["images"], key=lambda i: i["file_name"]):
            name, anns = Path(info["file_name"]).stem, by_image[info["id"]]
            if not (image_dir / info["file_name"]).is_file():
                summary.skip(f"{split}: image file missing in {image_dir}", info["file_name"])
            elif not anns and not keep_empty:
                summary.skip(
                    f"{split}: image without annotations (not listed; keep_empty=True lists it)", name
                )
            else:
                items.append((name, info, anns, str(out / "SegmentationClass" / split / f"{name}.png"),
                              str(image_dir / info["file_name"])))
        if strict and summary.skipped:
            reason, names = next(iter(summary.skipped.items()))
            raise PrepError(f"{names[0]}: {reason}")
        convert = partial(_convert_image, index_of=index_of, crowd=crowd, overwrite=overwrite)
        available = run_items(convert, items, workers, f"COCO {split}", progress, summary, strict)
        listed = [
            (f"{split}/{info['file_name']}", f"SegmentationClass/{split}/{name}.png")
            for name, info, *_ in items
            if name in available
        ]
        for image_rel, _ in listed:
            place_image(root / image_rel, out / image_rel, images)
        summary.lists[f"lists/{_list_name(split)}.txt"] = write_list(
            out / "lists" / f"{_list_name(split)}.txt", listed
        )
    summary.notes.append(
        "category ids mapped to 1..N in increasing id order; instances painted largest first"
    )
    (out / "lists").mkdir(parents=True, exist_ok=True)
    summary.save(out / "lists" / "prep_summary_coco.json")
    return summary
