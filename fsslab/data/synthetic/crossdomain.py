"""The cross-domain preset's 20 shape families and background: a domain no training sees.

Neither the benchmark's 20 families (``shapes``), nor the 100 procedural pretraining classes (``procedural``), nor
the wide pretraining vocabulary (``wide``): hand-written composite objects (a gear, a key, an anchor, a fish, a pine tree...)
whose parts and holes none of those generators draws, checked by the canonical-mask IoU test in
tests/data/test_crossdomain.py. The preset (``config.PRESETS["crossdomain"]``) shows them overlapping (each object
under another is 20-40% covered), in random colours and textures whatever the class, on a background style of its
own (``mosaic``: flat Voronoi patches crossed by thin lines), so the domain shifts in shape, layout, appearance and
background at once.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fsslab.data.synthetic.shapes import Jitter, Part, canonical_unit_area, circle_outline, polygon_outline


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return polygon_outline(x0, y0, x1, y0, x1, y1, x0, y1)


def _gear(j: Jitter) -> list[Part]:
    teeth, depth = 9, 0.22 + 0.04 * j()
    t = np.linspace(0, 2 * np.pi, teeth * 16, endpoint=False)
    radius = 0.78 + depth * (np.cos(teeth * t) > 0.1)  # square-profile teeth
    outline = np.stack([radius * np.cos(t), radius * np.sin(t)], 1)
    return [("fill", outline, 0.0, 1), ("fill", circle_outline(0.3 + 0.04 * j()), 0.0, 0)]


def _dumbbell(j: Jitter) -> list[Part]:
    r = 0.42 + 0.05 * j()
    return [("fill", circle_outline(r, cx=-1 + r), 0.0, 1), ("fill", circle_outline(r, cx=1 - r), 0.0, 1),
            ("fill", _rect(-0.6, -0.12, 0.6, 0.12), 0.0, 1)]


def _bowtie(j: Jitter) -> list[Part]:
    waist = 0.1 + 0.03 * j()
    return [("fill", polygon_outline(-1, -0.75, -waist, -0.08, waist, -0.08, 1, -0.75, 1, 0.75, waist, 0.08, -waist, 0.08,
                           -1, 0.75), 0.0, 1)]


def _fish(j: Jitter) -> list[Part]:
    body = circle_outline(1.0) * np.array([0.62, 0.4 + 0.04 * j()]) + np.array([-0.25, 0.0])
    tail = polygon_outline(0.25, 0.0, 0.95, -0.55 - 0.08 * j(), 0.95, 0.55)
    return [("fill", body, 0.0, 1), ("fill", tail, 0.0, 1), ("fill", circle_outline(0.09, cx=-0.55, cy=-0.1), 0.0, 0)]


def _key(j: Jitter) -> list[Part]:
    head = 0.38 + 0.04 * j()
    return [("fill", circle_outline(head, cx=-1 + head), 0.0, 1), ("fill", circle_outline(head * 0.45, cx=-1 + head), 0.0, 0),
            ("fill", _rect(-0.3, -0.1, 1.0, 0.1), 0.0, 1), ("fill", _rect(0.55, 0.1, 0.7, 0.42), 0.0, 1),
            ("fill", _rect(0.82, 0.1, 1.0, 0.34), 0.0, 1)]


def _lightning(j: Jitter) -> list[Part]:
    k = 0.12 * j()
    return [("fill", polygon_outline(-0.15, -1, 0.55, -1, 0.1 + k, -0.15, 0.5, -0.15, -0.35, 1, -0.05 + k, 0.12, -0.5, 0.12),
             0.0, 1)]


def _bone(j: Jitter) -> list[Part]:
    r = 0.24 + 0.04 * j()
    parts: list[Part] = [("fill", _rect(-0.75, -0.16, 0.75, 0.16), 0.0, 1)]
    for cx in (-0.78, 0.78):
        for cy in (-0.2, 0.2):
            parts.append(("fill", circle_outline(r, cx=cx, cy=cy), 0.0, 1))
    return parts


def _pacman(j: Jitter) -> list[Part]:
    mouth = np.deg2rad(35 + 8 * j())
    t = np.linspace(mouth, 2 * np.pi - mouth, 48)
    return [("fill", np.vstack([[0.0, 0.0], np.stack([np.cos(t), np.sin(t)], 1)]), 0.0, 1),
            ("fill", circle_outline(0.1, cx=0.05, cy=-0.5), 0.0, 0)]


def _crown(j: Jitter) -> list[Part]:
    h = 0.85 + 0.1 * j()
    return [("fill", polygon_outline(-1, 0.6, -1, -h, -0.5, -0.05, 0, -h - 0.1, 0.5, -0.05, 1, -h, 1, 0.6), 0.0, 1)]


def _ladder(j: Jitter) -> list[Part]:
    w = 0.16 + 0.03 * j()
    parts: list[Part] = [("fill", _rect(-0.6, -1, -0.6 + w, 1), 0.0, 1), ("fill", _rect(0.6 - w, -1, 0.6, 1), 0.0, 1)]
    for y in (-0.6, 0.0, 0.6):
        parts.append(("fill", _rect(-0.6, y - w / 2, 0.6, y + w / 2), 0.0, 1))
    return parts


def _anchor(j: Jitter) -> list[Part]:
    t = np.linspace(np.deg2rad(20), np.deg2rad(160), 30)
    arc = np.stack([0.75 * np.cos(t), 0.2 + 0.6 * np.sin(t)], 1)
    return [("fill", circle_outline(0.2, cy=-0.78), 0.0, 1), ("fill", circle_outline(0.09, cy=-0.78), 0.0, 0),
            ("fill", _rect(-0.09, -0.6, 0.09, 0.8), 0.0, 1), ("fill", _rect(-0.4, -0.42, 0.4, -0.28), 0.0, 1),
            ("stroke", arc, 0.18 + 0.03 * j(), 1)]


def _tree(j: Jitter) -> list[Part]:
    spread = 0.8 + 0.08 * j()
    parts: list[Part] = [("fill", _rect(-0.13, 0.55, 0.13, 1.0), 0.0, 1)]
    for top, bottom, half in ((-1.0, -0.35, 0.5), (-0.65, 0.1, 0.68), (-0.3, 0.6, spread)):
        parts.append(("fill", polygon_outline(0.0, top, half, bottom, -half, bottom), 0.0, 1))
    return parts


def _trident(j: Jitter) -> list[Part]:
    w = 0.11 + 0.02 * j()
    parts: list[Part] = [("fill", _rect(-w, -0.35, w, 1), 0.0, 1), ("fill", _rect(-0.7, -0.35, 0.7, -0.35 + 2 * w),
                                                                    0.0, 1)]
    for x in (-0.7, 0.0, 0.7):
        parts.append(("fill", polygon_outline(x - w, -0.35, x - w, -0.8, x, -1, x + w, -0.8, x + w, -0.35), 0.0, 1))
    return parts


def _butterfly(j: Jitter) -> list[Part]:
    upper, lower = circle_outline(1.0) * np.array([0.45, 0.32]), circle_outline(1.0) * np.array([0.32, 0.25 + 0.04 * j()])
    parts: list[Part] = []
    for side in (-1.0, 1.0):
        parts.append(("fill", _rotate(upper, side * 0.5) + np.array([side * 0.48, -0.32]), 0.0, 1))
        parts.append(("fill", _rotate(lower, -side * 0.5) + np.array([side * 0.38, 0.35]), 0.0, 1))
    parts.append(("fill", _rect(-0.07, -0.6, 0.07, 0.6), 0.0, 1))
    return parts


def _mushroom(j: Jitter) -> list[Part]:
    t = np.linspace(np.pi, 2 * np.pi, 32)
    cap = np.stack([np.cos(t), -0.2 + (0.75 + 0.08 * j()) * np.sin(t)], 1)
    return [("fill", cap, 0.0, 1), ("fill", polygon_outline(-0.25, -0.22, 0.25, -0.22, 0.3, 1, -0.3, 1), 0.0, 1)]


def _wrench(j: Jitter) -> list[Part]:
    jaw = 0.42 + 0.04 * j()
    return [("fill", _rect(-1, -0.13, 0.45, 0.13), 0.0, 1), ("fill", circle_outline(jaw, cx=0.58), 0.0, 1),
            ("fill", _rect(0.55, -0.15, 1.1, 0.15), 0.0, 0), ("fill", circle_outline(0.12, cx=-0.8), 0.0, 0)]


def _hashtag(j: Jitter) -> list[Part]:
    w, k = 0.13 + 0.02 * j(), 0.2
    parts: list[Part] = []
    for x in (-0.35, 0.35):
        parts.append(("fill", polygon_outline(x - w + k, -1, x + w + k, -1, x + w - k, 1, x - w - k, 1), 0.0, 1))
    for y in (-0.35, 0.35):
        parts.append(("fill", _rect(-1, y - w, 1, y + w), 0.0, 1))
    return parts


def _letter_a(j: Jitter) -> list[Part]:
    foot = 0.25 + 0.04 * j()
    return [("fill", polygon_outline(-0.15, -1, 0.15, -1, 0.85, 1, 0.85 - foot, 1, 0.5, 0.35, -0.5, 0.35, -0.85 + foot, 1,
                           -0.85, 1), 0.0, 1),
            ("fill", polygon_outline(0, -0.45, 0.25, 0.05, -0.25, 0.05), 0.0, 0)]


def _bottle(j: Jitter) -> list[Part]:
    neck = 0.16 + 0.03 * j()
    return [("fill", polygon_outline(-0.5, 1, 0.5, 1, 0.5, -0.1, neck, -0.5, neck, -1, -neck, -1, -neck, -0.5, -0.5, -0.1),
             0.0, 1), ("fill", _rect(-0.28, 0.15, 0.28, 0.6), 0.0, 0)]


def _sun(j: Jitter) -> list[Part]:
    parts: list[Part] = [("fill", circle_outline(0.48 + 0.04 * j()), 0.0, 1)]
    for a in np.arange(8) * np.pi / 4:
        ray = polygon_outline(0.6, -0.1, 1.0, 0.0, 0.6, 0.1)
        parts.append(("fill", _rotate(ray, a), 0.0, 1))
    return parts


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


# Fold i holds classes 5i+1..5i+5 (as the benchmark's); each fold mixes round, angular, holed and multi-part ones.
CROSSDOMAIN_FAMILIES: tuple[tuple[str, Callable[[Jitter], list[Part]]], ...] = (
    ("gear", _gear), ("dumbbell", _dumbbell), ("bowtie", _bowtie), ("fish", _fish), ("key", _key),
    ("lightning", _lightning), ("bone", _bone), ("pacman", _pacman), ("crown", _crown), ("ladder", _ladder),
    ("anchor", _anchor), ("tree", _tree), ("trident", _trident), ("butterfly", _butterfly),
    ("mushroom", _mushroom),
    ("wrench", _wrench), ("hashtag", _hashtag), ("letter_a", _letter_a), ("bottle", _bottle), ("sun", _sun),
)
CROSSDOMAIN_NAMES: tuple[str, ...] = tuple(name for name, _ in CROSSDOMAIN_FAMILIES)
CROSSDOMAIN_UNIT_AREAS: tuple[float, ...] = tuple(canonical_unit_area(f) for _, f in CROSSDOMAIN_FAMILIES)


def mosaic_background(shape: tuple[int, int], rng: np.random.Generator, clutter: float) -> np.ndarray:
    """[H, W, 3] float32: flat Voronoi patches of muted colours crossed by thin straight lines (no texture kind of
    the benchmark's backgrounds)."""
    h, w = shape
    n = int(rng.integers(6, 16))
    seeds = rng.uniform(0, 1, (n, 2)) * np.array([w, h])
    hsv = np.stack([rng.random(n), rng.uniform(0.05, 0.45, n), rng.uniform(0.35, 0.9, n)], 1)
    colours = cv2.cvtColor((hsv[None] * np.array([180.0, 255.0, 255.0])).astype(np.uint8), cv2.COLOR_HSV2RGB)[0]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    d = (xs[..., None] - seeds[:, 0]) ** 2 + (ys[..., None] - seeds[:, 1]) ** 2
    image = (colours[d.argmin(-1)] / 255.0).astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):
        p, q = rng.uniform(0, 1, 2) * [w, h], rng.uniform(0, 1, 2) * [w, h]
        colour = tuple(float(v) for v in rng.uniform(0.0, 1.0, 3))
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), colour, int(rng.integers(1, 3)))
    grain = rng.normal(0.0, 0.02 + 0.05 * clutter, (h, w, 1)).astype(np.float32)
    return image + grain


__all__ = ["CROSSDOMAIN_FAMILIES", "CROSSDOMAIN_NAMES", "CROSSDOMAIN_UNIT_AREAS", "mosaic_background"]


# --------------------------------------------------------------------------------- shape disjointness
def canonical_mask(parts: list[Part], angle: float = 0.0, mirror: bool = False, size: int = 96,
                   area: float = 0.15) -> np.ndarray:
    """[size, size] bool: the shape at rotation ``angle`` (mirrored), scaled to ``area`` of the canvas and centred
    on its centroid, so that two shapes compare by outline alone."""
    from fsslab.data.synthetic.shapes import Pose, rasterize

    if mirror:
        parts = [(k, pts * np.array([-1.0, 1.0]), w, v) for k, pts, w, v in parts]
    probe = rasterize(parts, Pose(size / 2, size / 2, size / 8, angle), (size, size), 0.0, np.random.default_rng(0))
    scale = size / 8 * np.sqrt(area * size * size / max(1, int(probe.sum())))
    mask = rasterize(parts, Pose(size / 2, size / 2, scale, angle), (size, size), 0.0, np.random.default_rng(0))
    ys, xs = np.nonzero(mask)
    if len(xs):
        mask = np.roll(mask, (round(size / 2 - ys.mean()), round(size / 2 - xs.mean())), axis=(0, 1))
    return mask.astype(bool)


def max_aligned_iou(parts: list[Part], others: np.ndarray, rotations: int = 24, size: int = 96) -> np.ndarray:
    """[len(others)] the best IoU of ``parts`` against each of ``others`` ([N, size, size] bool, canonical_mask at
    angle 0) over ``rotations`` rotations and a mirror image."""
    variants = np.stack([canonical_mask(parts, a, m, size) for m in (False, True)
                         for a in np.arange(rotations) * 2 * np.pi / rotations]).reshape(2 * rotations, -1)
    flat = others.reshape(len(others), -1).astype(np.float32)
    inter = variants.astype(np.float32) @ flat.T  # [V, N]
    union = variants.sum(1, keepdims=True) + flat.sum(1)[None] - inter
    return (inter / np.maximum(union, 1)).max(0)
