#!/usr/bin/env python
"""Merge PASCAL VOC 2012 and SBD into SegmentationClassAug labels and PFENet-style train/val lists."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.data.prep import PrepError, prepare_pascal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: python data_prep/prepare_pascal.py --voc data/VOCdevkit/VOC2012 "
        "--sbd data/benchmark_RELEASE --workers 4",
    )
    parser.add_argument(
        "--voc", required=True, help="VOC2012 directory (or VOCdevkit, or the folder above it)"
    )
    parser.add_argument(
        "--sbd", help="SBD directory (benchmark_RELEASE or its dataset/); without it, VOC only"
    )
    parser.add_argument("--out", help="output root (default: the VOC2012 directory itself)")
    parser.add_argument(
        "--train-list",
        choices=("pfenet", "aug"),
        default="pfenet",
        help="pfenet: VOC train + SBD train_noval (5,953 images, the references' list); "
        "aug: VOC train + SBD train/val - VOC val (10,582)",
    )
    parser.add_argument("--sbd-train-list", help="SBD's train_noval.txt, if downloaded (else it is derived)")
    parser.add_argument(
        "--images",
        choices=("symlink", "copy", "none"),
        default="symlink",
        help="how images reach <out>/JPEGImages when --out is not the VOC directory",
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite labels that already exist")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: this process)")
    parser.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = prepare_pascal(
            args.voc,
            args.sbd,
            args.out,
            train_list=args.train_list,
            sbd_train_list=args.sbd_train_list,
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
