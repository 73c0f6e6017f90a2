"""Where a tiny-CPU training step goes: data loading, forward, backward and the optimiser update, per model.

    python benchmarks/train_step_profile.py [--models ipmt,amformer] [--rounds 7] [--threads 2] [--json F]

Times, on the shipped synthetic configs' models and real episodes of the default benchmark (batch 8, 96 px):
- ``eval forward``: one inference forward (what `fsslab eval` does per batch);
- ``train forward + loss``, ``backward``, ``optimiser step`` of one training step, the optimiser once with
  PyTorch's CPU default (a Python loop over the parameters, fsslab's default until 2026-11-30) and once fused
  (one kernel over every parameter, the default now: ``fsslab.engine.train.optim``);
- ``loader``: one batch from the trainer's DataLoader (``data.workers`` processes), the main process idle;
  ``batch built in-process``: the CPU time those workers spend on one batch (episode sampling, decoding,
  augmentation), which a 2-core machine takes from the step.
Rounds interleave the variants so that machine load hits each alike; medians with min-max. The ratio
step/forward is what the speed issue (#15) bounds (≤ 2.5), and episodes/s what a training run logs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fsslab.config import load_config
from fsslab.engine.build import build_run_model, build_train_set
from fsslab.engine.sampling import EpochBatchSampler, SeededEpisodes
from fsslab.engine.train.optim import build_optimizers

CONFIGS = {"ipmt": "synthetic/ipmt_tiny", "amformer": "synthetic/amformer_tiny", "baseline": "synthetic/baseline_tiny"}


def _loader(cfg, dataset, workers: int) -> torch.utils.data.DataLoader:
    sampler = EpochBatchSampler(len(dataset), cfg.data.batch_size, cfg.train.seed, 0)
    return torch.utils.data.DataLoader(SeededEpisodes(dataset), batch_sampler=sampler, num_workers=workers,
                                       generator=torch.Generator().manual_seed(0))


def _optimisers(model: torch.nn.Module, cfg, fused: bool) -> list:
    built = build_optimizers(model, cfg.train.base_lr, cfg.train.weight_decay)
    for b in built:
        for group in b.optimizer.param_groups:
            group["fused"], group["foreach"] = (True, False) if fused else (False, False)
    return built


def profile(name: str, rounds: int) -> dict:
    cfg = load_config(CONFIGS[name])
    model = build_run_model(cfg)
    dataset = build_train_set(cfg)
    batches = iter(_loader(cfg, dataset, cfg.data.workers))
    batch = next(batches)
    in_process = SeededEpisodes(dataset)
    variants = {"loop": _optimisers(model, cfg, fused=False), "fused": _optimisers(model, cfg, fused=True)}
    times: dict[str, list[float]] = {}

    def clock(key: str, fn) -> object:
        start = time.perf_counter()
        out = fn()
        times.setdefault(key, []).append(time.perf_counter() - start)
        return out

    for index in range(rounds + 1):  # round 0 warms up and is dropped
        model.eval()
        with torch.inference_mode():
            clock("eval forward", lambda: model(batch))
        for variant, optimisers in variants.items():
            model.train()
            model.zero_grad(set_to_none=True)

            def forward_loss(iteration: int = index) -> dict:
                output = model(batch)
                return model.step_objectives(model.loss(output, batch), iteration=iteration)

            objectives = clock(f"train forward + loss ({variant})", forward_loss)
            clock(f"backward ({variant})", lambda losses=objectives: sum(losses.values()).backward())
            active = [b.optimizer for b in optimisers if b.objective in objectives]
            clock(f"optimiser step ({variant})", lambda steps=active: [o.step() for o in steps])
        clock("loader", lambda: next(batches))
        clock("batch built in-process", lambda first=index * cfg.data.batch_size: [
            in_process[(first + i) % len(dataset), first + i] for i in range(cfg.data.batch_size)])
        if index == 0:
            times.clear()
    summary = {key: {"median": statistics.median(v), "min": min(v), "max": max(v)} for key, v in times.items()}
    for variant in variants:
        step = sum(summary[f"{part} ({variant})"]["median"]
                   for part in ("train forward + loss", "backward", "optimiser step"))
        summary[f"step ({variant})"] = {"median": step, "min": step, "max": step}
        summary[f"step / eval forward ({variant})"] = {"median": step / summary["eval forward"]["median"]}
        summary[f"episodes/s ({variant})"] = {"median": cfg.data.batch_size / step}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ipmt,amformer")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.models.split(","):
        results[name] = profile(name, args.rounds)
        print(f"\n{name} (batch 8, 96 px, {args.threads} threads, {args.rounds} rounds)")
        for key, value in results[name].items():
            spread = f"  [{value['min']:.3f}-{value['max']:.3f}]" if "min" in value and value["min"] != value["max"] else ""
            print(f"  {key:<36} {value['median']:8.3f}{spread}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
