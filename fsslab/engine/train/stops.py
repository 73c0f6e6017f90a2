"""Why a training run stops early, and what to change: out of memory, non-finite losses.

Kept apart from the loop so that every stop's advice (the config keys to change, how to resume) is written in
one place; the ``fsslab`` command line prints a ``TrainingStopped`` as its message, without a traceback.
"""

from __future__ import annotations

import math

import torch


class TrainingStopped(RuntimeError):
    """The run cannot continue (NaN/inf loss, out of memory): what happened, where, and what to change."""

    def __init__(self, what: str, iteration: int, advice: str):
        self.what, self.iteration, self.advice = what, iteration, advice
        super().__init__(f"training stopped at iteration {iteration}: {what}\n  what to change: {advice}")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA's own type, or the RuntimeError of the CPU allocator)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))
    )


def out_of_memory(exc: BaseException, device: torch.device, iteration: int, batch_size: int,
                  size: int) -> TrainingStopped:
    """The stop of an allocation failure: the two sizes that set the memory, and the cheaper precision."""
    return TrainingStopped(
        f"out of memory on {device} ({type(exc).__name__})",
        iteration,
        f"lower data.batch_size (now {batch_size}) or data.size (now {size}), use train.amp=bf16, or add GPUs",
    )


def non_finite(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses that are NaN or inf, by name; ``{}`` when all are finite (one device sync in that case)."""
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    if bool(torch.isfinite(values).all()):
        return {}
    return {k: float(v.detach()) for k, v in losses.items() if not math.isfinite(float(v.detach()))}


def non_finite_loss(bad: dict[str, float], iteration: int, epoch: int, lrs: dict[str, float], amp: str,
                    resume_advice: str) -> TrainingStopped:
    """The stop of a NaN/inf loss: the remedies a resume allows (lower lr, clipping), then a new run's."""
    return TrainingStopped(
        f"non-finite loss {bad} (epoch {epoch}, lr {lrs}, amp={amp})",
        iteration,
        "lower train.base_lr or set train.grad_clip (e.g. 1.0), both allowed on resume: "
        f"{resume_advice}; or start a new run with train.amp=bf16 or none instead of fp16, or check the data",
    )


__all__ = ["TrainingStopped", "is_oom", "non_finite", "non_finite_loss", "out_of_memory"]
