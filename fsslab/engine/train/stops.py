"""Why a training run stops early, and what to change: out of memory, non-finite losses.

Kept apart from the loop so that every stop's advice (the config keys to change, how to resume) is written in
one place; the ``fsslab`` command line prints a ``TrainingStopped`` as its message, without a traceback.
"""

from __future__ import annotations

import math
from pathlib import Path

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


# ------------------------------------------------------------------------------------------ divergence
EMA_DECAY = 0.9  # smoothing of the total loss (about the last 10 iterations)
WARMUP_ITERS = 10  # iterations before the smoothed loss counts as the run's level
DIVERGENCE_FACTOR = 10.0  # smoothed loss above max(10 x its best, best + 5): the run is diverging
DIVERGENCE_MARGIN = 5.0


class LossHealth:
    """The smoothed total loss of a run, its lowest value and the newest healthy periodic checkpoint.

    A checkpoint is *healthy* when its weights are finite and its smoothed loss is finite and not exploding
    (not above ``max(DIVERGENCE_FACTOR x best, best + DIVERGENCE_MARGIN)``): a NaN stop names the newest
    healthy one (``latest.pt`` may already hold a diverged, finite state such as loss 1.7e23), the rotation of
    ``iter_*.pt`` never deletes it, and a resume from a checkpoint recorded as diverging warns."""

    def __init__(self) -> None:
        self.ema: float | None = None
        self.best: float | None = None
        self.count = 0
        self.last_healthy: tuple[str, int, float | None] | None = None  # (file name, iteration, smoothed loss)

    def update(self, total: float) -> None:
        if not math.isfinite(total):
            self.ema = float("nan")
            return
        self.ema = total if self.ema is None or not math.isfinite(self.ema) else (
            EMA_DECAY * self.ema + (1 - EMA_DECAY) * total)
        self.count += 1
        if self.count >= WARMUP_ITERS and math.isfinite(self.ema):
            self.best = self.ema if self.best is None else min(self.best, self.ema)

    @property
    def diverging(self) -> bool:
        if self.ema is None:
            return False
        if not math.isfinite(self.ema):
            return True
        return self.best is not None and self.ema > max(DIVERGENCE_FACTOR * self.best, self.best + DIVERGENCE_MARGIN)

    def record(self, weights_finite: bool) -> dict[str, object]:
        """The ``health`` entry of a checkpoint written now."""
        return {"loss_ema": self.ema, "best_loss_ema": self.best, "weights_finite": weights_finite,
                "diverging": not weights_finite or self.diverging, "iterations_seen": self.count,
                "last_healthy": None if self.last_healthy is None else
                {"file": self.last_healthy[0], "iteration": self.last_healthy[1], "loss_ema": self.last_healthy[2]}}

    def mark_healthy(self, name: str, iteration: int) -> None:
        """The periodic checkpoint ``name`` was written with a healthy record."""
        self.last_healthy = (name, iteration, self.ema)

    def restore(self, record: object) -> None:
        """Continue from a checkpoint's ``health`` entry (nothing when it has none)."""
        if not isinstance(record, dict):
            return
        ema, best = record.get("loss_ema"), record.get("best_loss_ema")
        self.ema = float(ema) if isinstance(ema, (int, float)) else None
        self.best = float(best) if isinstance(best, (int, float)) else None
        self.count = int(record.get("iterations_seen") or 0)
        last = record.get("last_healthy")
        if isinstance(last, dict) and isinstance(last.get("file"), str):
            self.last_healthy = (last["file"], int(last.get("iteration") or 0), last.get("loss_ema"))


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``module`` is finite (one sync)."""
    flags = [torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def healthy_advice(out_dir, health: LossHealth, latest: tuple[object, int] | None) -> str | None:
    """How to continue from the newest healthy checkpoint, when the newest one is not it (None otherwise)."""
    if health.last_healthy is None:
        return None
    name, iteration, loss = health.last_healthy
    path = out_dir / name
    if not path.is_file():
        return None
    if latest is not None and latest[1] == iteration:
        return None  # the newest checkpoint is the healthy one: the usual advice names it
    shown = f", smoothed loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
    later = (f"; the newer {Path(str(latest[0])).name} (iteration {latest[1]}) was saved while the loss was "
             f"already exploding (smoothed {health.ema:.3g}, best {health.best:.3g})"
             if latest is not None and health.ema is not None and health.best is not None else "")
    return f"--resume {path} continues from the last healthy checkpoint (iteration {iteration}{shown}){later}"


def diverging_notice(path: object, record: object) -> str | None:
    """The warning for a resume from a checkpoint whose ``health`` says the run was diverging."""
    if not isinstance(record, dict) or not record.get("diverging"):
        return None
    last = record.get("last_healthy")
    where = (f"; the last healthy checkpoint of the run was {last['file']} (iteration {last['iteration']})"
             if isinstance(last, dict) and last.get("file") else "")
    what = ("its weights hold NaN/inf" if record.get("weights_finite") is False else
            f"its smoothed loss {record.get('loss_ema'):.3g} is far above the run's best "
            f"({record.get('best_loss_ema'):.3g})" if isinstance(record.get("loss_ema"), (int, float))
            and isinstance(record.get("best_loss_ema"), (int, float)) else "the run was diverging")
    return (f"resuming from {path}, saved while the run was diverging: {what}{where}; lower train.base_lr or set "
            "train.grad_clip, or resume from an earlier checkpoint")


__all__ = [
    "LossHealth",
    "TrainingStopped",
    "diverging_notice",
    "healthy_advice",
    "is_oom",
    "non_finite",
    "non_finite_loss",
    "out_of_memory",
    "weights_finite",
]
