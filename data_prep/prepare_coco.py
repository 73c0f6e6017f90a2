#!/usr/bin/env python
"""Turn COCO 2014 instance annotations into semantic label PNGs (0 bg, 1..80, 255 crowd) and lists.

Same as `fsslab data coco`; the logic lives in fsslab.cli.data.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.cli.data import coco_main as main
from fsslab.cli.data import coco_parser as build_parser

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
