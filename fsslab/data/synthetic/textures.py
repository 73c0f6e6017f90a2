"""Appearance of the synthetic benchmark: random colours, procedural textures and cluttered backgrounds."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

TEXTURES = ("flat", "gradient", "stripes", "checker", "noise")
_CANONICAL_COLOUR = np.array([0.85, 0.45, 0.2], dtype=np.float32)  # every object's colour at diversity 0


def random_colour(rng: np.random.Generator, diversity: float = 1.0) -> np.ndarray:
    """An RGB colour in [0, 1]; at diversity d it is d of the way from a fixed colour to a random one.

    Random colours never depend on the class; class-typical appearance comes from `typical_material`.
    """
    rgb = np.array(
        colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.2, 1.0)), dtype=np.float32
    )
    return (1.0 - diversity) * _CANONICAL_COLOUR + diversity * rgb


def _coords(shape: tuple[int, int], angle: float) -> np.ndarray:
    """[H, W] coordinate along the direction `angle` (pixels)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))


def _smooth_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """[H, W] value noise in [0, 1] with features about `cell` pixels wide."""
    gh, gw = max(2, int(shape[0] / cell) + 2), max(2, int(shape[1] / cell) + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)


def pattern(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """[H, W] float32 weight in [0, 1] that mixes a texture's two colours."""
    if kind == "flat":
        return np.zeros(shape, dtype=np.float32)
    angle = rng.uniform(0, np.pi)
    if kind == "gradient":
        t = _coords(shape, angle)
        return (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    if kind == "stripes":
        period = rng.uniform(4.0, 14.0)
        wave = np.sin(_coords(shape, angle) * np.float32(2 * np.pi / period))
        return (0.5 + 0.5 * np.tanh(3.0 * wave)).astype(np.float32)  # soft-edged stripes
    if kind == "checker":
        period = rng.uniform(5.0, 16.0)
        u = np.floor(_coords(shape, angle) / period)
        v = np.floor(_coords(shape, angle + np.pi / 2) / period)
        return ((u + v) % 2).astype(np.float32)
    if kind == "noise":
        return _smooth_noise(shape, rng.uniform(3.0, 12.0), rng)
    raise ValueError(f"unknown texture kind {kind!r}; expected one of {TEXTURES}")


def material(shape: tuple[int, int], rng: np.random.Generator, diversity: float) -> np.ndarray:
    """[H, W, 3] float32 RGB surface: two colours mixed by a texture, shaded by a soft light gradient.

    With probability `diversity` the surface is textured; otherwise it is flat.
    """
    first = random_colour(rng, diversity)
    kind = "flat" if rng.random() >= diversity else TEXTURES[1 + int(rng.integers(len(TEXTURES) - 1))]
    # The second colour is a different hue at diversity 1 and a darker shade of the first at diversity 0.
    second = (1.0 - diversity) * first * 0.6 + diversity * random_colour(rng, 1.0)
    return _shaded_mix(first, second, kind, shape, rng, diversity)


def _shaded_mix(first: np.ndarray, second: np.ndarray, kind: str, shape: tuple[int, int],
                rng: np.random.Generator, diversity: float) -> np.ndarray:
    """[H, W, 3] float32: two colours mixed by a `kind` texture, under a light gradient of strength `diversity`."""
    weight = pattern(kind, shape, rng)[..., None]
    surface = first * (1.0 - weight) + second * weight
    light = 1.0 + 0.25 * diversity * (pattern("gradient", shape, rng) - 0.5)
    return (surface * light[..., None]).astype(np.float32)


def random_surface(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] float32: two random colours mixed by a random texture (flat included), whatever the class."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    return _shaded_mix(random_colour(rng, 1.0), random_colour(rng, 1.0), kind, shape, rng, float(rng.uniform(0.3, 1)))


def class_signature(class_id: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A class's typical (main colour, second colour, texture kind), fixed per class whatever the seed.

    Hues step by the golden ratio so that classes with nearby ids get distant hues; the texture kind
    cycles through `TEXTURES`, so classes that share a kind differ in colour and vice versa.
    """
    g = np.random.default_rng([0x5EED, class_id])
    hue = (class_id * 0.6180339887) % 1.0
    main = colorsys.hsv_to_rgb(hue, g.uniform(0.55, 1.0), g.uniform(0.45, 1.0))
    second = colorsys.hsv_to_rgb((hue + g.uniform(0.25, 0.75)) % 1.0, g.uniform(0.3, 1.0), g.uniform(0.2, 0.9))
    return np.array(main, np.float32), np.array(second, np.float32), TEXTURES[class_id % len(TEXTURES)]


def typical_material(shape: tuple[int, int], rng: np.random.Generator, class_id: int,
                     diversity: float) -> np.ndarray:
    """[H, W, 3] float32 surface in the class's typical appearance, its colours jittered by `diversity`."""
    main, second, kind = class_signature(class_id)
    jitter = 0.15 * diversity
    first = np.clip(main + rng.normal(0.0, jitter, 3), 0.0, 1.0).astype(np.float32)
    other = np.clip(second + rng.normal(0.0, jitter, 3), 0.0, 1.0).astype(np.float32)
    return _shaded_mix(first, other, kind, shape, rng, diversity)


def background(shape: tuple[int, int], rng: np.random.Generator, clutter: float) -> np.ndarray:
    """[H, W, 3] float32 background: a colour gradient overlaid with `clutter`-weighted texture layers."""
    image = material(shape, rng, 1.0) if rng.random() < 0.5 else _two_colour_gradient(shape, rng)
    n_layers = int(rng.integers(1, 3)) if clutter > 0 else 0
    for _ in range(n_layers):
        kind = TEXTURES[2 + int(rng.integers(len(TEXTURES) - 2))]  # stripes, checker or noise
        layer_colour = random_colour(rng, 1.0)
        # Blend the layer through a blotchy alpha so clutter is patchy, like real scenes.
        alpha = clutter * rng.uniform(0.4, 1.0) * pattern(kind, shape, rng)
        alpha *= _smooth_noise(shape, rng.uniform(20.0, 60.0), rng)
        image = image * (1.0 - alpha[..., None]) + layer_colour * alpha[..., None]
    return image.astype(np.float32)


def _two_colour_gradient(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    weight = pattern("gradient", shape, rng)[..., None]
    return random_colour(rng) * (1.0 - weight) + random_colour(rng) * weight


def finish(image: np.ndarray, rng: np.random.Generator, clutter: float) -> np.ndarray:
    """Camera-like finish: slight blur (anti-aliasing) and sensor noise; returns [H, W, 3] uint8 RGB."""
    sigma = float(rng.uniform(0.3, 0.9))
    image = cv2.GaussianBlur(image, (3, 3), sigma)
    noise = rng.normal(0.0, 0.01 + 0.03 * clutter, size=image.shape).astype(np.float32)
    return np.clip((image + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
