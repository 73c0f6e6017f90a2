"""The ``fsslab`` command line: ``fsslab data|train|eval|config|bench|zoo ...`` (``--help`` on every command)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fsslab.errors import FsslabError, FsslabWarning

EPILOG = (
    "overrides: section.key=value (e.g. data.fold=2 data.shot=5 train.amp=bf16 model.params.hidden_dim=64);"
    " values are parsed as YAML (ints, floats, true/false, null, [lists]); unknown keys are rejected"
)


class CliError(FsslabError):
    """A user-facing error: printed as one message, exit status 2."""


def _script_main(target: str):
    """``main(argv)`` of a packaged command module, ``target`` = ``"module:function"`` (the data_prep/ and
    benchmarks/ scripts of a checkout are thin wrappers around the same functions)."""
    import importlib

    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _delegate(target: str, prog: str):
    def run(args: argparse.Namespace) -> int:
        sys.argv[0] = prog  # the command's --help then names the fsslab command
        code = _script_main(target)(list(args.rest))
        return code if isinstance(code, int) else 0  # a command may return its results rather than a status

    return run


# ------------------------------------------------------------------------------------------------- data
def _cmd_synth(args: argparse.Namespace) -> int:
    from fsslab.config import parse_value
    from fsslab.data.synthetic import SyntheticConfig, generate_synthetic

    knobs: dict[str, Any] = {}
    for item in args.knobs:
        if "=" not in item:
            raise CliError(f"knob {item!r} must look like name=value")
        key, text = item.split("=", 1)
        knobs[key] = parse_value(text)
    for key in ("seed", "n_train", "n_val", "n_pretrain"):
        if getattr(args, key) is not None:
            knobs[key] = getattr(args, key)
    config = SyntheticConfig.preset(args.preset, **knobs)  # a bad knob or preset raises ConfigError
    if not args.overwrite:
        _refuse_other_benchmark(Path(args.root), config)
    summary = generate_synthetic(args.root, config, progress=not args.no_progress, workers=args.workers)
    printable = {k: v for k, v in summary.items() if k not in ("class_counts",)}
    print(json.dumps(printable, indent=2, default=str))
    return 0


def _refuse_other_benchmark(root: Path, config: Any) -> None:
    """``data synth`` into a root that holds a complete benchmark of another configuration (seed, knobs,
    generator version) would replace it: refused without --overwrite."""
    from fsslab.data.synthetic.config import ADDED_KNOB_DEFAULTS
    from fsslab.data.synthetic.generate import GENERATOR_VERSION, read_meta

    if not (root / "meta.json").is_file():
        return
    meta = read_meta(root)
    recorded = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    on_disk = {**ADDED_KNOB_DEFAULTS, **recorded}
    changes = [f"{k} {on_disk.get(k)!r} -> {v!r}" for k, v in config.to_dict().items() if on_disk.get(k) != v]
    if meta.get("version") != GENERATOR_VERSION:
        changes.append(f"generator version {meta.get('version')!r} -> {GENERATOR_VERSION}")
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        raise CliError(f"--root {root} already holds a synthetic benchmark of another configuration ({shown}): "
                       "choose another --root, or give --overwrite to replace it")


def _check_json_target(path: str | None) -> None:
    """``eval --json``: the file must be writable before the evaluation runs, not found unwritable after it."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(f"--json {target} is a directory; give a file path (e.g. {target / 'eval.json'})")
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise CliError(f"--json {target} cannot be written: {err.strerror or err}") from None
    if not existed:
        target.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ train/eval
def _load(args: argparse.Namespace):
    from fsslab.config import load_config

    return load_config(args.config, args.overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from fsslab.config import replace_section
    from fsslab.engine import distributed
    from fsslab.engine.prerequisites import check_prerequisite, prepare_data
    from fsslab.engine.train.launch import run_training, train_prerequisites

    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        # `--resume train.iterations=8`: argparse took the override for --resume's optional CHECKPOINT
        args.overrides, args.resume = [*args.overrides, args.resume], True
    cfg = _load(args)
    from fsslab.engine.build import check_base_labels

    check_base_labels(cfg)  # before the prerequisites are looked for or trained
    if args.out:
        cfg = replace_section(cfg, "train", out_dir=args.out)
    if not args.with_prerequisites:
        check_prerequisite(cfg, args.config)  # fails naming --with-prerequisites before anything is built
    distributed.setup_distributed(cfg.train.device)  # so that one rank writes the data while the others wait
    prepare_data(cfg)  # the synthetic benchmark of data.synthetic, when it is not there yet
    if args.with_prerequisites:
        train_prerequisites(cfg)  # on the same data root and fold
    summary = run_training(cfg, resume=args.resume or False, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "metrics"}, indent=2, default=str))
        if summary.get("data_stats"):  # fallbacks taken while loading: counted, so said, not hidden in ds.stats
            from fsslab.data.episodes.stats import stats_line

            print(f"training data: {stats_line(summary['data_stats'])}")
        if cfg.expected.miou is not None and summary.get("best_metric") is not None:
            print(
                f"validation mIoU {summary['best_metric']:.2f} (first eval seed); paper: {cfg.expected.miou} "
                f"({cfg.expected.source}, {cfg.expected.protocol} protocol). Run `fsslab eval` for all seeds."
            )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from fsslab.engine import distributed
    from fsslab.engine.build import build_run_model, load_model_weights
    from fsslab.engine.checkpoint import load_checkpoint
    from fsslab.engine.prerequisites import prepare_data
    from fsslab.engine.runner import run_controls, run_evaluation
    from fsslab.models.oracle import CONTROL_MODELS

    _check_json_target(args.json)  # before anything is evaluated
    cfg = _load(args)
    info = distributed.setup_distributed(cfg.train.device)
    prepare_data(cfg)  # the synthetic benchmark of data.synthetic, when it is not there yet
    if args.official:
        from fsslab.models import load_official

        if not args.checkpoint:
            raise CliError("--official needs --checkpoint PATH (the official .pth file)")
        layers = 101 if "101" in str(cfg.model.params.get("backbone", "")) else 50
        extra = {"dataset": cfg.data.dataset} if cfg.model.name == "amformer" else {}  # sets n_base_classes
        model = load_official(
            cfg.model.name,
            args.checkpoint,
            shot=cfg.eval.shot,
            layers=layers,
            reproduce_official=bool(cfg.model.params.get("reproduce_official", False)),
            **extra,
        )
    elif args.pretrained:
        from fsslab.zoo import load_pretrained, pretrained_info

        if args.checkpoint:
            raise CliError("give either --checkpoint or --pretrained, not both")
        shipped = pretrained_info(args.pretrained)
        if shipped["model"] != cfg.model.name:
            raise CliError(f"--pretrained {args.pretrained} is a {shipped['model']} model, but the config builds "
                           f"{cfg.model.name}; use the config it was trained with: {shipped['config']}")
        # the config's model params apply (inference switches such as reproduce_official=true), but not its
        # shot: the shipped weights fix the architecture they were trained with (AMFormer's shot re-weighting)
        params = {k: v for k, v in cfg.model.params.items() if k != "shot"}
        model = load_pretrained(args.pretrained, model_params=params)
    elif cfg.model.name in CONTROL_MODELS:
        model = build_run_model(cfg)
        if args.checkpoint and info.is_main:
            print(f"note: model.name={cfg.model.name} is a control: --checkpoint {args.checkpoint} is ignored",
                  file=sys.stderr)
    else:
        model = build_run_model(cfg, full_checkpoint=bool(args.checkpoint))
        if args.checkpoint:
            load_model_weights(model, load_checkpoint(args.checkpoint), args.checkpoint)  # summarises a mismatch
        elif info.is_main:
            print(
                "note: no --checkpoint: evaluating the model as built from the config (untrained parts stay "
                "at their initialisation)",
                file=sys.stderr,
            )
    model = model.to(info.device)
    with torch.no_grad():
        result = run_evaluation(cfg, model, progress=True, device=info.device)
        controls = run_controls(cfg, model, result, device=info.device) if cfg.eval.controls else None
    distributed.teardown_distributed()
    if not info.is_main:
        return 0
    print(result.table())
    if cfg.expected.miou is not None:
        print(
            f"paper: {cfg.expected.miou} mIoU ({cfg.expected.source}; {cfg.expected.protocol} protocol)"
            + (f"; {cfg.expected.notes}" if cfg.expected.notes else "")
        )
    if controls is not None:
        print(controls.table())
    payload = {**result.to_dict(), "config": cfg.to_dict(),
               "controls": controls.to_dict() if controls is not None else None,
               "checkpoint": args.checkpoint or (f"pretrained:{args.pretrained}" if args.pretrained else None)}
    if args.json:
        text = json.dumps(payload, indent=2)
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text)
        except OSError as err:  # e.g. the disk filled during the evaluation: the results are not lost
            import tempfile

            fd, rescue = tempfile.mkstemp(prefix="fsslab-eval-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            raise CliError(f"--json {args.json} could not be written ({err.strerror or err}); the results were "
                           f"saved to {rescue}") from None
        print(f"wrote {args.json}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from fsslab.config import shipped_configs

    if args.list or not args.config:
        print("\n".join(shipped_configs()))
        return 0
    print(_load(args).to_yaml(), end="")
    return 0


# ------------------------------------------------------------------------------------------------ parser
def _add_data_parser(commands: Any) -> None:
    """``fsslab data synth|lists|pascal|coco``."""
    data = commands.add_parser(
        "data",
        help="prepare datasets (synthetic benchmark, PASCAL, COCO, fold lists)",
        description="Prepare datasets.",
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    synth = data_commands.add_parser(
        "synth",
        help="generate the embedded synthetic benchmark",
        epilog="knobs: any SyntheticConfig field "
        "as name=value, e.g. diversity=0.6 clutter=0.3 object_scale=[0.3,0.6] distractors=1",
        description="Generate the synthetic benchmark (VOC layout + meta.json) from a seed.",
    )
    synth.add_argument("--root", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--preset", default="default", help="difficulty preset: easy | default (calibrated) | "
                       "medium | hard; knob=value arguments override its fields")
    synth.add_argument("--n-train", dest="n_train", type=int, default=None, help="training images")
    synth.add_argument("--n-val", dest="n_val", type=int, default=None, help="validation images")
    synth.add_argument("--n-pretrain", dest="n_pretrain", type=int, default=None,
                       help="images of the 'pretrain' split (the synthetic ImageNet; 0: none)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a benchmark of another configuration (seed, knobs) that --root already holds")
    synth.add_argument("--no-progress", action="store_true")
    synth.add_argument("knobs", nargs="*", metavar="knob=value", help="generator knobs")
    synth.set_defaults(func=_cmd_synth)
    for name, script, text in [
        ("lists", "fsslab.cli.data:lists_main",
         "build (and cache) the per-fold class index / base annotations"),
        ("pascal", "fsslab.cli.data:pascal_main", "merge VOC 2012 + SBD into SegmentationClassAug labels"),
        ("coco", "fsslab.cli.data:coco_main", "COCO 2014 instances -> semantic label PNGs (1..80)"),
    ]:
        sub = data_commands.add_parser(
            name,
            help=text,
            add_help=False,
            prefix_chars="\0",
            description=f"{text} (try --help).",
        )
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(func=_delegate(script, f"fsslab data {name}"))


def _add_config_args(sub: argparse.ArgumentParser) -> None:
    """The positional config and its overrides, shared by train and eval."""
    sub.add_argument(
        "config",
        help="a YAML file or a shipped name such as synthetic/ipmt_tiny "
        "(list them with `fsslab config --list`)",
    )
    sub.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def _add_train_parser(commands: Any) -> None:
    """``fsslab train CONFIG [overrides]``."""
    train = commands.add_parser(
        "train",
        help="train a model from a config",
        epilog=EPILOG,
        description="Train (single process, or every rank under torchrun).",
    )
    _add_config_args(train)
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue the run in the run directory from its newest loadable checkpoint (latest.pt or "
        "iter_*.pt), or from the given checkpoint",
    )
    train.add_argument("--overwrite", action="store_true",
                       help="delete the run the run directory holds (checkpoints, log) and start anew")
    train.add_argument("--out", default=None, help="run directory (overrides train.out_dir)")
    train.add_argument("--with-prerequisites", dest="with_prerequisites", action="store_true",
                       help="first train the runs this config starts from (model.prerequisite, recursively) when "
                       "they are missing or unfinished; without it a missing one is an error")
    train.set_defaults(func=_cmd_train)


def _add_eval_parser(commands: Any) -> None:
    """``fsslab eval CONFIG [overrides]``."""
    evaluate = commands.add_parser(
        "eval",
        help="evaluate a checkpoint episodically",
        epilog=EPILOG,
        description="Class-wise mIoU and FB-IoU over seeded episodes (mean ± std over eval.seeds).",
    )
    _add_config_args(evaluate)
    evaluate.add_argument("--checkpoint", default=None, help="fsslab checkpoint (best.pt/latest.pt)")
    evaluate.add_argument(
        "--official",
        action="store_true",
        help="the checkpoint is an official IPMT/AMFormer file (fsslab.models.load_official); "
        "model.params.reproduce_official=true also reproduces the official eval-time behaviour",
    )
    evaluate.add_argument("--pretrained", default=None, metavar="NAME",
                          help="a shipped checkpoint (`fsslab zoo list`) instead of --checkpoint")
    evaluate.add_argument("--json", default=None, help="also write the results as JSON to this file")
    evaluate.set_defaults(func=_cmd_eval)


def _add_config_parser(commands: Any) -> None:
    """``fsslab config [CONFIG] [overrides] | --list``."""
    config = commands.add_parser(
        "config",
        help="list shipped configs or print a resolved config",
        epilog=EPILOG,
        description="Print the resolved config (after overrides), or --list.",
    )
    config.add_argument("config", nargs="?", default=None)
    config.add_argument("overrides", nargs="*", metavar="section.key=value")
    config.add_argument("--list", action="store_true", help="list the shipped configs")
    config.set_defaults(func=_cmd_config)


def _add_bench_parser(commands: Any) -> None:
    """``fsslab bench ...``, delegated to fsslab.cli.bench."""
    bench = commands.add_parser(
        "bench",
        help="model speed/memory benchmark (fsslab.cli.bench)",
        add_help=False,
        prefix_chars="\0",
        description="Time and peak memory of every model (fsslab.cli.bench; try --help).",
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_delegate("fsslab.cli.bench:main", "fsslab bench"))


def build_parser() -> argparse.ArgumentParser:
    from fsslab.cli.ablate import add_ablate_parser
    from fsslab.cli.course import add_course_parser
    from fsslab.cli.doctor import add_doctor_parser
    from fsslab.cli.predict import add_predict_parser
    from fsslab.cli.zoo import add_zoo_parser

    parser = argparse.ArgumentParser(prog="fsslab", description="Few-shot semantic segmentation lab.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data_parser(commands)
    _add_train_parser(commands)
    _add_eval_parser(commands)
    add_doctor_parser(commands)
    _add_config_parser(commands)
    _add_bench_parser(commands)
    add_zoo_parser(commands)
    add_predict_parser(commands)
    add_ablate_parser(commands)
    add_course_parser(commands)
    return parser


def _plain_fsslab_warnings() -> None:
    """Print fsslab's notices (FsslabWarning) as `warning: ...` lines rather than with a source location."""
    import warnings

    default = warnings.formatwarning
    if getattr(default, "fsslab_plain", False):  # installed by an earlier main() in this process
        return

    def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                       line: str | None = None) -> str:  # fmt: skip
        if issubclass(category, FsslabWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    format_warning.fsslab_plain = True  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--box -10,20,30,40`` -> ``--box=-10,20,30,40``: argparse takes a value that starts with '-' for an
    option and says "expected one argument"; joined, the value reaches its own check (which names the box)."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else None
        if word in ("--box", "--size") and following is not None and following[:1] == "-" and following[1:2].isdigit():
            out.append(f"{word}={following}")
            index += 2
            continue
        out.append(word)
        index += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fsslab`` console script; returns the exit status."""
    from fsslab.engine.checkpoint import CheckpointError
    from fsslab.engine.train.stops import TrainingStopped

    parser = build_parser()
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    # overrides may also follow options (`fsslab eval CFG --checkpoint P data.shot=5`): argparse leaves such
    # trailing section.key=value words unrecognised; hand them to the config overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _plain_fsslab_warnings()
    try:
        return int(args.func(args) or 0)
    # only fsslab's own errors (and a missing file, whose message names it) become one line: any other
    # exception is a bug and keeps its traceback
    except (FsslabError, CheckpointError, TrainingStopped, FileNotFoundError) as exc:
        if os.environ.get("FSSLAB_DEBUG"):
            raise
        print(f"fsslab {args.command}: error: {exc}\n(set FSSLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
