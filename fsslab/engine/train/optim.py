"""Optimisers from a model's OptimizerSpecs, and the references' poly learning-rate schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsslab.errors import ConfigError

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
WARMUP_START = 0.001  # the references' warm-up starts every group at 0.1% of its lr


@dataclass
class BuiltOptimizer:
    """A torch optimiser with the objective it descends and the parameters it owns."""

    name: str
    objective: str
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]


def poly_factor(iteration: int, total: int, power: float, warmup: int = 0) -> float:
    """lr multiplier at 0-based ``iteration``: reference poly ``(1 - (it+1)/total)^power`` after warm-up."""
    current = iteration + 1
    if warmup > 0 and current < warmup:
        return WARMUP_START + (1 - WARMUP_START) * current / warmup
    return max(1.0 - current / total, 0.0) ** power


def _fast_implementation(params: list[nn.Parameter]) -> dict[str, bool]:
    """The fused (one kernel over all parameters) update where PyTorch has it for these tensors; on CPU its
    default is a Python loop over the parameters (IPMT-tiny: 9 ms per step instead of 3 of a 230 ms step,
    benchmarks/train_step_profile.py). Same update rule; only float rounding may differ from the loop. An
    optimizer spec may still set foreach/fused."""
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16,
                                                                    torch.float64) for p in params)
    return {"fused": True} if fusable and params else {"foreach": True}


def build_optimizers(model: nn.Module, base_lr: float, weight_decay: float) -> list[BuiltOptimizer]:
    """Optimisers from ``model.optimizer_specs``; each group remembers its initial lr (``base_lr``)."""
    built, owner = [], {}
    for spec in model.optimizer_specs(base_lr, weight_decay):
        if spec.kind not in _OPTIMIZERS:
            raise ValueError(
                f"optimiser {spec.name!r}: unknown kind {spec.kind!r}; valid: {sorted(_OPTIMIZERS)}"
            )
        groups, params = [], []
        for group in spec.param_groups:
            group = dict(group)
            group["params"] = [p for p in group["params"] if p.requires_grad]
            if not group["params"]:
                continue
            for p in group["params"]:
                if id(p) in owner:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} is in both optimisers "
                        f"{owner[id(p)]!r} and {spec.name!r}"
                    )
                owner[id(p)] = spec.name
            group.setdefault("lr", base_lr)
            group["base_lr"] = group["lr"]
            group.setdefault("poly", True)  # a group with poly=False keeps its lr constant
            groups.append(group)
            params += group["params"]
        if groups:
            optimizer = _OPTIMIZERS[spec.kind](groups, **{**_fast_implementation(params), **spec.options})
            built.append(BuiltOptimizer(spec.name, spec.objective, optimizer, params))
    if not built:
        frozen = sum(p.numel() for p in model.parameters())
        raise ConfigError(
            f"nothing to train: every parameter of {type(model).__name__} ({frozen:,} in all) is frozen or outside "
            "its optimisers; check the model.params that freeze parts (e.g. a frozen backbone or base learner) "
            "or use `fsslab eval` for a model that is not trained"
        )
    return built


__all__ = ["WARMUP_START", "BuiltOptimizer", "build_optimizers", "poly_factor"]
