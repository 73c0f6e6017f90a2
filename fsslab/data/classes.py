"""Class names, palettes and fold splits of PASCAL-5i, COCO-20i and the synthetic benchmark."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fsslab.errors import ConfigError, DatasetError

PASCAL_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

# COCO's 80 "things" in category-id order; their sparse ids map to 1..80 in this order.
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58,
    59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88,
    89, 90,
)  # fmt: skip
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COCO_ID_TO_INDEX: dict[int, int] = {cid: i + 1 for i, cid in enumerate(COCO_CATEGORY_IDS)}

FOLD_CONVENTIONS = ("pascal", "interleaved", "contiguous")


def voc_palette(n: int) -> list[tuple[int, int, int]]:
    """The VOC colour map (bit-interleaved), for indices 0..n-1."""
    palette = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


def novel_classes_for(n_classes: int, n_folds: int, fold: int, convention: str) -> list[int]:
    """Novel (test) classes of a fold, 1-based and sorted.

    pascal / contiguous: fold i owns the block i*m+1 .. i*m+m (m = n_classes / n_folds);
    interleaved (COCO-20i of PFENet `use_split_coco`, BAM, HDMNet, AMFormer, HSNet): {n_folds*k + i + 1}.
    """
    if not 0 <= fold < n_folds:
        raise ConfigError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    if n_classes % n_folds:
        raise ValueError(f"{n_classes} classes cannot be split into {n_folds} equal folds")
    per_fold = n_classes // n_folds
    if convention in ("pascal", "contiguous"):
        return list(range(fold * per_fold + 1, fold * per_fold + per_fold + 1))
    if convention == "interleaved":
        return list(range(fold + 1, n_classes + 1, n_folds))
    raise ConfigError(f"unknown fold convention {convention!r}; expected one of {FOLD_CONVENTIONS}")


@dataclass(frozen=True)
class Benchmark:
    """A few-shot benchmark: its classes (1-based ids) and how they split into folds."""

    name: str
    n_classes: int
    n_folds: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    fold_convention: str = "pascal"

    def __post_init__(self) -> None:
        if len(self.class_names) != self.n_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.n_classes} classes")
        if not self.palette:
            # index 0 is background, so classes get colours 1..n
            object.__setattr__(self, "palette", tuple(voc_palette(self.n_classes + 1)))

    def novel_classes(self, fold: int) -> list[int]:
        return novel_classes_for(self.n_classes, self.n_folds, fold, self.fold_convention)

    def base_classes(self, fold: int) -> list[int]:
        novel = set(self.novel_classes(fold))
        return [c for c in range(1, self.n_classes + 1) if c not in novel]

    def class_name(self, class_id: int) -> str:
        if not 1 <= class_id <= self.n_classes:
            raise ValueError(f"{self.name}: class id {class_id} outside 1..{self.n_classes}")
        return self.class_names[class_id - 1]


PASCAL = Benchmark("pascal", 20, 4, PASCAL_CLASSES, fold_convention="pascal")


def coco_benchmark(folds: str = "interleaved") -> Benchmark:
    """COCO-20i with the `interleaved` (FWB / PFENet use_split_coco) or `contiguous` (PANet) folds."""
    if folds not in ("interleaved", "contiguous"):
        raise ConfigError(f"COCO folds must be 'interleaved' or 'contiguous', got {folds!r}")
    return Benchmark(f"coco_{folds}", 80, 4, COCO_CLASSES, fold_convention=folds)


def synthetic_benchmark(root: str | Path | None = None) -> Benchmark:
    """The synthetic benchmark: 20 classes, 4 folds of 5; names and palette from `<root>/meta.json`."""
    names = tuple(f"shape{i:02d}" for i in range(1, 21))
    palette: tuple = ()
    meta_path = Path(root) / "meta.json" if root is not None else None
    if meta_path is not None and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(f"{meta_path}: not valid JSON ({err})") from err
        if "class_names" in meta:
            names = tuple(str(n) for n in meta["class_names"])
            if len(names) != 20:
                raise DatasetError(f"{meta_path}: 'class_names' has {len(names)} entries, expected 20")
        if "palette" in meta:
            palette = tuple(tuple(int(v) for v in rgb) for rgb in meta["palette"])
            # the palette may or may not include the background colour; store it with background first
            if len(palette) == 20:
                palette = ((0, 0, 0),) + palette
            if len(palette) != 21:
                raise DatasetError(f"{meta_path}: 'palette' has {len(palette)} colours, expected 20 or 21")
    return Benchmark("synthetic", 20, 4, names, palette=palette, fold_convention="pascal")


def get_benchmark(name: str, root: str | Path | None = None, coco_folds: str = "interleaved") -> Benchmark:
    """Look a benchmark up by name: "pascal", "coco" (with `coco_folds`), "coco_interleaved",
    "coco_contiguous" or "synthetic" (reads `<root>/meta.json` when present)."""
    key = name.lower()
    if key == "pascal":
        return PASCAL
    if key == "coco":
        return coco_benchmark(coco_folds)
    if key in ("coco_interleaved", "coco_contiguous"):
        return coco_benchmark(key.split("_", 1)[1])
    if key == "synthetic":
        return synthetic_benchmark(root)
    raise ConfigError(f"unknown benchmark {name!r}; expected pascal, coco, coco_interleaved, coco_contiguous, synthetic")
