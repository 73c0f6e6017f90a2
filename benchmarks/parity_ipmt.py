"""IPMT parity and speed against the official code: max abs logit differences, timings and peak memory.

Needs the verification harness (outside the repository) and a git copy of the official IPMT:

    export OFFICIAL_IPMT_GIT=/path/to/IPMT/.git   # git dir of github:LIUYUANWEI98/IPMT
    python benchmarks/parity_ipmt.py --harness /work/shared/tools/official_ref --shots 1 5 --rounds 3

For each shot count it builds the official model with the harness's deterministic weights, saves an
official-format checkpoint, loads it with ``load_official("ipmt", ..., reproduce_official=True)``, and
compares eval logits on the harness episode (and its empty-support variant). ``--support-object``
(default ``both``) runs the episode with the harness's small support object and with a whole-image
one: fsslab computes support layer 4 only around the support object, which a whole-image object
makes as costly as the official code. Timings interleave the official fp32 forward with fsslab NCHW
fp32, fsslab channels_last fp32 (the default) and bf16 autocast over both support objects and
report medians with min/max and one table of fsslab/official ratios; peak memory (RSS high-water
mark of one forward, after the model and inputs exist) is measured in a fresh child process per
variant and support object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import parity_common as common
import torch

from fsslab.models import load_official

# fsslab_nchw: IPMT(channels_last=False), plain NCHW activations; fsslab_channels_last: the default
# (channels_last activations); fsslab_bf16: the default under bf16 autocast. Weights stay as loaded.
VARIANTS = ("official", "fsslab_nchw", "fsslab_channels_last", "fsslab_bf16")
RATIO_VARIANTS = {"fp32": "fsslab_nchw", "channels_last": "fsslab_channels_last", "bf16": "fsslab_bf16"}


def _harness(path: str):
    return common.load_harness(path, ["OFFICIAL_IPMT_GIT"])


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
    inputs = common.harness_inputs(ref, args.shot, args.support_object)
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


def _max_abs_diffs(ref, shot: int, support: str, official_model, model, default_model,
                   variants: tuple[str, ...] = VARIANTS[1:]) -> dict[str, float]:
    """max |fsslab - official| of the reproduce-official model (and the default model) per variant."""
    def official(inputs: dict) -> torch.Tensor:
        return ref.run_ipmt(official_model, inputs["x"], inputs["s_x"], inputs["s_y"], inputs["y"])

    diffs = {}
    # the empty-support guard is a property of the small harness object; the whole one is never empty
    cases = {"episode": common.harness_inputs(ref, shot, support)}
    if support == "small":
        cases["empty_support"] = ref.make_inputs(shot=shot, seed=0, empty_support=True)
    with torch.no_grad():
        for name, inputs in cases.items():
            expected = official(inputs)
            diffs[f"{support}/{name}/fp32"] = (model(_batch(inputs)).logits - expected).abs().max().item()
            diffs[f"{support}/{name}/default_mode"] = (default_model(_batch(inputs)).logits
                                                       - expected).abs().max().item()
        expected = official(cases["episode"])
        for variant in variants:
            got = _runner(variant, ref, official_model, model)(cases["episode"])  # also warms caches up
            diffs[f"{support}/episode/{variant}"] = (got - expected).abs().max().item()
    return diffs


def _peak_memory(args, shot: int, support: str, ckpt: Path) -> dict[str, float]:
    """Peak RSS of one forward per variant, each in a fresh child process."""
    peaks = {}
    for variant in (v for v in VARIANTS if common.timed_variant(v, args.no_bf16)):
        # glibc keeps freed heap pages; serving every block >= 128 KiB by mmap makes RSS follow the
        # live tensors, so the high-water mark is the forward's true peak (same rule for both codes)
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--shot", str(shot),
                              "--ckpt", str(ckpt), "--harness", args.harness, "--threads", str(args.threads),
                              "--support-object", support],
                             capture_output=True, text=True, check=True, env=env)
        peaks[variant] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
        print(f"  peak memory of one forward {support:6} {variant:<22} {peaks[variant]:8.1f} MiB", flush=True)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", default=common.DEFAULT_HARNESS)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=3,
                    help="interleaved timing rounds (0: no timing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--json", default=None, help="also write the results here")
    common.add_support_option(ap)
    common.add_bf16_option(ap)
    common.add_floor_option(ap)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--shot", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    torch.set_num_threads(args.threads)
    ref = _harness(args.harness)
    supports = common.support_objects(args.support_object)
    results = {}
    workdir = Path(tempfile.mkdtemp(prefix="parity_ipmt_"))
    for shot in args.shots:
        print(f"== IPMT {shot}-shot, 473x473, {args.threads} threads, support objects: {', '.join(supports)}",
              flush=True)
        official_model = ref.build_official_ipmt(shot=shot, seed=0)
        ckpt = workdir / f"ipmt_shot{shot}.pth"
        ref.save_official_checkpoint(official_model, ckpt)
        model = load_official("ipmt", str(ckpt), shot=shot, reproduce_official=True)
        default_model = load_official("ipmt", str(ckpt), shot=shot)  # fsslab default: padding, not the label
        row: dict = {"diff": {}}
        for support in supports:
            variants = tuple(v for v in VARIANTS[1:] if common.timed_variant(v, args.no_bf16))
            row["diff"].update(_max_abs_diffs(ref, shot, support, official_model, model, default_model, variants))
        for key, value in row["diff"].items():
            print(f"  max |logits - official| {key:<40} {value:.3e}")

        if args.rounds > 0:
            runs = {}
            for support in supports:
                inputs = common.harness_inputs(ref, shot, support)
                for variant in (v for v in VARIANTS if common.timed_variant(v, args.no_bf16)):
                    run = _runner(variant, ref, official_model, model)
                    runs[(support, variant)] = (lambda run=run, inputs=inputs: run(inputs))
            with torch.no_grad():
                wall, cpu = common.interleaved_times(runs, args.rounds)
            # wall time is what users wait for; process (CPU) time is steadier on a shared machine
            for label, times in (("wall", wall), ("cpu", cpu)):
                row[label] = common.summarize(times, RATIO_VARIANTS)
                print(common.format_seconds(row[label], label))
                print(common.format_ratio_table(row[label], f"  IPMT {shot}-shot {label} time: fsslab/official, "
                                                            f"median of {args.rounds} rounds (per-round min-max)"))
            if not args.no_floor:
                with torch.no_grad():
                    row["floor"] = common.report_floor(runs, row["wall"], ["official", "fsslab_channels_last"],
                                                       args.threads, f"IPMT {shot}-shot")
        if not args.no_memory:
            row["peak_mib"] = {support: _peak_memory(args, shot, support, ckpt) for support in supports}
        results[f"shot{shot}"] = row
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
