#!/usr/bin/env python
"""Build (and cache) the per-fold class -> image index of a prepared dataset, and base annotations.

For every fold and split: which images qualify for which classes under the 2x32x32 minimum-area rule,
under the PFENet protocol (every image with a base class) and/or the BAM protocol (training images with
any novel-class pixel removed). The index is cached under <root>/fsslab_index/, so a second run is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.data.classes import get_benchmark
from fsslab.data.lists import MIN_AREA, PROTOCOLS, build_fold_index, write_base_annotations


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python data_prep/build_fold_lists.py --dataset pascal --root data/VOC2012 "
        "--protocol pfenet bam --base-annotations",
    )
    parser.add_argument("--dataset", required=True, choices=("pascal", "coco", "synthetic"))
    parser.add_argument(
        "--root", required=True, help="prepared dataset root (holds lists/train.txt, lists/val.txt)"
    )
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument(
        "--protocol",
        nargs="+",
        choices=PROTOCOLS,
        default=list(PROTOCOLS),
        help="training-list protocol(s); val always uses the novel classes",
    )
    parser.add_argument(
        "--coco-folds",
        choices=("interleaved", "contiguous"),
        default="interleaved",
        help="COCO-20i fold convention",
    )
    parser.add_argument(
        "--min-area", type=int, default=MIN_AREA, help="pixels a class needs to count in an image"
    )
    parser.add_argument(
        "--base-annotations",
        action="store_true",
        help="also write BAM-style base annotations (base classes 1..n_base, novel -> 0)",
    )
    parser.add_argument("--no-cache", action="store_true", help="rebuild instead of reading the cached index")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    benchmark = get_benchmark(args.dataset, root=args.root, coco_folds=args.coco_folds)
    try:
        for fold in args.folds:
            for split in args.splits:
                # the protocol only changes training lists; val is built once per fold
                protocols = args.protocol if split == "train" else args.protocol[:1]
                for protocol in protocols:
                    index = build_fold_index(
                        benchmark,
                        args.root,
                        split,
                        fold,
                        protocol=protocol,
                        min_area=args.min_area,
                        cache=not args.no_cache,
                        progress=not args.no_progress,
                    )
                    source = "cached" if index.summary.from_cache else "built"
                    print(f"[{source}] {index.summary}")
                if args.base_annotations:
                    written = write_base_annotations(
                        args.root, benchmark, fold, split=split, progress=not args.no_progress
                    )
                    print(
                        f"base annotations {split} fold {fold}: {written['written']} labels "
                        f"({written['n_base']} base classes) -> {written['out_dir']}"
                    )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
