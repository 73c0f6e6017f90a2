"""AMFormer parity and speed against the official code (needs the official_ref harness; verification only).

    export OFFICIAL_IPMT_GIT=... OFFICIAL_AMNET_GIT=...   # see /work/shared/tools/official_ref/README.md
    python benchmarks/parity_amformer.py [--rounds 3] [--threads 2] [--memory]

Builds the official AMFormer with the harness's deterministic weights, loads the same weights into
fsslab's AMFormer (``official_to_fsslab``), runs the harness's seeded 473x473 1-shot episode and
prints the max abs differences of ``final_out``, ``meta_out`` and ``base_out`` and the eval-forward
times of: official fp32, fsslab fp32, fsslab fp32 channels_last, fsslab bf16 autocast + channels_last
(rounds interleaved so that machine load hits every variant alike; median wall and process-CPU
time reported). ``--memory``
measures each variant's peak RSS increase during one forward in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HARNESS = Path(os.environ.get("OFFICIAL_REF_DIR", "/work/shared/tools/official_ref"))
VARIANTS = ("official", "fsslab_fp32", "fsslab_channels_last", "fsslab_bf16_channels_last")


def _harness():
    if not (HARNESS / "official_ref.py").is_file() or not os.environ.get("OFFICIAL_AMNET_GIT"):
        raise SystemExit(f"official_ref harness not found at {HARNESS} or OFFICIAL_AMNET_GIT unset")
    sys.path.insert(0, str(HARNESS))
    import official_ref

    return official_ref


def official_runner(shot: int = 1):
    """(callable running the official eval forward, the official model, harness inputs)."""
    R = _harness()
    reference = R.build_official_amformer(shot=shot, seed=0)
    d = R.make_inputs(shot=shot, seed=0)
    return (lambda: R.run_amformer(reference, d["x"], d["s_x"], d["s_y"], d["y"], d["y"], d["cat_idx"])), reference, d


def fsslab_runner(variant: str, state: dict, d: dict, shot: int = 1):
    """Callable running fsslab's eval forward for a variant on the harness inputs ``d``."""
    from fsslab.models.amformer.official import build_reference_model

    model = build_reference_model(shot=shot)
    model.load_state_dict(state, strict=True)
    model.eval()
    batch = {"query_img": d["x"], "support_imgs": d["s_x"], "support_masks": d["s_y"]}
    if variant != "fsslab_fp32":
        model = model.to(memory_format=torch.channels_last)
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


def child(variant: str, weights: str) -> None:
    """Subprocess: peak RSS increase (MiB) during one forward after a warm-up (RSS sampled every 1 ms)."""
    if variant == "official":
        run = official_runner()[0]
    else:
        run = fsslab_runner(variant, torch.load(weights, map_location="cpu", weights_only=True),
                            _harness().make_inputs(shot=1, seed=0))
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
    print(json.dumps({"variant": variant, "rss_before_mib": before, "forward_peak_increase_mib": peak[0] - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--child", choices=VARIANTS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        child(a.child, a.weights)
        return
    from fsslab.models.amformer.official import official_to_fsslab

    run_official, reference, d = official_runner()
    state = official_to_fsslab(reference.state_dict())
    runs = {"official": run_official, **{v: fsslab_runner(v, state, d) for v in VARIANTS[1:]}}
    outs = {v: runs[v]() for v in VARIANTS}  # warm-up + outputs
    ref = outs["official"]
    print("max abs diff vs official (final_out, meta_out, base_out):")
    for v in VARIANTS[1:]:
        diffs = [(mine - theirs).abs().max().item() for mine, theirs in zip(outs[v], ref)]
        print(f"  {v:28s} " + "  ".join(f"{d:.3e}" for d in diffs), flush=True)
    wall = {v: [] for v in VARIANTS}
    cpu = {v: [] for v in VARIANTS}  # process CPU time: robust when other jobs share the cores
    for _ in range(a.rounds):
        for v in VARIANTS:
            t0, c0 = time.perf_counter(), time.process_time()
            runs[v]()
            wall[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
    if a.rounds > 0:
        print(f"eval forward, 473x473, 1 shot, {a.threads} threads, median of {a.rounds} interleaved rounds:")
        for name, times in (("wall", wall), ("cpu", cpu)):
            base = statistics.median(times["official"])
            for v in VARIANTS:
                med = statistics.median(times[v])
                print(f"  {name:4s} {v:28s} {med:7.3f} s  ratio {med / base:5.2f}  runs {[round(t, 2) for t in times[v]]}")
    if a.memory:
        print("peak RSS increase during one forward (fresh subprocess each, RSS sampled every 1 ms):")
        with tempfile.TemporaryDirectory() as tmp:
            weights = str(Path(tmp) / "fsslab_amformer.pth")
            torch.save(state, weights)
            for v in VARIANTS:
                res = subprocess.run([sys.executable, __file__, "--child", v, "--threads", str(a.threads),
                                      "--weights", weights], capture_output=True, text=True, check=True)
                info = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"  {v:28s} {info['forward_peak_increase_mib']:8.1f} MiB")


if __name__ == "__main__":
    main()
