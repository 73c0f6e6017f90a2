"""Rendering one synthetic image and its label, deterministically from (seed, split, index)."""

from __future__ import annotations

import cv2
import numpy as np

from fsslab.batch import IGNORE_INDEX
from fsslab.data.synthetic.config import N_CLASSES, SPLITS, SyntheticConfig
from fsslab.data.synthetic.procedural import procedural_parts, procedural_unit_area
from fsslab.data.synthetic.shapes import SHAPE_FAMILIES, UNIT_AREAS, Pose, distractor_parts, rasterize
from fsslab.data.synthetic.textures import background, finish, material, typical_material

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
    """One image and its label: ([H, W, 3] uint8 RGB, [H, W] uint8 with 0 bg, 1..20, 255 band; a procedural
    pretrain split, ``pretrain_classes`` N > 0, labels its classes 1..N)."""
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
    n_classes = config.label_classes(split)
    procedural = split == "pretrain" and config.pretrain_classes > 0
    if config.distinct_classes:
        classes = rng.choice(n_classes, n_objects, replace=False) + 1
    else:
        classes = rng.integers(1, n_classes + 1, n_objects)
    layers = [("object", int(c)) for c in classes]
    centres = iter(_spread_centres(rng, n_objects)) if config.placement == "spread" else None
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
                parts, unit_area = SHAPE_FAMILIES[class_id - 1][1](jitter), UNIT_AREAS[class_id - 1]
                appearance_id = class_id
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
    return finish(image, rng, config.clutter), label


__all__ = ["IGNORE_LABEL", "boundary_band", "render_sample"]
