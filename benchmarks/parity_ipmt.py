"""IPMT parity and speed against the official code: max abs logit differences, timings and peak memory.

Needs the verification harness (outside the repository) and a git copy of the official IPMT:

    export OFFICIAL_IPMT_GIT=/path/to/IPMT/.git   # git dir of github:LIUYUANWEI98/IPMT
    python benchmarks/parity_ipmt.py --harness /work/shared/tools/official_ref --shots 1 5 --repeats 3

For each shot count it builds the official model with the harness's deterministic weights, saves an
official-format checkpoint, loads it with ``load_official("ipmt", ..., reproduce_official=True)``, and
compares eval logits on the harness episode (and its empty-support variant). Timings interleave the
official fp32 forward with fsslab NCHW fp32, fsslab channels_last fp32 (the default) and bf16 autocast
and report medians and ratios to the official time; peak memory (RSS high-water mark of one forward,
after the model and inputs exist) is measured in a fresh child process per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fsslab.models import load_official

# fsslab_nchw: IPMT(channels_last=False), plain NCHW activations; fsslab_channels_last: the default
# (channels_last activations); fsslab_bf16: the default under bf16 autocast. Weights stay as loaded.
VARIANTS = ("official", "fsslab_nchw", "fsslab_channels_last", "fsslab_bf16")


def _harness(path: str):
    if not os.environ.get("OFFICIAL_IPMT_GIT"):
        raise SystemExit("set OFFICIAL_IPMT_GIT to the git directory of github:LIUYUANWEI98/IPMT")
    if not (Path(path) / "official_ref.py").is_file():
        raise SystemExit(f"no official_ref.py in {path!r} (pass --harness)")
    sys.path.insert(0, str(Path(path).resolve()))
    import official_ref  # outside the repository: imported only here, at run time

    return official_ref


def _batch(inputs: dict) -> dict[str, torch.Tensor]:
    """Official (x, s_x, s_y, y) -> fsslab batch; the 473x473 harness episode has no padding."""
    return {"query_img": inputs["x"], "support_imgs": inputs["s_x"],
            "support_masks": inputs["s_y"], "query_mask": inputs["y"],
            "query_padding": torch.zeros_like(inputs["y"], dtype=torch.bool)}


def _runner(variant: str, ref, official_model, model):
    """A callable running one eval forward of ``variant`` on the official ``inputs``."""
    if variant == "official":
        return lambda inputs: ref.run_ipmt(official_model, inputs["x"], inputs["s_x"], inputs["s_y"], inputs["y"])

    def run(inputs):
        model.channels_last = variant != "fsslab_nchw"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "fsslab_bf16"):
            return model(_batch(inputs)).logits.float()
    return run


def _peak_rss_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
              if line.startswith(("VmRSS", "VmHWM"))}
    return values["VmRSS"], values["VmHWM"]


def child(args) -> None:
    """Peak-memory probe run in a fresh process: one warm-up forward, reset the RSS high-water mark, one forward."""
    torch.set_num_threads(args.threads)
    ref = _harness(args.harness)
    inputs = ref.make_inputs(shot=args.shot, seed=0)
    official_model = model = None
    if args.child == "official":
        official_model = ref.load_official_checkpoint(ref.build_official_ipmt(shot=args.shot), args.ckpt)
    else:
        model = load_official("ipmt", args.ckpt, shot=args.shot, reproduce_official=True)
    run = _runner(args.child, ref, official_model, model)
    with torch.no_grad():
        run(inputs)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before, _ = _peak_rss_kib()
        run(inputs)
        _, peak = _peak_rss_kib()
    print(json.dumps({"variant": args.child, "peak_mib": (peak - before) / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", default=os.environ.get("OFFICIAL_REF_DIR", "/work/shared/tools/official_ref"))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (0: no timing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--best", action="store_true", help="report the fastest run instead of the median")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--shot", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    torch.set_num_threads(args.threads)
    ref = _harness(args.harness)
    results = {}
    workdir = Path(tempfile.mkdtemp(prefix="parity_ipmt_"))
    for shot in args.shots:
        print(f"== IPMT {shot}-shot, 473x473, {args.threads} threads", flush=True)
        official_model = ref.build_official_ipmt(shot=shot, seed=0)
        ckpt = workdir / f"ipmt_shot{shot}.pth"
        ref.save_official_checkpoint(official_model, ckpt)
        model = load_official("ipmt", str(ckpt), shot=shot, reproduce_official=True)
        default_model = load_official("ipmt", str(ckpt), shot=shot)  # fsslab default: padding, not the label
        row: dict = {"diff": {}}
        with torch.no_grad():
            for name, empty in (("episode", False), ("empty_support", True)):
                inputs = ref.make_inputs(shot=shot, seed=0, empty_support=empty)
                expected = ref.run_ipmt(official_model, inputs["x"], inputs["s_x"], inputs["s_y"], inputs["y"])
                row["diff"][f"{name}/fp32"] = (model(_batch(inputs)).logits - expected).abs().max().item()
                row["diff"][f"{name}/default_mode"] = (default_model(_batch(inputs)).logits
                                                       - expected).abs().max().item()
            inputs = ref.make_inputs(shot=shot, seed=0)
            expected = ref.run_ipmt(official_model, inputs["x"], inputs["s_x"], inputs["s_y"], inputs["y"])
            for variant in VARIANTS[1:]:
                got = _runner(variant, ref, official_model, model)(inputs)  # also warms caches up
                row["diff"][f"episode/{variant}"] = (got - expected).abs().max().item()
            for key, value in row["diff"].items():
                print(f"  max |logits - official| {key:<34} {value:.3e}")

            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            cpu_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
                for variant in VARIANTS:
                    run = _runner(variant, ref, official_model, model)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run(inputs)
                    times[variant].append(time.perf_counter() - start)
                    cpu_times[variant].append(time.process_time() - start_cpu)
        # wall time is what users wait for; process (CPU) time is steadier on a shared machine
        for label, series in (("wall", times), ("cpu", cpu_times)) if args.repeats > 0 else ():
            medians = {v: min(t) if args.best else statistics.median(t) for v, t in series.items()}
            row[f"{label}_seconds"] = medians
            row[f"{label}_ratio_to_official"] = {v: s / medians["official"] for v, s in medians.items()}
            for variant in VARIANTS:
                print(f"  {label:>4} {variant:<22} {'best' if args.best else 'median'} {medians[variant]:6.2f} s "
                      f"(x{medians[variant] / medians['official']:.2f} official)  "
                      f"runs {[round(t, 2) for t in series[variant]]}")
        if not args.no_memory:
            row["peak_mib"] = {}
            for variant in VARIANTS:
                # glibc keeps freed heap pages; serving every block >= 128 KiB by mmap makes RSS follow the
                # live tensors, so the high-water mark is the forward's true peak (same rule for both codes)
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
                out = subprocess.run([sys.executable, __file__, "--child", variant, "--shot", str(shot),
                                      "--ckpt", str(ckpt), "--harness", args.harness,
                                      "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True, env=env)
                row["peak_mib"][variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
                print(f"  peak memory of one forward {variant:<22} {row['peak_mib'][variant]:8.1f} MiB", flush=True)
        results[f"shot{shot}"] = row
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
