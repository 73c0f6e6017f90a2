"""Rendering one synthetic image and its label, deterministically from (seed, split, index)."""

from __future__ import annotations

import cv2
import numpy as np

from fsslab.batch import IGNORE_INDEX
from fsslab.data.synthetic.config import N_CLASSES, SPLITS, SyntheticConfig
from fsslab.data.synthetic.crossdomain import CROSSDOMAIN_FAMILIES, CROSSDOMAIN_UNIT_AREAS, mosaic_background
from fsslab.data.synthetic.procedural import procedural_parts, procedural_unit_area
from fsslab.data.synthetic.shapes import SHAPE_FAMILIES, UNIT_AREAS, Pose, distractor_parts, rasterize
from fsslab.data.synthetic.textures import background, finish, material, random_surface, typical_material

# the 20 classes' (family functions, unit areas) of each `families` knob
_FAMILIES = {"benchmark": (tuple(f for _, f in SHAPE_FAMILIES), UNIT_AREAS),
             "crossdomain": (tuple(f for _, f in CROSSDOMAIN_FAMILIES), CROSSDOMAIN_UNIT_AREAS)}

IGNORE_LABEL = IGNORE_INDEX  # the VOC boundary band: the one ignore value of fsslab.batch


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
    if config.surface == "random":  # appearance independent of the class (the cross-domain preset)
        return random_surface(shape, rng)
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


def _covered(instances: np.ndarray, mask: np.ndarray, below: int, drawn_areas: dict[int, int]
             ) -> tuple[float, float]:
    """(fraction of object ``below``'s visible pixels that ``mask`` covers, the largest such fraction over the
    other objects), each counted against that object's own area as drawn (before any occlusion)."""
    cover_below, cover_other = 0.0, 0.0
    for k in range(1, int(instances.max()) + 1):
        drawn = drawn_areas.get(k, 0)
        if not drawn:
            continue
        hidden = drawn - int((instances == k).sum()) + int(((instances == k) & mask).sum())
        if k == below:
            cover_below = hidden / drawn
        else:
            cover_other = max(cover_other, hidden / drawn)
    return cover_below, cover_other


_OVERLAP_TRIES = 40


def _overlapping_mask(rng: np.random.Generator, config: SyntheticConfig, parts: list, unit_area: float,
                      shape: tuple[int, int], instances: np.ndarray, layer: int, drawn_areas: dict[int, int]
                      ) -> np.ndarray:
    """The mask of object ``layer`` (1-based) under placement "overlap": the first object near the image centre;
    each later one over the previous one, covering ``config.occlusion`` of it and at most its upper bound of any
    other object. Of ``_OVERLAP_TRIES`` candidate poses the first that fits is taken (else the nearest miss).
    ``drawn_areas``: each object's area as drawn (layer -> pixels), filled here."""
    h, w = shape
    d = config.diversity
    if layer == 1:
        pose = _object_pose(rng, config, unit_area, shape, tuple(rng.uniform(0.35, 0.65, 2)))
        mask = rasterize(parts, pose, shape, 0.12 * d, rng)
        drawn_areas[layer] = int(mask.sum())
        return mask
    lo, hi = config.occlusion
    below = instances == layer - 1
    ys, xs = np.nonzero(below)
    anchor = (xs.mean() / w, ys.mean() / h) if len(xs) else (0.5, 0.5)
    reach = np.sqrt(max(1, drawn_areas.get(layer - 1, 1)) / (h * w))  # the lower object's linear size
    best, best_miss = None, np.inf
    for _ in range(_OVERLAP_TRIES):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.1) * reach
        centre = (float(np.clip(anchor[0] + dist * np.cos(angle), 0.15, 0.85)),
                  float(np.clip(anchor[1] + dist * np.sin(angle), 0.15, 0.85)))
        pose = _object_pose(rng, config, unit_area, shape, centre)
        mask = rasterize(parts, pose, shape, 0.12 * d, rng)
        cover, other = _covered(instances, mask.astype(bool), layer - 1, drawn_areas)
        miss = max(lo - cover, cover - hi, 0.0) + max(other - hi, 0.0)
        if miss < best_miss:
            best, best_miss = mask, miss
        if miss == 0.0:
            break
    drawn_areas[layer] = int(best.sum())
    return best


def boundary_band(instances: np.ndarray, width: int) -> np.ndarray:
    """[H, W] bool band of about `width` px along every edge of a labelled instance (VOC's 255 outline)."""
    if width <= 0:
        return np.zeros(instances.shape, dtype=bool)
    kernel = np.ones((width + 1, width + 1), dtype=np.uint8)
    return cv2.dilate(instances, kernel) != cv2.erode(instances, kernel)


def render_sample(config: SyntheticConfig, split: str, index: int, occlusion: dict | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label: ([H, W, 3] uint8 RGB, [H, W] uint8 with 0 bg, 1..20, 255 band; a procedural
    pretrain split, ``pretrain_classes`` N > 0, labels its classes 1..N). ``occlusion``, a dict, receives under
    placement "overlap" each object's (layer's) drawn and visible pixels: {"drawn": {k: n}, "visible": {k: n}}."""
    rng = _sample_rng(config.seed, split, index)
    shape = (
        int(rng.integers(config.min_size, config.max_size + 1)),
        int(rng.integers(config.min_size, config.max_size + 1)),
    )
    image = (background if config.background == "default" else mosaic_background)(shape, rng, config.clutter)
    label = np.zeros(shape, dtype=np.uint8)
    instances = np.zeros(shape, dtype=np.uint8)  # 0: background or distractor, k: k-th object

    n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    n_distractors = int(rng.integers(0, config.distractors + 1))
    # Distractors are interleaved with objects so that some of them occlude objects.
    n_classes = config.label_classes(split)
    procedural = split == "pretrain" and config.pretrain_classes > 0
    if config.distinct_classes:
        classes = rng.choice(n_classes, n_objects, replace=False) + 1
    else:
        classes = rng.integers(1, n_classes + 1, n_objects)
    layers = [("object", int(c)) for c in classes]
    centres = iter(_spread_centres(rng, n_objects)) if config.placement == "spread" else None
    families, unit_areas = _FAMILIES[config.families]
    drawn_areas: dict[int, int] = {}  # placement "overlap": each object's area as drawn
    for _ in range(n_distractors):
        layers.insert(int(rng.integers(0, len(layers) + 1)), ("distractor", 0))

    d = config.diversity
    for layer_index, (kind, class_id) in enumerate(layers, start=1):
        if kind == "object":
            def jitter() -> float:
                return float(rng.uniform(-1.0, 1.0)) * d

            if procedural:  # appearance ids after the benchmark's: no procedural class wears a benchmark class's look
                parts, unit_area = procedural_parts(class_id, jitter), procedural_unit_area(class_id)
                appearance_id = N_CLASSES + class_id
            else:
                parts, unit_area = families[class_id - 1](jitter), unit_areas[class_id - 1]
                appearance_id = class_id
            if config.placement == "overlap":
                mask = _overlapping_mask(rng, config, parts, unit_area, shape, instances, layer_index,
                                         drawn_areas)
            else:
                centre = next(centres) if centres is not None else None
                pose = _object_pose(rng, config, unit_area, shape, centre)
                mask = rasterize(parts, pose, shape, 0.12 * d, rng)
            _paint(image, mask, rng, config, bool(rng.random() < config.outline_prob), appearance_id)
            inside = mask.astype(bool)
            label[inside], instances[inside] = class_id, layer_index  # later layers occlude earlier ones
        else:
            pose = _object_pose(rng, config, 1.5, shape)
            mask = rasterize(distractor_parts(rng), pose, shape, 0.0, rng)
            _paint(image, mask, rng, config, outlined=False)
            inside = mask.astype(bool)
            label[inside], instances[inside] = 0, 0
    label[boundary_band(instances, config.boundary_width)] = IGNORE_LABEL
    if occlusion is not None:
        occlusion["drawn"] = dict(drawn_areas)
        occlusion["visible"] = {k: int((instances == k).sum()) for k in drawn_areas}
    return finish(image, rng, config.clutter), label


__all__ = ["IGNORE_LABEL", "boundary_band", "render_sample"]
