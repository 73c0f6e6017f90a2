"""Episodic evaluation: seeded episode lists, several seeds, class-wise mIoU / FB-IoU, mean and spread."""

from __future__ import annotations

import json
import random
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from fsslab.data.eval_protocols import get_protocol
from fsslab.engine import distributed as dist_utils
from fsslab.engine.metrics import (
    BaseObjectCounter,
    IoUAccumulator,
    base_object_mask,
    logits_at_label_resolution,
    suppress_base_objects,
)
from fsslab.errors import FsslabWarning
from fsslab.models.base import model_device

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def warn_if_emulated_bf16(amp: str, device: torch.device | str) -> None:
    """bf16 autocast on a CPU without native bf16 instructions (AVX512-BF16 or AMX) is emulated and far slower
    than fp32 (IPMT at 473x473 on an AVX2 EPYC: 6x the official fp32 time, docs/speed.md): say so once."""
    if amp != "bf16" or torch.device(device).type != "cpu":
        return
    native = [getattr(torch.cpu, name, lambda: True)() for name in ("_is_avx512_bf16_supported",
                                                                    "_is_amx_tile_supported")]
    if not any(native):
        warnings.warn(f"bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX512-BF16 or AMX) is "
                      "emulated and slower than fp32: use amp none here; bf16 pays off on recent Xeons and GPUs",
                      FsslabWarning, stacklevel=3)


@dataclass
class EvalResult:
    """Metrics of every seed and their mean/std over seeds (values in %, as papers report them)."""

    seeds: list[int]
    per_seed: list[dict[str, Any]]
    miou_mean: float
    miou_std: float
    fbiou_mean: float
    fbiou_std: float
    class_iou_mean: dict[int, float]
    episodes_per_seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    # loading counters summed over the seeds' episodes (fsslab.data.episodes.stats.STAT_COUNTERS): queries without
    # target pixels, supports without foreground; filled by fsslab.engine.runner.run_evaluation
    data_stats: dict[str, int] = field(default_factory=dict)
    # base-class analysis, None where the data has no base-class annotation: % of the predicted foreground that
    # lies on base-class objects, and the mIoU once they are removed from the prediction (a perfect base learner)
    base_share_mean: float | None = None
    miou_without_base_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (class ids as strings)."""
        return {
            "miou": self.miou_mean,
            "miou_std": self.miou_std,
            "fbiou": self.fbiou_mean,
            "fbiou_std": self.fbiou_std,
            "seeds": self.seeds,
            "episodes_per_seed": self.episodes_per_seed,
            "class_iou": {str(k): v for k, v in self.class_iou_mean.items()},
            "per_seed": [
                {
                    **r,
                    "class_iou": {str(k): v for k, v in r["class_iou"].items()},
                    "class_episodes": {str(k): v for k, v in r["class_episodes"].items()},
                }
                for r in self.per_seed
            ],
            "settings": self.settings,
            "data_stats": self.data_stats,
            "base_share": self.base_share_mean,
            "miou_without_base": self.miou_without_base_mean,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Plain-text table: one row per seed, then mean ± std, then per-class IoU."""
        lines = []
        if self.settings.get("control") == "oracle":
            lines.append("CONTROL, not a result: the oracle predicts the query's own label (model.name=oracle); "
                         "a correct evaluation path scores it ~100" + (
                             " (eval.protocol=ipmt: less, as IPMT's test.py scores the same prediction)"
                             if self.settings.get("eval_protocol") == "ipmt" else ""))  # fmt: skip
        if self.settings.get("control") == "all_foreground":
            lines.append("CONTROL, not a result: every query pixel predicted as the class (model.name=all_foreground); "
                         "a model must beat it clearly")
        if self.settings.get("eval_protocol"):
            lines.append(f"evaluation protocol: {self.settings['eval_protocol']} (eval.protocol)")
        if self.settings.get("supports") == "mismatched":
            lines.append("control: every query paired with supports of another class (eval.supports=mismatched)")
        lines.append(f"{'seed':>8} {'mIoU':>8} {'FB-IoU':>8} {'episodes':>9}")
        for r in self.per_seed:
            lines.append(f"{r['seed']:>8} {r['miou']:>8.2f} {r['fbiou']:>8.2f} {r['episodes']:>9}")
        lines.append(f"{'mean':>8} {self.miou_mean:>8.2f} {self.fbiou_mean:>8.2f}")
        lines.append(f"{'std':>8} {self.miou_std:>8.2f} {self.fbiou_std:>8.2f}")
        names = self.settings.get("class_names", {})
        lines.append(
            "class IoU (mean over seeds): "
            + ", ".join(
                f"{c} {names.get(c, '')}: {v:.2f}".replace(" :", ":")
                for c, v in sorted(self.class_iou_mean.items())
            )
        )
        if self.base_share_mean is not None:
            lines.append(f"base-class objects: {self.base_share_mean:.1f}% of the predicted foreground; mIoU "
                         f"{self.miou_without_base_mean:.2f} once removed (a perfect base learner)")
        missing = sorted({c for r in self.per_seed for c in r["classes_without_episodes"]})
        if missing:
            rule = ("counted as 0 in mIoU, as the reference's test.py" if self.settings.get("class_mean") == "all"
                    else "not in mIoU")
            lines.append(f"warning: classes without episodes ({rule}): {missing}")
        if self.data_stats:
            from fsslab.data.episodes.stats import stats_line

            lines.append(f"data: {stats_line(self.data_stats)}")
        return "\n".join(lines)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_seed(
    model: nn.Module,
    dataset: Dataset,
    episodes: int,
    num_classes: int,
    class_ids: list[int] | None = None,
    batch_size: int = 1,
    amp: str = "none",
    device: torch.device | None = None,
    workers: int = 0,
    progress: bool = False,
    desc: str = "eval",
    protocol: str = "fsslab",
) -> dict[str, Any]:
    """Metrics over the first ``episodes`` episodes of ``dataset`` (sharded over ranks, summed exactly), scored
    as the evaluation protocol ``protocol`` says (its mapping back to the label and its class mean; the dataset
    must have been built with the same ``eval_protocol``)."""
    scoring = get_protocol(protocol)
    model = _unwrap(model)
    device = device or model_device(model)
    if len(dataset) < episodes:  # type: ignore[arg-type]
        raise ValueError(
            f"the evaluation dataset has {len(dataset)} episodes, fewer than the {episodes} requested"
        )  # type: ignore[arg-type]
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    shard = Subset(dataset, list(range(rank, episodes, world)))
    loader = DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    accumulator = IoUAccumulator(num_classes)
    # the base-class analysis (where the data annotates base classes): share of the predicted foreground on
    # base-class objects, and the mIoU once a perfect base learner has removed them
    base_counter, without_base = BaseObjectCounter(), IoUAccumulator(num_classes)
    dtype = AMP_DTYPES.get(amp)
    warn_if_emulated_bf16(amp, device)
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    for batch in tqdm(loader, desc=desc, disable=not (progress and rank == 0), leave=False):
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            output = model(batch)
        logits = output.logits.float()
        pred, target = logits_at_label_resolution(logits, batch, scoring.mapping)
        accumulator.update(pred, target, batch["class_id"])
        base_objects = base_object_mask(batch)
        if base_objects is not None:
            base_counter.update(logits, batch, base_objects)
            pred, target = logits_at_label_resolution(suppress_base_objects(logits, base_objects), batch,
                                                      scoring.mapping)
            without_base.update(pred, target, batch["class_id"])
    model.train(was_training)
    accumulator.all_reduce()
    base_counter.all_reduce()
    without_base.all_reduce()
    summary = accumulator.summary(class_ids, scoring.class_mean)
    share = base_counter.share()
    summary["base_share"] = share
    summary["miou_without_base"] = without_base.summary(class_ids, scoring.class_mean)["miou"] if share is not None else None
    return summary


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def evaluate(
    model: nn.Module,
    dataset_factory: Callable[[int, int], Dataset],
    seeds: list[int],
    episodes: int,
    num_classes: int,
    class_ids: list[int] | None = None,
    batch_size: int = 1,
    amp: str = "none",
    device: torch.device | None = None,
    workers: int = 0,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
    protocol: str = "fsslab",
) -> EvalResult:
    """Evaluate on ``episodes`` episodes for each seed; report mean and population std over seeds.

    ``dataset_factory(seed, episodes)`` returns the evaluation dataset whose episode list is drawn from
    ``seed``. The global RNG states are restored afterwards, so evaluating inside a training run does not
    change the training's random stream. ``class_ids``: the fold's novel classes (mIoU is their mean, over
    those with episodes or over all of them as ``protocol``'s ``class_mean`` says). ``protocol``: the evaluation
    protocol the datasets were built with (``fsslab.data.eval_protocols``), which also says how to score.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    per_seed = []
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):  # CPU and CUDA RNGs restored afterwards
        for seed in seeds:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            summary = evaluate_seed(
                model,
                dataset_factory(seed, episodes),
                episodes,
                num_classes,
                class_ids,
                batch_size,
                amp,
                device,
                workers,
                progress,
                desc=f"eval seed {seed}",
                protocol=protocol,
            )
            per_seed.append(
                {
                    "seed": seed,
                    "miou": 100 * summary["miou"],
                    "fbiou": 100 * summary["fbiou"],
                    "episodes": summary["episodes"],
                    "class_iou": {c: 100 * v for c, v in summary["class_iou"].items()},
                    "class_episodes": summary["class_episodes"],
                    "classes_without_episodes": summary["classes_without_episodes"],
                    "base_share": _percent(summary["base_share"]),
                    "miou_without_base": _percent(summary["miou_without_base"]),
                }
            )
    random.setstate(py_state)
    np.random.set_state(np_state)
    mious, fbious = [r["miou"] for r in per_seed], [r["fbiou"] for r in per_seed]
    classes = sorted({c for r in per_seed for c in r["class_iou"]})
    class_mean = {
        c: statistics.fmean(r["class_iou"][c] for r in per_seed if c in r["class_iou"]) for c in classes
    }
    base_shares = [r["base_share"] for r in per_seed if r["base_share"] is not None]
    without_base = [r["miou_without_base"] for r in per_seed if r["miou_without_base"] is not None]
    return EvalResult(
        base_share_mean=statistics.fmean(base_shares) if base_shares else None,
        miou_without_base_mean=statistics.fmean(without_base) if without_base else None,
        seeds=list(seeds),
        per_seed=per_seed,
        miou_mean=statistics.fmean(mious),
        miou_std=statistics.pstdev(mious),
        fbiou_mean=statistics.fmean(fbious),
        fbiou_std=statistics.pstdev(fbious),
        class_iou_mean=class_mean,
        episodes_per_seed=episodes,
        settings={"class_mean": get_protocol(protocol).class_mean, **(settings or {})},
    )


__all__ = ["EvalResult", "evaluate", "evaluate_seed"]
