"""Benchmark fsslab models: eval-forward and training-step time and peak memory over sizes, shots, devices, precisions.

``fsslab bench`` (and ``benchmarks/bench_models.py`` in a checkout) runs :func:`main`. Example (CPU):
    fsslab bench --models ipmt,amformer --settings full --sizes 473 --shots 1 \
        --modes forward --precisions fp32,bf16 --channels-last --repeats 3 --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fsslab.batch import random_episode_batch
from fsslab.models import build_model, model_class, model_options

MODELS = ("ipmt", "amformer", "baseline", "pspnet")
N_BASE_CLASSES = 15  # PASCAL-5i / synthetic folds: 15 base classes (+ background)

# Constructor options per setting: "full" = the papers' ResNet-50 models, "tiny" = the synthetic CPU setting.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {"ipmt": {"backbone": "resnet50"}, "amformer": {"backbone": "resnet50", "n_base_classes": N_BASE_CLASSES},
             "baseline": {"backbone": "resnet50"}, "pspnet": {"backbone": "resnet50", "n_classes": N_BASE_CLASSES + 1}},
    # the shipped synthetic configs' models (fsslab/configs/synthetic/*_tiny.yaml), without their weights
    "tiny": {"ipmt": {"backbone": "resnet_tiny", "hidden_dim": 64, "transformer_lr": 0.0005, "dilation": "pspnet"},
             "amformer": {"backbone": "resnet_tiny", "hidden_dim": 64, "transformer_dim": 32,
                          "base_head_channels": 128, "n_base_classes": N_BASE_CLASSES},
             "baseline": {"backbone": "resnet_tiny"},
             "pspnet": {"backbone": "resnet_tiny", "n_classes": N_BASE_CLASSES + 1, "dilation": "pspnet",
                        "optimizer": "adamw", "head_channels": 128, "backbone_lr_multiplier": 0.1}},
}
# Training-mode needs: the default baseline is training-free; PSPNet's 1x1 pyramid BN needs >= 2 images.
TRAIN_KWARGS = {"baseline": {"learn_threshold": True}}
MIN_TRAIN_BATCH = {"pspnet": 2}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_batch(batch_size: int, shots: int, size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random episode batch following the fsslab batch contract (a random disc as each image's object), on
    ``device``."""
    batch = random_episode_batch(batch_size, shots, size, size, seed=seed, n_base_classes=N_BASE_CLASSES, class_id=1)
    return {key: value.to(device) for key, value in batch.items()}


class PeakMemory:
    """Peak memory of a block above its starting point, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensor allocations). CPU: the process's resident-set
    high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs`` -- the real footprint,
    allocator caching included; None where /proc does not allow it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, None

    @staticmethod
    def _proc_status_kib(field: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+)", text).group(1))

    def __enter__(self) -> PeakMemory:  # noqa: PYI034
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
                self._start = self._proc_status_kib("VmRSS") * 1024
            except (OSError, AttributeError):
                self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self._start is not None:
            self.peak_mib = (self._proc_status_kib("VmHWM") * 1024 - self._start) / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``; no autocast for fp32 (``dtype`` None)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def make_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str,
              dtype: torch.dtype | None) -> Callable[[], None]:
    """One eval forward (``forward``, under inference_mode) or training step (``train``: forward, ``loss``,
    backward of ``step_objectives`` and the step of their optimisers, built as the trainer builds them); the
    caller sets train()/eval()."""
    from fsslab.engine.train.optim import build_optimizers

    device = batch["query_img"].device
    optimizers = build_optimizers(model, 1e-3, 1e-4) if mode == "train" else []

    def step() -> None:
        if mode == "forward":
            with torch.inference_mode(), autocast(device, dtype):
                model(batch)
            return
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = model(batch)
            objectives = model.step_objectives(model.loss(out, batch), iteration=0)
        sum(v.float() for v in objectives.values()).backward()
        for built in optimizers:
            if built.objective in objectives:
                built.optimizer.step()

    return step


def time_step(step: Callable[[], object], device: torch.device, warmup: int,
              repeats: int) -> tuple[list[float], list[float], float | None]:
    """Wall and process-CPU seconds of ``repeats`` calls after ``warmup`` calls, and the peak memory (MiB)."""
    times, cpu_times = [], []
    with PeakMemory(device) as memory:
        for index in range(warmup + repeats):
            _sync(device)  # CUDA runs asynchronously: time the work, not the launch
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            _sync(device)
            if index >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times, memory.peak_mib


def model_config(name: str, setting: str, shots: int, mode: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``build_model`` config of a benchmarked model: the setting's options, what training needs, overrides."""
    cfg = {"name": name, **SETTINGS[setting][name], **(TRAIN_KWARGS.get(name, {}) if mode == "train" else {}),
           **overrides}
    if "shot" in model_options(name):  # asked of the model's constructor: a new model needs no entry here
        cfg["shot"] = shots
    return cfg


def run_one(name: str, setting: str, shots: int, size: int, device: torch.device, precision: str, mode: str,
            args: argparse.Namespace) -> dict[str, Any]:
    """Build one model and time ``repeats`` eval forwards (``forward``) or training steps (``train``)."""
    cfg = model_config(name, setting, shots, mode, args.model_kwargs.get(name, {}))
    torch.manual_seed(args.seed)
    model = build_model(cfg).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch_size = max(args.batch_size, MIN_TRAIN_BATCH.get(name, 1)) if mode == "train" else args.batch_size
    batch = make_batch(batch_size, shots, size, device, seed=args.seed)
    step = make_step(model, batch, mode, PRECISIONS[precision])
    model.train(mode == "train")
    times, cpu_times, peak_mib = time_step(step, device, args.warmup, args.repeats)
    # process CPU time (all threads) is far less sensitive than wall time to other jobs on a shared machine
    return {"median_s": statistics.median(times), "min_s": min(times), "cpu_s": statistics.median(cpu_times),
            "peak_mib": peak_mib,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "batch_size": batch_size,
            "model_cfg": {k: v for k, v in cfg.items() if k != "name"}}


def run_isolated(row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``run_one`` in a fresh interpreter: a clean allocator makes the CPU resident-set peak meaningful."""
    job = {"row": row, "argv": args.raw_argv}
    # the worker imports this module as ``fsslab.cli.bench``, from wherever this fsslab is (a checkout or a wheel)
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                       if p)}
    proc = subprocess.run([sys.executable, "-m", "fsslab.cli.bench", "--worker", json.dumps(job)], capture_output=True,
                          text=True, check=False, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"worker exited with {proc.returncode}: {tail}")


def _worker(job_json: str) -> None:
    """One configuration of ``run_isolated``, in this (fresh) process; prints its result as a JSON line."""
    job = json.loads(job_json)
    args = parse_args(job["argv"])
    if args.threads:
        torch.set_num_threads(args.threads)
    r = job["row"]
    result = run_one(r["model"], r["setting"], r["shots"], r["size"], torch.device(r["device"]), r["precision"],
                     r["mode"], args)
    print(json.dumps(result))


def _parse_list(text: str, cast: type = str) -> list:
    return [cast(item) for item in text.split(",") if item]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (``--help``); unknown model/setting/mode/precision names are refused."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_parse_list, default=list(MODELS), help="comma list of " + ",".join(MODELS))
    parser.add_argument("--settings", type=_parse_list, default=["full", "tiny"], help="full (ResNet-50), tiny")
    parser.add_argument("--sizes", type=lambda s: _parse_list(s, int), default=[160, 473])
    parser.add_argument("--shots", type=lambda s: _parse_list(s, int), default=[1, 5])
    parser.add_argument("--modes", type=_parse_list, default=["forward", "train"], help="forward (eval), train")
    parser.add_argument("--devices", type=_parse_list, default=None, help="default: cpu (+cuda when available)")
    parser.add_argument("--precisions", type=_parse_list, default=None,
                        help="fp32,bf16,fp16; default fp32,bf16 on CPU and fp32,fp16,bf16 on CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--channels-last", action="store_true", help="models in channels_last memory format")
    parser.add_argument("--model-kwargs", type=json.loads, default={},
                        help='JSON constructor overrides per model, e.g. \'{"ipmt": {"hidden_dim": 128}}\'')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    parser.add_argument("--in-process", action="store_true",
                        help="run every configuration in this process (faster; CPU peak memory not reported)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)
    for option, valid in (("models", MODELS), ("settings", SETTINGS), ("modes", ("forward", "train")),
                          ("precisions", PRECISIONS)):
        bad = [v for v in (getattr(args, option) or []) if v not in valid]
        if bad:
            parser.error(f"--{option}: unknown {bad}; valid: {list(valid)}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every configuration, print a table row each, optionally write ``--json``; returns the rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results: list[dict[str, Any]] = []
    header = (f"{'model':9} {'setting':7} {'dev':4} {'prec':4} {'size':>4} {'K':>2} {'mode':7} "
              f"{'median s':>9} {'min s':>8} {'cpu s':>8} {'peak MiB':>9}  note")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, channels_last={args.channels_last}")
    print(header)
    print("-" * len(header))
    for name in args.models:
        try:
            model_class(name)
        except Exception as err:  # noqa: BLE001 -- a model still being written: skip it with a note
            note = f"skipped: not importable ({type(err).__name__}: {err})"
            results.append({"model": name, "note": note})
            print(f"{name:9} {note}")
            continue
        for setting in args.settings:
            for device_name in devices:
                device = torch.device(device_name)
                precisions = args.precisions or (["fp32", "bf16"] if device.type == "cpu" else ["fp32", "fp16", "bf16"])
                for precision in precisions:
                    for size in args.sizes:
                        # the base learner is not episodic: one row regardless of the number of shots
                        for shots in (args.shots if name != "pspnet" else args.shots[:1]):
                            for mode in args.modes:
                                row = {"model": name, "setting": setting, "device": device_name,
                                       "precision": precision, "size": size, "shots": shots, "mode": mode,
                                       "channels_last": args.channels_last, "batch_size": args.batch_size}
                                try:
                                    if args.in_process:
                                        result = run_one(name, setting, shots, size, device, precision, mode, args)
                                        if device.type == "cpu":  # allocator caching across runs: meaningless
                                            result["peak_mib"] = None
                                    else:
                                        result = run_isolated(row, args)
                                    row.update(result)
                                    row["note"] = ""
                                except Exception as err:  # noqa: BLE001 -- record it and go on
                                    row["note"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                                    row["traceback"] = traceback.format_exc()
                                results.append(row)
                                _annotate_train_ratio(row, results)
                                _print_row(row)
    if args.json:
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": sys.version.split()[0],
                "machine": platform.processor() or platform.machine(), "argv": sys.argv[1:],
                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"results -> {args.json}")
    return results


def _annotate_train_ratio(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """On the second of a forward / train pair of one configuration: ``train_over_forward`` (median training
    step / median eval forward) and ``train_episodes_per_s`` (batch size / median step) in the row and its
    note -- the figures the training budgets depend on."""
    key = ("model", "setting", "device", "precision", "size", "shots", "channels_last", "batch_size")
    partner = {"forward": "train", "train": "forward"}.get(row.get("mode"))
    if partner is None or not isinstance(row.get("median_s"), float):
        return
    other = next((r for r in rows if r.get("mode") == partner and isinstance(r.get("median_s"), float)
                  and all(r.get(k) == row.get(k) for k in key)), None)
    if other is None:
        return
    train, forward = (row, other) if row["mode"] == "train" else (other, row)
    row["train_over_forward"] = train["median_s"] / forward["median_s"]
    row["train_episodes_per_s"] = (train.get("batch_size") or 1) / train["median_s"]
    row["note"] = (row["note"] + " " if row["note"] else "") + (
        f"train/forward {row['train_over_forward']:.2f}x, {row['train_episodes_per_s']:.1f} episodes/s in the step")


def _print_row(row: dict[str, Any]) -> None:
    fmt = (lambda v, w, p: f"{v:>{w}.{p}f}" if isinstance(v, float) else f"{'-':>{w}}")
    print(f"{row['model']:9} {row['setting']:7} {row['device']:4} {row['precision']:4} {row['size']:>4} "
          f"{row['shots']:>2} {row['mode']:7} {fmt(row.get('median_s'), 9, 3)} {fmt(row.get('min_s'), 8, 3)} "
          f"{fmt(row.get('cpu_s'), 8, 3)} "
          f"{fmt(row.get('peak_mib'), 9, 1)}  {row['note']}", flush=True)


def cli(argv: list[str] | None = None) -> None:
    """``python -m fsslab.cli.bench``: the benchmark, or one isolated configuration (``--worker JOB``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--worker" in argv:
        _worker(argv[argv.index("--worker") + 1])
    else:
        main(argv)


if __name__ == "__main__":
    cli()
