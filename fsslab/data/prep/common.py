"""Shared pieces of dataset preparation: the run summary, atomic label writes, image links, worker pools."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from fsslab.errors import PrepError  # re-exported for fsslab.data.prep

# Outcome of one item: ("written" | "existing" | "skipped", name, reason-or-empty, parts dropped), the last
# listing problems with parts of an item that was still written (e.g. one bad COCO annotation of an image).
Outcome = tuple[str, str, str, list[str]]
DROPPED_PARTS = "part of the annotation dropped (the rest was written)"


@dataclass
class PrepSummary:
    """What a preparation run did; printed at the end so that nothing is skipped silently."""

    dataset: str
    out_root: str
    written: int = 0
    existing: int = 0  # outputs already present from an earlier run (resume), left untouched
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> item names
    lists: dict[str, int] = field(default_factory=dict)  # list file -> number of lines written
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)

    def record(self, outcome: Outcome) -> None:
        status, name, reason, dropped = outcome
        for problem in dropped:
            self.skip(DROPPED_PARTS, f"{name}: {problem}")
        if status == "written":
            self.written += 1
        elif status == "existing":
            self.existing += 1
        else:
            self.skip(reason, name)

    @property
    def n_skipped(self) -> int:
        """Items left out (not counting parts dropped from items that were still written)."""
        return sum(len(v) for reason, v in self.skipped.items() if reason != DROPPED_PARTS)

    @property
    def n_dropped_parts(self) -> int:
        return len(self.skipped.get(DROPPED_PARTS, []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        head = (
            f"{self.dataset}: {self.written} labels written, {self.existing} already present (kept), "
            f"{self.n_skipped} skipped, {self.n_dropped_parts} annotation parts dropped -> {self.out_root}"
        )
        lines = [head]
        for reason, names in sorted(self.skipped.items()):
            shown = ", ".join(names[:5]) + (f", ... (+{len(names) - 5})" if len(names) > 5 else "")
            lines.append(f"  skipped {len(names)}: {reason}: {shown}")
        for list_name, n in self.lists.items():
            lines.append(f"  list {list_name}: {n} images")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def write_label_png(label: np.ndarray, path: Path) -> None:
    """Write a uint8 label PNG atomically: an interrupted run never leaves a half-written label."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(label, dtype=np.uint8))
    if not ok:
        raise OSError(f"cv2 could not encode the label for {path}")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


def place_image(source: Path, target: Path, mode: str) -> None:
    """Make `target` show `source`: "symlink" (absolute link), "copy", or "none" (leave it to the user)."""
    if mode == "none" or target.exists() or target.is_symlink():
        return
    if mode == "symlink":
        target.symlink_to(source.resolve())
    elif mode == "copy":
        shutil.copyfile(source, target)
    else:
        raise ValueError(f"images must be 'symlink', 'copy' or 'none', got {mode!r}")


def write_list(path: Path, pairs: Iterable[tuple[str, str]]) -> int:
    """Write a two-column PFENet-style list (`<image> <label>` relative to the dataset root)."""
    lines = [f"{image} {label}\n" for image, label in pairs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return len(lines)


def run_items(
    function: Callable[[Any], Outcome],
    items: list,
    workers: int,
    desc: str,
    progress: bool,
    summary: PrepSummary,
    strict: bool,
) -> set[str]:
    """Apply `function` to every item (in worker processes when workers > 1), recording outcomes.

    Returns the names whose label is available (written or existing). In strict mode the first skipped
    item raises PrepError naming it and the reason.
    """
    available: set[str] = set()
    bar = tqdm(total=len(items), desc=desc, unit="label", disable=not progress)

    def consume(outcome: Outcome) -> None:
        summary.record(outcome)
        status, name, reason, dropped = outcome
        if strict and (status == "skipped" or dropped):
            raise PrepError(f"{name}: {reason or dropped[0]}")
        if status != "skipped":
            available.add(name)
        bar.update()

    try:
        if workers <= 1 or len(items) < 32:
            for item in items:
                consume(function(item))
        else:
            # never fork: a parent that already ran cv2/OpenMP/torch threads can deadlock its forked
            # children (seen in the test suite); forkserver children start from a clean process.
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(workers) as pool:
                for outcome in pool.imap_unordered(function, items, chunksize=32):
                    consume(outcome)
    finally:
        bar.close()
    return available
