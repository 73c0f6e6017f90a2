"""A Trainer's state and its checkpoint dict, both ways: what a training checkpoint holds, and loading it back.

The format (``checkpoint.FORMAT_VERSION``) is read by ``--resume``, by ``fsslab eval --checkpoint`` and by the
official-style loaders (``state_dict``): its keys do not change. Files, atomic writes and the RNG snapshots are
``checkpoint.py``'s job; which file to resume from is ``resume.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import fsslab
from fsslab.engine import checkpoint as ckpt

if TYPE_CHECKING:
    from fsslab.engine.trainer import Trainer


def capture_state(trainer: Trainer) -> dict[str, Any]:
    """The checkpoint of ``trainer`` now. Collective under DDP: every rank calls it (each rank's RNG is gathered)."""
    rng = ckpt.capture_rng_state()
    if trainer.dist.distributed:  # every rank's RNG, so that each continues its own stream on resume
        gathered: list[Any] = [None] * trainer.dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng = {"ranks": gathered}
    model_state = trainer.model.state_dict()
    return {
        "format": ckpt.FORMAT_VERSION,
        "fsslab_version": fsslab.__version__,
        "iteration": trainer.iteration,
        "epoch": trainer.iteration // trainer.iters_per_epoch,
        "model": model_state,
        "state_dict": model_state,  # same tensors (stored once): readable as an official-style file
        "optimizers": {b.name: b.optimizer.state_dict() for b in trainer.optimizers},
        "scaler": trainer.scaler.state_dict(),
        "rng": rng,
        "world_size": trainer.dist.world_size,
        "config": trainer.run_config.to_dict(),
        "best_metric": trainer.best_metric,
        "metrics": trainer.last_eval,
    }


def restore_state(trainer: Trainer, state: dict[str, Any], path: Path) -> None:
    """Load model, optimisers, scaler, iteration, best metric and RNG states into ``trainer``."""
    ckpt.load_model_state(trainer.model, state["model"], path)
    missing = sorted({b.name for b in trainer.optimizers} - set(state["optimizers"]))
    if missing:
        raise ckpt.CheckpointError(f"{path}: no state for optimiser(s) {missing}")
    for built in trainer.optimizers:
        # hyper-parameters (base_lr, weight decay, ...) are this run's (train.base_lr may change on resume);
        # the state (momenta, Adam moments) is the file's
        own = [{k: v for k, v in g.items() if k != "params"} for g in built.optimizer.param_groups]
        try:
            built.optimizer.load_state_dict(state["optimizers"][built.name])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ckpt.CheckpointError(
                f"{path}: the state of optimiser {built.name!r} does not fit this model ({ckpt.first_line(exc)})"
            ) from None
        for group, hyper in zip(built.optimizer.param_groups, own):
            group.update(hyper)
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.iteration, trainer.best_metric = int(state["iteration"]), state.get("best_metric")
    trainer.last_eval = state.get("metrics") or {}
    rng, dist = state["rng"], trainer.dist
    if "ranks" in rng:
        rng = rng["ranks"][dist.rank] if len(rng["ranks"]) == dist.world_size else rng["ranks"][0]
    ckpt.restore_rng_state(rng)
    trainer.last_checkpoint = (path, trainer.iteration)


__all__ = ["capture_state", "restore_state"]
