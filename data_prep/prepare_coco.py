#!/usr/bin/env python
"""Turn COCO 2014 instance annotations into semantic label PNGs (0 bg, 1..80, 255 crowd) and lists."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.data.prep import PrepError, prepare_coco


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: python data_prep/prepare_coco.py --coco data/MSCOCO2014 --workers 8 "
        "(needs pycocotools: pip install 'fsslab[coco]')",
    )
    parser.add_argument(
        "--coco",
        required=True,
        help="COCO root holding train2014/, val2014/ and annotations/instances_*.json",
    )
    parser.add_argument("--out", help="output root (default: the COCO root itself)")
    parser.add_argument("--splits", nargs="+", default=["train2014", "val2014"], help="image sets to convert")
    parser.add_argument(
        "--crowd",
        choices=("ignore", "class", "background"),
        default="ignore",
        help="crowd regions: 255 (default), their class, or background",
    )
    parser.add_argument(
        "--keep-empty",
        action="store_true",
        help="also list images without annotations (all-background labels)",
    )
    parser.add_argument(
        "--images",
        choices=("symlink", "copy", "none"),
        default="symlink",
        help="how images reach <out>/<split>/ when --out is not the COCO root",
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite labels that already exist")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: this process)")
    parser.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = prepare_coco(
            args.coco,
            args.out,
            splits=tuple(args.splits),
            crowd=args.crowd,
            keep_empty=args.keep_empty,
            images=args.images,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=not args.no_progress,
            strict=args.strict,
        )
    except (FileNotFoundError, PrepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
