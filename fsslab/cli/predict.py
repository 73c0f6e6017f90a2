"""``fsslab predict``: segment your own query images from K supports given with masks, boxes or scribbles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  fsslab predict --pretrained ipmt_tiny_fold0_1shot --support cat.jpg:cat_mask.png photos/ --out preds/
  fsslab predict --pretrained baseline_tiny_fold0_1shot --support a.jpg --box 10,20,200,180 \\
      --support b.jpg --scribble b_strokes.png q1.jpg q2.jpg --out preds/
  fsslab predict --checkpoint runs/ipmt/latest.pt --support cat.jpg:cat_mask.png q.jpg --out preds/
  fsslab predict --checkpoint IPMT_fold0.pth --official --config pascal/ipmt_r50_fold0_1shot \\
      --support cat.jpg:cat_mask.png q.jpg --out preds/ --device cuda --amp bf16

masks: 0 background, one other value (1 or 255) for the object, or VOC style 0/1/255 (255: ignore), the
image's size as displayed (EXIF orientation applied; PNG: a JPEG mask is never binary). boxes: x0,y0,x1,y1 in
pixels of the displayed image, x1/y1 exclusive. scribbles: an image of the support's size whose drawn pixels
(non-zero, or non-transparent) are the object. For each query the output folder gets <name>_mask.png (0/255,
the query's size), <name>_overlay.png and a line of predictions.jsonl (foreground fraction, mean confidence).
Nothing is written unless every query succeeds; an --out holding earlier predictions needs --overwrite; a
file that is not an earlier prediction is never replaced (the output gets a numbered name instead). Images
over 64 megapixels are refused (raise with --max-pixels or FSSLAB_MAX_PIXELS). Details: docs/inputs.md."""


class _SupportAction(argparse.Action):
    """``--support IMG[:MASK]``: a new shot."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        shots = list(getattr(namespace, "supports", None) or [])
        shots.append({"spec": str(values), "box": None, "scribble": None})
        namespace.supports = shots


class _WeakLabelAction(argparse.Action):
    """``--box`` / ``--scribble``: the label of the preceding ``--support IMG``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        shots = getattr(namespace, "supports", None) or []
        if not shots:
            parser.error(f"{option_string} {values}: put it after the --support IMG it belongs to")
        last = shots[-1]
        if last["box"] is not None or last["scribble"] is not None:
            parser.error(f"{option_string} {values}: --support {last['spec']} already has a box or a scribble")
        last[self.dest] = str(values)


def split_support(spec: str) -> tuple[str, str | None]:
    """``"IMG:MASK"`` → (IMG, MASK); ``"IMG"`` (or an existing file whose name holds a colon) → (IMG, None)."""
    if ":" not in spec or Path(spec).is_file():
        return spec, None
    image, _, mask = spec.rpartition(":")
    return image, mask or None


def add_predict_parser(commands: Any) -> None:
    """Register ``fsslab predict`` on the CLI's subcommands."""
    sub = commands.add_parser(
        "predict",
        help="segment your own images from a few supports (mask, box or scribble)",
        description="Segment query images (files or folders) given K support images, each with a mask "
        "(--support IMG:MASK), a box (--support IMG --box x0,y0,x1,y1) or a scribble (--support IMG --scribble "
        "PNG). Queries are resized by the model's evaluation protocol and mapped back to their own size.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("queries", nargs="+", metavar="QUERY", help="query images or folders of images")
    sub.add_argument("--support", action=_SupportAction, metavar="IMG[:MASK]", dest="supports", default=[],
                     help="a support image with its mask; repeat for K shots")
    sub.add_argument("--box", action=_WeakLabelAction, metavar="x0,y0,x1,y1", default=None,
                     help="box label of the preceding --support IMG")
    sub.add_argument("--scribble", action=_WeakLabelAction, metavar="PNG", default=None,
                     help="scribble image of the preceding --support IMG")
    sub.add_argument("--out", required=True, help="output folder (masks, overlays, predictions.jsonl)")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace the predictions an earlier fsslab predict wrote into --out (other files stay)")
    model = sub.add_argument_group("model (one of --pretrained, --checkpoint)")
    model.add_argument("--pretrained", metavar="NAME", default=None,
                       help="a shipped checkpoint (`fsslab zoo list`)")
    model.add_argument("--checkpoint", default=None,
                       help="an fsslab run checkpoint (runs/.../latest.pt), or an official file with --official")
    model.add_argument("--config", default=None,
                       help="config of --checkpoint (default: the one saved in it; needed with --official)")
    model.add_argument("--official", action="store_true",
                       help="--checkpoint is an official IPMT/AMFormer .pth file (fsslab.models.load_official)")
    run = sub.add_argument_group("inference")
    run.add_argument("--size", type=int, default=None,
                     help="model input size (default: the config's data.val_size)")
    run.add_argument("--protocol", choices=("fsslab", "ipmt", "amformer"), default=None,
                     help="input resize and its inverse (default: the config's eval.protocol)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    run.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                     help="autocast precision (fp16: CUDA only)")
    run.add_argument("--max-pixels", dest="max_pixels", type=int, default=None, metavar="N",
                     help="largest width x height read (default 64000000, or $FSSLAB_MAX_PIXELS)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """The command: read and check every input, load the model, predict, write; prints a summary line."""
    from fsslab.data.io import set_max_pixels
    from fsslab.predict import (
        PredictError,
        Support,
        check_size,
        iter_predictions,
        load_model,
        resolve_device,
        write_predictions,
    )
    from fsslab.predict.io import OutputSet, check_queries, collect_queries

    if args.max_pixels is not None:
        if args.max_pixels <= 0:
            raise PredictError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
        set_max_pixels(args.max_pixels)
        try:
            args.max_pixels = None
            return run_predict(args)
        finally:
            set_max_pixels(None)  # the budget of this command only (main() may run again in the process)
    if args.size is not None:
        check_size(args.size, "--size")
    if not args.supports:
        raise PredictError("give at least one --support IMG:MASK (or --support IMG --box x0,y0,x1,y1, or "
                           "--support IMG --scribble PNG)")
    supports = []
    for shot in args.supports:
        image, mask = split_support(shot["spec"])
        if mask is None and shot["box"] is None and shot["scribble"] is None:
            raise PredictError(f"--support {image}: give its mask (IMG:MASK), --box or --scribble")
        if mask is not None and (shot["box"] is not None or shot["scribble"] is not None):
            raise PredictError(f"--support {shot['spec']}: give a mask, a box or a scribble, not two of them")
        supports.append(Support.from_files(image, mask=mask, box=shot["box"], scribble=shot["scribble"]))
    label_files = [s.label_file for s in supports if s.label_file]
    queries = collect_queries(args.queries, exclude=label_files)
    check_queries(queries)
    device = resolve_device(args.device)
    if args.pretrained is None and args.checkpoint is None:
        raise PredictError("choose a model: --pretrained NAME (see `fsslab zoo list`) or --checkpoint PATH")
    if args.pretrained is not None and args.checkpoint is not None:
        raise PredictError("give either --pretrained or --checkpoint, not both")
    inputs = [split_support(shot["spec"])[0] for shot in args.supports] + label_files + [str(q) for q in queries]
    OutputSet(args.out, overwrite=args.overwrite, protected=inputs).abort()  # --out checked before the model loads
    model = load_model(pretrained=args.pretrained, checkpoint=args.checkpoint, config=args.config,
                       official=args.official, shot=len(supports))
    predictions = iter_predictions(model, supports, queries, size=args.size, protocol=args.protocol, device=device,
                                   amp=args.amp, progress=not args.no_progress and len(queries) > 1)
    records = write_predictions(predictions, args.out, overwrite=args.overwrite, protected=inputs)
    size, protocol = args.size or model.size, args.protocol or model.protocol
    print(json.dumps({"model": model.description, "shots": len(supports), "queries": len(records),
                      "size": size, "protocol": protocol, "device": str(device), "amp": args.amp,
                      "out": str(args.out)}))
    return 0
