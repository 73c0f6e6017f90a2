"""One optimisation step: the batch on the device, the objectives a model names, each objective's backward
into the parameters of its own optimisers, gradient synchronisation, clipping and the (loss-scaled) steps.

Kept apart from the loop (``trainer.py``) because this is where models with several objectives differ from the
rest: AMFormer steps G on some iterations and D on others, and an iteration may name none (its schedule skips
the step). The forward and the losses run in ``Trainer.train_step``, under the run's autocast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fsslab.engine import distributed as dist_utils
from fsslab.engine.train.optim import BuiltOptimizer
from fsslab.errors import ConfigError


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Every tensor of ``batch`` on ``device`` (non-blocking: the loader pins memory on CUDA), the query image in
    channels_last when the run asks for it (``train.channels_last``)."""
    out = {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
    }
    if channels_last and out["query_img"].dim() == 4:
        out["query_img"] = out["query_img"].contiguous(memory_format=torch.channels_last)
    return out


def check_objectives(objectives: Mapping[str, torch.Tensor], optimizers: Sequence[BuiltOptimizer]) -> None:
    """An objective that no optimiser descends is a bug of the model's ``step_objectives``: said, not skipped."""
    known = {o.objective for o in optimizers}
    unknown = sorted(set(objectives) - known)
    if unknown:
        raise ValueError(
            f"step_objectives returned {unknown}, which no optimiser descends; "
            f"objectives of the optimisers: {sorted(known)}"
        )


def descend(objectives: Mapping[str, torch.Tensor], optimizers: Sequence[BuiltOptimizer],
            scaler: torch.amp.GradScaler, grad_sync: str, distributed: bool, grad_clip: float | None) -> None:
    """Backward of ``objectives`` and a step of exactly the optimisers whose objective is among them.

    grad_sync: "ddp" (DDP's reducer averaged the gradients during backward) or "manual" (they are all-reduced
    here, over the stepped optimisers' parameters only). No objective: nothing is stepped, the scale is kept.
    """
    active = [o for o in optimizers if o.objective in objectives]
    for built in active:
        built.optimizer.zero_grad(set_to_none=True)
    if len(objectives) == 1:
        (loss,) = objectives.values()
        scaler.scale(loss).backward()
    else:
        if len(objectives) > 1 and grad_sync == "ddp" and distributed:
            raise ConfigError("several objectives in one iteration need train.grad_sync=manual under DDP")
        # Each objective writes gradients only into the parameters of its own optimisers.
        names = list(objectives)
        for i, name in enumerate(names):
            params = [p for o in active if o.objective == name for p in o.params]
            grads = torch.autograd.grad(
                scaler.scale(objectives[name]),
                params,
                retain_graph=i < len(names) - 1,
                allow_unused=True,
            )
            for p, g in zip(params, grads):
                p.grad = g
    if grad_sync == "manual":
        dist_utils.all_reduce_gradients([p for o in active for p in o.params])
    for built in active:
        if grad_clip:
            scaler.unscale_(built.optimizer)
            nn.utils.clip_grad_norm_(built.params, grad_clip)
        scaler.step(built.optimizer)
    if active:
        scaler.update()


__all__ = ["check_objectives", "descend", "to_device"]
