"""Files of ``fsslab predict``: reading and checking support masks, boxes, scribbles and queries; writing results.

Every problem raises :class:`PredictError` with one line that names the file (or the value) and the problem,
so the command line can print it as it is. The outputs are written as one set (:class:`OutputSet`) that never
replaces a file it did not write.

Encodings:

- a support **mask** is a single-channel image (or a colour image whose channels are equal): 0 is background,
  one other value (usually 1 or 255) is the object, or VOC style 0/1/255 with 255 an ignore band; palette PNGs
  give their indices; anything else is refused (``fsslab.data.io.binary_mask``, docs/inputs.md). It is
  aligned to its image's EXIF orientation (``fsslab.data.io.align_to_image``);
- a **box** is ``x0,y0,x1,y1`` in pixels of the image as displayed (EXIF orientation applied) with ``x1``/``y1``
  exclusive (the box of the whole image is ``0,0,W,H``);
- a **scribble** is an image of the support's size: its drawn pixels (alpha > 0 when it has a transparency
  channel, else any non-zero channel) are the object, everything else background, the encoding of the
  package's scribble supports (``fsslab.data.weak``, ``unlabeled="background"``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fsslab.data.io import (
    DatasetError,
    ImageHeader,
    align_to_image,
    binary_mask,
    grey_values,
    read_image_header,
    read_stored_pixels,
)
from fsslab.errors import FsslabError, FsslabWarning

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NOT_AN_IMAGE = "not an image file (or a format fsslab cannot decode)"
OVERLAY_COLOUR = (230, 41, 31)  # RGB of the predicted object in the overlay (fsslab.viz's FOREGROUND)
PREDICTIONS_FILE = "predictions.jsonl"  # the record of a prediction set: one line per query, its output files
OUTPUT_KINDS = ("mask", "overlay")


class PredictError(FsslabError, ValueError):
    """Unusable input of ``fsslab predict``; the message names the file or value and the problem."""


def _as_predict_error(err: DatasetError | FileNotFoundError, what: str, path: str | Path) -> PredictError:
    """A reader's error in predict's words: "<what> <path> is unreadable: <reason>" for a corrupt file."""
    text = str(err)
    for prefix in (f"corrupt {what} {path}: ", f"corrupt image {path}: "):
        if text.startswith(prefix):
            return PredictError(f"{what} {path} is unreadable: {text.removeprefix(prefix)}")
    if isinstance(err, FileNotFoundError):
        return PredictError(f"{what} not found: {path}")
    return PredictError(text)


def load_image_header(path: str | Path, what: str = "image") -> tuple[np.ndarray, ImageHeader]:
    """RGB uint8 [H,W,3] of ``path`` as displayed (``fsslab.data.io.read_image_header``: pixel budget, EXIF
    orientation, corruption checks) and its header; any problem as a :class:`PredictError`."""
    try:
        return read_image_header(path, what)
    except (DatasetError, FileNotFoundError) as err:
        raise _as_predict_error(err, what, path) from None


def load_image(path: str | Path, what: str = "image") -> np.ndarray:
    """RGB uint8 [H,W,3] of ``path`` (``fsslab.data.io.read_image``), any problem as a :class:`PredictError`."""
    return load_image_header(path, what)[0]


def _read_pixels(path: Path, what: str) -> tuple[np.ndarray, ImageHeader]:
    """[H,W] or [H,W,C] array of an image file as stored (palette indices for palette images) and its header."""
    try:
        return read_stored_pixels(path, what)
    except (DatasetError, FileNotFoundError) as err:
        raise _as_predict_error(err, what, path) from None


def _aligned(array: np.ndarray, header: ImageHeader, image: ImageHeader | tuple[int, int] | None, path: Path,
             what: str, name: str) -> np.ndarray:
    """A mask/scribble in its image's displayed frame (EXIF), checked to have the image's size."""
    try:
        if isinstance(image, ImageHeader):
            array = align_to_image(array, header, image, what)
        elif header.orientation != 1:
            array = align_to_image(array, header, ImageHeader(header.path, *array.shape[:2]), what)
    except DatasetError as err:
        raise PredictError(str(err)) from None
    shape = image.shape if isinstance(image, ImageHeader) else image
    _check_size(array, shape, path, what, name or (str(image.path) if isinstance(image, ImageHeader) else ""))
    return array


def _check_size(array: np.ndarray, shape: tuple[int, int] | None, path: Path, what: str, image: str) -> None:
    if shape is not None and array.shape[:2] != tuple(shape):
        turned = array.shape[:2] == tuple(shape)[::-1]
        raise PredictError(
            f"{what} {path} is {array.shape[0]}x{array.shape[1]} (HxW) but its image {image} is "
            f"{shape[0]}x{shape[1]}; they must have the same size"
            + (" (the image is read as displayed, its EXIF orientation applied: draw the mask in that orientation)"
               if turned else "")
        )


def read_mask(path: str | Path, shape: ImageHeader | tuple[int, int] | None = None, image: str = "") -> np.ndarray:
    """A support mask as uint8 [H,W]: 1 object, 0 background, 255 ignore (``fsslab.data.io.binary_mask``: 0 and
    one other value, or VOC-style 0/1/255).

    ``shape``: the header of its image (its EXIF orientation is applied to the mask as ``align_to_image``
    says) or the image's (H, W), checked. Raises for a missing/unreadable file, another size, a colour image,
    values that are not one of the conventions (e.g. a JPEG mask) and a mask without any object pixel."""
    path = Path(path)
    array, header = _read_pixels(path, "mask")
    try:
        grey = grey_values(array, path, "mask")
    except DatasetError as err:
        raise PredictError(str(err)) from None
    grey = _aligned(grey, header, shape, path, "mask", image)
    try:
        return binary_mask(grey, path, "mask")
    except DatasetError as err:
        raise PredictError(str(err)) from None


def read_scribble(path: str | Path, shape: ImageHeader | tuple[int, int] | None = None,
                  image: str = "") -> np.ndarray:
    """The drawn pixels of a scribble image as bool [H,W] (alpha > 0, or else any non-zero channel)."""
    path = Path(path)
    array, header = _read_pixels(path, "scribble")
    array = _aligned(array, header, shape, path, "scribble", image)
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


def written_by_predict(folder: Path) -> set[str]:
    """Names of the files an earlier ``fsslab predict`` wrote into ``folder`` (its predictions.jsonl lists
    them), the record itself included; empty when there is none."""
    record = folder / PREDICTIONS_FILE
    if not record.is_file():
        return set()
    names = {PREDICTIONS_FILE}
    try:
        lines = record.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return names
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):  # only names of the form predict writes: a record cannot claim other files
            names |= {Path(item[k]).name for k in OUTPUT_KINDS
                      if isinstance(item.get(k), str) and Path(item[k]).name.endswith(f"_{k}.png")}
    return names


def _same_file(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def collect_queries(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Query files in order: files as given, folders expanded to their images (sorted, not recursive).

    A folder's expansion leaves out the files of ``exclude`` (the supports' masks and scribbles) and the
    outputs of an earlier ``fsslab predict`` into that folder (listed in its predictions.jsonl), with a
    notice (FsslabWarning) that counts them; files named one by one are always taken."""
    found: list[Path] = []
    excluded = {_same_file(Path(p)) for p in exclude}
    for item in paths:
        path = Path(item)
        if path.is_dir():
            outputs = written_by_predict(path)
            images, skipped_outputs, skipped_labels = [], [], []
            for p in sorted(path.iterdir()):
                if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                    continue
                if p.name in outputs:
                    skipped_outputs.append(p.name)
                elif _same_file(p) in excluded:
                    skipped_labels.append(p.name)
                else:
                    images.append(p)
            if skipped_outputs:
                warnings.warn(f"query folder {path}: left out {len(skipped_outputs)} file(s) written by an earlier "
                              f"fsslab predict (listed in {path / PREDICTIONS_FILE}, e.g. {skipped_outputs[0]})",
                              FsslabWarning, stacklevel=2)
            if skipped_labels:
                warnings.warn(f"query folder {path}: left out the support mask/scribble file(s) "
                              f"{', '.join(skipped_labels[:3])}{' ...' if len(skipped_labels) > 3 else ''}",
                              FsslabWarning, stacklevel=2)
            if not images:
                raise PredictError(f"query folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)})"
                                   + (" besides the files left out above" if skipped_outputs or skipped_labels
                                      else ""))
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise PredictError(f"query not found: {path}")
    if not found:
        raise PredictError("no query image given")
    return found


def check_queries(paths: Iterable[Path]) -> None:
    """Read and decode every query (the pixel budget, truncation, a corrupt JPEG, an EXIF problem) so that a
    bad file fails before the model loads and before anything is written; one image in memory at a time."""
    for path in paths:
        load_image_header(path, "query image")


def unique_stem(name: str, used: set[str], taken: Any = None) -> str:
    """File stem for the outputs of query ``name``: its stem, numbered when an earlier query had it (``used``
    collects the stems handed out) or when ``taken(stem)`` says that its output names are already in use."""
    stem = Path(name).stem or "query"
    candidate, n = stem, 1
    while candidate in used or (taken is not None and taken(candidate)):
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


class OutputSet:
    """The files of one ``fsslab predict`` run in ``out_dir``, written as one set.

    Checked when created, before any work: ``out_dir`` is (or can be made) a writable folder, and does not hold
    an earlier prediction set (its predictions.jsonl) unless ``overwrite``. The outputs are written into a
    hidden staging folder inside ``out_dir`` and moved into place by :meth:`commit` (predictions.jsonl last);
    :meth:`abort` (or any failure before the commit) removes the staging folder, leaving ``out_dir`` as it was.
    No output ever replaces a file that is not an earlier prediction (an input, a user's file): its query gets
    another name (``<stem>_2_mask.png``), with a notice; ``protected`` files are never replaced or removed."""

    def __init__(self, out_dir: str | Path, *, overwrite: bool = False, protected: Iterable[str | Path] = ()):
        self.out = Path(out_dir)
        self.protected = {_same_file(Path(p)) for p in protected}
        if self.out.exists() and not self.out.is_dir():
            raise PredictError(f"--out {self.out} is a file, not a folder: give a folder for the results")
        self.previous = written_by_predict(self.out) if self.out.is_dir() else set()
        if self.previous and not overwrite:
            raise PredictError(
                f"--out {self.out} already holds predictions ({PREDICTIONS_FILE} and {len(self.previous) - 1} "
                "file(s) of an earlier fsslab predict): give another --out, or --overwrite to replace them"
            )
        self.created = not self.out.exists()  # removed again by abort() when nothing lands in it
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=".fsslab-predict-", dir=self.out))
        except OSError as err:
            raise PredictError(f"cannot write the results to --out {self.out}: {err.strerror or err}") from None
        self.used: set[str] = set()
        self.records: list[dict[str, Any]] = []
        self.renamed: list[str] = []

    def _taken(self, stem: str) -> bool:
        for kind in OUTPUT_KINDS:
            target = self.out / f"{stem}_{kind}.png"
            if (target.exists() or target.is_symlink()) and (
                    target.name not in self.previous or _same_file(target) in self.protected):
                return True
        return False

    def add(self, source: str, image: np.ndarray, mask: np.ndarray, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the outputs of one query into the staging folder; returns its record."""
        self.protected.add(_same_file(Path(source)))
        natural = unique_stem(source, set(self.used))
        stem = unique_stem(source, self.used, self._taken)
        if stem != natural:
            self.renamed.append(f"{natural}_mask.png -> {stem}_mask.png")
        names = write_outputs(self.staging, stem, image, mask)
        record = {**summary, **names}
        self.records.append(record)
        return record

    def commit(self) -> list[dict[str, Any]]:
        """Move the set into ``out_dir`` (an earlier set's files that this one does not replace are removed)."""
        try:
            with open(self.staging / PREDICTIONS_FILE, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record, allow_nan=False) + "\n" for record in self.records)
            new = {name for r in self.records for name in (r["mask"], r["overlay"])}
            for name in sorted(new):
                os.replace(self.staging / name, self.out / name)
            for name in sorted(self.previous - new - {PREDICTIONS_FILE}):
                old = self.out / name
                if old.is_file() and _same_file(old) not in self.protected:
                    old.unlink()
            os.replace(self.staging / PREDICTIONS_FILE, self.out / PREDICTIONS_FILE)
        except (OSError, ValueError) as err:
            self.abort()
            raise PredictError(f"cannot write the results to --out {self.out}: {err}") from None
        self.abort()
        if self.renamed:
            warnings.warn(f"--out {self.out}: {len(self.renamed)} output name(s) were taken by other files, which "
                          f"stay untouched; written beside them: {'; '.join(self.renamed[:3])}"
                          + (" ..." if len(self.renamed) > 3 else ""), FsslabWarning, stacklevel=2)
        return self.records

    def abort(self) -> None:
        """Remove the staging folder (and whatever it holds), and ``out_dir`` when this set created it and it
        stayed empty."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.created:
            try:
                self.out.rmdir()  # only when empty
            except OSError:
                pass


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
