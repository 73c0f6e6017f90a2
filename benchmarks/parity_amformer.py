"""AMFormer parity and speed against the official code (needs the official_ref harness; verification only).

    export OFFICIAL_IPMT_GIT=... OFFICIAL_AMNET_GIT=...   # see /work/shared/tools/official_ref/README.md
    python benchmarks/parity_amformer.py [--rounds 3] [--threads 2] [--support-object both] [--memory]

Builds the official AMFormer with the harness's deterministic weights, loads the same weights into
fsslab's AMFormer (``official_to_fsslab``), runs the harness's seeded 473x473 1-shot episode with its
small support object and with a whole-image one (``--support-object``, default ``both``) and prints
the max abs differences of ``final_out``, ``meta_out`` and ``base_out`` and the eval-forward times
of: official fp32, fsslab fp32, fsslab fp32 channels_last, fsslab bf16 autocast + channels_last
(rounds interleaved over variants and support objects so that machine load hits every one alike;
median wall and process-CPU time with min/max, and one table of fsslab/official ratios).
``--memory`` measures each variant's peak RSS increase during one forward in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import parity_common as common
import torch

VARIANTS = ("official", "fsslab_fp32", "fsslab_channels_last", "fsslab_bf16_channels_last")
RATIO_VARIANTS = {"fp32": "fsslab_fp32", "channels_last": "fsslab_channels_last",
                  "bf16": "fsslab_bf16_channels_last"}


def _harness(path: str):
    return common.load_harness(path, ["OFFICIAL_AMNET_GIT"])


def official_runner(ref, reference, d: dict):
    """Callable running the official eval forward on the harness inputs ``d``."""
    return lambda: ref.run_amformer(reference, d["x"], d["s_x"], d["s_y"], d["y"], d["y"], d["cat_idx"])


def fsslab_model(variant: str, state: dict, shot: int = 1) -> torch.nn.Module:
    """fsslab's AMFormer (reference configuration) with the official weights, in the variant's memory format."""
    from fsslab.models.amformer.official import build_reference_model

    model = build_reference_model(shot=shot)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model if variant == "fsslab_fp32" else model.to(memory_format=torch.channels_last)


def fsslab_runner(variant: str, model: torch.nn.Module, d: dict):
    """Callable running fsslab's eval forward for a variant on the harness inputs ``d``."""
    batch = {"query_img": d["x"], "support_imgs": d["s_x"], "support_masks": d["s_y"]}
    if variant != "fsslab_fp32":
        batch["query_img"] = batch["query_img"].contiguous(memory_format=torch.channels_last)
    bf16 = variant.startswith("fsslab_bf16")

    @torch.no_grad()
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch)
        return out.logits.float(), out.aux["meta_logits"].float(), out.aux["base_logits"].float()

    return run


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> None:
    """Subprocess: peak RSS increase (MiB) during one forward after a warm-up (RSS sampled every 1 ms)."""
    ref = _harness(args.harness)
    d = common.harness_inputs(ref, 1, args.support_object)
    if args.child == "official":
        run = official_runner(ref, ref.build_official_amformer(shot=1, seed=0), d)
    else:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        run = fsslab_runner(args.child, fsslab_model(args.child, state), d)
    run()
    gc.collect()
    before, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run()
    done.set()
    sampler.join()
    print(json.dumps({"variant": args.child, "rss_before_mib": before,
                      "forward_peak_increase_mib": peak[0] - before}))


def _print_diffs(outs: dict[str, tuple[torch.Tensor, ...]], support: str) -> dict[str, list[float]]:
    """max |fsslab - official| of (final_out, meta_out, base_out) per fsslab variant."""
    diffs = {}
    for variant in (v for v in VARIANTS[1:] if v in outs):
        diffs[variant] = [(mine - theirs).abs().max().item() for mine, theirs in zip(outs[variant], outs["official"])]
        print(f"  {support:6} {variant:28s} " + "  ".join(f"{d:.3e}" for d in diffs[variant]), flush=True)
    return diffs


def _peak_memory(args: argparse.Namespace, state: dict, supports: tuple[str, ...]) -> dict[str, dict[str, float]]:
    print("peak RSS increase during one forward (fresh subprocess each, RSS sampled every 1 ms):")
    peaks: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "fsslab_amformer.pth")
        torch.save(state, weights)
        for support in supports:
            peaks[support] = {}
            for variant in VARIANTS:
                res = subprocess.run([sys.executable, __file__, "--child", variant, "--threads", str(args.threads),
                                      "--weights", weights, "--harness", args.harness, "--support-object", support],
                                     capture_output=True, text=True, check=True)
                peaks[support][variant] = json.loads(res.stdout.strip().splitlines()[-1])["forward_peak_increase_mib"]
                print(f"  {support:6} {variant:28s} {peaks[support][variant]:8.1f} MiB")
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", default=common.DEFAULT_HARNESS)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (0: no timing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    common.add_support_option(ap)
    common.add_bf16_option(ap)
    common.add_floor_option(ap)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    from fsslab.models.amformer.official import official_to_fsslab

    ref = _harness(args.harness)
    supports = common.support_objects(args.support_object)
    reference = ref.build_official_amformer(shot=1, seed=0)
    state = official_to_fsslab(reference.state_dict())
    models = {v: fsslab_model(v, state) for v in VARIANTS[1:]}
    results: dict = {"diff": {}}
    runs = {}
    print("max abs diff vs official (final_out, meta_out, base_out):")
    for support in supports:
        d = common.harness_inputs(ref, 1, support)
        runs.update({(support, "official"): official_runner(ref, reference, d),
                     **{(support, v): fsslab_runner(v, models[v], d) for v in VARIANTS[1:]}})
        outs = {v: runs[(support, v)]() for v in VARIANTS if common.timed_variant(v, args.no_bf16)}  # warm-up + outputs
        results["diff"][support] = _print_diffs(outs, support)
    if args.rounds > 0:
        timed = {key: run for key, run in runs.items() if common.timed_variant(key[1], args.no_bf16)}
        wall, cpu = common.interleaved_times(timed, args.rounds)  # process CPU time: robust when other jobs share the cores
        print(f"eval forward, 473x473, 1 shot, {args.threads} threads, {args.rounds} interleaved rounds:")
        for label, times in (("wall", wall), ("cpu", cpu)):
            results[label] = common.summarize(times, RATIO_VARIANTS)
            print(common.format_seconds(results[label], label))
            print(common.format_ratio_table(results[label], f"  AMFormer 1-shot {label} time: fsslab/official, "
                                                            f"median of {args.rounds} rounds (per-round min-max)"))
        if not args.no_floor:
            results["floor"] = common.report_floor(runs, results["wall"], ["official", "fsslab_channels_last"],
                                                   args.threads, "AMFormer 1-shot")
    if args.memory:
        results["peak_mib"] = _peak_memory(args, state, supports)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
