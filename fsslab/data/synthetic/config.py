"""The synthetic benchmark's knobs: ``SyntheticConfig`` (every knob saved in meta.json) and its named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fsslab.data.synthetic.crossdomain import CROSSDOMAIN_NAMES
from fsslab.data.synthetic.procedural import MAX_PROCEDURAL_CLASSES
from fsslab.data.synthetic.shapes import CLASS_NAMES
from fsslab.errors import ConfigError

N_CLASSES = len(CLASS_NAMES)  # 20: folds of 5 like PASCAL-5i
SPLITS = ("train", "val", "pretrain")  # "pretrain": the backbone's own corpus (n_pretrain images, may be 0)
# the 20 classes of the train/val splits: the benchmark's families, or the cross-domain preset's (crossdomain.py)
FAMILY_SETS: dict[str, tuple[str, ...]] = {"benchmark": CLASS_NAMES, "crossdomain": CROSSDOMAIN_NAMES}


@dataclass
class SyntheticConfig:
    """Size and difficulty of the synthetic benchmark (all knobs are saved in meta.json).

    object_scale is the range of an object's linear size, sqrt(object area) / sqrt(image area), before
    occlusion; diversity (0..1) widens colour, texture, rotation, aspect, shear, deformation and shape
    parameters within each class; clutter (0..1) is the strength of background texture and sensor noise.
    """

    seed: int = 0
    n_train: int = 2000
    n_val: int = 500
    # images of a third split, "pretrain", that no episode uses: the corpus on which the backbone is pretrained
    # before few-shot training (the synthetic ImageNet; configs/synthetic/backbone_pretrain_tiny.yaml)
    n_pretrain: int = 0
    # 0: the pretrain split holds the benchmark's 20 classes (as ImageNet holds PASCAL's); N > 0: N procedural
    # shape classes disjoint from them, ids 1..N in its labels (synthetic_procedural), so that the backbone
    # learns generic shape features and meets the benchmark's classes only in episodes
    pretrain_classes: int = 0
    min_size: int = 128
    max_size: int = 160
    # shape and clutter defaults calibrated for a 2-core CPU budget (a backbone learns them in minutes); the
    # presets (PRESETS, CALIBRATED) add class appearance and the pretraining split
    diversity: float = 0.4
    clutter: float = 0.2
    object_scale: tuple[float, float] = (0.28, 0.65)
    min_objects: int = 1
    max_objects: int = 2
    distractors: int = 0
    outline_prob: float = 0.1
    # probability that an object wears its class's typical colours and texture (synthetic_textures.
    # class_signature, jittered by diversity) instead of a random appearance: natural classes are not
    # appearance-free, and a support then tells more than shape, so more shots tell more
    class_appearance: float = 0.0
    # objects of one image belong to different classes (a query then holds the target among other classes,
    # so only the support tells which object to segment)
    distinct_classes: bool = False
    # "random": centres uniform in the image (objects often overlap); "spread": one object per cell of a
    # jittered grid, so several objects of similar size sit side by side and stay visible; "overlap": each object
    # is placed over the previous one so that it covers `occlusion` (a fraction of that object's area) of it
    placement: str = "random"
    occlusion: tuple[float, float] = (0.2, 0.4)  # placement "overlap" only: covered fraction of every lower object
    # the 20 classes of train/val: "benchmark" (shapes.SHAPE_FAMILIES) or "crossdomain" (a domain no training sees)
    families: str = "benchmark"
    # "class": class_appearance and diversity decide each object's surface; "random": every object random colours
    # and a random texture (flat included), independent of the class and of diversity
    surface: str = "class"
    background: str = "default"  # "default" (gradients and texture clutter) | "mosaic" (Voronoi patches and lines)
    boundary_width: int = 2
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if problems:  # the range checks below would fail inside a comparison, naming no knob
            raise ConfigError("invalid SyntheticConfig: " + "; ".join(problems))
        self.object_scale = tuple(float(v) for v in self.object_scale)  # type: ignore[assignment]
        self.occlusion = tuple(float(v) for v in self.occlusion)  # type: ignore[assignment]
        if min(self.n_train, self.n_val, self.n_pretrain) < 0:
            problems.append(
                f"n_train/n_val/n_pretrain must be >= 0, got {self.n_train}/{self.n_val}/{self.n_pretrain}"
            )
        if not 16 <= self.min_size <= self.max_size:
            problems.append(f"need 16 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        for name in ("diversity", "clutter", "outline_prob", "class_appearance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        lo_hi = self.object_scale
        if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
            problems.append(f"object_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {lo_hi}")
        if not 1 <= self.min_objects <= self.max_objects:
            problems.append(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.distractors < 0 or self.boundary_width < 0:
            problems.append("distractors and boundary_width must be >= 0")
        if self.max_objects + self.distractors > 64:
            problems.append("max_objects + distractors must be <= 64 (instance ids are uint8)")
        if self.placement not in ("random", "spread", "overlap"):
            problems.append(f"placement must be 'random', 'spread' or 'overlap', got {self.placement!r}")
        if self.placement == "overlap" and self.distractors:
            problems.append("placement 'overlap' places objects only: distractors must be 0")
        lo_hi = self.occlusion
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] <= lo_hi[1] < 1.0:
            problems.append(f"occlusion must be (lo, hi) with 0 <= lo <= hi < 1, got {lo_hi}")
        for name, valid in (("families", tuple(FAMILY_SETS)), ("surface", ("class", "random")),
                            ("background", ("default", "mosaic"))):
            if getattr(self, name) not in valid:
                problems.append(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.distinct_classes and self.max_objects > N_CLASSES:
            problems.append(f"distinct_classes allows at most {N_CLASSES} objects, got max_objects {self.max_objects}")
        if not 0 <= self.pretrain_classes <= MAX_PROCEDURAL_CLASSES:
            problems.append(f"pretrain_classes must be in 0..{MAX_PROCEDURAL_CLASSES}, got {self.pretrain_classes}")
        elif self.pretrain_classes and self.distinct_classes and self.max_objects > self.pretrain_classes:
            problems.append(f"distinct_classes allows at most pretrain_classes={self.pretrain_classes} objects per "
                            f"pretraining image, got max_objects {self.max_objects}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if problems:
            raise ConfigError("invalid SyntheticConfig: " + "; ".join(problems))

    def _type_problems(self) -> list[str]:
        """Each knob against its default's type (ints for counts, numbers for fractions, a pair for ranges)."""
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        problems = []
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, bool):
                ok, what = isinstance(value, bool), "true or false"
            elif isinstance(default, int):
                ok, what = number(value) and float(value).is_integer(), "an integer"
            elif isinstance(default, float):
                ok, what = number(value), "a number"
            elif isinstance(default, str):
                ok, what = isinstance(value, str), "a string"
            else:  # object_scale, occlusion: (lo, hi)
                ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(number(v) for v in value)
                what = "a pair of numbers [lo, hi]"
            if not ok:
                problems.append(f"{f.name} must be {what}, got {value!r}")
            elif isinstance(default, int) and not isinstance(default, bool):
                setattr(self, f.name, int(value))  # 300.0 from a YAML file counts 300 images
        return problems

    def split_sizes(self) -> list[tuple[str, int]]:
        """(split, number of images) of every written split; "pretrain" only when n_pretrain > 0."""
        sizes = [("train", self.n_train), ("val", self.n_val), ("pretrain", self.n_pretrain)]
        return [(split, n) for split, n in sizes if split != "pretrain" or n > 0]

    def label_classes(self, split: str) -> int:
        """How many class ids the labels of ``split`` use: 20, or ``pretrain_classes`` for a procedural pretrain split."""
        return self.pretrain_classes if split == "pretrain" and self.pretrain_classes else N_CLASSES

    def class_names(self) -> tuple[str, ...]:
        """Names of the 20 classes of the train and val splits (``families``)."""
        return FAMILY_SETS[self.families]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["object_scale"] = list(self.object_scale)  # JSON has no tuples; from_dict turns it back
        out["occlusion"] = list(self.occlusion)
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SyntheticConfig:
        """A named difficulty (a key of ``PRESETS``) with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown synthetic preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyntheticConfig:
        """Fields by name; ``preset: NAME`` starts from that preset (what the shipped configs write)."""
        if "preset" in values:
            rest = {k: v for k, v in values.items() if k != "preset"}
            return cls.preset(str(values["preset"]), **rest)
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ConfigError(f"unknown SyntheticConfig keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**values)


# What every preset adds to the dataclass defaults: the 4,000-image pretraining split of the synthetic ImageNet,
# and class-typical appearance for 40% of the objects (presets other than "default" and "multi"; without it
# colour says nothing about the class and from-scratch backbones do not tell shapes apart in CPU-length runs).
CALIBRATED: dict[str, Any] = {"class_appearance": 0.4, "n_pretrain": 4000}
# Several objects of *different* classes side by side in every image, of similar size: a model that segments
# "the salient object" finds the target among others, so the support decides (docs/calibration.md, "How the benchmark was
# calibrated", steps 4-5).
_SEVERAL_CLASSES: dict[str, Any] = {"min_objects": 2, "max_objects": 3, "distinct_classes": True,
                                    "placement": "spread", "object_scale": (0.33, 0.5)}
# Difficulty presets. "default" is the benchmark the shipped configs, zoo and notebooks use: 2-3 objects of
# different classes per image, 80% of them in their class's typical appearance (the other 20% in random colours:
# appearance hints, the shape decides for them), shape diversity 0.3 (step 5 of the calibration), and a pretrain
# split of 100 procedural shape classes disjoint from the benchmark's, so that the backbone has never seen a
# benchmark class and a prototype of its features is a weak few-shot learner (step 8). "multi" is the same
# layout with appearance 0.5 (step 4); "salient" the previous default (1-2 objects, other classes included:
# rewards a salient-object segmenter); "easy" nearly a pure shape-matching task; "medium" (1-4 objects,
# distractors, more appearance spread and clutter) and "hard" need far more training than a CPU run affords.
# "crossdomain" is not a difficulty but another domain, for evaluation only (no training reads it; no train or
# pretrain images): 20 shape families of its own (crossdomain.py; neither the benchmark's, nor the pretraining's),
# 2-3 objects of different classes stacked so that every object under another is 20-40% covered, every object in
# random colours and texture whatever its class, on mosaic backgrounds. Larger objects than the benchmark's, so
# that a 40%-covered object keeps the 2,048 px an episode's class needs in 128-160 px images.
PRESETS: dict[str, dict[str, Any]] = {
    "easy": {**CALIBRATED, "diversity": 0.2, "clutter": 0.1, "max_objects": 1, "outline_prob": 0.0},
    "default": {**CALIBRATED, **_SEVERAL_CLASSES, "class_appearance": 0.8, "diversity": 0.3, "pretrain_classes": 100},
    "salient": dict(CALIBRATED),
    "medium": {**CALIBRATED, "diversity": 0.8, "clutter": 0.5, "max_objects": 4, "distractors": 2,
               "outline_prob": 0.3},
    "multi": {**CALIBRATED, **_SEVERAL_CLASSES, "class_appearance": 0.5},
    "hard": {**CALIBRATED, "diversity": 1.0, "clutter": 0.8, "max_objects": 4, "distractors": 4,
             "outline_prob": 0.5},
    "crossdomain": {"n_train": 0, "n_val": 1000, "families": "crossdomain", "surface": "random",
                    "background": "mosaic", "placement": "overlap", "occlusion": (0.2, 0.4), "min_objects": 2,
                    "max_objects": 3, "distinct_classes": True, "object_scale": (0.4, 0.55), "diversity": 0.4,
                    "clutter": 0.3, "outline_prob": 0.0},
}


# Knobs added within a generator version, with the value that reproduces the earlier output exactly.
ADDED_KNOB_DEFAULTS: dict[str, Any] = {"min_objects": 1, "class_appearance": 0.0, "n_pretrain": 0,
                                        "distinct_classes": False, "placement": "random", "pretrain_classes": 0,
                                        "occlusion": [0.2, 0.4], "families": "benchmark", "surface": "class",
                                        "background": "default"}


__all__ = ["CALIBRATED", "FAMILY_SETS", "N_CLASSES", "PRESETS", "SPLITS", "SyntheticConfig"]
