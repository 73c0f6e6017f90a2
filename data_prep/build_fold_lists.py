#!/usr/bin/env python
"""Build (and cache) the per-fold class -> image index of a prepared dataset, and base annotations.

For every fold and split: which images qualify for which classes under the 2x32x32 minimum-area rule,
under the PFENet protocol (every image with a base class) and/or the BAM protocol (training images with
any novel-class pixel removed). The index is cached under <root>/fsslab_index/, so a second run is instant.

Same as `fsslab data lists`; the logic lives in fsslab.cli.data.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.cli.data import lists_main as main
from fsslab.cli.data import lists_parser as build_parser

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
