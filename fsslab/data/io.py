"""Safe reading of images and label maps, with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fsslab.batch import IGNORE_INDEX
from fsslab.errors import DatasetError  # re-exported: fsslab.data.io.DatasetError is its historical home


def _read_bytes(path: str | Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    if not data:
        raise DatasetError(f"{what} is empty (0 bytes): {path}")
    return data


def _looks_truncated(data: bytes) -> str | None:
    """Cheap structural check, because some decoders return a partial image for a truncated file."""
    if data[:2] == b"\xff\xd8":  # JPEG: the end-of-image marker must follow the last start-of-scan
        last_scan = data.rfind(b"\xff\xda")
        if last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0:
            return "truncated JPEG (no end-of-image marker after the last scan)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk)"
    return None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8 [H,W,3].

    Grayscale images are replicated to 3 channels and RGBA images lose their alpha channel (it is
    dropped, not composited), exactly as `cv2.IMREAD_COLOR` in the reference loaders does; EXIF
    orientation is applied the same way. A missing, empty, corrupt or truncated file raises.
    """
    data = _read_bytes(path, "image")
    problem = _looks_truncated(data)
    if problem:
        raise DatasetError(f"corrupt image {path}: {problem}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"corrupt image {path}: OpenCV could not decode it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path, n_classes: int | None = None) -> np.ndarray:
    """Read a label map as uint8 [H,W] (0 background, 1..C classes, 255 ignore).

    Palette PNGs give their indices, grayscale PNGs their values. Colour (RGB) label images are
    rejected rather than guessed. With `n_classes`, values outside {0..C, 255} raise, naming them.
    """
    data = _read_bytes(path, "label")
    problem = _looks_truncated(data)
    if problem:
        raise DatasetError(f"corrupt label {path}: {problem}")
    try:
        with Image.open(path) as pil:
            mode = pil.mode
            pil.load()
            if mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetError(
                    f"label {path} has mode {mode}; expected a single-channel index image (L or P mode PNG)"
                )
            array = np.array(pil)  # a writable copy
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"corrupt label {path}: {err}") from err
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DatasetError(
                f"label {path} has values outside 0..255 (min {array.min()}, max {array.max()})"
            )
        array = array.astype(np.uint8)
    if n_classes is not None:
        check_label_values(array, n_classes, path)
    return array


def check_label_values(label: np.ndarray, n_classes: int, path: str | Path) -> None:
    """Raise when a label holds values other than 0..n_classes and 255."""
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in present if n_classes < v < IGNORE_INDEX]
    if bad:
        shown = bad[:10] + (["..."] if len(bad) > 10 else [])
        raise DatasetError(
            f"label {path} has values {shown} outside the class range 0..{n_classes} (and {IGNORE_INDEX} = ignore)"
        )


def image_size(path: str | Path, what: str = "image") -> tuple[int, int]:
    """(height, width) of an image (or, as ``what`` names it in errors, a mask) from its header, without decoding
    the pixels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as pil:
            width, height = pil.size
    except (OSError, SyntaxError) as err:
        raise DatasetError(f"corrupt {what} {path}: {err}") from err
    return height, width


def check_same_size(image_shape: tuple[int, ...], label_shape: tuple[int, ...], image_path, label_path) -> None:
    """Raise when an image and its label differ in height/width."""
    if tuple(image_shape[:2]) != tuple(label_shape[:2]):
        raise DatasetError(
            f"image/label size mismatch: {image_path} is {image_shape[0]}x{image_shape[1]} (HxW) but "
            f"{label_path} is {label_shape[0]}x{label_shape[1]}"
        )


def read_pair(image_path: str | Path, label_path: str | Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its label, checking that the two match in size and the label's values."""
    image = read_image(image_path)
    label = read_label(label_path, n_classes)
    check_same_size(image.shape, label.shape, image_path, label_path)
    return image, label
