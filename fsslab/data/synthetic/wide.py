"""The wide procedural shape vocabulary: thousands of shape classes rendered on the fly for backbone pretraining.

The sandbox's ImageNet (DESIGN, "The sandbox's ImageNet"; FractalDB, RCDB, SegRCDB, Shaders21k): class identity in
the contour, everything else randomised per instance, dense targets, occlusion, several classes per scene, and many
classes. A class is fixed by its id alone (whatever the seed) as one of 13 generator kinds: radial-harmonic
outlines, irregular polygons, stars, closed splines, thick open splines, thick polylines, thick arcs, connected
grid blocks, mirror-symmetric polygons, unions, holed shapes, bitten shapes and repeated motifs. An instance of a
class is its canonical outline under a random pose (any rotation, aspect, shear, size), a smooth random deformation
and a random surface (colour and texture independent of the class); scenes hold 1-4 objects of different classes
at random places, so they overlap and occlude, on a random cluttered background.

Why on the fly rather than on disk: labels carry thousands of ids (PNG labels are uint8 with 255 the ignore value),
a scene costs a few milliseconds to render (less than the training step it feeds), and nothing has to be written or
kept: ``WideShapes[i]`` is a pure function of (seed, i), so a run is as deterministic and resumable as one on files.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from torch.utils.data import Dataset

from fsslab.data.synthetic.shapes import Part, Pose, canonical_unit_area, rasterize
from fsslab.data.synthetic.textures import background, finish, random_surface
from fsslab.data.transforms import normalize

WIDE_SEED = 0x3A1DE  # class definitions depend on this and the class id only
MAX_WIDE_CLASSES = 100_000
PRIMITIVE_KINDS = ("radial", "polygon", "star", "spline", "stroke", "polyline", "arc", "blocks", "mirror")
COMPOSITE_KINDS = ("union", "holed", "bitten", "repeat")
WIDE_KINDS = PRIMITIVE_KINDS + COMPOSITE_KINDS
_KIND_WEIGHTS = np.array([0.1, 0.1, 0.07, 0.1, 0.08, 0.06, 0.04, 0.07, 0.06, 0.1, 0.08, 0.08, 0.06])
_CLOSED = ("radial", "polygon", "star", "spline", "mirror")  # fillable outlines that composites combine


# ----------------------------------------------------------------------------------------- primitives
def _normalised(points: np.ndarray) -> np.ndarray:
    """Centre on the bounding box and scale so the farthest point is at radius 1."""
    points = points - (points.max(0) + points.min(0)) / 2.0
    return points / max(1e-6, float(np.linalg.norm(points, axis=1).max()))


def _catmull_rom(points: np.ndarray, closed: bool, per_segment: int = 12) -> np.ndarray:
    """A smooth curve through ``points`` (centripetal-free uniform Catmull-Rom)."""
    p = np.vstack([points[-1:], points, points[:2]]) if closed else np.vstack([points[:1], points, points[-1:]])
    segments = len(points) if closed else len(points) - 1
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(segments):
        p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    if not closed:
        out.append(points[-1:])
    return np.vstack(out)


def _radial(g: np.random.Generator) -> np.ndarray:
    n = int(g.integers(1, 5))
    orders = g.choice(np.arange(2, 13), n, replace=False)
    amplitudes = g.uniform(0.08, 0.4, n) / np.sqrt(n)
    phases = g.uniform(0, 2 * np.pi, n)
    theta = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    radius = 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in zip(orders, amplitudes, phases, strict=True))
    radius = np.maximum(radius, 0.15)
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], 1)


def _angles(g: np.random.Generator, n: int) -> np.ndarray:
    """n sorted angles with gaps of at least a third of the mean gap (no slivers)."""
    gaps = g.uniform(1.0, 3.0, n)
    return g.uniform(0, 2 * np.pi) + np.cumsum(gaps) / gaps.sum() * 2 * np.pi


def _polygon(g: np.random.Generator) -> np.ndarray:
    n = int(g.integers(3, 12))
    a, r = _angles(g, n), g.uniform(0.35, 1.0, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star(g: np.random.Generator) -> np.ndarray:
    n = int(g.integers(3, 11))
    inner = g.uniform(0.2, 0.7)
    a = g.uniform(0, 2 * np.pi) + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner) * g.uniform(0.8, 1.0, 2 * n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _spline(g: np.random.Generator) -> np.ndarray:
    n = int(g.integers(4, 9))
    a, r = _angles(g, n), g.uniform(0.3, 1.0, n)
    return _catmull_rom(np.stack([r * np.cos(a), r * np.sin(a)], 1), closed=True)


def _mirror(g: np.random.Generator) -> np.ndarray:
    n = int(g.integers(2, 6))  # vertices of one half, strictly right of the axis
    ys = np.sort(g.uniform(-1.0, 1.0, n))
    xs = g.uniform(0.1, 1.0, n)
    top, bottom = g.uniform(0.0, 0.6), g.uniform(0.0, 0.6)
    half = np.vstack([[0.0, -1.0 - 0.2 * top], np.stack([xs, ys], 1), [0.0, 1.0 + 0.2 * bottom]])
    other = half[-2:0:-1] * np.array([-1.0, 1.0])
    return np.vstack([half, other])


def _open_points(g: np.random.Generator, n: int, turn: float) -> np.ndarray:
    heading, point, pts = g.uniform(0, 2 * np.pi), np.zeros(2), [np.zeros(2)]
    for _ in range(n - 1):
        heading += g.uniform(-turn, turn)
        point = point + g.uniform(0.6, 1.2) * np.array([np.cos(heading), np.sin(heading)])
        pts.append(point)
    return np.asarray(pts)


def _stroke_width(g: np.random.Generator) -> float:
    return float(g.uniform(0.14, 0.34))


def _closed_outline(kind: str, g: np.random.Generator) -> np.ndarray:
    return _normalised({"radial": _radial, "polygon": _polygon, "star": _star, "spline": _spline,
                        "mirror": _mirror}[kind](g))


def _primitive(kind: str, g: np.random.Generator) -> list[Part]:
    if kind in _CLOSED:
        return [("fill", _closed_outline(kind, g), 0.0, 1)]
    if kind == "stroke":
        pts = _catmull_rom(_open_points(g, int(g.integers(3, 7)), 2.2), closed=False)
        return [("stroke", _normalised(pts) * 0.85, _stroke_width(g), 1)]
    if kind == "polyline":
        pts = _open_points(g, int(g.integers(3, 7)), 2.6)
        return [("stroke", _normalised(pts) * 0.85, _stroke_width(g), 1)]
    if kind == "arc":
        span = g.uniform(0.6, 1.7) * np.pi
        t = np.linspace(0, span, 48)
        ecc = g.uniform(0.6, 1.0)
        pts = np.stack([np.cos(t), ecc * np.sin(t)], 1)
        return [("stroke", _normalised(pts) * 0.85, _stroke_width(g), 1)]
    if kind == "blocks":  # a connected set of cells of a 4x4 grid
        cells = {(int(g.integers(0, 4)), int(g.integers(0, 4)))}
        target = int(g.integers(3, 9))
        while len(cells) < target:
            r, c = list(cells)[int(g.integers(0, len(cells)))]
            dr, dc = [(0, 1), (1, 0), (0, -1), (-1, 0)][int(g.integers(0, 4))]
            if 0 <= r + dr < 4 and 0 <= c + dc < 4:
                cells.add((r + dr, c + dc))
        rows, cols = np.array([c[0] for c in cells]), np.array([c[1] for c in cells])
        centre = np.array([(cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2])
        span = max(cols.max() - cols.min() + 1, rows.max() - rows.min() + 1) / 2 * 1.15
        square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
        return [("fill", (square + [c, r] - centre) / span, 0.0, 1) for r, c in sorted(cells)]
    raise ValueError(f"unknown primitive kind {kind!r}")


def _moved(parts: list[Part], scale: float, offset: np.ndarray, value: int | None = None) -> list[Part]:
    return [(k, pts * scale + offset, w * scale, v if value is None else value) for k, pts, w, v in parts]


def _composite(kind: str, g: np.random.Generator) -> list[Part]:
    def closed() -> list[Part]:
        return _primitive(str(g.choice(_CLOSED)), g)

    if kind == "union":  # 2-3 overlapping pieces
        n = int(g.integers(2, 4))
        parts: list[Part] = []
        for i in range(n):
            piece = closed() if g.random() < 0.7 else _primitive(str(g.choice(["stroke", "arc", "polyline"])), g)
            offset = np.zeros(2) if i == 0 else g.uniform(0.35, 0.6) * np.array([np.cos(a := g.uniform(0, 2 * np.pi)),
                                                                                     np.sin(a)])
            parts += _moved(piece, g.uniform(0.45, 0.75), offset)
        return parts
    if kind == "holed":  # an outline with 1-2 holes inside it
        parts = closed()
        for _ in range(int(g.integers(1, 3))):
            hole = _primitive(str(g.choice(_CLOSED)), g)
            parts += _moved(hole, g.uniform(0.15, 0.32), g.uniform(-0.3, 0.3, 2), value=0)
        return parts
    if kind == "bitten":  # an outline with a piece of another cut away at its edge
        parts = closed()
        a = g.uniform(0, 2 * np.pi)
        bite = _primitive(str(g.choice(_CLOSED)), g)
        return parts + _moved(bite, g.uniform(0.4, 0.7), g.uniform(0.6, 0.9) * np.array([np.cos(a), np.sin(a)]),
                              value=0)
    if kind == "repeat":  # 2-5 copies of a small motif in a row or on a circle
        motif = closed() if g.random() < 0.8 else _primitive("blocks", g)
        n = int(g.integers(2, 6))
        size = g.uniform(0.25, 0.45)
        if g.random() < 0.5:
            xs = np.linspace(-1.0 + size, 1.0 - size, n)
            centres = np.stack([xs, g.uniform(-0.15, 0.15) * np.arange(n)], 1)
        else:
            a = np.arange(n) * 2 * np.pi / n
            centres = (1.0 - size) * np.stack([np.cos(a), np.sin(a)], 1)
        return [p for c in centres for p in _moved(motif, size, c)]
    raise ValueError(f"unknown composite kind {kind!r}")


@cache
def wide_class(class_id: int) -> tuple[str, tuple[Part, ...]]:
    """(kind, canonical parts) of wide class ``class_id`` (1-based), fixed by the id alone."""
    if not 1 <= class_id <= MAX_WIDE_CLASSES:
        raise ValueError(f"wide class ids are 1..{MAX_WIDE_CLASSES}, got {class_id}")
    g = np.random.default_rng([WIDE_SEED, class_id])
    kind = WIDE_KINDS[int(g.choice(len(WIDE_KINDS), p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum()))]
    parts = _primitive(kind, g) if kind in PRIMITIVE_KINDS else _composite(kind, g)
    return kind, tuple(parts)


def wide_parts(class_id: int) -> Callable[[Callable[[], float]], list[Part]]:
    """The class as a family function (``jitter`` ignored: instances vary by pose and deformation)."""
    parts = list(wide_class(class_id)[1])
    return lambda jitter: parts


@cache
def wide_unit_area(class_id: int) -> float:
    return max(0.05, canonical_unit_area(wide_parts(class_id), resolution=40.0))


# --------------------------------------------------------------------------------------------- scenes
def render_wide(seed: int, index: int, size: int, n_classes: int, objects: tuple[int, int] = (1, 4),
                scale: tuple[float, float] = (0.22, 0.55), deformation: float = 0.08
                ) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index``: ([size, size, 3] uint8 RGB, [size, size] int64 labels 0 background, 1..n_classes)."""
    rng = np.random.default_rng([seed, index])
    image = background((size, size), rng, float(rng.uniform(0.0, 0.6)))
    n = int(rng.integers(objects[0], objects[1] + 1))
    classes = rng.choice(n_classes, n, replace=False) + 1 if n_classes < 10 * n else \
        np.unique(rng.integers(1, n_classes + 1, n))
    return render_scene(rng, image, rng.permutation(classes), scale, deformation)[:2]


def render_scene(rng: np.random.Generator, image: np.ndarray, classes: np.ndarray | list[int],
                 scale: tuple[float, float] = (0.22, 0.55), deformation: float = 0.08
                 ) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """Paint one instance of each class id of ``classes`` over ``image`` (a background), in that order (later
    ones occlude earlier ones): each at a random place, size, pose, mirror, deformation and surface.
    Returns (the finished [S,S,3] uint8 image, [S,S] int64 labels, {class id: its pixels before occlusion})."""
    size = image.shape[0]
    shape = (size, size)
    label = np.zeros(shape, np.int64)
    drawn: dict[int, int] = {}
    for class_id in classes:
        side = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1])))
        pose = Pose(cx=rng.uniform(0.1, 0.9) * size, cy=rng.uniform(0.1, 0.9) * size,
                    scale=side * size / np.sqrt(wide_unit_area(int(class_id))), angle=rng.uniform(-np.pi, np.pi),
                    log_aspect=rng.uniform(-0.25, 0.25), shear=rng.uniform(-0.2, 0.2))
        parts = list(wide_class(int(class_id))[1])
        if rng.random() < 0.5:  # mirror image: same class (as a flipped photograph is)
            parts = [(k, pts * np.array([-1.0, 1.0]), w, v) for k, pts, w, v in parts]
        mask = rasterize(parts, pose, shape, deformation * float(rng.uniform(0.3, 1.0)), rng).astype(bool)
        image[mask] = random_surface(shape, rng)[mask]
        label[mask] = class_id
        drawn[int(class_id)] = int(mask.sum())
    return finish(image, rng, float(rng.uniform(0.0, 0.5))), label, drawn


class WideShapes(Dataset):
    """Scenes of the wide vocabulary for dense pretraining (``data.train_data: procedural``): item ``i`` is
    ``{"query_img": [3,S,S] normalised, "query_base_mask": [S,S] long 0..n_classes, "query_mask": [S,S] long
    1 on any object}``, a pure function of (seed, i). No ignore value: ids run past 255, so a model trained on it
    takes ``ignore_index: -1``."""

    def __init__(self, size: int = 96, n_classes: int = 4000, images: int = 1_000_000, seed: int = 0,
                 objects: tuple[int, int] = (1, 4), scale: tuple[float, float] = (0.22, 0.55),
                 deformation: float = 0.08) -> None:
        if not 1 <= n_classes <= MAX_WIDE_CLASSES:
            raise ValueError(f"n_classes must be in 1..{MAX_WIDE_CLASSES}, got {n_classes}")
        if not 1 <= objects[0] <= objects[1]:
            raise ValueError(f"objects must be (lo, hi) with 1 <= lo <= hi, got {objects}")
        self.size, self.n_classes, self.images, self.seed = int(size), int(n_classes), int(images), int(seed)
        self.objects = (int(objects[0]), int(objects[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.deformation = float(deformation)

    def __len__(self) -> int:
        return self.images

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = render_wide(self.seed, int(index), self.size, self.n_classes, self.objects, self.scale,
                                   self.deformation)
        labels = torch.from_numpy(label)
        return {"query_img": normalize(image.astype(np.float32)), "query_base_mask": labels,
                "query_mask": (labels > 0).long()}


class WideEpisodes(Dataset):
    """Few-shot episodes over the wide vocabulary, rendered on the fly (``data.train_data:
    procedural_episodes``): the episodic pretraining of a backbone whose masked-average prototypes must find
    the same shape class again under another pose, deformation, colour and texture, among other shapes.

    Episode ``i`` (a pure function of (seed, i)): a target class; ``shot`` support scenes, each the target
    drawn whole over 0-2 other classes (a support shows its object, as an annotator's example does); a query
    scene with the target among 1-3 other classes in random order, placed at random (they overlap and occlude).
    Item: ``{"query_img": [3,S,S], "query_mask": [S,S] long 1 on the target's visible pixels, 0 elsewhere,
    "support_imgs": [K,3,S,S], "support_masks": [K,S,S], "class_id": long}`` (the keys of ``fsslab.batch.Batch``).
    A query whose target shows less than MIN_VISIBLE_SHARE of itself (or under MIN_VISIBLE pixels) is drawn again:
    a sliver carries no shape to find."""

    MIN_VISIBLE = 24  # pixels of the target that a scene must show: ~0.3% of a 96 px image
    MIN_VISIBLE_SHARE = 0.5  # of the target's own pixels, in the query

    def __init__(self, size: int = 96, shot: int = 1, n_classes: int = 4000, images: int = 1_000_000,
                 seed: int = 0, others: tuple[int, int] = (1, 3), support_others: tuple[int, int] = (0, 2),
                 scale: tuple[float, float] = (0.22, 0.55), deformation: float = 0.08) -> None:
        if not 2 <= n_classes <= MAX_WIDE_CLASSES:
            raise ValueError(f"n_classes must be in 2..{MAX_WIDE_CLASSES}, got {n_classes}")
        for name, (lo, hi) in (("others", others), ("support_others", support_others)):
            if not 0 <= lo <= hi or hi >= n_classes:
                raise ValueError(f"{name} must be (lo, hi) with 0 <= lo <= hi < n_classes, got {(lo, hi)}")
        if shot < 1:
            raise ValueError(f"shot must be at least 1, got {shot}")
        self.size, self.shot, self.n_classes, self.images, self.seed = int(size), int(shot), int(n_classes), \
            int(images), int(seed)
        self.others = (int(others[0]), int(others[1]))
        self.support_others = (int(support_others[0]), int(support_others[1]))
        self.scale, self.deformation = (float(scale[0]), float(scale[1])), float(deformation)

    def __len__(self) -> int:
        return self.images

    def _scene(self, index: int, role: int, target: int, others: tuple[int, int], on_top: bool
               ) -> tuple[np.ndarray, np.ndarray]:
        """One scene holding ``target`` visibly (drawn last when ``on_top``): (uint8 image, [S,S] bool mask)."""
        for attempt in range(20):
            rng = np.random.default_rng([self.seed, index, role, attempt])
            n_others = int(rng.integers(others[0], others[1] + 1))
            pool = rng.choice(self.n_classes - 1, n_others, replace=False) + 1  # ids 1..n_classes-1 ...
            distractors = np.where(pool >= target, pool + 1, pool)  # ... shifted past the target: never the target
            classes = np.concatenate([distractors, [target]]) if on_top else \
                rng.permutation(np.concatenate([[target], distractors]))
            image = background((self.size, self.size), rng, float(rng.uniform(0.0, 0.6)))
            image, label, drawn = render_scene(rng, image, classes, self.scale, self.deformation)
            visible = int((label == target).sum())
            if visible >= max(self.MIN_VISIBLE, self.MIN_VISIBLE_SHARE * drawn[target]):
                break
        return image, label == target

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        target = int(np.random.default_rng([self.seed, int(index)]).integers(1, self.n_classes + 1))
        query, query_mask = self._scene(int(index), 0, target, self.others, on_top=False)
        supports = [self._scene(int(index), 1 + k, target, self.support_others, on_top=True) for k in range(self.shot)]
        return {
            "query_img": normalize(query.astype(np.float32)),
            "query_mask": torch.from_numpy(query_mask.astype(np.int64)),
            "support_imgs": torch.stack([normalize(image.astype(np.float32)) for image, _ in supports]),
            "support_masks": torch.stack([torch.from_numpy(mask.astype(np.int64)) for _, mask in supports]),
            "class_id": torch.tensor(target),
        }


__all__ = ["MAX_WIDE_CLASSES", "WIDE_KINDS", "WideEpisodes", "WideShapes", "render_scene", "render_wide",
           "wide_class", "wide_parts", "wide_unit_area"]
