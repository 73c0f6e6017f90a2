"""The embedded synthetic benchmark: PASCAL-5i in miniature, 20 shape families written in the VOC layout."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from fsslab.batch import IGNORE_INDEX
from fsslab.data.lists import MIN_AREA  # PFENet's rule: a class counts in an image only above it
from fsslab.data.synthetic_shapes import (
    CLASS_NAMES,
    SHAPE_FAMILIES,
    UNIT_AREAS,
    Pose,
    distractor_parts,
    rasterize,
)
from fsslab.data.synthetic_textures import background, finish, material, typical_material
from fsslab.errors import ConfigError, DatasetError, TargetExistsError

GENERATOR_VERSION = 1  # bump whenever the same config would produce different pixels
BENCHMARK_NAME = "fsslab-synthetic"
N_CLASSES = len(CLASS_NAMES)  # 20: folds of 5 like PASCAL-5i
IGNORE_LABEL = IGNORE_INDEX  # the VOC boundary band: the one ignore value of fsslab.batch
SPLITS = ("train", "val", "pretrain")  # "pretrain": the backbone's own corpus (n_pretrain images, may be 0)
_INCOMPLETE_MARKER = ".synthetic_incomplete"

# Colours for figures: index 0 background, 1..20 the classes (tab20-like), and the ignore colour.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)
IGNORE_COLOUR: tuple[int, int, int] = (255, 255, 255)


@dataclass
class SyntheticConfig:
    """Size and difficulty of the synthetic benchmark (all knobs are saved in meta.json).

    object_scale is the range of an object's linear size, sqrt(object area) / sqrt(image area), before
    occlusion; diversity (0..1) widens colour, texture, rotation, aspect, shear, deformation and shape
    parameters within each class; clutter (0..1) is the strength of background texture and sensor noise.
    """

    seed: int = 0
    n_train: int = 2000
    n_val: int = 500
    # images of a third split, "pretrain", that no episode uses: the corpus on which a backbone learns every
    # class before few-shot training (the synthetic ImageNet; configs/synthetic/backbone_pretrain_tiny.yaml)
    n_pretrain: int = 0
    min_size: int = 128
    max_size: int = 160
    # shape and clutter defaults calibrated for a 2-core CPU budget (a backbone learns them in minutes); the
    # presets (PRESETS, CALIBRATED) add class appearance and the pretraining split
    diversity: float = 0.4
    clutter: float = 0.2
    object_scale: tuple[float, float] = (0.28, 0.65)
    min_objects: int = 1
    max_objects: int = 2
    distractors: int = 0
    outline_prob: float = 0.1
    # probability that an object wears its class's typical colours and texture (synthetic_textures.
    # class_signature, jittered by diversity) instead of a random appearance: natural classes are not
    # appearance-free, and a support then tells more than shape, so more shots tell more
    class_appearance: float = 0.0
    # objects of one image belong to different classes (a query then holds the target among other classes,
    # so only the support tells which object to segment)
    distinct_classes: bool = False
    # "random": centres uniform in the image (objects often overlap); "spread": one object per cell of a
    # jittered grid, so several objects of similar size sit side by side and stay visible
    placement: str = "random"
    boundary_width: int = 2
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if problems:  # the range checks below would fail inside a comparison, naming no knob
            raise ConfigError("invalid SyntheticConfig: " + "; ".join(problems))
        self.object_scale = tuple(float(v) for v in self.object_scale)  # type: ignore[assignment]
        if min(self.n_train, self.n_val, self.n_pretrain) < 0:
            problems.append(
                f"n_train/n_val/n_pretrain must be >= 0, got {self.n_train}/{self.n_val}/{self.n_pretrain}"
            )
        if not 16 <= self.min_size <= self.max_size:
            problems.append(f"need 16 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        for name in ("diversity", "clutter", "outline_prob", "class_appearance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        lo_hi = self.object_scale
        if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
            problems.append(f"object_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {lo_hi}")
        if not 1 <= self.min_objects <= self.max_objects:
            problems.append(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.distractors < 0 or self.boundary_width < 0:
            problems.append("distractors and boundary_width must be >= 0")
        if self.max_objects + self.distractors > 64:
            problems.append("max_objects + distractors must be <= 64 (instance ids are uint8)")
        if self.placement not in ("random", "spread"):
            problems.append(f"placement must be 'random' or 'spread', got {self.placement!r}")
        if self.distinct_classes and self.max_objects > N_CLASSES:
            problems.append(f"distinct_classes allows at most {N_CLASSES} objects, got max_objects {self.max_objects}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if problems:
            raise ConfigError("invalid SyntheticConfig: " + "; ".join(problems))

    def _type_problems(self) -> list[str]:
        """Each knob against its default's type (ints for counts, numbers for fractions, a pair for ranges)."""
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        problems = []
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, bool):
                ok, what = isinstance(value, bool), "true or false"
            elif isinstance(default, int):
                ok, what = number(value) and float(value).is_integer(), "an integer"
            elif isinstance(default, float):
                ok, what = number(value), "a number"
            elif isinstance(default, str):
                ok, what = isinstance(value, str), "a string"
            else:  # object_scale: (lo, hi)
                ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(number(v) for v in value)
                what = "a pair of numbers [lo, hi]"
            if not ok:
                problems.append(f"{f.name} must be {what}, got {value!r}")
            elif isinstance(default, int) and not isinstance(default, bool):
                setattr(self, f.name, int(value))  # 300.0 from a YAML file counts 300 images
        return problems

    def split_sizes(self) -> list[tuple[str, int]]:
        """(split, number of images) of every written split; "pretrain" only when n_pretrain > 0."""
        sizes = [("train", self.n_train), ("val", self.n_val), ("pretrain", self.n_pretrain)]
        return [(split, n) for split, n in sizes if split != "pretrain" or n > 0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["object_scale"] = list(self.object_scale)  # JSON has no tuples; from_dict turns it back
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SyntheticConfig:
        """A named difficulty (a key of ``PRESETS``) with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown synthetic preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyntheticConfig:
        """Fields by name; ``preset: NAME`` starts from that preset (what the shipped configs write)."""
        if "preset" in values:
            rest = {k: v for k, v in values.items() if k != "preset"}
            return cls.preset(str(values["preset"]), **rest)
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(f"unknown SyntheticConfig keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**values)


# What every preset adds to the dataclass defaults: the 4,000-image pretraining split of the synthetic ImageNet,
# and class-typical appearance for 40% of the objects (presets other than "default" and "multi"; without it
# colour says nothing about the class and from-scratch backbones do not tell shapes apart in CPU-length runs).
CALIBRATED: dict[str, Any] = {"class_appearance": 0.4, "n_pretrain": 4000}
# Several objects of *different* classes side by side in every image, of similar size: a model that segments
# "the salient object" finds the target among others, so the support decides (README, "How the benchmark was
# calibrated", steps 4-5).
_SEVERAL_CLASSES: dict[str, Any] = {"min_objects": 2, "max_objects": 3, "distinct_classes": True,
                                    "placement": "spread", "object_scale": (0.33, 0.5)}
# Difficulty presets. "default" is the benchmark the shipped configs, zoo and notebooks use: 2-3 objects of
# different classes per image, 80% of them in their class's typical appearance (the other 20% in random colours:
# appearance hints, the shape decides for them), shape diversity 0.3, so that a CPU-length pretraining learns
# the classes (step 5 of the calibration). "multi" is the same layout with appearance 0.5 (step 4); "salient"
# the previous default (1-2 objects, other classes included: rewards a salient-object segmenter); "easy" nearly
# a pure shape-matching task; "medium" (1-4 objects, distractors, more appearance spread and clutter) and "hard"
# need far more training than a CPU run affords.
PRESETS: dict[str, dict[str, Any]] = {
    "easy": {**CALIBRATED, "diversity": 0.2, "clutter": 0.1, "max_objects": 1, "outline_prob": 0.0},
    "default": {**CALIBRATED, **_SEVERAL_CLASSES, "class_appearance": 0.8, "diversity": 0.3},
    "salient": dict(CALIBRATED),
    "medium": {**CALIBRATED, "diversity": 0.8, "clutter": 0.5, "max_objects": 4, "distractors": 2,
               "outline_prob": 0.3},
    "multi": {**CALIBRATED, **_SEVERAL_CLASSES, "class_appearance": 0.5},
    "hard": {**CALIBRATED, "diversity": 1.0, "clutter": 0.8, "max_objects": 4, "distractors": 4,
             "outline_prob": 0.5},
}


# Knobs added within a generator version, with the value that reproduces the earlier output exactly.
_ADDED_KNOB_DEFAULTS: dict[str, Any] = {"min_objects": 1, "class_appearance": 0.0, "n_pretrain": 0,
                                        "distinct_classes": False, "placement": "random"}


def fold_classes(fold: int) -> list[int]:
    """Novel classes (1-based) of a fold: 5*fold+1 .. 5*fold+5, as in PASCAL-5i."""
    if fold not in range(4):
        raise ConfigError(f"fold must be 0..3, got {fold}")
    return list(range(5 * fold + 1, 5 * fold + 6))


def sample_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # Seeded per image, so the output does not depend on the number of workers or on generation order.
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _object_pose(
    rng: np.random.Generator,
    config: SyntheticConfig,
    unit_area: float,
    shape: tuple[int, int],
    centre: tuple[float, float] | None = None,
) -> Pose:
    """A random pose; ``centre`` (fractions of width and height) replaces the uniform centre draw."""
    h, w = shape
    lo, hi = config.object_scale
    side = np.exp(rng.uniform(np.log(lo), np.log(hi)))  # log-uniform: as many small as large objects
    scale = side * np.sqrt(h * w / unit_area)
    d = config.diversity
    cx, cy = (rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)) if centre is None else centre
    return Pose(
        cx=cx * w,
        cy=cy * h,
        scale=scale,
        angle=rng.uniform(-np.pi, np.pi) * d,
        log_aspect=rng.uniform(-0.3, 0.3) * d,
        shear=rng.uniform(-0.25, 0.25) * d,
    )


def _spread_centres(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """``n`` centres (fractions of width, height): distinct cells of the smallest square grid holding n, each
    centre jittered by up to a sixth of a cell, in random order."""
    side = int(np.ceil(np.sqrt(n)))
    cells = rng.permutation(side * side)[:n]
    centres = []
    for cell in cells:
        row, col = divmod(int(cell), side)
        jitter = rng.uniform(-1 / 6, 1 / 6, 2)
        centres.append(((col + 0.5 + jitter[0]) / side, (row + 0.5 + jitter[1]) / side))
    return centres


def _surface(
    rng: np.random.Generator, config: SyntheticConfig, shape: tuple[int, int], class_id: int
) -> np.ndarray:
    # rng.random() is drawn only when class_appearance > 0, so class_appearance=0 reproduces earlier output
    if class_id and config.class_appearance > 0 and rng.random() < config.class_appearance:
        return typical_material(shape, rng, class_id, config.diversity)
    return material(shape, rng, config.diversity)


def _paint(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: SyntheticConfig,
    outlined: bool,
    class_id: int = 0,
) -> None:
    """Paint one object's surface into `image` where `mask` is set (outlined: two-tone rim and core)."""
    inside = mask.astype(bool)
    image[inside] = _surface(rng, config, image.shape[:2], class_id)[inside]
    if outlined:
        rim = max(2, round(0.12 * np.sqrt(inside.sum())))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
        core = cv2.erode(mask, kernel).astype(bool)
        image[core] = _surface(rng, config, image.shape[:2], class_id)[core]


def boundary_band(instances: np.ndarray, width: int) -> np.ndarray:
    """[H, W] bool band of about `width` px along every edge of a labelled instance (VOC's 255 outline)."""
    if width <= 0:
        return np.zeros(instances.shape, dtype=bool)
    kernel = np.ones((width + 1, width + 1), dtype=np.uint8)
    return cv2.dilate(instances, kernel) != cv2.erode(instances, kernel)


def render_sample(config: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label: ([H, W, 3] uint8 RGB, [H, W] uint8 with 0 bg, 1..20, 255 band)."""
    rng = _sample_rng(config.seed, split, index)
    shape = (
        int(rng.integers(config.min_size, config.max_size + 1)),
        int(rng.integers(config.min_size, config.max_size + 1)),
    )
    image = background(shape, rng, config.clutter)
    label = np.zeros(shape, dtype=np.uint8)
    instances = np.zeros(shape, dtype=np.uint8)  # 0: background or distractor, k: k-th object

    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    n_distractors = int(rng.integers(0, config.distractors + 1))
    # Distractors are interleaved with objects so that some of them occlude objects.
    if config.distinct_classes:
        classes = rng.choice(N_CLASSES, n_objects, replace=False) + 1
    else:
        classes = rng.integers(1, N_CLASSES + 1, n_objects)
    layers = [("object", int(c)) for c in classes]
    centres = iter(_spread_centres(rng, n_objects)) if config.placement == "spread" else None
    for _ in range(n_distractors):
        layers.insert(int(rng.integers(0, len(layers) + 1)), ("distractor", 0))

    d = config.diversity
    for layer_index, (kind, class_id) in enumerate(layers, start=1):
        if kind == "object":
            parts = SHAPE_FAMILIES[class_id - 1][1](lambda: float(rng.uniform(-1.0, 1.0)) * d)
            centre = next(centres) if centres is not None else None
            pose = _object_pose(rng, config, UNIT_AREAS[class_id - 1], shape, centre)
            mask = rasterize(parts, pose, shape, 0.12 * d, rng)
            _paint(image, mask, rng, config, bool(rng.random() < config.outline_prob), class_id)
            inside = mask.astype(bool)
            label[inside], instances[inside] = class_id, layer_index  # later layers occlude earlier ones
        else:
            pose = _object_pose(rng, config, 1.5, shape)
            mask = rasterize(distractor_parts(rng), pose, shape, 0.0, rng)
            _paint(image, mask, rng, config, outlined=False)
            inside = mask.astype(bool)
            label[inside], instances[inside] = 0, 0
    label[boundary_band(instances, config.boundary_width)] = IGNORE_LABEL
    return finish(image, rng, config.clutter), label


def _write_sample(task: tuple[str, dict[str, Any], str, int]) -> tuple[str, list[int]]:
    root, config_dict, split, index = task
    config = SyntheticConfig.from_dict(config_dict)
    image, label = render_sample(config, split, index)
    name = sample_name(split, index)
    ok_jpg, jpg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    ok_png, png = cv2.imencode(".png", label)
    if not (ok_jpg and ok_png):
        raise RuntimeError(f"cv2 could not encode synthetic sample {name}")
    (Path(root) / "JPEGImages" / f"{name}.jpg").write_bytes(jpg.tobytes())
    (Path(root) / "SegmentationClassAug" / f"{name}.png").write_bytes(png.tobytes())
    class_pixels = np.bincount(label.ravel(), minlength=256)[1 : N_CLASSES + 1]
    return name, class_pixels.tolist()


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; nested cv2 threads only contend


def _check_target(root: Path) -> None:
    """Refuse to write into a non-empty directory that is not (an interrupted) synthetic benchmark."""
    if root.exists() and not root.is_dir():
        raise TargetExistsError(f"synthetic root {root} exists and is not a directory; choose a directory path")
    ours = (root / "meta.json").exists() or (root / _INCOMPLETE_MARKER).exists()
    if root.is_dir() and not ours and any(root.iterdir()):
        raise TargetExistsError(
            f"{root} is not empty and holds no synthetic benchmark (no meta.json); choose an empty or new "
            "directory so that nothing else is overwritten"
        )


def generate_synthetic(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the benchmark to `root` in the VOC layout; returns a summary with per-class image counts.

    Layout: JPEGImages/<name>.jpg, SegmentationClassAug/<name>.png, lists/{train,val[,pretrain]}.txt,
    meta.json.
    workers: processes to use (default: all cores, at most 8; 0 or 1 runs in this process).
    """
    config = config or SyntheticConfig()
    root = Path(root)
    _check_target(root)
    for sub in ("JPEGImages", "SegmentationClassAug", "lists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / _INCOMPLETE_MARKER).write_text("generation started; meta.json is written last\n")
    (root / "meta.json").unlink(missing_ok=True)
    _remove_derived_data(root)

    start = time.perf_counter()
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    config_dict = config.to_dict()
    counts: dict[str, dict[str, list[int]]] = {}
    for split, n in config.split_sizes():
        tasks = [(str(root), config_dict, split, i) for i in range(n)]
        results = _run_tasks(tasks, workers, desc=f"synthetic {split}", progress=progress)
        (root / "lists" / f"{split}.txt").write_text(
            "".join(f"JPEGImages/{name}.jpg SegmentationClassAug/{name}.png\n" for name, _ in results)
        )
        pixels = np.asarray([p for _, p in results], dtype=np.int64).reshape(n, N_CLASSES)
        counts[split] = {
            "images": (pixels > 0).sum(0).tolist(),
            "qualifying": (pixels >= MIN_AREA).sum(0).tolist(),
        }
    seconds = time.perf_counter() - start

    meta = {
        "benchmark": BENCHMARK_NAME,
        "version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": config_dict,
        "class_names": list(CLASS_NAMES),
        "palette": [list(c) for c in PALETTE],
        "ignore_colour": list(IGNORE_COLOUR),
        "folds": {str(f): fold_classes(f) for f in range(4)},
        "min_area": MIN_AREA,
        "class_counts": counts,
        "generation_seconds": round(seconds, 2),
    }
    _remove_stale_samples(root, config)
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    (root / _INCOMPLETE_MARKER).unlink()
    summary = dict(meta, root=str(root), warnings=_coverage_warnings(counts))
    if progress:
        for warning in summary["warnings"]:
            tqdm.write(f"warning: {warning}")
        tqdm.write(
            f"synthetic benchmark: {config.n_train} train + {config.n_val} val"
            + (f" + {config.n_pretrain} pretrain" if config.n_pretrain else "")
            + f" images in {seconds:.1f} s "
            f"-> {root}"
        )
    return summary


def _remove_derived_data(root: Path) -> None:
    """Drop caches built from a previous benchmark in this directory: the fold-index cache is keyed on the
    list text, which does not change with the seed, so a stale cache would silently describe other labels."""
    for derived in ("fsslab_index", "base_annotation"):
        shutil.rmtree(root / derived, ignore_errors=True)


def _remove_stale_samples(root: Path, config: SyntheticConfig) -> None:
    """Delete images/labels left by an earlier, larger generation into the same directory."""
    keep = {
        sample_name(split, i) for split, n in config.split_sizes() for i in range(n)
    }
    for sub, suffix in (("JPEGImages", ".jpg"), ("SegmentationClassAug", ".png")):
        for path in (root / sub).glob(f"*{suffix}"):
            if path.stem not in keep:
                path.unlink()


def _run_tasks(tasks: list, workers: int, desc: str, progress: bool) -> list[tuple[str, list[int]]]:
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, unit="img")
    if workers <= 1 or len(tasks) < 64:
        results = []
        for task in tasks:
            results.append(_write_sample(task))
            bar.update()
    else:
        # never fork: a parent that already ran cv2/OpenMP/torch threads can deadlock its forked
        # children (seen in the test suite); forkserver children start from a clean process.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers, initializer=_init_worker) as pool:
            results = []
            for result in pool.imap(_write_sample, tasks, chunksize=16):  # imap keeps the task order
                results.append(result)
                bar.update()
    bar.close()
    return results


def _coverage_warnings(counts: dict[str, dict[str, list[int]]], minimum: int = 6) -> list[str]:
    """Classes with fewer qualifying images than a 5-shot episode needs (5 supports + 1 query)."""
    out = []
    for split, per in counts.items():
        low = [f"{CLASS_NAMES[c]}={n}" for c, n in enumerate(per["qualifying"]) if n < minimum]
        if low:
            out.append(
                f"{split}: classes with < {minimum} images above the {MIN_AREA}-px rule: {', '.join(low)}"
            )
    return out


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """meta.json of a generated benchmark, with a clear error when it is missing or unreadable."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a (complete) synthetic benchmark")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); delete the directory and regenerate") from err


def write_synthetic_if_missing(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate the benchmark unless `root` already holds one made with the same config and version.

    Idempotent, for notebooks and tests. A complete benchmark made with another config is an error (naming
    the differing keys) rather than silently reused or overwritten; an interrupted run is regenerated.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    if (root / "meta.json").exists():
        meta = read_meta(root)
        wanted = config.to_dict()
        # a knob added after the benchmark was written had its default's effect (same generator version)
        on_disk = {**_ADDED_KNOB_DEFAULTS, **meta.get("config", {})}
        differences = [
            f"{k}: on disk {on_disk.get(k)!r}, requested {v!r}" for k, v in wanted.items() if on_disk.get(k) != v
        ]
        if meta.get("version") != GENERATOR_VERSION:
            differences.append(
                f"generator version: on disk {meta.get('version')}, current {GENERATOR_VERSION}"
            )
        if differences:
            raise DatasetError(
                f"{root} holds a synthetic benchmark with a different configuration "
                f"({'; '.join(differences)}); use another directory or delete this one"
            )
        for split, n in config.split_sizes():
            list_path = root / "lists" / f"{split}.txt"
            if not list_path.is_file() or len(list_path.read_text().splitlines()) != n:
                raise DatasetError(
                    f"{list_path} is missing or does not list {n} images; delete {root} and regenerate"
                )
        return dict(meta, root=str(root), warnings=_coverage_warnings(meta["class_counts"]))
    return generate_synthetic(root, config, progress=progress, workers=workers)
