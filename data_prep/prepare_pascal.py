#!/usr/bin/env python
"""Merge PASCAL VOC 2012 and SBD into SegmentationClassAug labels and PFENet-style train/val lists.

Same as `fsslab data pascal`; the logic lives in fsslab.cli.data.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.cli.data import pascal_main as main
from fsslab.cli.data import pascal_parser as build_parser

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
