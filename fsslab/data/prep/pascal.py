"""PASCAL VOC 2012 + SBD into SegmentationClassAug labels and the references' lists."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fsslab.batch import IGNORE_INDEX
from fsslab.data.classes import voc_palette
from fsslab.data.prep.common import (
    Outcome,
    PrepError,
    PrepSummary,
    place_image,
    require_dir,
    require_file,
    run_items,
    write_label_png,
    write_list,
)

N_PASCAL_CLASSES = 20
TRAIN_LISTS = ("pfenet", "aug")


def find_voc_root(path: str | os.PathLike) -> Path:
    """The VOC2012 directory, given it, its VOCdevkit parent, or the directory holding VOCdevkit."""
    path = Path(path)
    for candidate in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (candidate / "SegmentationClass").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    require_dir(path, "VOC 2012 root")
    raise FileNotFoundError(
        f"{path} is not a VOC 2012 directory: expected SegmentationClass/, JPEGImages/ and "
        "ImageSets/Segmentation/{train,val}.txt in it (or in VOC2012/ or VOCdevkit/VOC2012/ below it)"
    )


def find_sbd_root(path: str | os.PathLike) -> Path:
    """SBD's `dataset` directory (cls/, img/, train.txt, val.txt), given it or benchmark_RELEASE above it."""
    path = Path(path)
    for candidate in (path, path / "dataset", path / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir():
            return candidate
    require_dir(path, "SBD root")
    raise FileNotFoundError(
        f"{path} is not an SBD directory: expected cls/*.mat and train.txt/val.txt in it "
        "(or in dataset/ or benchmark_RELEASE/dataset/ below it)"
    )


def _read_names(path: Path, what: str) -> list[str]:
    require_file(path, what)
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise PrepError(f"{what} {path} lists no images")
    return names


def read_voc_label(path: str | os.PathLike) -> np.ndarray:
    """A VOC SegmentationClass PNG as class indices [H, W] uint8 (palette or grey PNGs; colour PNGs mapped
    back through the VOC colour map). Raises PrepError naming the file on anything else."""
    try:
        with Image.open(path) as pil:
            pil.load()
            if pil.mode in ("P", "L"):
                label = np.asarray(pil, dtype=np.uint8).copy()
            elif pil.mode in ("RGB", "RGBA"):
                label = _colours_to_indices(np.asarray(pil.convert("RGB")), path)
            else:
                raise PrepError(f"{path}: label mode {pil.mode} is not a palette, grey or RGB PNG")
    except PrepError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise PrepError(f"{path}: unreadable or corrupt PNG ({err})") from err
    _check_values(label, path)
    return label


def _colours_to_indices(rgb: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    palette = voc_palette(256)
    lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette) if i <= N_PASCAL_CLASSES}
    lookup[(224 << 16) | (224 << 8) | 192] = IGNORE_INDEX  # VOC draws the void band in this colour
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique, inverse = np.unique(codes, return_inverse=True)
    unknown = [f"#{c:06x}" for c in unique if c not in lookup]
    if unknown:
        raise PrepError(f"{path}: colour label with colours {unknown[:5]} that are not in the VOC colour map")
    return np.asarray([lookup[c] for c in unique], dtype=np.uint8)[inverse].reshape(codes.shape)


def read_sbd_label(path: str | os.PathLike) -> np.ndarray:
    """SBD's `cls/<name>.mat` (struct GTcls with field Segmentation) as class indices [H, W] uint8."""
    try:  # an extra: only SBD's MATLAB labels need it
        import scipy.io
    except ImportError:
        raise PrepError(f"{path}: reading SBD's .mat labels needs scipy: pip install 'fsslab[prep]'") from None

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises a zoo of types (ValueError, TypeError, MatReadError, OSError)
        raise PrepError(f"{path}: unreadable or corrupt .mat file ({type(err).__name__}: {err})") from err
    gt = mat.get("GTcls")
    segmentation = getattr(gt, "Segmentation", None)
    if segmentation is None:
        raise PrepError(
            f"{path}: no GTcls.Segmentation field (keys: {sorted(k for k in mat if k[0] != '_')})"
        )
    label = np.asarray(segmentation)
    if label.ndim != 2 or label.size == 0:
        raise PrepError(f"{path}: GTcls.Segmentation has shape {label.shape}, expected a 2-D map")
    if label.min() < 0 or label.max() > IGNORE_INDEX:
        raise PrepError(f"{path}: GTcls.Segmentation values outside 0..255")
    label = label.astype(np.uint8)
    _check_values(label, path)
    return label


def _check_values(label: np.ndarray, path: str | os.PathLike) -> None:
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in present if N_PASCAL_CLASSES < v < IGNORE_INDEX]
    if bad:
        raise PrepError(f"{path}: label values {bad[:10]} outside 0..{N_PASCAL_CLASSES} and {IGNORE_INDEX}")


def pascal_name_sets(voc_root: Path, sbd_root: Path | None, sbd_train_list: Path | None = None) -> dict:
    """Image-name sets: VOC segmentation train/val, SBD train/val, and (optionally) VOC main val."""
    seg_sets = voc_root / "ImageSets" / "Segmentation"
    sets = {
        "voc_train": set(_read_names(seg_sets / "train.txt", "VOC segmentation train list")),
        "voc_val": set(_read_names(seg_sets / "val.txt", "VOC segmentation val list")),
        "sbd_train": set(), "sbd_val": set(), "sbd_train_noval": None, "voc_main_val": None,
    }  # fmt: skip
    if sbd_root is not None:
        sets["sbd_train"] = set(_read_names(sbd_root / "train.txt", "SBD train list"))
        sets["sbd_val"] = set(_read_names(sbd_root / "val.txt", "SBD val list"))
    if sbd_train_list is not None:
        sets["sbd_train_noval"] = set(_read_names(Path(sbd_train_list), "SBD train_noval list"))
    main_val = voc_root / "ImageSets" / "Main" / "val.txt"
    if main_val.is_file():
        sets["voc_main_val"] = set(_read_names(main_val, "VOC main val list"))
    return sets


def pascal_train_names(sets: dict, train_list: str = "pfenet") -> tuple[list[str], str]:
    """Training image names (sorted, no duplicates, never a VOC val image) and how they were formed.

    "pfenet": VOC seg train + SBD `train_noval` (5,953 images on the real data; the list of PFENet, IPMT,
    BAM and AMFormer). `train_noval` is SBD train minus VOC 2012 val; given as a file it is used as is,
    otherwise it is derived from SBD train.txt minus VOC's ImageSets/Main/val.txt (when present) and
    minus the segmentation val images.
    "aug": VOC seg train + SBD train + SBD val minus VOC seg val (the 10,582-image SegmentationClassAug set).
    """
    if train_list not in TRAIN_LISTS:
        raise ValueError(f"train_list must be one of {TRAIN_LISTS}, got {train_list!r}")
    if train_list == "aug":
        names = sets["voc_train"] | sets["sbd_train"] | sets["sbd_val"]
        how = "VOC seg train + SBD train + SBD val - VOC seg val"
    elif sets["sbd_train_noval"] is not None:
        names = sets["voc_train"] | sets["sbd_train_noval"]
        how = "VOC seg train + SBD train_noval (given) - VOC seg val"
    else:
        sbd = sets["sbd_train"] - (sets["voc_main_val"] or set())
        names = sets["voc_train"] | sbd
        how = (
            "VOC seg train + (SBD train - VOC main val) - VOC seg val"
            if sets["voc_main_val"] is not None
            else "VOC seg train + SBD train - VOC seg val (no ImageSets/Main/val.txt found, so this may "
            "differ from SBD's train_noval; pass it with sbd_train_list)"
        )
    # The references' duplicate removal: a set keeps each image once; val images never enter training.
    return sorted(names - sets["voc_val"]), how


def _convert_one(item: tuple[str, str | None, str | None, str, str], overwrite: bool) -> Outcome:
    name, voc_png, sbd_mat, image_path, out_png = item
    out = Path(out_png)
    if out.exists() and not overwrite:
        return "existing", name, "", []
    try:
        # VOC's own annotation wins where both exist: it is finer and carries the 255 void band.
        label = read_voc_label(voc_png) if voc_png else read_sbd_label(sbd_mat)
        with Image.open(image_path) as pil:
            width, height = pil.size
    except PrepError as err:
        return "skipped", name, str(err), []
    except (OSError, SyntaxError) as err:
        return "skipped", name, f"unreadable image {image_path} ({err})", []
    if label.shape != (height, width):
        return (
            "skipped",
            name,
            (f"label {label.shape[0]}x{label.shape[1]} does not match image {height}x{width} (HxW)"),
            [],
        )
    write_label_png(label, out)
    return "written", name, "", []


def _pascal_items(names: list[str], voc: Path, sbd: Path | None, out: Path, summary: PrepSummary
                  ) -> list[tuple[str, str | None, str | None, str, str]]:
    """(name, VOC PNG or None, SBD .mat or None, image, output label) of every name that has an image and a
    label (the VOC PNG when present, else SBD's); the others are skipped in ``summary`` with the reason."""
    items = []
    for name in names:
        voc_png = voc / "SegmentationClass" / f"{name}.png"
        sbd_mat = sbd / "cls" / f"{name}.mat" if sbd is not None else None
        image = voc / "JPEGImages" / f"{name}.jpg"
        if not image.is_file() and sbd is not None and (sbd / "img" / f"{name}.jpg").is_file():
            image = sbd / "img" / f"{name}.jpg"
        if not image.is_file():
            summary.skip("image not found in VOC JPEGImages (nor SBD img)", name)
            continue
        has_voc, has_sbd = voc_png.is_file(), sbd_mat is not None and sbd_mat.is_file()
        if not (has_voc or has_sbd):
            summary.skip("no label: neither VOC SegmentationClass PNG nor SBD cls .mat", name)
            continue
        items.append(
            (
                name,
                str(voc_png) if has_voc else None,
                None if has_voc else str(sbd_mat),
                str(image),
                str(out / "SegmentationClassAug" / f"{name}.png"),
            )
        )
    return items


def _write_pascal_lists(out: Path, sets: dict[str, set[str]], train_names: list[str], how: str, train_list: str,
                        with_sbd: bool, available: set[str], summary: PrepSummary) -> None:
    """``lists/train.txt`` and ``lists/val.txt`` of the images that were converted, with notes on the sizes."""
    def pairs(names: list[str]) -> list[tuple[str, str]]:
        return [(f"JPEGImages/{n}.jpg", f"SegmentationClassAug/{n}.png") for n in names if n in available]

    val_names = sorted(sets["voc_val"])
    summary.lists["lists/train.txt"] = write_list(out / "lists" / "train.txt", pairs(train_names))
    summary.lists["lists/val.txt"] = write_list(out / "lists" / "val.txt", pairs(val_names))
    summary.notes.append(f"train list '{train_list}': {how}; {len(train_names)} names before skips")
    expected = {"pfenet": 5953, "aug": 10582}[train_list]
    if len(sets["voc_val"]) == 1449 and with_sbd and len(train_names) != expected:
        # full VOC 2012 + SBD: the references' lists have a known size, so say when ours differs
        summary.notes.append(
            f"the references' '{train_list}' train list has {expected} images, this one "
            f"{len(train_names)}"
            + ("; pass SBD's train_noval.txt as sbd_train_list" if train_list == "pfenet" else "")
        )
    dropped = sorted(set(train_names + val_names) - available)
    if dropped:
        summary.notes.append(f"{len(dropped)} listed images left out of the lists because they were skipped")


def prepare_pascal(
    voc_root: str | os.PathLike,
    sbd_root: str | os.PathLike | None = None,
    out_root: str | os.PathLike | None = None,
    train_list: str = "pfenet",
    sbd_train_list: str | os.PathLike | None = None,
    images: str = "symlink",
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    strict: bool = False,
) -> PrepSummary:
    """Merge VOC 2012 and SBD into `<out_root>/SegmentationClassAug/*.png` and write the lists.

    Writes a label for every image of VOC seg train/val and SBD train/val (VOC PNG when present, else SBD
    .mat), `lists/train.txt` (see `pascal_train_names`) and `lists/val.txt` (VOC seg val, 1,449 images).
    `out_root` defaults to the VOC2012 directory; elsewhere images are linked/copied into its JPEGImages/
    (`images`). Existing labels are kept unless `overwrite` (resumable). Problems are collected in the
    summary with their reasons; `strict` raises on the first one instead.
    """
    voc = find_voc_root(voc_root)
    sbd = find_sbd_root(sbd_root) if sbd_root is not None else None
    require_dir(voc / "JPEGImages", "VOC JPEGImages")
    out = Path(out_root) if out_root is not None else voc
    (out / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    summary = PrepSummary("pascal (VOC 2012 + SBD)", str(out))
    if sbd is None:
        summary.notes.append("no SBD given: only VOC 2012 annotations are used")

    sets = pascal_name_sets(voc, sbd, Path(sbd_train_list) if sbd_train_list else None)
    train_names, how = pascal_train_names(sets, train_list)
    everything = sorted(
        sets["voc_train"] | sets["voc_val"] | sets["sbd_train"] | sets["sbd_val"] | set(train_names)
    )
    items = _pascal_items(everything, voc, sbd, out, summary)
    if strict and summary.skipped:
        reason, names = next(iter(summary.skipped.items()))
        raise PrepError(f"{names[0]}: {reason}")
    available = run_items(
        partial(_convert_one, overwrite=overwrite),
        items,
        workers,
        "VOC+SBD labels",
        progress,
        summary,
        strict,
    )
    image_of = {item[0]: Path(item[3]) for item in items}
    for name in sorted(available):  # no-op for images already in place (out_root == the VOC directory)
        place_image(image_of[name], out / "JPEGImages" / f"{name}.jpg", images)
    if images == "none" and out.resolve() != voc.resolve():
        summary.notes.append(f"images='none': put the JPEGs into {out / 'JPEGImages'} yourself")

    _write_pascal_lists(out, sets, train_names, how, train_list, sbd is not None, available, summary)
    summary.save(out / "lists" / "prep_summary_pascal.json")
    return summary
