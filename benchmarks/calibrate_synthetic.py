"""Calibrate the synthetic benchmark: generate benchmark variants, train the whole chain of each, evaluate every
model with its controls, print one table.

Every step is an `fsslab` command (printed as it runs), so any row can be reproduced alone. The chain of a
benchmark: `backbone_pretrain_tiny` → {`pspnet_base_tiny` → `amformer_tiny`, `ipmt_tiny`, `baseline_tiny`},
each model at 1 and 5 shots, then `fsslab eval ... eval.controls=true` (oracle, mismatched supports, K-shot gain).
Independent runs go in parallel (`--jobs`), which suits a GPU machine; on a 2-core CPU use `--jobs 1`.

    python benchmarks/calibrate_synthetic.py --out runs/calib --variants default
    python benchmarks/calibrate_synthetic.py --out runs/calib --variants default,app07 --jobs 6 --device cuda

A variant is a benchmark (generator knobs) plus per-model overrides (``VARIANTS`` below); variants with the same
knobs share their data and pretraining.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsslab.config import flow_yaml
from fsslab.data.synthetic import PRESETS

MODELS = ("baseline", "ipmt", "amformer")
# The recipe of the shipped configs before the default became the several-classes benchmark (2026-11-30): 128 px,
# PFENet lists for IPMT and the baseline, IPMT in torchvision's layout, shorter schedules. The variants measured
# with it (steps 2-4 of docs/calibration.md) pin it, so that they still reproduce.
_128 = ["data.size=128", "data.val_size=160", "data.scale_min=0.8", "data.scale_max=1.25"]
_V1: dict[str, list[str]] = {
    "backbone_pretrain_tiny": [*_128, "train.iterations=1000", "train.base_lr=0.001"],
    "pspnet_base_tiny": [*_128, "train.iterations=400"],
    "ipmt_tiny": [*_128, "data.protocol=pfenet", "model.params.dilation=torchvision"],
    "amformer_tiny": [*_128, "train.iterations=300"],
    "baseline_tiny": [*_128, "data.protocol=pfenet"]}


def _v1(**extra: list[str]) -> dict[str, list[str]]:
    """The pinned earlier recipe with extra overrides appended per config."""
    return {name: [*overrides, *extra.get(name, [])] for name, overrides in _V1.items()}


# name -> (generator knobs, {config name: extra overrides})
VARIANTS: dict[str, tuple[dict, dict[str, list[str]]]] = {
    "default": ({"seed": 0, **PRESETS["default"]}, {}),  # the shipped configs as they are
    "salient": ({"seed": 0, **PRESETS["salient"]}, _v1()),  # the previous default
    "multi": ({"seed": 0, **PRESETS["multi"]}, _v1()),
    "multi_long": ({"seed": 0, **PRESETS["multi"]},
                   _v1(ipmt_tiny=["train.iterations=3000"], amformer_tiny=["train.iterations=900"],
                       pspnet_base_tiny=["train.iterations=1000"])),
    "multi_app07": ({"seed": 0, **PRESETS["multi"], "class_appearance": 0.7}, _v1()),
    "multi_pre3k": ({"seed": 0, **PRESETS["multi"]},
                    _v1(backbone_pretrain_tiny=["train.iterations=3000"], ipmt_tiny=["train.iterations=3000"],
                        amformer_tiny=["train.iterations=900"], pspnet_base_tiny=["train.iterations=1000"])),
}
# Session 2026-11-30: everything at 96 px (scale 0.6-0.85 of the 128-160 px images, evaluated at val_size 112, so
# objects keep their size between training and test), twice the steps in the same time; IPMT's backbone in the
# layout it was pretrained in (pspnet dilation). IPMT and the baseline on PFENet lists, as then.
_S96 = ["data.size=96", "data.scale_min=0.6", "data.scale_max=0.85", "data.val_size=112"]
VARIANTS["multi96"] = ({"seed": 0, **PRESETS["multi"]}, {
    "backbone_pretrain_tiny": [*_S96, "train.iterations=2400", "train.base_lr=0.002"],
    "pspnet_base_tiny": [*_S96, "train.iterations=600"],
    "ipmt_tiny": [*_S96, "model.params.dilation=pspnet", "train.iterations=2000", "data.protocol=pfenet"],
    "amformer_tiny": [*_S96, "train.iterations=900"],
    "baseline_tiny": [*_S96, "data.protocol=pfenet"]})
# the same at 96 px on a benchmark whose classes a CPU-length pretraining tells apart: 80% of the objects in their
# class's typical appearance (the other 20% random: the shape decides), shape diversity 0.3
_APP = {"class_appearance": 0.8, "diversity": 0.3}
VARIANTS["multi96_app08"] = ({"seed": 0, **PRESETS["multi"], **_APP}, {
    **VARIANTS["multi96"][1],
    "backbone_pretrain_tiny": [*_S96, "train.iterations=2000", "train.base_lr=0.002"],
    "ipmt_tiny": [*_S96, "model.params.dilation=pspnet", "train.iterations=1500", "data.protocol=pfenet"]})
# ... and every model on BAM's training lists (training images holding a novel-class object removed): on `multi`
# half of the PFENet-list training images hold a novel object labelled background, which teaches IPMT to
# suppress exactly the classes it is tested on (docs/calibration.md, step 5)
VARIANTS["multi96_app08_bam"] = (VARIANTS["multi96_app08"][0], {
    **VARIANTS["multi96_app08"][1],
    "ipmt_tiny": [*VARIANTS["multi96_app08"][1]["ipmt_tiny"], "data.protocol=bam"],
    "baseline_tiny": [*_S96, "data.protocol=bam"]})
VARIANTS["multi96_app08_clean"] = ({**VARIANTS["multi96_app08"][0], "clutter": 0.1}, VARIANTS["multi96_app08"][1])


def flow(knobs: dict) -> str:
    """The knobs as one YAML flow mapping, as a `data.synthetic=...` override takes them."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}
    return flow_yaml(plain)


# --smoke: a few images and iterations, to check the whole pipeline in a minute
SMOKE_KNOBS = {"n_train": 240, "n_val": 120, "n_pretrain": 200}
SMOKE_OVERRIDES = ["train.iterations=2", "eval.episodes=6", "eval.seeds=[0]", "data.workers=0",
                   "data.params.on_small_class=exclude"]


class Runner:
    def __init__(self, out: Path, device: str, extra: list[str], dry: bool, smoke: bool = False) -> None:
        self.out, self.device, self.dry, self.smoke = out, device, dry, smoke
        self.extra = extra
        self.log = out / "commands.log"
        self.locks: dict[str, threading.Lock] = defaultdict(threading.Lock)  # one pretraining per benchmark
        self.finetune_shots = 0  # > 0: 5-shot runs start from the 1-shot run and train this many iterations

    def fsslab(self, *args: str) -> None:
        if self.smoke:  # last, so that they win over every variant's overrides
            flags = [i for i, a in enumerate(args) if a.startswith("--")]
            cut = flags[0] if flags else len(args)
            args = (*args[:cut], *SMOKE_OVERRIDES, *args[cut:])
        command = [sys.executable, "-m", "fsslab.cli", *args]
        line = " ".join(a if " " not in a else repr(a) for a in ["fsslab", *args])
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
        with self.log.open("a") as log:
            log.write(line + "\n")
        if self.dry:
            return
        name = args[1].split("/")[-1] if len(args) > 1 else "x"
        stamp = f"{time.time_ns()}"
        with (self.out / "logs" / f"{args[0]}_{name}_{stamp}.log").open("w") as sink:
            done = subprocess.run(command, check=False, stdout=sink, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"failed ({done.returncode}): {line}; see {sink.name}")

    def common(self, knobs: dict) -> list[str]:
        root = self.out / "data" / _knob_key(knobs)
        return [f"data.root={root}", f"data.synthetic={flow(knobs)}", f"train.device={self.device}", *self.extra]


def _knob_key(knobs: dict) -> str:
    return "b" + hashlib.sha1(json.dumps(knobs, sort_keys=True, default=list).encode()).hexdigest()[:8]


def _tag(override: str) -> str:
    return "controls" if override == "eval.controls=true" else override.split("=")[-1]


def run_variant(runner: Runner, name: str, jobs: int) -> dict:
    knobs, per_model = VARIANTS[name]
    if runner.smoke:
        knobs = {**knobs, **SMOKE_KNOBS}
    common = runner.common(knobs)
    key = _knob_key({**knobs, "pretrain": per_model.get("backbone_pretrain_tiny", [])})
    runs = runner.out / "runs" / name
    pretrain = runner.out / "runs" / key / "backbone_pretrain_tiny"  # shared by the variants of one benchmark
    stage1 = runs / "pspnet_base_tiny"
    timings: dict[str, float] = {}

    def train(config: str, out_dir: Path, *overrides: str) -> None:
        if (out_dir / "latest.pt").is_file() and not runner.dry:
            return
        start = time.perf_counter()
        runner.fsslab("train", f"synthetic/{config}", *common, *per_model.get(config, []), *overrides,
                      f"train.out_dir={out_dir}", "model.prerequisite=null")  # fmt: skip
        timings[out_dir.name] = time.perf_counter() - start

    with runner.locks[_knob_key(knobs)]:  # one generation of the data, one pretraining, per benchmark
        train("backbone_pretrain_tiny", pretrain)
    init = f"model.init_checkpoint={pretrain}/latest.pt"

    def one(model: str, shot: int) -> None:
        out_dir = runs / f"{model}_tiny_{shot}shot"
        start = [init]
        if model == "amformer":
            train("pspnet_base_tiny", stage1, init)
            start = [f"model.params.pretrained={stage1}/latest.pt"]
        if shot > 1 and runner.finetune_shots:  # K-shot fine-tuned from the 1-shot run: every weight, fewer steps
            start += [f"model.init_checkpoint={runs / f'{model}_tiny_1shot'}/latest.pt", 'model.init_prefix=""',
                      f"train.iterations={runner.finetune_shots}"]  # fmt: skip
        train(f"{model}_tiny", out_dir, f"data.shot={shot}", *start)

    def chain(model: str) -> None:
        one(model, 1)
        one(model, 5)

    train("pspnet_base_tiny", stage1, init)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(chain, ("ipmt", "amformer", "baseline")))

    def evaluate(model: str, shot: int, *extra: str) -> dict:
        out_dir = runs / f"{model}_tiny_{shot}shot"
        tag = "_".join([model, f"{shot}shot", *[_tag(e) for e in extra]])
        target = runs / f"eval_{tag}.json"
        runner.fsslab("eval", f"synthetic/{model}_tiny", *common, *per_model.get(f"{model}_tiny", []),
                      f"data.shot={shot}", "model.prerequisite=null", "model.init_checkpoint=null",
                      *(["model.params.pretrained=null"] if model == "amformer" else []), *extra,
                      "--checkpoint", f"{out_dir}/latest.pt", "--json", str(target))  # fmt: skip
        return {} if runner.dry else json.loads(target.read_text())

    tasks = [(m, s, ("eval.controls=true",) if s == 1 else ()) for m in MODELS for s in (1, 5)]
    tasks.append(("amformer", 1, ("eval.support_label=box",)))
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = list(pool.map(lambda t: evaluate(t[0], t[1], *t[2]), tasks))
    summary = {"variant": name, "knobs": knobs, "overrides": per_model, "train_seconds": timings, "rows": {}}
    for (model, shot, extra), result in zip(tasks, results):
        if not result:
            continue
        row = {"miou": result["miou"], "miou_std": result["miou_std"], "fbiou": result["fbiou"]}
        if result.get("controls"):
            row.update({k: result["controls"][k] for k in ("drop", "shot_gain")})
            row["oracle"] = result["controls"]["oracle"]["miou"]
            row["mismatched"] = result["controls"]["mismatched"]["miou"]
            row["eval5_of_1shot"] = result["controls"]["five_shot"]["miou"]
        summary["rows"]["_".join([model, f"{shot}shot", *[_tag(e) for e in extra]])] = row
    return summary


def print_table(summary: dict, file=None) -> None:
    def print(*args, **kwargs):
        builtins.print(*args, **kwargs, file=file, flush=True)

    print(f"\n== {summary['variant']}: {summary['knobs']} {summary['overrides']}")
    print(f"{'run':<24} {'mIoU':>13} {'FB-IoU':>7} {'mismatched':>10} {'drop':>6} {'eval 5':>7} {'oracle':>7}")
    for name, r in summary["rows"].items():
        extra = ""
        if "drop" in r:
            extra = f"{r['mismatched']:>10.2f} {r['drop']:>6.2f} {r['eval5_of_1shot']:>7.2f} {r['oracle']:>7.2f}"
        print(f"{name:<24} {r['miou']:>7.2f} ± {r['miou_std']:<4.2f} {r['fbiou']:>7.2f} {extra}")
    print("train seconds:", {k: round(v) for k, v in summary["train_seconds"].items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/calib"))
    parser.add_argument("--variants", default="default", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel within a variant")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--smoke", action="store_true", help="tiny data and 2 iterations: check the pipeline")
    parser.add_argument("--finetune-shots", type=int, default=0, metavar="N",
                        help="train each 5-shot model from its 1-shot run for N iterations (default: from scratch)")
    parser.add_argument("--report", type=Path, default=None,
                        help="also write each variant's summary and table here as soon as it is done")
    parser.add_argument("extra", nargs="*", help="overrides for every command (e.g. data.workers=4)")
    args = parser.parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    runner = Runner(args.out, args.device, args.extra, args.dry_run, args.smoke)
    runner.finetune_shots = args.finetune_shots
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {sorted(VARIANTS)}")
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> dict:
        summary = run_variant(runner, name, args.jobs)
        if args.report:
            (args.report / f"summary_{name}.json").write_text(json.dumps(summary, indent=1))
            with (args.report / "tables.txt").open("a") as sink:
                print_table(summary, sink)
        return summary

    with ThreadPoolExecutor(len(names)) as pool:
        summaries = list(pool.map(one, names))
    for summary in summaries:
        print_table(summary)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
