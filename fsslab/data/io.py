"""Safe reading of images and label maps, with errors that name the file and the problem.

Every image fsslab reads (dataset images, ``fsslab predict``'s supports and queries, masks) goes through the
same checks, in this order, before a pixel is decoded:

- the **pixel budget**: the header's width x height must not exceed :func:`max_pixels` (64 megapixels unless
  ``FSSLAB_MAX_PIXELS`` or :func:`set_max_pixels` raises it), so that a 20000x20000 PNG is refused in
  milliseconds instead of allocating gigabytes;
- **truncation**: a JPEG without an end-of-image marker after its last scan, a PNG without its IEND chunk;
- **decoder warnings are errors**: libjpeg's "Corrupt JPEG data" / "Premature end of JPEG file" (the
  decoder would return partly grey pixels) raise, naming the file;
- **EXIF orientation**: images are read as viewers display them (the EXIF orientation tag applied, as
  Pillow's ``ImageOps.exif_transpose``); a mask/label is aligned to its image by :func:`align_to_image`.

Binary masks (supports, class folders) follow one convention, :func:`binary_mask` (docs/inputs.md).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from fsslab.batch import IGNORE_INDEX
from fsslab.errors import (
    ConfigError,
    DatasetError,  # re-exported: fsslab.data.io.DatasetError is its historical home
)

MAX_PIXELS_ENV = "FSSLAB_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000  # a 61-MP camera frame fits; a 20000x20000 (400 MP) PNG bomb does not
ORIENTATION_TAG = 0x0112
ORIENTATIONS = {1: "none", 2: "mirror left-right", 3: "rotate 180", 4: "mirror top-bottom",
                5: "transpose", 6: "rotate 90 clockwise", 7: "transverse", 8: "rotate 90 counter-clockwise"}
_max_pixels_override: int | None = None
_HEADER_LOCK = threading.Lock()  # Pillow's own bomb limit is lifted while a header is read (ours is checked)


class ImageTooLargeError(DatasetError):
    """An image's header declares more pixels than the budget (:func:`max_pixels`)."""


def set_max_pixels(pixels: int | None) -> None:
    """Set the pixel budget of this process (None: back to ``FSSLAB_MAX_PIXELS`` or the default)."""
    global _max_pixels_override
    if pixels is not None and (isinstance(pixels, bool) or not isinstance(pixels, int) or pixels <= 0):
        raise ConfigError(f"the pixel budget must be a positive integer, got {pixels!r}")
    _max_pixels_override = pixels


def max_pixels() -> int:
    """The largest width x height fsslab decodes: :func:`set_max_pixels`'s, else ``$FSSLAB_MAX_PIXELS``, else
    64 000 000."""
    if _max_pixels_override is not None:
        return _max_pixels_override
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r} is not a positive number of pixels (e.g. 200000000)")
    return value


def _let_pillow_open(budget: int) -> None:
    """Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS at open; a budget raised above that must reach it."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and budget > limit:
        Image.MAX_IMAGE_PIXELS = budget


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: its size as displayed (EXIF orientation applied) and that orientation."""

    path: Path
    height: int
    width: int
    orientation: int = 1  # EXIF orientation tag, 1 (none) .. 8
    format: str = ""
    mode: str = ""  # Pillow's mode (P: palette indices)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) as displayed."""
        return self.height, self.width

    @property
    def stored_shape(self) -> tuple[int, int]:
        """(height, width) of the pixels as stored, before the orientation."""
        return (self.width, self.height) if self.orientation in (5, 6, 7, 8) else (self.height, self.width)


def _exif_orientation(pil: Image.Image) -> int:
    try:
        value = int(pil.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a malformed EXIF block: no orientation, as Pillow's exif_transpose
        return 1
    return value if value in ORIENTATIONS else 1


def too_large_message(path: str | Path, what: str, width: int, height: int, budget: int) -> str:
    return (f"{what} {path} is {width}x{height} (WxH, {width * height / 1e6:.1f} megapixels), over fsslab's "
            f"budget of {budget / 1e6:.1f} megapixels: resize it, or raise the budget with "
            f"{MAX_PIXELS_ENV}={width * height} (or `fsslab predict --max-pixels`)")


def read_header(path: str | Path, what: str = "image") -> ImageHeader:
    """The header of an image file, checked against the pixel budget, without decoding the pixels."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{what} {path} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    budget = max_pixels()
    _let_pillow_open(budget)
    try:
        with warnings.catch_warnings(), _HEADER_LOCK:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the budget below is the check
            try:
                with Image.open(path) as pil:
                    width, height = pil.size
                    fmt, orientation, mode = pil.format or "", _exif_orientation(pil), pil.mode
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{what} {path} is over fsslab's budget of {budget / 1e6:.1f} megapixels "
                                 f"({str(err).split(' could be')[0]}): resize it, or raise {MAX_PIXELS_ENV}") from None
    except UnidentifiedImageError:
        raise DatasetError(f"corrupt {what} {path}: not an image file (or a format fsslab cannot decode)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"corrupt {what} {path}: {err}") from None
    if width * height > budget:
        raise ImageTooLargeError(too_large_message(path, what, width, height, budget))
    if width <= 0 or height <= 0:
        raise DatasetError(f"corrupt {what} {path}: its header declares {width}x{height} pixels")
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageHeader(path, height, width, orientation, fmt, mode)


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` ([H,W] or [H,W,C], as stored) as displayed under EXIF ``orientation`` (ImageOps.exif_transpose)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def align_to_image(label: np.ndarray, label_header: ImageHeader, image_header: ImageHeader,
                   what: str = "mask", ambiguous: str = "refuse") -> np.ndarray:
    """A mask/label read as stored, in its image's displayed frame (EXIF orientation applied to the image).

    A mask carrying its own orientation tag is displayed by it. A mask without one, next to an image whose
    EXIF orientation is not 1, is aligned by its size when that tells the frame (a 90-degree turn of a
    non-square image: a mask of the stored size is turned as its image); when both frames have the same
    size (a square image, or a mirror or 180-degree turn) it is refused, with the fix, rather than guessed
    (``ambiguous="refuse"``: masks you draw), or taken as stored (``ambiguous="stored"``: the label maps of
    PASCAL / COCO / the synthetic benchmark, read as the reference loaders read them, with cv2).
    """
    if label_header.orientation != 1:
        label = orient(label, label_header.orientation)
    image_orientation = image_header.orientation
    if image_orientation == 1 or label_header.orientation != 1:
        return label
    shape, stored = image_header.shape, image_header.stored_shape
    if shape != stored and label.shape[:2] == stored:
        return orient(label, image_orientation)
    if shape != stored or ambiguous == "stored":
        return label  # the displayed size (or another size, which the size check reports)
    raise DatasetError(
        f"{what} {label_header.path} is ambiguous: its image {image_header.path} carries the EXIF orientation "
        f"{image_orientation} ({ORIENTATIONS[image_orientation]}), and the {what} has the same size in the stored "
        f"and in the displayed frame, so fsslab cannot tell which one it was drawn on; save the image upright "
        f"without the tag (e.g. PIL.ImageOps.exif_transpose(Image.open(path)).save(...)) and draw the {what} on "
        "that, or give the mask the same EXIF orientation tag"
    )


def read_checked_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of an image file, refused (one line naming ``what`` and the file) when it is missing, a
    directory, empty or visibly truncated."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    if not data:
        raise DatasetError(f"{what} is empty (0 bytes): {path}")
    problem = _looks_truncated(data)
    if problem:
        raise DatasetError(f"corrupt {what} {path}: {problem}")
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


# libjpeg's warnings that mean the decoded pixels are (partly) not the image's
JPEG_CORRUPTION = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters",
                   "Bogus Huffman table", "Huffman table 0x")
_STDERR_LOCK = threading.Lock()
_capture: tuple[int, object] | None = None  # (pid, temporary file) receiving fd 2 while libjpeg decodes


def _capture_file():
    global _capture
    if _capture is None or _capture[0] != os.getpid():
        _capture = (os.getpid(), tempfile.TemporaryFile())  # noqa: SIM115 - reused for the process's life
    return _capture[1]


def decode_warnings(decode, *args):
    """Run ``decode(*args)`` with the C stderr (fd 2) captured; returns (result, the lines written there).

    OpenCV's libjpeg prints its warnings (a corrupt scan, a premature end) on stderr and returns the image
    with grey blocks; capturing them is the only way to learn that the pixels are not the file's."""
    with _STDERR_LOCK:
        handle = _capture_file()
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        handle.seek(0)
        handle.truncate()
        saved = os.dup(2)
        try:
            os.dup2(handle.fileno(), 2)
            result = decode(*args)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        handle.seek(0)
        text = handle.read().decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return result, lines


def _decode_colour(data: bytes, path: Path, what: str) -> np.ndarray:
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # the orientation is applied by read_image
    buffer = np.frombuffer(data, np.uint8)
    if data[:2] != b"\xff\xd8":
        bgr = cv2.imdecode(buffer, flags)
    else:
        bgr, lines = decode_warnings(cv2.imdecode, buffer, flags)
        corrupt = [line for line in lines if line.startswith(JPEG_CORRUPTION)]
        other = [line for line in lines if line not in corrupt]
        if other:  # not ours to judge (or another thread's output): passed on
            print("\n".join(other), file=sys.stderr)
        if corrupt:
            raise DatasetError(f"corrupt {what} {path}: the JPEG decoder reported {corrupt[0]!r} (part of the "
                               "image would be decoded as grey blocks); re-export or replace the file")
    if bgr is None:
        raise DatasetError(f"corrupt {what} {path}: OpenCV could not decode it")
    return bgr


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """Read an image as RGB uint8 [H,W,3], as displayed (its EXIF orientation applied).

    Grayscale images are replicated to 3 channels and RGBA images lose their alpha channel (it is
    dropped, not composited), exactly as `cv2.IMREAD_COLOR` in the reference loaders does. A missing,
    empty, corrupt or truncated file, one over the pixel budget, or a JPEG the decoder warns about raises.
    """
    return read_image_header(path, what)[0]


def read_image_header(path: str | Path, what: str = "image") -> tuple[np.ndarray, ImageHeader]:
    """:func:`read_image` and the file's :class:`ImageHeader` (for aligning its mask: :func:`align_to_image`)."""
    path = Path(path)
    data = read_checked_bytes(path, what)
    header = read_header(path, what)
    bgr = _decode_colour(data, path, what)
    if bgr.shape[:2] != header.stored_shape:
        raise DatasetError(f"corrupt {what} {path}: the decoder gave {bgr.shape[0]}x{bgr.shape[1]} pixels, the "
                           f"header declares {header.stored_shape[0]}x{header.stored_shape[1]}")
    return orient(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), header.orientation), header


def read_stored_pixels(path: str | Path, what: str = "mask") -> tuple[np.ndarray, ImageHeader]:
    """[H,W] or [H,W,C] array of an image file as stored (palette indices of palette images, no orientation
    applied) and its header; LA is read as L, other modes than 1/L/P/I/I;16/RGB/RGBA are converted to RGB(A)."""
    path = Path(path)
    read_checked_bytes(path, what)
    header = read_header(path, what)
    try:
        with Image.open(path) as pil:
            pil.load()
            if pil.mode == "LA":
                pil = pil.getchannel("L")
            elif pil.mode not in ("1", "L", "P", "I", "I;16", "RGB", "RGBA"):
                pil = pil.convert("RGBA" if "A" in pil.getbands() else "RGB")
            return np.array(pil), header
    except UnidentifiedImageError:
        raise DatasetError(f"corrupt {what} {path}: not an image file (or a format fsslab cannot decode)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"corrupt {what} {path}: {err}") from None


def grey_values(array: np.ndarray, path: str | Path, what: str = "mask") -> np.ndarray:
    """A single-channel view of a mask: [H,W] as is, a colour image whose channels are equal as one channel
    (the alpha channel ignored), any other colour image refused."""
    if array.ndim == 2:
        return array
    colour = array[..., :3]
    if not (colour == colour[..., :1]).all():
        raise DatasetError(f"{what} {path} is a colour image; save it as a greyscale or palette PNG "
                           "(0 background, 1 or 255 object; docs/inputs.md)")
    return colour[..., 0]


def binary_mask(values: np.ndarray, source: str | Path, what: str = "mask", *, allow_empty: bool = False,
                threshold: int | None = None, hint: str = "") -> np.ndarray:
    """fsslab's one convention for a binary mask (CLI, API, class folders): uint8 [H,W] with 1 object,
    0 background, 255 ignore, from the values of a single-channel mask:

    - ``{0, v}`` (one non-zero value v, e.g. 1, 100 or 255): v is the object, 0 the background;
    - ``{0, 1, 255}`` (VOC style; also ``{1, 255}``): 1 is the object, 255 an ignore band (not scored, not
      learnt), 0 the background;
    - a single value: all background (0) or all object (any other value);
    - anything else (0/128/255, a JPEG's many grey levels, negative values) is refused, naming the values;
    - ``threshold`` (FSS-1000's 128, or ``data.params.mask_threshold``): value >= threshold is the object
      instead, for masks that are known to be soft (a 0/1 mask stays 0/1; in a file, a palette mask's non-zero
      indices are the object).

    ``allow_empty``: a mask without object pixels is returned (datasets) instead of refused (supports).
    """
    array = np.asarray(values)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim != 2 or 0 in array.shape:
        raise DatasetError(f"{what} {source} must be a non-empty [H,W] array, got shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer) and (
            not np.isfinite(array).all() or (array != np.round(array)).any()):
            raise DatasetError(f"{what} {source} holds non-integer values; a mask holds 0 (background), 1 or 255 "
                               "(object) and 255 (ignore) only")
    values_present = np.unique(array)
    shown = ", ".join(str(v) for v in values_present[:8].tolist()) + (", ..." if len(values_present) > 8 else "")
    if threshold is not None:
        if values_present.min() < 0:
            raise DatasetError(f"{what} {source} holds negative values ({shown})")
        if values_present.max() <= 1:
            mask = (array > 0).astype(np.uint8)
        else:
            mask = (array >= threshold).astype(np.uint8)
            if not mask.any() and (array > 0).any():
                raise DatasetError(f"{what} {source} holds the values {shown}: none reaches the object threshold "
                                   f"{threshold}, so it would read as empty; save the object as 255 (or 1)")
    else:
        nonzero = values_present[values_present != 0]
        if len(nonzero) == 0:
            mask = np.zeros(array.shape, np.uint8)
        elif len(nonzero) == 1 and nonzero[0] > 0:
            mask = (array != 0).astype(np.uint8)
        elif set(nonzero.tolist()) == {1, IGNORE_INDEX}:
            mask = array.astype(np.uint8)  # VOC style: 1 object, 255 ignore band
        else:
            jpeg = " (a JPEG mask is never binary: use PNG)" if str(source).lower().endswith((".jpg", ".jpeg")) else ""
            raise DatasetError(
                f"{what} {source} is not binary: it holds the values {shown}; fsslab reads 0 as background and "
                "one other value as the object, or 0/1/255 as background/object/ignore (VOC style); save it "
                f"with those values{jpeg}{hint} (docs/inputs.md)"
            )
    if not allow_empty and not (mask == 1).any():
        raise DatasetError(f"{what} {source} is empty: no object pixel (every value is {shown})")
    return mask


def read_binary_mask_file(path: str | Path, image: ImageHeader | None = None, what: str = "mask", *,
                          allow_empty: bool = False, threshold: int | None = None, hint: str = "") -> np.ndarray:
    """A mask file read by :func:`binary_mask`'s convention, aligned to (and checked against) ``image``."""
    array, header = read_stored_pixels(path, what)
    if header.mode == "P" and threshold is not None:
        threshold = 1  # palette indices are labels, not grey levels: every non-zero index is the object
    if threshold is not None and array.ndim == 3:  # a soft colour mask: its luminance, as PIL's convert("L")
        colour = array[..., :3].astype(np.float32)
        array = np.round(colour @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    grey = grey_values(array, path, what)
    if image is not None:
        grey = align_to_image(grey, header, image, what)
        check_same_size(image.shape, grey.shape, image.path, path)
    elif header.orientation != 1:
        grey = orient(grey, header.orientation)
    return binary_mask(grey, path, what, allow_empty=allow_empty, threshold=threshold, hint=hint)


def read_label(path: str | Path, n_classes: int | None = None, image: ImageHeader | None = None) -> np.ndarray:
    """Read a label map as uint8 [H,W] (0 background, 1..C classes, 255 ignore).

    Palette PNGs give their indices, grayscale PNGs their values. Colour (RGB) label images are
    rejected rather than guessed. With `n_classes`, values outside {0..C, 255} raise, naming them.
    With ``image`` (its header), the label is aligned to the image's EXIF orientation (:func:`align_to_image`).
    """
    read_checked_bytes(path, "label")
    header = read_header(path, "label")
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
    if image is not None:  # a benchmark's label map: as stored when ambiguous, as the reference loaders
        array = align_to_image(array, header, image, "label", ambiguous="stored")
    elif header.orientation != 1:
        array = orient(array, header.orientation)
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
    the pixels: as displayed (EXIF orientation applied), within the pixel budget."""
    return read_header(path, what).shape


def check_same_size(image_shape: tuple[int, ...], label_shape: tuple[int, ...], image_path, label_path) -> None:
    """Raise when an image and its label differ in height/width."""
    if tuple(image_shape[:2]) != tuple(label_shape[:2]):
        turned = tuple(image_shape[:2]) == tuple(label_shape[:2])[::-1]
        raise DatasetError(
            f"image/label size mismatch: {image_path} is {image_shape[0]}x{image_shape[1]} (HxW) but "
            f"{label_path} is {label_shape[0]}x{label_shape[1]}"
            + ("; the sizes are turned by 90 degrees: fsslab reads an image as displayed, its EXIF orientation "
               "tag applied, so its label must be drawn in that orientation" if turned else "")
        )


def read_pair(image_path: str | Path, label_path: str | Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its label, checking that the two match in size and the label's values."""
    image, header = read_image_header(image_path)
    label = read_label(label_path, n_classes, header)
    check_same_size(image.shape, label.shape, image_path, label_path)
    return image, label
