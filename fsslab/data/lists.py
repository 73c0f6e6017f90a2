"""List files, the per-fold class → image index (PFENet / BAM protocols, cached) and base annotations."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fsslab.batch import IGNORE_INDEX
from fsslab.data.classes import Benchmark
from fsslab.data.io import DatasetError, check_same_size, read_header, read_label
from fsslab.errors import ConfigError, FsslabWarning

MIN_AREA = 2 * 32 * 32  # PFENet/Shaban: a class counts in an image only with >= 2048 pixels
TRAINING_SPLITS = ("train", "pretrain")  # sampled like training data; "pretrain": the synthetic backbone corpus
PROTOCOLS = ("pfenet", "bam")
INDEX_DIR = "fsslab_index"
_CACHE_VERSION = 2  # 2: lists deduplicated, caches carry the label files' sizes and modification times


def default_list_path(root: str | Path, split: str) -> Path:
    return Path(root) / "lists" / f"{split}.txt"


def read_list(list_path: str | Path, root: str | Path, check_files: bool = True) -> list[tuple[str, str]]:
    """Read a two-column list (`<image> <label>`, paths relative to `root`), each image once.

    Raises on a missing root or list, a malformed line, or listed files that do not exist (all of
    them are reported, with their line numbers). A line whose image was listed before is dropped with a
    notice (an FsslabWarning counting them): a duplicated image would become its own support.
    """
    pairs, duplicates = read_list_with_duplicates(list_path, root, check_files)
    if duplicates:
        warnings.warn(duplicate_notice(list_path, duplicates), FsslabWarning, stacklevel=2)
    return pairs


def read_list_with_duplicates(
    list_path: str | Path, root: str | Path, check_files: bool = True
) -> tuple[list[tuple[str, str]], list[str]]:
    """``read_list`` without the notice: (pairs, one description per dropped duplicate line).

    Two lines are duplicates when their image paths are the same after normalisation (``./a.jpg`` and
    ``a.jpg``); the first line is kept, also when the later one names another label (which the description
    says).
    """
    root, list_path = Path(root), Path(list_path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    if not list_path.is_file():
        raise FileNotFoundError(f"list file not found: {list_path}")
    pairs: list[tuple[str, str]] = []
    missing: list[str] = []
    first_seen: dict[str, tuple[int, str]] = {}  # normalised image path -> (line number, label)
    duplicates: list[str] = []
    for line_no, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{list_path}:{line_no}: expected '<image> <label>', got {line.strip()!r}")
        image_rel, label_rel = fields
        key = os.path.normpath(image_rel)
        if key in first_seen:
            first_line, first_label = first_seen[key]
            other = "" if os.path.normpath(label_rel) == os.path.normpath(first_label) else (
                f" with another label {label_rel} (line {first_line}'s {first_label} is used)")
            duplicates.append(f"line {line_no} repeats {image_rel} of line {first_line}{other}")
            continue
        first_seen[key] = (line_no, label_rel)
        if check_files:
            for kind, rel in (("image", image_rel), ("label", label_rel)):
                if not (root / rel).is_file():
                    missing.append(f"{list_path}:{line_no}: {kind} {root / rel} does not exist")
        pairs.append((image_rel, label_rel))
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise FileNotFoundError(f"{len(missing)} listed file(s) missing:\n  {shown}")
    if not pairs:
        raise DatasetError(f"list file {list_path} lists no images")
    return pairs, duplicates


def duplicate_notice(list_path: str | Path, duplicates: list[str]) -> str:
    """One line: how many duplicate lines of ``list_path`` were ignored, and the first few."""
    shown = "; ".join(duplicates[:3]) + ("; ..." if len(duplicates) > 3 else "")
    return (f"{list_path}: {len(duplicates)} duplicate line(s) ignored, each image is used once (a duplicated "
            f"image could be its own support): {shown}")


def _label_stamps(root: Path, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    """[size, mtime_ns] of every listed label ([-1, -1] when missing): what the caches are checked against,
    so that labels edited after an index was built rebuild it (one stat per label, no decoding)."""
    stamps = []
    for _, label_rel in pairs:
        try:
            info = os.stat(root / label_rel)
            stamps.append([info.st_size, info.st_mtime_ns])
        except OSError:
            stamps.append([-1, -1])
    return stamps


def _load_cache(path: Path, pairs: Sequence[tuple[str, str]], stamps: list[list[int]], what: str) -> dict | None:
    """The cache at ``path`` when it was built from these label files; None when absent, unreadable or stale
    (the last two with a notice: the caller rebuilds it)."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f"the {what} cache {path} is unreadable ({err}); rebuilding it", FsslabWarning, stacklevel=3)
        return None
    old = stored.get("label_stamps") if isinstance(stored, dict) else None
    if old == stamps:
        return stored
    if isinstance(old, list) and len(old) == len(stamps):
        changed = [pairs[i][1] for i, (a, b) in enumerate(zip(old, stamps)) if a != b]
        detail = f"{len(changed)} of {len(stamps)} label files changed (size or modification time; e.g. {changed[0]})"
    else:
        detail = "the label files changed"
    warnings.warn(f"{detail} since the {what} {path} was built: rebuilding it", FsslabWarning, stacklevel=3)
    return None


def _digest(*parts: bytes | str) -> str:
    sha = hashlib.sha1()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else part.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def _write_json_atomic(path: Path, payload: dict) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
        return True
    except OSError as err:  # read-only data directory: work without the cache, but say so
        warnings.warn(f"could not write the index cache {path}: {err}", stacklevel=3)
        return False


def scan_labels(
    root: str | Path,
    list_path: str | Path,
    n_classes: int,
    cache: bool = True,
    progress: bool = False,
) -> tuple[list[tuple[str, str]], list[dict[int, int]]]:
    """Per listed image, the pixel count of every class present (1..C; 0 and 255 excluded).

    Every label is read once and checked (values in {0..C, 255}, same size as its image, read from
    the image header). The result is cached in `<root>/fsslab_index/scan_<list>_<hash>.json`, the
    hash covering the list's contents and `n_classes`, so a second call is instant; the cache also records
    every label's size and modification time, and is rebuilt (with a notice) when a label changed.
    """
    root, list_path = Path(root), Path(list_path)
    pairs = read_list(list_path, root)
    stamps = _label_stamps(root, pairs)
    key = _digest(list_path.read_bytes(), f"scan v{_CACHE_VERSION} C={n_classes}")
    cache_path = root / INDEX_DIR / f"scan_{list_path.stem}_{key}.json"
    stored = _load_cache(cache_path, pairs, stamps, "label scan") if cache else None
    if stored is not None:
        return pairs, [{int(c): n for c, n in counts.items()} for counts in stored["counts"]]
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc=f"scanning {list_path.name}", unit="label")
    counts: list[dict[int, int]] = []
    for image_rel, label_rel in iterator:
        header = read_header(root / image_rel)  # displayed size; a label may match the stored one (EXIF)
        label = read_label(root / label_rel, n_classes, header)
        check_same_size(header.shape, label.shape, root / image_rel, root / label_rel)
        hist = np.bincount(label.ravel(), minlength=256)
        counts.append({int(c): int(hist[c]) for c in range(1, n_classes + 1) if hist[c] > 0})
    if cache:
        _write_json_atomic(cache_path, {"version": _CACHE_VERSION, "list": str(list_path), "counts": counts,
                                        "label_stamps": stamps})
    return pairs, counts


@dataclass
class IndexSummary:
    """What building a fold index kept and skipped, so nothing is dropped silently."""

    split: str
    fold: int
    protocol: str
    min_area: int
    classes: list[int]
    n_listed: int = 0
    n_kept: int = 0
    n_without_qualifying_class: int = 0  # no class of the fold's set covers >= min_area pixels
    n_dropped_with_novel: int = 0  # BAM protocol: training images with any novel-class pixel
    n_duplicate_lines: int = 0  # list lines naming an image listed before (dropped: see read_list)
    images_per_class: dict[int, int] = field(default_factory=dict)
    cache_path: str | None = None
    from_cache: bool = False

    def __str__(self) -> str:
        per_class = ", ".join(f"{c}:{n}" for c, n in self.images_per_class.items())
        return (
            f"{self.split} fold {self.fold} ({self.protocol} protocol, min area {self.min_area} px): "
            f"{self.n_kept}/{self.n_listed} images kept; skipped {self.n_without_qualifying_class} without a "
            f"qualifying class, {self.n_dropped_with_novel} containing novel classes"
            + (f", {self.n_duplicate_lines} duplicate list lines" if self.n_duplicate_lines else "")
            + f"; images per class {{{per_class}}}"
        )


@dataclass
class FoldIndex:
    """The images of one split and fold, and which of the fold's classes each one offers.

    items:      kept (image, label) paths relative to the root, in list order.
    qualifying: per item, the fold's classes covering >= min_area pixels (supports come from these).
    present:    per item, the fold's classes with any pixel (the references draw the query class here).
    class_to_items: class -> indices into `items` where the class qualifies.
    """

    root: str
    items: list[tuple[str, str]]
    qualifying: list[list[int]]
    present: list[list[int]]
    class_to_items: dict[int, list[int]]
    summary: IndexSummary


def _select(
    counts: Sequence[dict[int, int]], classes: list[int], all_base: set[int], drop_novel: bool, min_area: int
) -> tuple[list[int], list[list[int]], list[list[int]], int, int]:
    wanted = set(classes)
    kept, qualifying, present = [], [], []
    n_without, n_dropped = 0, 0
    for i, image_counts in enumerate(counts):
        # BAM `filter_intersection`: any pixel of a non-base class removes the image (no area threshold)
        if drop_novel and not set(image_counts) <= all_base:
            n_dropped += 1
            continue
        good = sorted(c for c, n in image_counts.items() if c in wanted and n >= min_area)
        if not good:
            n_without += 1
            continue
        kept.append(i)
        qualifying.append(good)
        present.append(sorted(c for c in image_counts if c in wanted))
    return kept, qualifying, present, n_without, n_dropped


def _index_params(benchmark: Benchmark, root: Path, split: str, fold: int, protocol: str, min_area: int,
                  list_path: Path) -> tuple[dict, Path]:  # fmt: skip
    """The parameters a fold index is built from, and the cache file they name (list and root must exist)."""
    training = split in TRAINING_SPLITS
    params = {
        "benchmark": benchmark.name, "n_classes": benchmark.n_classes, "convention": benchmark.fold_convention,
        "split": split, "fold": fold, "protocol": protocol if training else "pfenet", "min_area": min_area,
        "classes": benchmark.base_classes(fold) if training else benchmark.novel_classes(fold),
    }  # fmt: skip
    key = _digest(list_path.read_bytes(), json.dumps(params, sort_keys=True), f"v{_CACHE_VERSION}")
    return params, root / INDEX_DIR / f"{split}_fold{fold}_{params['protocol']}_{key}.json"


def fold_index_cache(benchmark: Benchmark, root: str | Path, split: str, fold: int, protocol: str = "pfenet",
                     min_area: int = MIN_AREA, list_path: str | Path | None = None) -> Path:  # fmt: skip
    """Where ``build_fold_index`` caches this index (the file exists once it was built for the list as it is
    now); the root and the list must exist."""
    root = Path(root)
    list_path = Path(list_path) if list_path is not None else default_list_path(root, split)
    return _index_params(benchmark, root, split, fold, protocol, min_area, list_path)[1]


def build_fold_index(
    benchmark: Benchmark,
    root: str | Path,
    split: str,
    fold: int,
    protocol: str = "pfenet",
    min_area: int = MIN_AREA,
    list_path: str | Path | None = None,
    cache: bool = True,
    progress: bool = False,
) -> FoldIndex:
    """Class → image index of a split for a fold.

    split "train" (or "pretrain") uses the fold's base classes under `protocol`: "pfenet" keeps every
    image with a qualifying base class (novel pixels become background in the episode), "bam" first removes
    every image that has any novel-class pixel (BAM/AMFormer `make_dataset(filter_intersection=True)`).
    Any other split (val/test) uses the novel classes; the protocol does not apply there.
    Cached as `<root>/fsslab_index/<split>_fold<f>_<protocol>_<hash>.json` (hash of list + params), with the
    size and modification time of every listed label: a label edited afterwards rebuilds it, with a notice.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    root = Path(root)
    list_path = Path(list_path) if list_path is not None else default_list_path(root, split)
    training = split in TRAINING_SPLITS
    classes = benchmark.base_classes(fold) if training else benchmark.novel_classes(fold)
    protocol_used = protocol if training else "pfenet"
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    if not list_path.is_file():
        raise FileNotFoundError(f"list file not found: {list_path}")
    params, cache_path = _index_params(benchmark, root, split, fold, protocol, min_area, list_path)
    listed, duplicates = read_list_with_duplicates(list_path, root, check_files=False)
    stamps = _label_stamps(root, listed)
    stored = _load_cache(cache_path, listed, stamps, "fold index") if cache else None
    if stored is not None:
        if duplicates:  # the scan that found them was cached too: say it again
            warnings.warn(duplicate_notice(list_path, duplicates), FsslabWarning, stacklevel=2)
        summary = IndexSummary(**{**stored["summary"], "from_cache": True})
        summary.images_per_class = {int(c): n for c, n in summary.images_per_class.items()}
        return FoldIndex(
            root=str(root),
            items=[tuple(p) for p in stored["items"]],
            qualifying=stored["qualifying"],
            present=stored["present"],
            class_to_items={int(c): v for c, v in stored["class_to_items"].items()},
            summary=summary,
        )

    pairs, counts = scan_labels(root, list_path, benchmark.n_classes, cache=cache, progress=progress)
    base = set(benchmark.base_classes(fold))
    kept, qualifying, present, n_without, n_dropped = _select(
        counts, classes, base, drop_novel=training and protocol == "bam", min_area=min_area
    )
    class_to_items: dict[int, list[int]] = {c: [] for c in classes}
    for position, good in enumerate(qualifying):
        for c in good:
            class_to_items[c].append(position)
    summary = IndexSummary(
        split=split, fold=fold, protocol=protocol_used, min_area=min_area, classes=classes,
        n_listed=len(pairs), n_kept=len(kept), n_without_qualifying_class=n_without,
        n_dropped_with_novel=n_dropped, images_per_class={c: len(v) for c, v in class_to_items.items()},
        n_duplicate_lines=len(duplicates),
    )  # fmt: skip
    index = FoldIndex(str(root), [pairs[i] for i in kept], qualifying, present, class_to_items, summary)
    if cache and _write_json_atomic(
        cache_path,
        {
            "version": _CACHE_VERSION, "params": params, "items": index.items, "qualifying": qualifying,
            "present": present, "class_to_items": class_to_items, "summary": asdict(summary),
            "label_stamps": stamps,
        },
    ):  # fmt: skip
        summary.cache_path = str(cache_path)
    return index


def base_label_table(benchmark: Benchmark, fold: int) -> np.ndarray:
    """Lookup table [256] uint8: base class → 1..n_base (in sorted order), novel → 0, 0 → 0, 255 → 255."""
    table = np.zeros(256, np.uint8)
    for new_id, c in enumerate(benchmark.base_classes(fold), start=1):
        table[c] = new_id
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def to_base_mask(label: np.ndarray, benchmark: Benchmark, fold: int) -> np.ndarray:
    """BAM-style base annotation of a full label map (uint8 [H,W])."""
    return base_label_table(benchmark, fold)[label]


def write_base_annotations(
    root: str | Path,
    benchmark: Benchmark,
    fold: int,
    split: str = "train",
    out_dir: str | Path | None = None,
    list_path: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Write base annotations of every listed label to `<out_dir>/<name>.png` (BAM's
    `base_annotation/<split>/<fold>/` layout by default under `<root>/base_annotation`)."""
    root = Path(root)
    list_path = Path(list_path) if list_path is not None else default_list_path(root, split)
    out = Path(out_dir) if out_dir is not None else root / "base_annotation" / split / str(fold)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_list(list_path, root)
    table = base_label_table(benchmark, fold)
    iterator = pairs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pairs, desc=f"base annotations fold {fold}", unit="label")
    for _, label_rel in iterator:
        label = read_label(root / label_rel, benchmark.n_classes)
        if not cv2.imwrite(str(out / Path(label_rel).name), table[label]):
            raise OSError(f"could not write {out / Path(label_rel).name}")
    return {"written": len(pairs), "out_dir": str(out), "n_base": len(benchmark.base_classes(fold))}
