"""Evaluation runs from a RunConfig: ``run_evaluation`` (the seeds of ``cfg.eval``) and ``run_controls`` (the
result beside its controls: oracle, mismatched supports, K-shot, all-foreground)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from fsslab.config import RunConfig, replace_section
from fsslab.data.episodes.stats import sum_stats
from fsslab.engine.build import eval_dataset_factory
from fsslab.engine.evaluate import EvalResult, evaluate
from fsslab.models.oracle import AllForeground, QueryLabelOracle, control_name, is_control


def run_evaluation(
    cfg: RunConfig,
    model: nn.Module,
    seeds: list[int] | None = None,
    episodes: int | None = None,
    shot: int | None = None,
    support_label: str | None = None,
    progress: bool = True,
    device: torch.device | None = None,
) -> EvalResult:
    """Evaluate ``model`` as ``cfg.eval`` says (seeds, episodes, shot, support label, amp); the arguments, when
    given, replace those of ``cfg.eval`` (``cfg`` is the adapter to ``evaluate``'s explicit arguments)."""
    changes = {"shot": shot, "support_label": support_label, "seeds": list(seeds) if seeds else None,
               "episodes": episodes}
    cfg = replace_section(cfg, "eval", **{k: v for k, v in changes.items() if v is not None})
    factory, benchmark = eval_dataset_factory(cfg)
    built: list[Any] = []

    def keeping(seed: int, count: int) -> Any:  # keeps every seed's episodes for their loading counters
        dataset = factory(seed, count)
        built.append(getattr(dataset, "dataset", dataset))  # the episodes inside a mismatched-support control
        return dataset

    n_classes, novel = benchmark.n_classes, benchmark.novel_classes(cfg.data.fold)
    settings = {
        "dataset": cfg.data.dataset,
        "fold": cfg.data.fold,
        "shot": cfg.eval.shot,
        "support_label": cfg.eval.support_label,
        "supports": cfg.eval.supports,
        "protocol": cfg.data.protocol,
        "eval_protocol": cfg.eval.protocol,
        "val_size": cfg.data.val_size,
        "amp": cfg.eval.amp,
        "model": cfg.model.name,
        "control": control_name(model) if is_control(model) else None,
        "class_names": {c: benchmark.class_name(c) for c in novel}
        if hasattr(benchmark, "class_name")
        else {},
    }
    result = evaluate(
        model,
        keeping,
        cfg.eval.seeds,
        cfg.eval.episodes,
        n_classes,
        novel,
        cfg.eval.batch_size,
        cfg.eval.amp,
        device=device,
        workers=cfg.data.workers,
        progress=progress,
        settings=settings,
        protocol=cfg.eval.protocol,
    )

    result.data_stats = sum_stats(d.stats for d in built if hasattr(d, "stats"))
    return result


@dataclasses.dataclass
class ControlReport:
    """A result and its controls on the same episodes and protocol (mIoU values in %)."""

    result: EvalResult  # the evaluation as configured
    oracle: EvalResult  # the query's own label: ~100 when the evaluation path is right
    mismatched: EvalResult  # every query with the supports of another class
    one_shot: EvalResult  # the same model with 1 support
    five_shot: EvalResult  # ... and with 5
    all_foreground: EvalResult | None = None  # every query pixel the class: the floor a model must beat clearly

    @property
    def margin(self) -> float | None:
        """result − all-foreground mIoU: what the model adds over segmenting everything."""
        return None if self.all_foreground is None else self.result.miou_mean - self.all_foreground.miou_mean

    @property
    def drop(self) -> float:
        """matched − mismatched mIoU: how much the model relies on its supports."""
        return self.result.miou_mean - self.mismatched.miou_mean

    @property
    def shot_gain(self) -> float:
        """5-shot − 1-shot mIoU of the same model."""
        return self.five_shot.miou_mean - self.one_shot.miou_mean

    def table(self) -> str:
        def row(name: str, r: EvalResult, note: str = "") -> str:
            return f"{name:<26} {r.miou_mean:>7.2f} ± {r.miou_std:<5.2f} {r.fbiou_mean:>7.2f}  {note}"

        lines = [
            f"{'controls (same episodes)':<26} {'mIoU':>7}   {'':5} {'FB-IoU':>7}",
            row("result", self.result, f"{self.result.settings.get('shot')}-shot, supports as configured"),
            row("oracle (control)", self.oracle, "the query's own label: must be ~100" + (
                "; under eval.protocol=ipmt less, as IPMT's test.py scores it (docs/protocols.md)"
                if self.oracle.settings.get("eval_protocol") == "ipmt" else "")),
            row("mismatched supports", self.mismatched, f"drop {self.drop:+.2f} (matched − mismatched)"),
            row("1 shot", self.one_shot),
            row("5 shots", self.five_shot, f"gain {self.shot_gain:+.2f} (5-shot − 1-shot)"),
        ]
        if self.all_foreground is not None:
            lines.append(row("all-foreground (control)", self.all_foreground,
                             f"the whole query as the class; result − it: {self.margin:+.2f}"))
        r = self.result
        if r.miou_without_base_mean is not None:
            lines.append(f"{'base objects removed':<26} {r.miou_without_base_mean:>7.2f}   {'':5} {'':>7}  "
                         f"{r.base_share_mean:.1f}% of the predicted foreground lay on base-class objects")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def brief(r: EvalResult) -> dict[str, Any]:
            return {"miou": r.miou_mean, "miou_std": r.miou_std, "fbiou": r.fbiou_mean, "fbiou_std": r.fbiou_std,
                    "base_share": r.base_share_mean, "miou_without_base": r.miou_without_base_mean}

        return {"oracle": brief(self.oracle), "mismatched": brief(self.mismatched), "one_shot": brief(self.one_shot),
                "five_shot": brief(self.five_shot), "drop": self.drop, "shot_gain": self.shot_gain,
                "all_foreground": None if self.all_foreground is None else brief(self.all_foreground),
                "margin_over_all_foreground": self.margin,
                "base_share": self.result.base_share_mean,
                "miou_without_base": self.result.miou_without_base_mean}  # fmt: skip


def run_controls(
    cfg: RunConfig,
    model: nn.Module,
    result: EvalResult | None = None,
    progress: bool = True,
    device: torch.device | None = None,
) -> ControlReport:
    """``result`` (evaluated here when None) with its controls on the same data, seeds and protocol: the oracle,
    mismatched supports, 1 and 5 shots, and the all-foreground reference."""
    def with_eval(**changes: Any) -> RunConfig:
        return replace_section(cfg, "eval", **changes)

    def run(config: RunConfig, net: nn.Module, shot: int | None = None) -> EvalResult:
        return run_evaluation(config, net, shot=shot, progress=progress, device=device)

    result = result or run(cfg, model)
    oracle_cfg = replace_section(cfg, "model", name="oracle")
    shot = result.settings.get("shot")
    return ControlReport(
        result=result,
        oracle=run(oracle_cfg, QueryLabelOracle().to(device or torch.device("cpu"))),
        mismatched=run(with_eval(supports="mismatched"), model),
        one_shot=result if shot == 1 and cfg.eval.supports == "matched" else run(with_eval(supports="matched"), model, 1),
        five_shot=result if shot == 5 and cfg.eval.supports == "matched" else run(with_eval(supports="matched"), model, 5),
        all_foreground=run(replace_section(cfg, "model", name="all_foreground"),
                           AllForeground().to(device or torch.device("cpu"))),
    )

