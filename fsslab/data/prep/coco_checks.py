"""Validation of COCO instance records before anything reaches pycocotools' C code.

pycocotools trusts its input: a NaN coordinate segfaults its polygon rasteriser, coordinates of 1e9 make it
walk (and allocate) billions of edge points, and a malformed compressed RLE string is decoded past its end.
So every record is checked here first. A malformed category or image record stops the preparation with one
line naming the file and the record (the class mapping or the label size would be wrong); a bad annotation or
polygon is dropped and reported by the caller, and the image keeps its other annotations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fsslab.errors import PrepError

# Larger than any COCO image (640 px) by far, small enough that a label of this size fits in memory:
# a corrupt `height` of 1e9 must fail here, not in an allocation of 1e18 bytes.
MAX_SIDE = 20_000
# Polygon vertices up to one image size outside the image are clipped to it (annotations that bleed over the
# border are common); farther out, the polygon is garbage and is dropped.
OUTSIDE_MARGIN = 1.0


def _show(record: Any, limit: int = 120) -> str:
    text = repr(record)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_integer(value: Any) -> int | None:
    """``value`` as an int when it is an integral number (JSON may write 480.0), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def record_int(record: Any, key: str, where: str, path: Path) -> int:
    """``record[key]`` as an int, or PrepError naming the file, the record and what is wrong with it."""
    if not isinstance(record, dict):
        raise PrepError(f"{path}: {where} is not a JSON object: {_show(record)}")
    if key not in record:
        raise PrepError(f"{path}: {where} has no '{key}': {_show(record)}")
    value = as_integer(record[key])
    if value is None:
        raise PrepError(f"{path}: {where} has '{key}': {record[key]!r}, not an integer: {_show(record)}")
    return value


def check_categories(categories: list[Any], path: Path) -> list[int]:
    """The category ids, each checked (an object with an integer 'id')."""
    return [record_int(c, "id", f"categories[{i}]", path) for i, c in enumerate(categories)]


def check_images(images: list[Any], path: Path) -> list[dict[str, Any]]:
    """The image records with integer id, height and width (1..MAX_SIDE) and a file name, or PrepError."""
    out = []
    for i, info in enumerate(images):
        where = f"images[{i}]"
        image_id = record_int(info, "id", where, path)
        where = f"images[{i}] (id {image_id})"
        name = info.get("file_name")
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise PrepError(f"{path}: {where} needs a plain 'file_name', got {name!r}")
        height, width = (record_int(info, key, where, path) for key in ("height", "width"))
        if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise PrepError(f"{path}: {where} ({name}) has an impossible size {height}x{width} (HxW); "
                            f"expected 1..{MAX_SIDE} pixels a side")
        out.append({**info, "id": image_id, "height": height, "width": width})
    return out


def clip_polygon(xy: np.ndarray, width: float, height: float) -> np.ndarray:
    """The part of polygon ``xy`` [N,2] (x, y) inside [0, width] x [0, height] (Sutherland-Hodgman).

    Exact for the pixels inside the image, unlike clamping each vertex, which moves the edges that cross the
    border.
    """
    for axis, bound, below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        if len(xy) == 0:
            break
        kept: list[np.ndarray] = []
        previous = xy[-1]
        for current in xy:
            inside_now = current[axis] <= bound if below else current[axis] >= bound
            inside_before = previous[axis] <= bound if below else previous[axis] >= bound
            if inside_now != inside_before:  # the edge crosses the border: keep the crossing point
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                kept.append(previous + t * (current - previous))
            if inside_now:
                kept.append(current)
            previous = current
        xy = np.asarray(kept, dtype=np.float64).reshape(-1, 2)
    return xy


def _area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clean_polygons(segmentation: list[Any], height: int, width: int) -> tuple[list[list[float]], list[str]]:
    """(polygons safe to rasterise, one problem per polygon dropped).

    Dropped: not a list of numbers, fewer than 3 points or an odd count (pycocotools would read 4 numbers as
    a box), NaN/inf, vertices farther than OUTSIDE_MARGIN image sizes outside the image, nothing left inside
    the image after clipping, zero area. Vertices moderately outside are clipped to the image.
    """
    polygons: list[list[float]] = []
    problems: list[str] = []
    for i, polygon in enumerate(segmentation):
        label = f"polygon {i}"
        if not isinstance(polygon, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon
        ):
            problems.append(f"{label} is not a list of numbers: {_show(polygon, 60)}")
            continue
        if len(polygon) < 6 or len(polygon) % 2:
            problems.append(f"{label} has {len(polygon)} coordinates; needs an even count of at least 6")
            continue
        if not all(math.isfinite(v) for v in polygon):
            problems.append(f"{label} has NaN or infinite coordinates")
            continue
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        lo = -OUTSIDE_MARGIN * np.array([width, height])
        hi = (1 + OUTSIDE_MARGIN) * np.array([width, height])
        if (xy < lo).any() or (xy > hi).any():
            far = xy[((xy < lo) | (xy > hi)).any(1)][0]
            problems.append(f"{label} has a vertex ({far[0]:.6g}, {far[1]:.6g}) far outside the "
                            f"{width}x{height} (WxH) image")
            continue
        if (xy < 0).any() or (xy[:, 0] > width).any() or (xy[:, 1] > height).any():
            xy = clip_polygon(xy, float(width), float(height))
        if len(xy) < 3 or _area(xy) == 0.0:
            problems.append(f"{label} has no area inside the image (degenerate or outside)")
            continue
        polygons.append(xy.ravel().tolist())
    return polygons, problems


def _decode_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (maskApi.c's rleFrString), checked as it goes."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("compressed RLE string ends inside a number")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"compressed RLE string has an invalid character {text[position]!r}")
            value |= (code & 0x1F) << 5 * shift
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << 5 * shift
            if shift > 12:
                raise ValueError("compressed RLE string has a run length beyond 60 bits")
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_counts(segmentation: dict[str, Any], height: int, width: int) -> list[int]:
    """The run lengths of an RLE segmentation (uncompressed list or compressed string), checked to be
    non-negative and to cover exactly height*width pixels; ValueError names the problem."""
    size = segmentation["size"]
    if not isinstance(size, (list, tuple)) or [as_integer(v) for v in size] != [height, width]:
        raise ValueError(f"RLE size {_show(size, 40)} differs from the image's {[height, width]}")
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE (used for crowds)
        values = [as_integer(v) for v in counts]
        if any(v is None for v in values):
            raise ValueError("uncompressed RLE counts are not all integers")
    elif isinstance(counts, (str, bytes)):
        try:
            text = counts.decode("ascii") if isinstance(counts, bytes) else counts
        except UnicodeDecodeError:
            raise ValueError("compressed RLE counts are not ASCII") from None
        values = _decode_counts(text)
    else:
        raise TypeError(f"RLE counts of type {type(counts).__name__}")
    if any(v < 0 for v in values):  # type: ignore[operator]
        raise ValueError("RLE has negative run lengths")
    if sum(values) != height * width:  # type: ignore[arg-type]
        raise ValueError("RLE counts do not add up to height*width")
    return values  # type: ignore[return-value]


__all__ = ["MAX_SIDE", "OUTSIDE_MARGIN", "as_integer", "check_categories", "check_images", "clean_polygons",
           "clip_polygon", "record_int", "rle_counts"]
