"""Few-shot datasets in the class-folder layout of FSS-1000: ``<root>/<class>/<n>.jpg`` + ``<n>.png``.

Each class folder holds image/mask pairs of that one class; the classes, not folds, are split into training
and evaluation sets by name. Two datasets use the layout:

- ``fss1000`` (``FSS1000Episodes``): FSS-1000 with HSNet's class split, shipped with fsslab
  (``fsslab/data/splits/fss1000/{train,val,test}.txt``: 520 / 240 / 240 classes, HSNet's
  ``data/splits/fss/{trn,val,test}.txt``);
- ``folder`` (``FolderEpisodes``): your own classes in the same layout, with your own split given as a
  mapping (``classes={"train": [...], "test": [...]}``) or a file (``split_file``: a YAML/JSON mapping of the
  same form, or a directory holding ``<split>.txt`` files with one class name a line).

Class ids (1-based, as every fsslab benchmark) follow HSNet: the sorted training classes first, then the
sorted classes of ``val``, of ``test`` and of any other split. There is one "fold" (0): the base classes are
the training classes, the novel classes those of the split under evaluation. Masks are binarised as HSNet
reads FSS-1000 for ``fss1000``: grey level >= 128 is the object (a mask holding only 0 and 1 is taken as it is;
one whose non-zero values all stay below 128 is refused, not read as empty). ``folder`` masks follow fsslab's
one mask convention (``fsslab.data.io.binary_mask``, docs/inputs.md): 0 background and one other value the
object, or VOC style 0/1/255 with 255 an ignore band; other masks are refused unless
``data.params.mask_threshold`` says they are soft. A colour mask must have equal channels. There is no
base-class annotation (every image shows one class), so ``query_base_mask`` is all 255.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fsslab.config.safe_yaml import load_yaml
from fsslab.data.classes import Benchmark
from fsslab.data.episodes.dataset import EpisodicDataset
from fsslab.data.episodes.options import merge_options
from fsslab.data.io import (  # the checks every fsslab reader makes
    DatasetError,
    ImageHeader,
    check_same_size,
    image_size,
    read_image_header,
)
from fsslab.data.io import read_binary_mask_file as binary_mask_file
from fsslab.data.lists import TRAINING_SPLITS, FoldIndex, IndexSummary
from fsslab.errors import ConfigError

FSS1000_SPLIT_DIR = Path(__file__).resolve().parents[1] / "splits" / "fss1000"
FSS1000_SIZES = {"train": 520, "val": 240, "test": 240}
SPLIT_ALIASES = {"trn": "train"}  # HSNet's name of the training split
IMAGE_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIX = ".png"
MASK_THRESHOLD = 128  # HSNet: grey level >= 128 is the object


# ----- the class split ------------------------------------------------------------------------------------
def _split_name(split: str) -> str:
    return SPLIT_ALIASES.get(split, split)


def read_class_list(path: str | Path) -> list[str]:
    """Class names of a text file, one a line (blank lines and lines starting with ``#`` skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """A class split from ``path``: a YAML/JSON mapping ``{split: [class, ...]}``, or a directory whose
    ``<split>.txt`` files list one class a line (HSNet's ``trn.txt`` is read as the ``train`` split)."""
    path = Path(path)
    if path.is_dir():
        lists = sorted(path.glob("*.txt"))
        if not lists:
            raise FileNotFoundError(f"split directory {path} holds no <split>.txt class list")
        return {_split_name(p.stem): read_class_list(p) for p in lists}
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path} (a YAML/JSON mapping split -> class names, or a "
                                "directory of <split>.txt class lists)")  # fmt: skip
    try:
        loaded = load_yaml(path.read_text(), f"split file {path}")  # JSON is YAML; aliases bounded
    except yaml.YAMLError as err:
        raise ConfigError(f"split file {path}: not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"split file {path}: expected a mapping split -> list of class names, "
                          f"got a {type(loaded).__name__}")  # fmt: skip
    return loaded


def check_class_split(classes: Any, source: str = "data.params.classes") -> dict[str, list[str]]:
    """The split as ``{split: [class, ...]}`` (each list sorted), checked: a mapping of non-empty lists of
    class-folder names, no class in two splits or twice in one, a ``train`` split among them."""
    if not isinstance(classes, Mapping) or not classes:
        raise ConfigError(f"{source}: expected a mapping split -> list of class names (e.g. "
                          f"{{train: [cat, dog], test: [fox]}}), got {classes!r}")  # fmt: skip
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for raw_split, names in classes.items():
        split = _split_name(str(raw_split))
        if split in out:
            raise ConfigError(f"{source}: split {split!r} given twice ({raw_split!r})")
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise ConfigError(f"{source}: split {split!r} must be a non-empty list of class names, got {names!r}")
        for name in names:
            if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name:
                raise ConfigError(f"{source}: split {split!r} has {name!r}, not the name of a class folder")
            if name in seen:
                where = "twice in" if seen[name] == split else f"in {seen[name]!r} and in"
                raise ConfigError(f"{source}: class {name!r} is {where} split {split!r}; each class belongs to one "
                                  "split")  # fmt: skip
            seen[name] = split
        out[split] = sorted(names)
    if "train" not in out:
        raise ConfigError(f"{source}: no 'train' split (splits given: {sorted(out)}); the training classes are "
                          "the base classes")  # fmt: skip
    return out


def fss1000_split(split_file: str | Path | None = None) -> dict[str, list[str]]:
    """FSS-1000's class split: HSNet's 520 / 240 / 240 classes (shipped), or the one in ``split_file``."""
    if split_file is not None:
        return check_class_split(read_split_file(split_file), str(split_file))
    split = check_class_split(read_split_file(FSS1000_SPLIT_DIR), str(FSS1000_SPLIT_DIR))
    sizes = {name: len(names) for name, names in split.items()}
    if sizes != FSS1000_SIZES:
        raise DatasetError(f"the shipped FSS-1000 split {FSS1000_SPLIT_DIR} has {sizes} classes, expected "
                           f"{FSS1000_SIZES}: reinstall fsslab")  # fmt: skip
    return split


@dataclass(frozen=True)
class SplitBenchmark(Benchmark):
    """A benchmark whose classes are split by name instead of folds (one fold, 0): the base classes are the
    training classes, the novel classes those of the split this benchmark was built for (``split``)."""

    split: str = "test"
    splits: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (split name, its class ids)

    def classes_of(self, split: str) -> list[int]:
        table = dict(self.splits)
        if _split_name(split) not in table:
            raise ConfigError(f"{self.name}: no split {split!r} in the class split (it has {sorted(table)})")
        return list(table[_split_name(split)])

    def _check_fold(self, fold: int) -> None:
        if fold != 0:
            raise ConfigError(f"{self.name} splits its classes by name and has one fold: data.fold must be 0, "
                              f"got {fold}")  # fmt: skip

    def novel_classes(self, fold: int) -> list[int]:
        self._check_fold(fold)
        return self.classes_of("train" if self.split in TRAINING_SPLITS else self.split)

    def base_classes(self, fold: int) -> list[int]:
        self._check_fold(fold)
        return self.classes_of("train")


def split_benchmark(name: str, classes: Mapping[str, Sequence[str]], split: str) -> SplitBenchmark:
    """The benchmark of a class split (``check_class_split``'s output): ids 1.. over train, val, test, others."""
    order = ["train", "val", "test"]
    names = [s for s in order if s in classes] + [s for s in classes if s not in order]
    all_names: list[str] = []
    splits = []
    for s in names:
        splits.append((s, tuple(range(len(all_names) + 1, len(all_names) + len(classes[s]) + 1))))
        all_names.extend(classes[s])
    split = _split_name(split)
    if split not in classes and split not in TRAINING_SPLITS:
        raise ConfigError(f"{name}: the class split has no {split!r} split (it has {names}); set eval.split to "
                          "one of them")  # fmt: skip
    return SplitBenchmark(name, len(all_names), 1, tuple(all_names), fold_convention="split", split=split,
                          splits=tuple(splits))  # fmt: skip


# ----- the files ---------------------------------------------------------------------------------------------
def class_pairs(root: str | Path, class_name: str) -> list[tuple[str, str]]:
    """(image, mask) paths relative to ``root`` of the class folder ``<root>/<class_name>``, sorted by name.

    Every ``<n>.jpg`` needs its ``<n>.png`` and the reverse, and the two must have the same size (read
    from the file headers); anything else raises a one-line error naming the file.
    """
    root = Path(root)
    folder = root / class_name
    files = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    images = {p.stem: p for p in files.values() if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in files.values() if p.suffix.lower() == MASK_SUFFIX}
    for stem, image in sorted(images.items()):
        if stem not in masks:
            raise DatasetError(f"{image} has no mask {folder / (stem + MASK_SUFFIX)} (the layout is "
                               "<class>/<n>.jpg + <n>.png)")  # fmt: skip
    for stem, mask in sorted(masks.items()):
        if stem not in images:
            raise DatasetError(f"{mask} has no image {folder / (stem + '.jpg')} (the layout is <class>/<n>.jpg + "
                               "<n>.png; images must be .jpg or .jpeg)")  # fmt: skip
    if not images:
        raise DatasetError(f"class folder {folder} holds no <n>.jpg + <n>.png pair")
    pairs = []
    for stem in sorted(images):
        image, mask = images[stem], masks[stem]
        check_same_size(image_size(image), image_size(mask, "mask"), image, mask)
        pairs.append((f"{class_name}/{image.name}", f"{class_name}/{mask.name}"))
    return pairs


def read_binary_mask(path: str | Path, threshold: int | None = MASK_THRESHOLD,
                     image: ImageHeader | None = None) -> np.ndarray:
    """A mask as uint8 [H,W]: 1 object, 0 background, 255 ignore (``fsslab.data.io.binary_mask``'s convention;
    ``threshold``: grey level >= threshold is the object, FSS-1000's rule). ``image``: the header of its
    image, whose EXIF orientation the mask is aligned to and whose size it must have."""
    return binary_mask_file(path, image, "mask", allow_empty=True, threshold=threshold,
                            hint="; or, for soft (anti-aliased) masks, set data.params.mask_threshold=128")


def build_folder_index(root: str | Path, benchmark: SplitBenchmark, split: str) -> FoldIndex:
    """The image/mask pairs of every class of ``split``; all missing class folders are named in one error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    class_ids = benchmark.classes_of(split)
    missing = [benchmark.class_name(c) for c in class_ids if not (root / benchmark.class_name(c)).is_dir()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        nested = [p.name for p in root.iterdir() if p.is_dir() and (p / benchmark.class_name(class_ids[0])).is_dir()]
        hint = (f"; data.root should probably be {root / nested[0]}" if nested else
                "; data.root must be the folder that holds the class folders")
        raise DatasetError(f"{len(missing)} of {len(class_ids)} class folders of the {split} split missing under "
                           f"{root}: {shown}{hint}")  # fmt: skip
    items: list[tuple[str, str]] = []
    class_to_items: dict[int, list[int]] = {}
    for c in class_ids:
        pairs = class_pairs(root, benchmark.class_name(c))
        class_to_items[c] = list(range(len(items), len(items) + len(pairs)))
        items.extend(pairs)
    owners = [[c] for c, members in class_to_items.items() for _ in members]
    summary = IndexSummary(split=split, fold=0, protocol="class folders", min_area=0, classes=class_ids,
                           n_listed=len(items), n_kept=len(items),
                           images_per_class={c: len(v) for c, v in class_to_items.items()})  # fmt: skip
    return FoldIndex(str(root), items, owners, [list(o) for o in owners], class_to_items, summary)


# ----- the datasets ------------------------------------------------------------------------------------------
class FolderEpisodes(EpisodicDataset):
    """K-shot episodes over class folders (``<root>/<class>/<n>.jpg`` + ``<n>.png``) with your class split.

    ``classes``: ``{"train": [...], "val": [...], "test": [...]}`` (any split names; "train" required), or
    ``split_file``: the same in a YAML/JSON file, or a directory of ``<split>.txt`` class lists. Training
    (split "train") draws from the training classes, evaluation from the classes of ``split``; each query's
    supports are other images of its class folder. Other keyword arguments are ``EpisodicDataset``'s
    (``protocol``, ``min_area``, ``query_class_rule``: no meaning here, every pair is kept).
    """

    def __init__(self, root: str | Path, split: str = "train", fold: int = 0, shot: int = 1, *,
                 classes: Mapping[str, Sequence[str]] | None = None, split_file: str | Path | None = None,
                 mask_threshold: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        self._init(root, self._class_split(classes, split_file), "folder", split, fold, shot, mask_threshold, kwargs)

    @staticmethod
    def _class_split(classes: Any, split_file: str | Path | None) -> dict[str, list[str]]:
        if (classes is None) == (split_file is None):
            raise ConfigError("data.dataset=folder needs its class split: data.params.classes={train: [...], "
                              "test: [...]} or data.params.split_file=PATH (YAML/JSON mapping, or a directory of "
                              "<split>.txt class lists); give exactly one")  # fmt: skip
        if split_file is not None:
            return check_class_split(read_split_file(split_file), str(split_file))
        return check_class_split(classes)

    def _init(self, root: str | Path, classes: dict[str, list[str]], name: str, split: str, fold: int, shot: int,
              mask_threshold: int | None, kwargs: dict[str, Any]) -> None:  # fmt: skip
        options = merge_options(kwargs.pop("options", None), kwargs, type(self).__name__)
        if options.list_path is not None:
            raise ConfigError(f"{name}: class-folder datasets have no list files (data.params.list_path); the class "
                              "split says which classes each split uses")  # fmt: skip
        if options.use_base_mask or options.base_label not in (None, "all"):
            raise ConfigError(f"{name}: class-folder datasets have no base-class annotations (one class per image)")
        if mask_threshold is not None and (isinstance(mask_threshold, bool) or not isinstance(mask_threshold, int)
                                           or not 1 <= mask_threshold <= 255):
            raise ConfigError(f"mask_threshold must be an integer in 1..255 (or null: fsslab's mask convention), "
                              f"got {mask_threshold!r}")
        self.mask_threshold = mask_threshold
        self.class_split = classes
        split = _split_name(split)
        super().__init__(root, split_benchmark(name, classes, split), split, fold, shot,
                         options=dataclasses.replace(options, use_base_mask=False, base_label="all"))

    def _build_index(self, split: str, fold: int, protocol: str, min_area: int, list_path: str | Path | None,
                     cache: bool, progress: bool) -> FoldIndex:  # fmt: skip
        self.benchmark.novel_classes(fold)  # data.fold must be 0
        return build_folder_index(self.root, self.benchmark, split)  # type: ignore[arg-type]

    def _read(self, item: int) -> tuple[np.ndarray, np.ndarray, tuple[Path, Path]]:
        image_rel, mask_rel = self.index.items[item]
        paths = (self.root / image_rel, self.root / mask_rel)
        image, header = read_image_header(paths[0])
        mask = read_binary_mask(paths[1], self.mask_threshold, header)
        return image, mask, paths

    def _target(self, label: np.ndarray, class_id: int) -> np.ndarray:
        return label  # already the binary mask of the folder's class


class FSS1000Episodes(FolderEpisodes):
    """FSS-1000 (``<root>/<class>/<n>.jpg`` + ``<n>.png``, 1,000 classes of 10 images) with HSNet's class
    split: train 520, val 240, test 240 (``split`` "trn" is "train"); ``split_file`` replaces the shipped
    split. Evaluate it as HSNet does with the fss1000 configs: every test image once as the query (2,400
    episodes), inputs stretched to 400×400 (eval.protocol=hsnet), FB-IoU and class-wise mIoU over the 240
    test classes."""

    def __init__(self, root: str | Path, split: str = "train", fold: int = 0, shot: int = 1, *,
                 split_file: str | Path | None = None, mask_threshold: int = MASK_THRESHOLD,
                 **kwargs: Any) -> None:  # fmt: skip
        if kwargs.get("classes") is not None:
            raise ConfigError("fss1000 takes its class split from HSNet's lists (or data.params.split_file), not "
                              "data.params.classes; use data.dataset=folder for your own classes")  # fmt: skip
        kwargs.pop("classes", None)
        self._init(root, fss1000_split(split_file), "fss1000", split, fold, shot, mask_threshold, kwargs)


def write_split_file(path: str | Path, classes: Mapping[str, Sequence[str]]) -> Path:
    """Write a class split as JSON (readable as ``split_file``); returns the path."""
    path = Path(path)
    path.write_text(json.dumps(check_class_split(classes), indent=1) + "\n")
    return path


__all__ = [
    "FSS1000_SPLIT_DIR",
    "FSS1000Episodes",
    "FolderEpisodes",
    "SplitBenchmark",
    "build_folder_index",
    "check_class_split",
    "class_pairs",
    "fss1000_split",
    "read_binary_mask",
    "read_class_list",
    "read_split_file",
    "split_benchmark",
    "write_split_file",
]
