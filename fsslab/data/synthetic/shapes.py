"""Shape families of the synthetic benchmark: unit outlines, random pose and deformation, rasterising."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# A shape is a list of parts drawn in order onto a mask: ("fill", points, 0.0, value) fills a polygon,
# ("stroke", points, width, value) draws an open polyline of the given width. value 1 adds, 0 cuts a hole.
# Points live in unit coordinates (the shape fits roughly in [-1, 1]^2, y pointing down like images).
Part = tuple[str, np.ndarray, float, int]

_SUBPIXEL_BITS = 4  # cv2 fixed-point drawing: 1/16 px precision keeps small shapes smooth
_SUBPIXEL = float(1 << _SUBPIXEL_BITS)


def circle_outline(radius: float, cx: float = 0.0, cy: float = 0.0, n: int = 48) -> np.ndarray:
    """[n, 2] points of a circle (shape parts are closed outlines in unit coordinates)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def polygon_outline(*xy: float) -> np.ndarray:
    """[n, 2] points from the flat coordinates x0, y0, x1, y1, ..."""
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


# Each family takes `jitter()` -> value in [-1, 1] scaled by the diversity, so that diversity 0 gives the
# canonical member of the family and diversity 1 its widest intra-class spread.
Jitter = Callable[[], float]


def _disc(j: Jitter) -> list[Part]:
    return [("fill", circle_outline(1.0), 0.0, 1)]


def _triangle(j: Jitter) -> list[Part]:
    angles = np.deg2rad(np.array([-90.0, 30.0, 150.0]) + 14.0 * np.array([j(), j(), j()]))
    return [("fill", np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.0, 1)]


def _cross(j: Jitter) -> list[Part]:
    w = 0.3 + 0.08 * j()
    return [
        (
            "fill",
            polygon_outline(-w, -1, w, -1, w, -w, 1, -w, 1, w, w, w, w, 1, -w, 1, -w, w, -1, w, -1, -w, -w, -w),
            0.0,
            1,
        )
    ]


def _heart(j: Jitter) -> list[Part]:
    t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - (5.0 + j()) * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return [("fill", np.stack([x, y + 2.5], axis=1) / 16.5, 0.0, 1)]


def _zigzag(j: Jitter) -> list[Part]:
    n = 4 + int(j() > 0.5)
    x = np.linspace(-1.0, 1.0, n + 1)
    y = 0.5 * (1.0 + 0.2 * j()) * np.where(np.arange(n + 1) % 2 == 0, -1.0, 1.0)
    return [("stroke", np.stack([x, y], axis=1), 0.3, 1)]


def _ring(j: Jitter) -> list[Part]:
    return [("fill", circle_outline(1.0), 0.0, 1), ("fill", circle_outline(0.55 + 0.08 * j()), 0.0, 0)]


def _square(j: Jitter) -> list[Part]:
    return [("fill", polygon_outline(-0.85, -0.85, 0.85, -0.85, 0.85, 0.85, -0.85, 0.85), 0.0, 1)]


def _star(j: Jitter) -> list[Part]:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42 + 0.07 * j(), phase=-np.pi / 2 + np.pi / 5)
    return [("fill", np.stack([outer, inner], axis=1).reshape(-1, 2), 0.0, 1)]


def _arrow(j: Jitter) -> list[Part]:
    shaft, head, neck = 0.2 + 0.05 * j(), 0.6 + 0.1 * j(), 0.15 + 0.15 * j()
    return [
        (
            "fill",
            polygon_outline(-1, -shaft, neck, -shaft, neck, -head, 1, 0, neck, head, neck, shaft, -1, shaft),
            0.0,
            1,
        )
    ]


def _spiral(j: Jitter) -> list[Part]:
    turns = 1.75 + 0.25 * j()
    t = np.linspace(0.0, turns * 2.0 * np.pi, 80)
    r = 0.12 + 0.88 * t / t[-1]
    return [("stroke", np.stack([r * np.cos(t), r * np.sin(t)], axis=1), 0.2, 1)]


def _ellipse(j: Jitter) -> list[Part]:
    return [("fill", circle_outline(1.0) * np.array([1.0, 0.48 + 0.08 * j()]), 0.0, 1)]


def _hexagon(j: Jitter) -> list[Part]:
    return [("fill", _regular(6, 1.0, phase=0.0), 0.0, 1)]


def _crescent(j: Jitter) -> list[Part]:
    return [("fill", circle_outline(1.0), 0.0, 1), ("fill", circle_outline(0.85, cx=0.5 + 0.1 * j(), cy=-0.1), 0.0, 0)]


def _l_shape(j: Jitter) -> list[Part]:
    w = -0.35 + 0.1 * j()
    return [("fill", polygon_outline(-0.8, -1, w, -1, w, 0.45, 0.8, 0.45, 0.8, 1, -0.8, 1), 0.0, 1)]


def _chevron(j: Jitter) -> list[Part]:
    t = 0.5 + 0.1 * j()
    return [("fill", polygon_outline(-0.9, -1, -0.9 + t, -1, 0.7, 0, -0.9 + t, 1, -0.9, 1, 0.7 - t, 0), 0.0, 1)]


def _cloud(j: Jitter) -> list[Part]:
    n = 5 + int(j() > 0.3)
    angles = np.arange(n) * 2.0 * np.pi / n + 0.3 * j()
    parts: list[Part] = [("fill", circle_outline(0.5), 0.0, 1)]
    for a in angles:
        parts.append(("fill", circle_outline(0.38 + 0.06 * j(), cx=0.58 * np.cos(a), cy=0.5 * np.sin(a)), 0.0, 1))
    return parts


def _diamond(j: Jitter) -> list[Part]:
    half_width = 0.55 + 0.08 * j()
    return [("fill", polygon_outline(0, -1, half_width, 0, 0, 1, -half_width, 0), 0.0, 1)]


def _t_shape(j: Jitter) -> list[Part]:
    w, bar = 0.25 + 0.06 * j(), -0.45 + 0.08 * j()
    return [("fill", polygon_outline(-1, -1, 1, -1, 1, bar, w, bar, w, 1, -w, 1, -w, bar, -1, bar), 0.0, 1)]


def _keyhole(j: Jitter) -> list[Part]:
    bottom = 0.45 + 0.08 * j()
    return [
        ("fill", circle_outline(0.5, cy=-0.45), 0.0, 1),
        ("fill", polygon_outline(-0.18, -0.4, 0.18, -0.4, bottom, 1, -bottom, 1), 0.0, 1),
    ]


def _trapezoid(j: Jitter) -> list[Part]:
    top = 0.45 + 0.1 * j()
    return [("fill", polygon_outline(-top, -0.6, top, -0.6, 1, 0.6, -1, 0.6), 0.0, 1)]


# Benchmark class order: fold i holds classes 5i+1..5i+5; each fold mixes round, angular, composite and
# stroke-like families so that no fold is "all circles".
SHAPE_FAMILIES: tuple[tuple[str, Callable[[Jitter], list[Part]]], ...] = (
    ("disc", _disc),
    ("triangle", _triangle),
    ("cross", _cross),
    ("heart", _heart),
    ("zigzag", _zigzag),
    ("ring", _ring),
    ("square", _square),
    ("star", _star),
    ("arrow", _arrow),
    ("spiral", _spiral),
    ("ellipse", _ellipse),
    ("hexagon", _hexagon),
    ("crescent", _crescent),
    ("l_shape", _l_shape),
    ("chevron", _chevron),
    ("cloud", _cloud),
    ("diamond", _diamond),
    ("t_shape", _t_shape),
    ("keyhole", _keyhole),
    ("trapezoid", _trapezoid),
)
CLASS_NAMES: tuple[str, ...] = tuple(name for name, _ in SHAPE_FAMILIES)


@dataclass(frozen=True)
class Pose:
    """Where a unit shape lands in the image: centre (px), size (px per unit), angle, aspect, shear."""

    cx: float
    cy: float
    scale: float
    angle: float
    log_aspect: float = 0.0
    shear: float = 0.0

    def matrix(self) -> np.ndarray:
        # Rotation @ shear @ diag(e^a, e^-a): determinant 1, so the area only depends on `scale`.
        c, s = np.cos(self.angle), np.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        shear = np.array([[1.0, self.shear], [0.0, 1.0]])
        stretch = np.diag([np.exp(self.log_aspect), np.exp(-self.log_aspect)])
        return self.scale * rot @ shear @ stretch


def densify(points: np.ndarray, closed: bool, step: float = 0.12) -> np.ndarray:
    """Insert points along long edges so that a smooth deformation bends straight edges too."""
    pts = np.vstack([points, points[:1]]) if closed else points
    out = []
    for a, b in itertools.pairwise(pts):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * (np.arange(n)[:, None] / n))
    if not closed:
        out.append(pts[-1:])
    return np.vstack(out)


def deform(points: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random displacement field (two low-frequency waves per axis) applied in unit coordinates."""
    if amplitude <= 0:
        return points
    out = points.copy()
    for axis in range(2):
        for _ in range(2):
            k = rng.uniform(0.8, 2.5, size=2) * rng.choice([-1.0, 1.0], size=2)
            out[:, axis] += 0.5 * amplitude * np.sin(points @ k + rng.uniform(0, 2 * np.pi))
    return out


def rasterize(
    parts: list[Part], pose: Pose, shape: tuple[int, int], deformation: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw the parts of one shape into a new [H, W] uint8 mask (1 inside, 0 outside)."""
    mask = np.zeros(shape, dtype=np.uint8)
    matrix, centre = pose.matrix(), np.array([pose.cx, pose.cy])
    # One displacement field per object, shared by its parts, so composite shapes stay connected.
    field_seed = int(rng.integers(0, 2**31 - 1))
    for kind, points, width, value in parts:
        dense = densify(points, closed=(kind == "fill"))
        dense = deform(dense, deformation, np.random.default_rng(field_seed))
        pixel = dense @ matrix.T + centre
        fixed = np.round(pixel * _SUBPIXEL).astype(np.int32)[None]
        if kind == "fill":
            cv2.fillPoly(mask, fixed, int(value), lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
        else:
            thickness = max(1, round(width * pose.scale))
            cv2.polylines(
                mask, fixed, False, int(value), thickness=thickness, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS
            )
    return mask


def canonical_unit_area(family: Callable[[Jitter], list[Part]], resolution: float = 100.0) -> float:
    """Area of the canonical family member in unit coordinates, measured by rasterising it once."""
    size = int(6 * resolution)
    pose = Pose(cx=size / 2, cy=size / 2, scale=resolution, angle=0.0)
    mask = rasterize(family(lambda: 0.0), pose, (size, size), 0.0, np.random.default_rng(0))
    return float(mask.sum()) / resolution**2


# Used to size every object by its *area*, so thin families (spiral, zigzag) are not systematically smaller.
UNIT_AREAS: tuple[float, ...] = tuple(canonical_unit_area(family) for _, family in SHAPE_FAMILIES)


def distractor_parts(rng: np.random.Generator) -> list[Part]:
    """A non-class shape: a jagged irregular polygon or a wandering thick curve (labelled background)."""
    if rng.random() < 0.55:
        n = int(rng.integers(7, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.35, 1.0, n)
        return [("fill", np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1), 0.0, 1)]
    steps = rng.normal(0.0, 0.5, size=(int(rng.integers(4, 8)), 2))
    path = np.cumsum(steps, axis=0)
    path = (path - path.mean(0)) / max(1e-6, np.abs(path).max())
    return [("stroke", path, float(rng.uniform(0.08, 0.2)), 1)]
