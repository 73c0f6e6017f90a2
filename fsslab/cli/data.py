"""The dataset-preparation commands ``fsslab data lists|pascal|coco`` (also ``data_prep/*.py`` in a checkout).

Each ``<name>_main(argv)`` parses its arguments, runs the step of ``fsslab.data.prep`` / ``fsslab.data.lists``
and returns the exit status (2 and one ``error:`` line for unusable inputs).
"""

from __future__ import annotations

import argparse
import sys

from fsslab.data.classes import get_benchmark
from fsslab.data.lists import MIN_AREA, PROTOCOLS, build_fold_index, write_base_annotations
from fsslab.data.prep import PrepError, prepare_coco, prepare_pascal
from fsslab.errors import FsslabError

LISTS_DOC = """Build (and cache) the per-fold class -> image index of a prepared dataset, and base annotations.

For every fold and split: which images qualify for which classes under the 2x32x32 minimum-area rule,
under the PFENet protocol (every image with a base class) and/or the BAM protocol (training images with
any novel-class pixel removed). The index is cached under <root>/fsslab_index/, so a second run is instant."""
PASCAL_DOC = """Merge PASCAL VOC 2012 and SBD into SegmentationClassAug labels and PFENet-style train/val lists."""
COCO_DOC = """Turn COCO 2014 instance annotations into semantic label PNGs (0 bg, 1..80, 255 crowd) and lists."""


def lists_parser() -> argparse.ArgumentParser:
    """Arguments of the fold index / base annotations command."""
    parser = argparse.ArgumentParser(
        description=LISTS_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: fsslab data lists --dataset pascal --root data/VOC2012 "
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


def lists_main(argv: list[str] | None = None) -> int:
    """Run the fold index / base annotations command; returns the exit status."""
    args = lists_parser().parse_args(argv)
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
    except (FileNotFoundError, FsslabError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_conversion_options(parser: argparse.ArgumentParser, images_help: str) -> argparse.ArgumentParser:
    """The options that `data pascal` and `data coco` share (image placement, overwrite, workers, strictness)."""
    parser.add_argument("--images", choices=("symlink", "copy", "none"), default="symlink", help=images_help)
    parser.add_argument("--overwrite", action="store_true", help="rewrite labels that already exist")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: this process)")
    parser.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def pascal_parser() -> argparse.ArgumentParser:
    """Arguments of the VOC + SBD merge."""
    parser = argparse.ArgumentParser(
        description=PASCAL_DOC,
        epilog="example: fsslab data pascal --voc data/VOCdevkit/VOC2012 "
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
    return _add_conversion_options(parser, "how images reach <out>/JPEGImages when --out is not the VOC directory")


def pascal_main(argv: list[str] | None = None) -> int:
    """Run the VOC + SBD merge; returns the exit status."""
    args = pascal_parser().parse_args(argv)
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


def coco_parser() -> argparse.ArgumentParser:
    """Arguments of the COCO conversion."""
    parser = argparse.ArgumentParser(
        description=COCO_DOC,
        epilog="example: fsslab data coco --coco data/MSCOCO2014 --workers 8 "
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
    return _add_conversion_options(parser, "how images reach <out>/<split>/ when --out is not the COCO root")


def coco_main(argv: list[str] | None = None) -> int:
    """Run the COCO conversion; returns the exit status."""
    args = coco_parser().parse_args(argv)
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
