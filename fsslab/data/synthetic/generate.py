"""Writing and checking a synthetic benchmark on disk: ``generate_synthetic``, ``write_synthetic_if_missing``,
``read_meta`` (one image and its label come from ``render``, the knobs from ``config``)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from fsslab.data.lists import MIN_AREA  # PFENet's rule: a class counts in an image only above it
from fsslab.data.synthetic.config import ADDED_KNOB_DEFAULTS, N_CLASSES, SyntheticConfig
from fsslab.data.synthetic.render import render_sample
from fsslab.data.synthetic.shapes import CLASS_NAMES
from fsslab.errors import ConfigError, DatasetError, TargetExistsError

GENERATOR_VERSION = 1  # bump whenever the same config would produce different pixels
BENCHMARK_NAME = "fsslab-synthetic"
_INCOMPLETE_MARKER = ".synthetic_incomplete"

# Colours for figures: index 0 background, 1..20 the classes (tab20-like), and the ignore colour.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)
IGNORE_COLOUR: tuple[int, int, int] = (255, 255, 255)


def fold_classes(fold: int) -> list[int]:
    """Novel classes (1-based) of a fold: 5*fold+1 .. 5*fold+5, as in PASCAL-5i."""
    if fold not in range(4):
        raise ConfigError(f"fold must be 0..3, got {fold}")
    return list(range(5 * fold + 1, 5 * fold + 6))


def sample_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _write_sample(task: tuple[str, dict[str, Any], str, int]) -> tuple[str, list[int]]:
    root, config_dict, split, index = task
    config = SyntheticConfig.from_dict(config_dict)
    image, label = render_sample(config, split, index)
    name = sample_name(split, index)
    ok_jpg, jpg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    ok_png, png = cv2.imencode(".png", label)
    if not (ok_jpg and ok_png):
        raise RuntimeError(f"cv2 could not encode synthetic sample {name}")
    (Path(root) / "JPEGImages" / f"{name}.jpg").write_bytes(jpg.tobytes())
    (Path(root) / "SegmentationClassAug" / f"{name}.png").write_bytes(png.tobytes())
    class_pixels = np.bincount(label.ravel(), minlength=256)[1 : config.label_classes(split) + 1]
    return name, class_pixels.tolist()


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; nested cv2 threads only contend


def _check_target(root: Path) -> None:
    """Refuse to write into a non-empty directory that is not (an interrupted) synthetic benchmark."""
    if root.exists() and not root.is_dir():
        raise TargetExistsError(f"synthetic root {root} exists and is not a directory; choose a directory path")
    ours = (root / "meta.json").exists() or (root / _INCOMPLETE_MARKER).exists()
    if root.is_dir() and not ours and any(root.iterdir()):
        raise TargetExistsError(
            f"{root} is not empty and holds no synthetic benchmark (no meta.json); choose an empty or new "
            "directory so that nothing else is overwritten"
        )


def generate_synthetic(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the benchmark to `root` in the VOC layout; returns a summary with per-class image counts.

    Layout: JPEGImages/<name>.jpg, SegmentationClassAug/<name>.png, lists/{train,val[,pretrain]}.txt,
    meta.json.
    workers: processes to use (default: all cores, at most 8; 0 or 1 runs in this process).
    """
    config = config or SyntheticConfig()
    root = Path(root)
    _check_target(root)
    for sub in ("JPEGImages", "SegmentationClassAug", "lists"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / _INCOMPLETE_MARKER).write_text("generation started; meta.json is written last\n")
    (root / "meta.json").unlink(missing_ok=True)
    _remove_derived_data(root)

    start = time.perf_counter()
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    config_dict = config.to_dict()
    counts: dict[str, dict[str, list[int]]] = {}
    for split, n in config.split_sizes():
        tasks = [(str(root), config_dict, split, i) for i in range(n)]
        results = _run_tasks(tasks, workers, desc=f"synthetic {split}", progress=progress)
        (root / "lists" / f"{split}.txt").write_text(
            "".join(f"JPEGImages/{name}.jpg SegmentationClassAug/{name}.png\n" for name, _ in results)
        )
        pixels = np.asarray([p for _, p in results], dtype=np.int64).reshape(n, config.label_classes(split))
        counts[split] = {
            "images": (pixels > 0).sum(0).tolist(),
            "qualifying": (pixels >= MIN_AREA).sum(0).tolist(),
        }
    seconds = time.perf_counter() - start

    meta = {
        "benchmark": BENCHMARK_NAME,
        "version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": config_dict,
        "class_names": list(config.class_names()),
        "palette": [list(c) for c in PALETTE],
        "ignore_colour": list(IGNORE_COLOUR),
        "folds": {str(f): fold_classes(f) for f in range(4)},
        "min_area": MIN_AREA,
        "class_counts": counts,
        "generation_seconds": round(seconds, 2),
    }
    _remove_stale_samples(root, config)
    (root / "meta.json").write_text(json.dumps(meta, indent=1))
    (root / _INCOMPLETE_MARKER).unlink()
    summary = dict(meta, root=str(root), warnings=_coverage_warnings(counts, config.class_names()))
    if progress:
        for warning in summary["warnings"]:
            tqdm.write(f"warning: {warning}")
        tqdm.write(
            f"synthetic benchmark: {config.n_train} train + {config.n_val} val"
            + (f" + {config.n_pretrain} pretrain" if config.n_pretrain else "")
            + f" images in {seconds:.1f} s "
            f"-> {root}"
        )
    return summary


def _remove_derived_data(root: Path) -> None:
    """Drop caches built from a previous benchmark in this directory: the fold-index cache is keyed on the
    list text, which does not change with the seed, so a stale cache would silently describe other labels."""
    for derived in ("fsslab_index", "base_annotation"):
        shutil.rmtree(root / derived, ignore_errors=True)


def _remove_stale_samples(root: Path, config: SyntheticConfig) -> None:
    """Delete images/labels left by an earlier, larger generation into the same directory."""
    keep = {
        sample_name(split, i) for split, n in config.split_sizes() for i in range(n)
    }
    for sub, suffix in (("JPEGImages", ".jpg"), ("SegmentationClassAug", ".png")):
        for path in (root / sub).glob(f"*{suffix}"):
            if path.stem not in keep:
                path.unlink()


def _run_tasks(tasks: list, workers: int, desc: str, progress: bool) -> list[tuple[str, list[int]]]:
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, unit="img")
    if workers <= 1 or len(tasks) < 64:
        results = []
        for task in tasks:
            results.append(_write_sample(task))
            bar.update()
    else:
        # never fork: a parent that already ran cv2/OpenMP/torch threads can deadlock its forked
        # children (seen in the test suite); forkserver children start from a clean process.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers, initializer=_init_worker) as pool:
            results = []
            for result in pool.imap(_write_sample, tasks, chunksize=16):  # imap keeps the task order
                results.append(result)
                bar.update()
    bar.close()
    return results


def _coverage_warnings(counts: dict[str, dict[str, list[int]]], class_names: tuple[str, ...] | list[str] = CLASS_NAMES,
                       minimum: int = 6) -> list[str]:
    """Classes with fewer qualifying images than a 5-shot episode needs (5 supports + 1 query)."""
    out = []
    for split, per in counts.items():
        names = class_names if len(per["qualifying"]) == N_CLASSES else [f"procedural{c + 1}" for c in range(len(per["qualifying"]))]
        low = [f"{names[c]}={n}" for c, n in enumerate(per["qualifying"]) if n < minimum]
        if low and len(per["qualifying"]) != N_CLASSES:  # procedural pretraining classes: one summary line
            few = [n for n in per["qualifying"] if n < minimum]
            out.append(f"{split}: {len(few)} of {len(per['qualifying'])} procedural classes have "
                       f"< {minimum} images above the {MIN_AREA}-px rule ({min(few)}–{max(few)} each); harmless, "
                       "this split pretrains the backbone and makes no episodes")
        elif low:
            out.append(
                f"{split}: classes with < {minimum} images above the {MIN_AREA}-px rule: {', '.join(low)}"
            )
    return out


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """meta.json of a generated benchmark, with a clear error when it is missing or unreadable."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a (complete) synthetic benchmark")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); delete the directory and regenerate") from err


def label_classes_on_disk(root: str | os.PathLike, split: str) -> int:
    """How many class ids the labels of ``split`` of the benchmark at ``root`` use (its meta.json says): 20, or the
    ``pretrain_classes`` of a procedural pretrain split."""
    meta = read_meta(root)
    config = SyntheticConfig.from_dict({**ADDED_KNOB_DEFAULTS, **meta.get("config", {})})
    return config.label_classes(split)


def write_synthetic_if_missing(
    root: str | os.PathLike,
    config: SyntheticConfig | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate the benchmark unless `root` already holds one made with the same config and version.

    Idempotent, for notebooks and tests. A complete benchmark made with another config is an error (naming
    the differing keys) rather than silently reused or overwritten; an interrupted run is regenerated.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    if (root / "meta.json").exists():
        meta = read_meta(root)
        wanted = config.to_dict()
        # a knob added after the benchmark was written had its default's effect (same generator version)
        on_disk = {**ADDED_KNOB_DEFAULTS, **meta.get("config", {})}
        differences = [
            f"{k}: on disk {on_disk.get(k)!r}, requested {v!r}" for k, v in wanted.items() if on_disk.get(k) != v
        ]
        if meta.get("version") != GENERATOR_VERSION:
            differences.append(
                f"generator version: on disk {meta.get('version')}, current {GENERATOR_VERSION}"
            )
        if differences:
            raise DatasetError(
                f"{root} holds a synthetic benchmark with a different configuration "
                f"({'; '.join(differences)}); use another directory or delete this one"
            )
        for split, n in config.split_sizes():
            list_path = root / "lists" / f"{split}.txt"
            if not list_path.is_file() or len(list_path.read_text().splitlines()) != n:
                raise DatasetError(
                    f"{list_path} is missing or does not list {n} images; delete {root} and regenerate"
                )
        return dict(meta, root=str(root), warnings=_coverage_warnings(meta["class_counts"], config.class_names()))
    return generate_synthetic(root, config, progress=progress, workers=workers)
