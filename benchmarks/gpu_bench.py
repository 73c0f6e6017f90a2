"""One command for a GPU machine: the paper-size IPMT and AMFormer, fsslab vs the official code.

    export OFFICIAL_IPMT_GIT=... OFFICIAL_AMNET_GIT=...   # optional: without them only fsslab rows run
    python benchmarks/gpu_bench.py --json gpu_bench.json            # CUDA, 473x473, 1 and 5 shots (~minutes)
    python benchmarks/gpu_bench.py --quick                          # 1 shot, fewer rounds
    python benchmarks/gpu_bench.py --device cpu --size 97 --rounds 1   # smoke test on CPU

For IPMT and AMFormer (ResNet-50, the ``fsslab bench --settings full`` models) and every shot count,
implementation (``fsslab``, ``official``), memory format (NCHW, channels_last), mode (eval forward,
training step) and precision (fp32, bf16 / fp16 autocast) it times ``--rounds`` calls after
``--warmup`` calls and records the peak memory above the starting point
(``torch.cuda.max_memory_allocated``; not reported on CPU, where this single process's allocator
caching makes it meaningless). It prints one table and writes every row to ``--json``.

fsslab models are randomly initialised (timing does not depend on the weights); the official models
are built by the verification harness (``--harness``, see /work/shared/tools/official_ref/README.md)
with its seeded weights and then moved to the device here. Both get the same random episode
(``fsslab.cli.bench.make_batch``). No network access is needed.

What the official rows are, exactly (the harness targets CPU, this script adapts it at run time):
* The official forward is called directly (not through the harness's ``run_*``), under ``no_grad``
  for eval; the official AMFormer's own ``.cuda()`` calls then move its helper tensors to the GPU.
* Official IPMT's deformable attention runs the official pure-PyTorch ``ms_deform_attn_core_pytorch``
  (the harness's stand-in for the compiled CUDA op, which is not built here), with autograd so that a
  training step can run: official IPMT figures include that slower kernel.
* Training step = forward in train mode + backward of the sum of the losses it returns (AMFormer:
  after the official ``freeze_modules``; its two optimizers' separate backward passes are folded into
  one); fsslab's is ``fsslab.cli.bench.make_step``. No optimizer step on either side.
* Known official limits appear as notes: IPMT hard-codes 473x473; AMFormer cannot run K>1 shots and
  its training forward allocates on ``'cuda'`` (no CPU training row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.cli.bench import PRECISIONS, autocast, make_batch, make_step, model_config, time_step
from fsslab.models import build_model

MODELS = ("ipmt", "amformer")
IMPLEMENTATIONS = ("fsslab", "official")
MODES = ("forward", "train")
OFFICIAL_ENV = {"ipmt": "OFFICIAL_IPMT_GIT", "amformer": "OFFICIAL_AMNET_GIT"}
OFFICIAL_IPMT_SIZE = 473  # the official IPMT reshapes its tokens to a hard-coded 60x60 grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=473)
    ap.add_argument("--shots", type=int, nargs="+", default=None, help="default 1 5 (--quick: 1)")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None,
                    help="default fp32 bf16 fp16 on CUDA, fp32 bf16 on CPU")
    ap.add_argument("--channels-last", nargs="+", choices=("off", "on"), default=["off", "on"])
    ap.add_argument("--rounds", type=int, default=None, help="timed calls per row (default 5, --quick 2)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed calls first (default 2 on CUDA for cudnn autotuning, 1 on CPU)")
    ap.add_argument("--quick", action="store_true", help="1 shot and 2 rounds unless given")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--harness", default=os.environ.get("OFFICIAL_REF_DIR", "/work/shared/tools/official_ref"))
    ap.add_argument("--json", type=Path, default=None, help="write every row and the run's metadata here")
    args = ap.parse_args(argv)
    args.shots = args.shots or ([1] if args.quick else [1, 5])
    args.rounds = args.rounds or (2 if args.quick else 5)
    device = torch.device(args.device)
    args.warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 1)
    args.precisions = args.precisions or (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"])
    return args


# ----------------------------------------------------------------------------- official models
def load_harness(path: str) -> ModuleType | None:
    """The harness module, or None when it or the official repositories are not available."""
    if not (Path(path) / "official_ref.py").is_file() or not any(os.environ.get(v) for v in OFFICIAL_ENV.values()):
        return None
    sys.path.insert(0, str(Path(path).resolve()))
    import official_ref  # outside the repository: imported only when present

    return official_ref


def _official_ipmt_msda_with_autograd(model: torch.nn.Module) -> None:
    """Route official IPMT's deformable attention straight to its pure-PyTorch core.

    The harness's stand-in for the compiled op has no backward; the core is plain autograd-able
    PyTorch and computes the same values, on any device."""
    attention = next(m for m in model.modules() if type(m).__name__ == "MSDeformAttn")
    namespace = type(attention).forward.__globals__  # the official module's globals
    core = namespace["ms_deform_attn_core_pytorch"]

    def apply(value, shapes, level_start, locations, weights, im2col_step):  # MSDeformAttnFunction.apply's signature
        return core(value, shapes, locations, weights)

    namespace["MSDeformAttnFunction"].apply = staticmethod(apply)


def build_official(ref: ModuleType, name: str, shots: int) -> torch.nn.Module:
    if name == "ipmt":
        model = ref.build_official_ipmt(shot=shots, seed=0)
        _official_ipmt_msda_with_autograd(model)
        return model
    return ref.build_official_amformer(shot=shots, seed=0)


def official_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """fsslab batch -> the official forward's keyword arguments (shared by both official models)."""
    return {"x": batch["query_img"], "s_x": batch["support_imgs"], "s_y": batch["support_masks"],
            "y": batch["query_mask"], "y_b": batch["query_base_mask"], "cat_idx": [batch["class_id"]]}


def official_forward(name: str, model: torch.nn.Module, inputs: dict[str, Any]):
    if name == "ipmt":
        return model(x=inputs["x"], s_x=inputs["s_x"], s_y=inputs["s_y"], y=inputs["y"])
    return model(x=inputs["x"], s_x=inputs["s_x"], s_y=inputs["s_y"], y_m=inputs["y"], y_b=inputs["y_b"],
                 cat_idx=inputs["cat_idx"])


def official_step(ref: ModuleType, name: str, model: torch.nn.Module, inputs: dict[str, Any], mode: str,
                  dtype: torch.dtype | None) -> Callable[[], None]:
    """One eval forward or training step (forward + backward of the summed losses) of an official model."""
    device = inputs["x"].device
    if mode == "train" and name == "amformer" and hasattr(model, "freeze_modules"):
        model.freeze_modules(model)  # as the official train.py does before training

    def forward() -> None:
        with torch.no_grad(), autocast(device, dtype):
            if name == "amformer" and device.type == "cpu":  # its eval forward calls .cuda(): the harness maps it
                ref.run_amformer(model, inputs["x"], inputs["s_x"], inputs["s_y"], inputs["y"], inputs["y"],
                                 inputs["cat_idx"])
            else:
                official_forward(name, model, inputs)

    def train() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            losses = official_forward(name, model, inputs)[1:]  # (prediction, loss, ...)
        sum(loss.float() for loss in losses if torch.is_tensor(loss)).backward()

    return forward if mode == "forward" else train


def official_limit(name: str, shots: int, size: int, mode: str, device: torch.device) -> str | None:
    """Why the official code cannot run this configuration, or None."""
    if name == "ipmt" and size != OFFICIAL_IPMT_SIZE:
        return f"official IPMT hard-codes {OFFICIAL_IPMT_SIZE}x{OFFICIAL_IPMT_SIZE}"
    if name == "amformer" and shots > 1:
        return "official AMFormer cannot run K>1 shots (harness README)"
    if name == "amformer" and mode == "train" and device.type != "cuda":
        return "official AMFormer training allocates on 'cuda'"
    return None


# ----------------------------------------------------------------------------- rows
def configurations(args: argparse.Namespace) -> Iterator[tuple[str, int, str, bool]]:
    """(model, shots, implementation, channels_last): one model build each, reused by every mode and precision."""
    for name in args.models:
        for shots in args.shots:
            for impl in args.implementations:
                for layout in args.channels_last:
                    yield name, shots, impl, layout == "on"


def build(name: str, shots: int, impl: str, channels_last: bool, ref: ModuleType | None,
          device: torch.device) -> torch.nn.Module:
    if impl == "official":
        model = build_official(ref, name, shots)
    else:
        # channels_last off means NCHW end to end: the models' own channels_last switch too. One model
        # serves both modes; "train" only adds options that training needs (none for IPMT/AMFormer).
        cfg = model_config(name, "full", shots, "train", {"channels_last": channels_last})
        torch.manual_seed(0)
        model = build_model(cfg)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def time_row(step: Callable[[], None], device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    times, cpu_times, peak_mib = time_step(step, device, args.warmup, args.rounds)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "cpu_s": statistics.median(cpu_times), "peak_mib": peak_mib if device.type == "cuda" else None}


def run_configuration(name: str, shots: int, impl: str, channels_last: bool, ref: ModuleType | None,
                      device: torch.device, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Every (mode, precision) row of one built model; a failure becomes the row's note."""
    base = {"model": name, "shots": shots, "impl": impl, "channels_last": channels_last, "size": args.size}
    rows = [{**base, "mode": mode, "precision": precision} for mode in args.modes for precision in args.precisions]
    if impl == "official" and (ref is None or not os.environ.get(OFFICIAL_ENV[name])):
        yield from ({**row, "note": f"no official run: harness or {OFFICIAL_ENV[name]} missing"} for row in rows)
        return
    limits = [official_limit(name, shots, args.size, row["mode"], device) if impl == "official" else None
              for row in rows]
    if all(limits):  # nothing to time: do not build the model
        yield from ({**row, "note": limit} for row, limit in zip(rows, limits))
        return
    try:
        model = build(name, shots, impl, channels_last, ref, device)
    except Exception as err:  # noqa: BLE001 -- record it and go on with the next configuration
        yield from ({**row, "note": _error_note(err)} for row in rows)
        return
    batch = make_batch(1, shots, args.size, device, seed=0)
    if channels_last:
        batch["query_img"] = batch["query_img"].contiguous(memory_format=torch.channels_last)
    for row, limit in zip(rows, limits):
        if limit:
            yield {**row, "note": limit}
            continue
        dtype = PRECISIONS[row["precision"]]
        model.train(row["mode"] == "train")
        try:
            step = (official_step(ref, name, model, official_inputs(batch), row["mode"], dtype) if impl == "official"
                    else make_step(model, batch, row["mode"], dtype))
            yield {**row, **time_row(step, device, args), "note": ""}
        except Exception as err:  # noqa: BLE001 -- e.g. an official code path that fails in this precision
            yield {**row, "note": _error_note(err), "traceback": traceback.format_exc()}
        finally:
            model.zero_grad(set_to_none=True)  # gradients of a training row must not count in the next row


def _error_note(err: Exception) -> str:
    return f"error: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:100]}"


# ----------------------------------------------------------------------------- report
def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``x_official_fp32``: median time over the official fp32 NCHW row of the same model, shots and mode."""
    reference = {(r["model"], r["shots"], r["mode"]): r["median_s"] for r in rows
                 if r["impl"] == "official" and r["precision"] == "fp32" and not r["channels_last"]
                 and "median_s" in r}
    for row in rows:
        official = reference.get((row["model"], row["shots"], row["mode"]))
        row["x_official_fp32"] = row["median_s"] / official if official and "median_s" in row else None


HEADER = (f"{'model':8} {'impl':8} {'K':>2} {'mode':7} {'prec':4} {'CL':3} {'median s':>9} {'min s':>8} "
          f"{'max s':>8} {'x off.fp32':>10} {'peak MiB':>9}  note")


def format_row(row: dict[str, Any]) -> str:
    def num(key: str, width: int, digits: int) -> str:
        value = row.get(key)
        return f"{value:>{width}.{digits}f}" if isinstance(value, float) else f"{'-':>{width}}"

    return (f"{row['model']:8} {row['impl']:8} {row['shots']:>2} {row['mode']:7} {row['precision']:4} "
            f"{'on' if row['channels_last'] else 'off':3} {num('median_s', 9, 4)} {num('min_s', 8, 4)} "
            f"{num('max_s', 8, 4)} {num('x_official_fp32', 10, 2)} {num('peak_mib', 9, 0)}  {row['note']}")


def metadata(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "threads": torch.get_num_threads(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # fixed input sizes: let cuDNN pick its fastest kernels (as the official training scripts do)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    ref = load_harness(args.harness) if "official" in args.implementations else None
    print(f"torch {torch.__version__}, {device}, {args.size}x{args.size}, {args.rounds} rounds after "
          f"{args.warmup} warm-up, harness {'found' if ref else 'not available'}", flush=True)
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    rows: list[dict[str, Any]] = []
    for name, shots, impl, channels_last in configurations(args):
        for row in run_configuration(name, shots, impl, channels_last, ref, device, args):
            rows.append(row)
            print(format_row(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next configuration starts from an empty cache
    add_ratios(rows)
    print("\nsummary (x off.fp32 = median time / official fp32 NCHW median of the same model, shots, mode)")
    print(HEADER)
    print("-" * len(HEADER))
    for row in rows:
        print(format_row(row))
    if args.json:
        args.json.write_text(json.dumps({"meta": metadata(args, device), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
