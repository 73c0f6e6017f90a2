"""The embedded synthetic benchmark: PASCAL-5i in miniature, 20 shape families written in the VOC layout.

- ``config``: the knobs (``SyntheticConfig``) and the named presets;
- ``shapes`` and ``procedural``: the benchmark's 20 shape families and the pretraining corpus's procedural classes;
- ``textures``: the surfaces objects and backgrounds wear;
- ``render``: one image and its label;
- ``generate``: a whole benchmark written to disk (and checked against its ``meta.json``).
"""

from fsslab.data.lists import MIN_AREA
from fsslab.data.synthetic.config import CALIBRATED, N_CLASSES, PRESETS, SPLITS, SyntheticConfig
from fsslab.data.synthetic.generate import (
    BENCHMARK_NAME,
    GENERATOR_VERSION,
    IGNORE_COLOUR,
    PALETTE,
    fold_classes,
    generate_synthetic,
    label_classes_on_disk,
    read_meta,
    sample_name,
    write_synthetic_if_missing,
)
from fsslab.data.synthetic.render import IGNORE_LABEL, boundary_band, render_sample
from fsslab.data.synthetic.shapes import CLASS_NAMES

__all__ = [
    "BENCHMARK_NAME", "CALIBRATED", "CLASS_NAMES", "GENERATOR_VERSION", "IGNORE_COLOUR", "IGNORE_LABEL", "MIN_AREA",
    "N_CLASSES", "PALETTE", "PRESETS", "SPLITS", "SyntheticConfig", "boundary_band", "fold_classes",
    "generate_synthetic", "label_classes_on_disk", "read_meta", "render_sample", "sample_name",
    "write_synthetic_if_missing",
]  # fmt: skip
