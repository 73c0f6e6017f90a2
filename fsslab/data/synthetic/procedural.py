"""Procedural shape classes for a pretraining corpus disjoint from the benchmark's 20 families.

ImageNet teaches a backbone generic shape and texture features from classes that are mostly *not* the few-shot
benchmark's; ``SyntheticConfig.pretrain_classes = N`` gives the synthetic pretraining split that role: its
objects belong to N procedurally generated classes (ids 1..N in its labels), none of them one of the benchmark's
families, so the few-shot models meet every benchmark class for the first time in episodes.

A class is fixed by its id alone (whatever the seed), as one of five kinds: a smooth outline whose radius follows a
few class-specific harmonics, the same with a hole, two overlapping lobes of it, an irregular polygon, or a thick
wavy curve; the renderer dresses it in the class's own typical appearance (ids after the benchmark's 20).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from fsslab.data.synthetic.shapes import Jitter, Part, canonical_unit_area

MAX_PROCEDURAL_CLASSES = 200  # label ids 1..N stay below the ignore value 255 with room to spare
_CLASS_SEED = 0x9C0DE  # class definitions do not depend on the benchmark's seed
_KINDS = ("blob", "polygon", "blob_hole", "curve", "pair")
_KIND_WEIGHTS = (0.3, 0.3, 0.15, 0.1, 0.15)


@cache
def _class_definition(class_id: int) -> dict:
    """A procedural class: its kind, outline harmonics (orders, amplitudes, phases), polygon vertices and aspect."""
    g = np.random.default_rng([_CLASS_SEED, class_id])
    kind = _KINDS[int(g.choice(len(_KINDS), p=_KIND_WEIGHTS))]
    n_harmonics = int(g.integers(2, 4))
    n_vertices = int(g.integers(4, 10))
    return {
        "kind": kind,
        "orders": np.sort(g.choice(np.arange(2, 8), n_harmonics, replace=False)).astype(np.float64),
        # at least two harmonics of visible amplitude: no class is a disc or an ellipse (benchmark families)
        "amplitudes": g.uniform(0.12, 0.32, n_harmonics) / np.sqrt(n_harmonics / 2.0),
        "phases": g.uniform(0.0, 2.0 * np.pi, n_harmonics),
        # irregular polygons: uneven vertex angles and radii, so none is a regular benchmark polygon
        "vertex_angles": np.sort(g.uniform(0.0, 2.0 * np.pi, n_vertices)),
        "vertex_radii": g.uniform(0.35, 1.0, n_vertices),
        "aspect": float(g.uniform(0.55, 1.0)),
        "offset": g.uniform(0.45, 0.8) * np.array([1.0, g.uniform(-0.6, 0.6)]),
    }


def _outline(c: dict, amplitudes: np.ndarray) -> np.ndarray:
    theta = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    terms = zip(c["orders"], amplitudes, c["phases"], strict=True)
    radius = 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in terms)
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1) / radius.max()


def procedural_parts(class_id: int, jitter: Jitter) -> list[Part]:
    """The parts of one member of procedural class ``class_id`` (1-based); ``jitter`` as for the families."""
    c = _class_definition(class_id)
    amplitudes = c["amplitudes"] * (1.0 + 0.3 * np.array([jitter() for _ in c["amplitudes"]]))
    stretch = np.array([1.0, c["aspect"]])
    kind = c["kind"]
    if kind == "curve":  # a thick open stroke along a wavy arc
        t = np.linspace(-1.0, 1.0, 60)
        terms = zip(c["orders"], amplitudes, c["phases"], strict=True)
        y = sum(a * np.sin(k * np.pi * t / 2 + p) for k, a, p in terms)
        return [("stroke", np.stack([t, 1.6 * y], axis=1), 0.22 + 0.1 * (c["orders"][0] % 2), 1)]
    if kind == "polygon":
        radii = c["vertex_radii"] * (1.0 + 0.15 * np.array([jitter() for _ in c["vertex_radii"]]))
        angles = c["vertex_angles"]
        return [("fill", np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1) * stretch, 0.0, 1)]
    outline = _outline(c, amplitudes) * stretch
    if kind == "pair":  # two overlapping lobes of unequal size
        return [("fill", 0.7 * outline - 0.4 * c["offset"], 0.0, 1),
                ("fill", 0.45 * outline + 0.6 * c["offset"], 0.0, 1)]
    parts: list[Part] = [("fill", outline, 0.0, 1)]
    if kind == "blob_hole":
        theta = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        hole = 0.3 + 0.05 * jitter()
        parts.append(("fill", np.stack([hole * np.cos(theta), hole * np.sin(theta)], axis=1) * stretch, 0.0, 0))
    return parts


@cache
def procedural_unit_area(class_id: int) -> float:
    """Area of the canonical member in unit coordinates (objects are sized by area, as the families are)."""
    return canonical_unit_area(lambda jitter: procedural_parts(class_id, jitter), resolution=60.0)


__all__ = ["MAX_PROCEDURAL_CLASSES", "procedural_parts", "procedural_unit_area"]
