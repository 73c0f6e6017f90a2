"""Real-dataset preparation (``fsslab data pascal|coco``): the official downloads into the layout the loaders read.

- ``pascal``: VOC 2012 + SBD into ``SegmentationClassAug`` labels and the references' lists;
- ``coco``: COCO 2014 instances into semantic labels (``coco_checks`` validates the annotation files);
- ``common``: what both share (checked inputs, resumable per-image work, a summary).
"""

from fsslab.data.prep.coco import coco_semantic_label, prepare_coco
from fsslab.data.prep.common import PrepSummary
from fsslab.data.prep.pascal import (
    find_sbd_root,
    find_voc_root,
    pascal_name_sets,
    pascal_train_names,
    prepare_pascal,
    read_sbd_label,
    read_voc_label,
)
from fsslab.errors import PrepError

__all__ = [
    "PrepError", "PrepSummary", "coco_semantic_label", "find_sbd_root", "find_voc_root", "pascal_name_sets",
    "pascal_train_names", "prepare_coco", "prepare_pascal", "read_sbd_label", "read_voc_label",
]  # fmt: skip
