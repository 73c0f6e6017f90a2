"""Files of ``fsslab predict``: reading and checking support masks, boxes, scribbles and queries; writing results.

Every problem raises :class:`PredictError` with one line that names the file (or the value) and the problem,
so the command line can print it as it is.

Encodings:

- a support **mask** is a single-channel image (or a colour image whose channels are equal): 0 is background,
  one other value (usually 1 or 255) is the object; palette PNGs give their indices;
- a **box** is ``x0,y0,x1,y1`` in pixels with ``x1``/``y1`` exclusive (the box of the whole image is
  ``0,0,W,H``);
- a **scribble** is an image of the support's size: its drawn pixels (alpha > 0 when it has a transparency
  channel, else any non-zero channel) are the object, everything else background, the encoding of the
  package's scribble supports (``fsslab.data.weak``, ``unlabeled="background"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fsslab.data.io import DatasetError, _looks_truncated, read_image
from fsslab.errors import FsslabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NOT_AN_IMAGE = "not an image file (or a format Pillow cannot read)"
OVERLAY_COLOUR = (230, 41, 31)  # RGB of the predicted object in the overlay (fsslab.viz's FOREGROUND)


class PredictError(FsslabError, ValueError):
    """Unusable input of ``fsslab predict``; the message names the file or value and the problem."""


def load_image(path: str | Path, what: str = "image") -> np.ndarray:
    """RGB uint8 [H,W,3] of ``path`` (``fsslab.data.io.read_image``), any problem as a :class:`PredictError`."""
    try:
        return read_image(path)
    except FileNotFoundError:
        raise PredictError(f"{what} not found: {path}") from None
    except DatasetError as err:
        reason = str(err).removeprefix(f"corrupt image {path}: ")
        raise PredictError(f"{what} {path} is unreadable: {reason}") from None


def _read_pixels(path: Path, what: str) -> np.ndarray:
    """[H,W] or [H,W,C] array of an image file as stored (palette indices for palette images)."""
    if not path.is_file():
        raise PredictError(f"{what} not found: {path}")
    data = path.read_bytes()
    problem = "the file is empty" if not data else _looks_truncated(data)
    if problem:
        raise PredictError(f"{what} {path} is unreadable: {problem}")
    try:
        with Image.open(path) as pil:
            pil.load()
            if pil.mode == "LA":
                pil = pil.getchannel("L")
            elif pil.mode not in ("1", "L", "P", "I", "I;16", "RGB", "RGBA"):
                pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
            return np.array(pil)
    except UnidentifiedImageError:
        raise PredictError(f"{what} {path} is unreadable: {NOT_AN_IMAGE}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise PredictError(f"{what} {path} is unreadable: {err}") from None


def _check_size(array: np.ndarray, shape: tuple[int, int] | None, path: Path, what: str, image: str) -> None:
    if shape is not None and array.shape[:2] != tuple(shape):
        raise PredictError(
            f"{what} {path} is {array.shape[0]}x{array.shape[1]} (HxW) but its image {image} is "
            f"{shape[0]}x{shape[1]}; they must have the same size"
        )


def read_mask(path: str | Path, shape: tuple[int, int] | None = None, image: str = "") -> np.ndarray:
    """A binary support mask as uint8 [H,W] 0/1 (see the module docstring for the encoding).

    ``shape``: the (H, W) of its image, checked. Raises for a missing/unreadable file, another size, a colour
    image, more than one non-zero value (e.g. a JPEG mask) and a mask without any object pixel."""
    path = Path(path)
    array = _read_pixels(path, "mask")
    if array.ndim == 3:
        colour = array[..., :3]
        if not ((colour == colour[..., :1]).all()):
            raise PredictError(f"mask {path} is a colour image; save it as a greyscale PNG "
                               "(0 background, 1 or 255 object)")
        array = colour[..., 0]
    _check_size(array, shape, path, "mask", image)
    values = np.unique(array)
    nonzero = values[values != 0]
    if len(nonzero) > 1:
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise PredictError(
            f"mask {path} is not binary: it holds the values {shown}; expected 0 (background) and one other "
            "value (1 or 255) for the object" + (" (a JPEG mask is never binary: use PNG)"
                                                  if path.suffix.lower() in (".jpg", ".jpeg") else ""))
    if len(nonzero) == 0:
        raise PredictError(f"mask {path} is empty: no object pixel (every value is 0)")
    return (array != 0).astype(np.uint8)


def read_scribble(path: str | Path, shape: tuple[int, int] | None = None, image: str = "") -> np.ndarray:
    """The drawn pixels of a scribble image as bool [H,W] (alpha > 0, or else any non-zero channel)."""
    path = Path(path)
    array = _read_pixels(path, "scribble")
    _check_size(array, shape, path, "scribble", image)
    if array.ndim == 3 and array.shape[2] == 4 and (array[..., 3] < 255).any():
        drawn = array[..., 3] > 0
    else:
        drawn = (array[..., :3] != 0).any(-1) if array.ndim == 3 else array != 0
    if not drawn.any():
        raise PredictError(f"scribble {path} is empty: no drawn pixel (everything is 0 or transparent)")
    return drawn


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` → four ints (pixels; x1, y1 exclusive)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise PredictError(f"box {text!r} must be four integers x0,y0,x1,y1 (pixels, x1/y1 exclusive)") from None
    return x0, y0, x1, y1


def check_box(box: tuple[int, int, int, int], shape: tuple[int, int], image: str) -> None:
    """Raise unless ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H`` for an (H, W) image."""
    x0, y0, x1, y1 = box
    height, width = shape
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise PredictError(
            f"box {x0},{y0},{x1},{y1} does not fit {image} ({width}x{height} WxH): need 0 <= x0 < x1 <= {width} "
            f"and 0 <= y0 < y1 <= {height}"
        )


def collect_queries(paths: Iterable[str | Path]) -> list[Path]:
    """Query files in order: files as given, folders expanded to their images (sorted, not recursive)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise PredictError(f"query folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise PredictError(f"query not found: {path}")
    if not found:
        raise PredictError("no query image given")
    return found


def check_queries(paths: Iterable[Path]) -> None:
    """Open every query's header (no decoding), so that a file that is no image fails before any work."""
    for path in paths:
        try:
            with Image.open(path) as pil:
                pil.size  # noqa: B018 - reading the header is the check
        except UnidentifiedImageError:
            raise PredictError(f"query image {path} is unreadable: {NOT_AN_IMAGE}") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise PredictError(f"query image {path} is unreadable: {err}") from None


def unique_stem(name: str, used: set[str]) -> str:
    """File stem for the outputs of query ``name``: its stem, numbered when an earlier query had it (``used``
    collects the stems handed out)."""
    stem = Path(name).stem or "query"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 [H,W,3]: ``image`` with the object of ``mask`` tinted and outlined."""
    out = image.astype(np.float32)
    region = mask.astype(bool)
    out[region] = (1 - alpha) * out[region] + alpha * np.asarray(OVERLAY_COLOUR, np.float32)
    out = out.round().astype(np.uint8)
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, OVERLAY_COLOUR, thickness)
    return out


def write_outputs(out_dir: str | Path, stem: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    """Write ``<stem>_mask.png`` (0/255, the query's size) and ``<stem>_overlay.png`` into ``out_dir``;
    returns their file names as {"mask": ..., "overlay": ...}."""
    out = Path(out_dir)
    names = {"mask": f"{stem}_mask.png", "overlay": f"{stem}_overlay.png"}
    try:
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / names["mask"])
        Image.fromarray(overlay(image, mask)).save(out / names["overlay"])
    except OSError as err:
        raise PredictError(f"cannot write the results to {out}: {err}") from None
    return names
