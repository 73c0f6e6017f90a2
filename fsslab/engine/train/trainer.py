"""One trainer for every fsslab model: AMP, channels_last, poly lr, G/D objectives, DDP, resumable runs.

The loop and its bookkeeping (schedule, logging, validation, which checkpoints to keep) live here; each job it
delegates has its own module (what a checkpoint holds, both ways, is the Trainer's own ``state_dict`` and
``load_state``): ``step`` (one optimisation step over a model's objectives), ``stops`` (why a run
stops and what to change), ``sampling`` (seeds, episode
order, the loader), ``resume`` and ``run_dir`` (starting in a run directory), ``optim`` (optimisers, poly lr).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fsslab.config import DataConfig, RunConfig, TrainConfig
from fsslab.engine import checkpoint as ckpt
from fsslab.engine import distributed as dist_utils
from fsslab.engine.evaluate import AMP_DTYPES, warn_if_emulated_bf16
from fsslab.engine.sampling import episode_loader, seed_everything
from fsslab.engine.selection import selection_plan
from fsslab.engine.train import resume as resume_mod
from fsslab.engine.train.optim import BuiltOptimizer, build_optimizers, poly_factor
from fsslab.engine.train.run_dir import notice
from fsslab.engine.train.runlog import RunLogger, episode_grid
from fsslab.engine.train.step import check_objectives, descend, to_device
from fsslab.engine.train.stops import (
    LossHealth,
    TrainingStopped,
    diverging_notice,
    healthy_advice,
    is_oom,
    non_finite,
    non_finite_loss,
    out_of_memory,
    weights_finite,
)
from fsslab.errors import ConfigError, DatasetError
from fsslab.files import atomic_write_text
from fsslab.version import __version__


class Trainer:
    """Trains ``model`` on episodes of ``train_set`` with the optimisation of ``train`` (a ``TrainConfig``),
    ``batch_size`` episodes per step (global, over all ranks) loaded by ``workers`` processes.

    ``evaluate_fn(model) -> {"miou": ..., ...}`` (optional) validates every ``train.eval_every`` iterations
    and at the end; the best mIoU is kept as ``best.pt``. ``run_config``: the whole run's config, recorded in
    its checkpoints and ``config.yaml`` and compared on resume (``Trainer.from_config`` passes it). Under
    torchrun, every rank builds the same Trainer; gradients are synchronised by DDP (``grad_sync=ddp``) or,
    for models with several objectives (AMFormer's G and D), by an explicit all-reduce of the stepped
    optimisers' gradients (``manual``): DDP's reducer expects one backward over a fixed parameter set per
    forward, which G/D alternation breaks.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        train: TrainConfig,
        batch_size: int,
        workers: int = 0,
        evaluate_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
        out_dir: str | Path | None = None,
        run_config: RunConfig | None = None,
    ):
        self.train_cfg = tc = train
        self.batch_size, self.workers = batch_size, workers
        self.run_config = run_config or RunConfig(train=train, data=DataConfig(batch_size=batch_size, workers=workers))
        self.dist = dist_utils.setup_distributed(tc.device)
        self.device = self.dist.device
        self.out_dir = Path(out_dir or tc.out_dir)
        self.evaluate_fn = evaluate_fn
        seed_everything(tc.seed)
        self.model = model.to(self.device)
        if tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizers = build_optimizers(self.model, tc.base_lr, tc.weight_decay)
        self.amp_dtype = AMP_DTYPES.get(tc.amp)
        warn_if_emulated_bf16(tc.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=tc.amp == "fp16")
        objectives = {o.objective for o in self.optimizers}
        self.grad_sync = (
            tc.grad_sync if tc.grad_sync != "auto" else ("ddp" if len(objectives) == 1 else "manual")
        )
        self.net: nn.Module = self.model
        if self.dist.distributed and self.grad_sync == "ddp":
            self.net = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=tc.find_unused_parameters,
            )
        elif self.dist.distributed:
            dist_utils.broadcast_module(self.model)
        world = self.dist.world_size
        if batch_size % world:
            raise ConfigError(f"data.batch_size={batch_size} (global) is not divisible by the {world} ranks")
        self.batch_per_rank = batch_size // world
        self.train_set = train_set
        self.iters_per_epoch = len(train_set) // batch_size  # type: ignore[arg-type]
        if self.iters_per_epoch == 0:
            raise DatasetError(
                f"the training set has {len(train_set)} episodes, fewer than one global batch "  # type: ignore[arg-type]
                f"({batch_size})"
            )
        self.total_iters = tc.iterations or (tc.epochs or 1) * self.iters_per_epoch
        self.iteration = 0
        self.best_metric: float | None = None
        # model selection (train.selection, fsslab.engine.selection): when to validate, what becomes best.pt, early stop
        self.selection = selection_plan(tc.selection, self.iters_per_epoch, tc.eval_every, tc.stop_interval,
                                        tc.select_after)
        self.validations_since_best, self.stopped_early = 0, False
        self.last_eval: dict[str, Any] = {}
        self.last_checkpoint: tuple[Path, int] | None = None  # (file, iteration): what a stop's advice names
        self.health = LossHealth()  # smoothed loss and the newest healthy checkpoint (stops.LossHealth)
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, tensorboard=tc.tensorboard)

    @classmethod
    def from_config(cls, cfg: RunConfig, model: nn.Module, train_set: Dataset,
                    evaluate_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
                    out_dir: str | Path | None = None) -> Trainer:
        """The Trainer of a run config: ``cfg.train``, ``data.batch_size`` and ``data.workers``; ``cfg`` is
        recorded in the checkpoints and compared on resume."""
        return cls(model, train_set, cfg.train, cfg.data.batch_size, cfg.data.workers, evaluate_fn, out_dir, cfg)

    # ----------------------------------------------------------------------------------------- schedule
    def set_learning_rates(self, iteration: int) -> dict[str, float]:
        """Poly (and warm-up) on every group's initial lr; returns each optimiser's first-group lr."""
        tc = self.train_cfg
        factor = poly_factor(iteration, self.total_iters, tc.power, tc.warmup_iters)
        for built in self.optimizers:
            for group in built.optimizer.param_groups:
                group["lr"] = group["base_lr"] * (factor if group["poly"] else 1.0)
        return {b.name: b.optimizer.param_groups[0]["lr"] for b in self.optimizers}

    # ------------------------------------------------------------------------------------------- step
    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """Forward, losses, and a step of exactly the optimisers whose objective the model names (``step.py``)."""
        it, tc = self.iteration, self.train_cfg
        batch = to_device(batch, self.device, tc.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            output = self.net(batch)
            losses = self.model.loss(output, batch)
        # AMNet's train.py alternates G and D on the batch index within the epoch; fsslab's default counts on
        if tc.objective_index == "epoch":
            it = it - (it // self.iters_per_epoch) * self.iters_per_epoch
        objectives = self.model.step_objectives(losses, it)
        check_objectives(objectives, self.optimizers)
        self._check_finite({**losses, **{f"objective:{k}": v for k, v in objectives.items()}})
        if "total" in losses:
            self.health.update(float(losses["total"].detach()))
        descend(objectives, self.optimizers, self.scaler, self.grad_sync, self.dist.distributed, tc.grad_clip)
        return {k: v.detach() for k, v in losses.items()}, output

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        bad = non_finite(losses)
        if not bad:
            return
        lrs = {b.name: b.optimizer.param_groups[0]["lr"] for b in self.optimizers}
        advice = healthy_advice(self.out_dir, self.health, self.last_checkpoint)
        raise non_finite_loss(bad, self.iteration, self.iteration // self.iters_per_epoch, lrs, self.train_cfg.amp,
                              advice or resume_mod.resume_advice(self.out_dir, self.last_checkpoint))

    # ------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of this run now: what ``--resume``, ``fsslab eval --checkpoint`` and official-style loaders
            (``state_dict``) read; its keys do not change (``checkpoint.FORMAT_VERSION``). Collective under DDP: every
            rank calls it (each rank's RNG is gathered)."""
        rng = ckpt.capture_rng_state()
        if self.dist.distributed:  # every rank's RNG, so that each continues its own stream on resume
            gathered: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = {"ranks": gathered}
        model_state = self.model.state_dict()
        return {
            "format": ckpt.FORMAT_VERSION,
            "fsslab_version": __version__,
            "iteration": self.iteration,
            "epoch": self.iteration // self.iters_per_epoch,
            "model": model_state,
            "state_dict": model_state,  # same tensors (stored once): readable as an official-style file
            "optimizers": {b.name: b.optimizer.state_dict() for b in self.optimizers},
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "world_size": self.dist.world_size,
            "config": self.run_config.to_dict(),
            "best_metric": self.best_metric,
            "metrics": self.last_eval,
            "health": self.health.record(weights_finite(self.model)),  # stops.LossHealth
            "selection": {"rule": self.selection.rule, "validations_since_best": self.validations_since_best,
                          "stopped_early": self.stopped_early},  # train.selection (fsslab.engine.selection)
        }

    def load_state(self, state: dict[str, Any], path: Path) -> None:
        """Load model, optimisers, scaler, iteration, best metric and RNG states of ``state`` (read from ``path``)."""
        ckpt.load_model_state(self.model, state["model"], path)
        missing = sorted({b.name for b in self.optimizers} - set(state["optimizers"]))
        if missing:
            raise ckpt.CheckpointError(f"{path}: no state for optimiser(s) {missing}")
        for built in self.optimizers:
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
        self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_metric = int(state["iteration"]), state.get("best_metric")
        selection = state.get("selection") or {}  # absent from checkpoints written before train.selection
        self.validations_since_best = int(selection.get("validations_since_best", 0))
        self.stopped_early = bool(selection.get("stopped_early", False))
        self.last_eval = state.get("metrics") or {}
        rng, dist = state["rng"], self.dist
        if "ranks" in rng:
            rng = rng["ranks"][dist.rank] if len(rng["ranks"]) == dist.world_size else rng["ranks"][0]
        ckpt.restore_rng_state(rng)
        self.last_checkpoint = (path, self.iteration)
        self.health.restore(state.get("health"))
        warning = diverging_notice(path, state.get("health"))
        if warning and self.dist.is_main:
            notice(warning)

    def save(self, name: str, state: dict[str, Any] | None = None) -> Path | None:
        state = state if state is not None else self.state_dict()  # collective: every rank calls it
        if name != "best.pt":  # --resume reads latest.pt and iter_*.pt
            self.last_checkpoint = (self.out_dir / name, self.iteration)
        if not self.dist.is_main:
            return None
        return ckpt.save_checkpoint(state, self.out_dir / name)

    def _save_periodic(self) -> None:
        state = self.state_dict()
        name = f"iter_{self.iteration:07d}.pt"
        self.save(name, state)
        self.save("latest.pt", state)
        if not state["health"]["diverging"]:
            self.health.mark_healthy(name, self.iteration)
        if not self.dist.is_main:
            return
        periodic = sorted(self.out_dir.glob("iter_*.pt"))
        keep = self.health.last_healthy[0] if self.health.last_healthy else None  # never rotated away
        for old in periodic[: max(len(periodic) - self.train_cfg.keep_checkpoints, 0)]:
            if old.name != keep:
                ckpt.remove_checkpoint(old)  # and its .sha256

    def resume(self, path: str | Path | None = None) -> int:
        """Load the state of ``path`` (default: the newest loadable checkpoint of ``out_dir``), without the
        directory lock and config check of ``fit(resume=...)``; returns the iteration."""
        self.load_state(*resume_mod.find_checkpoint(self.out_dir, path))
        return self.iteration

    # ----------------------------------------------------------------------------------------- loop
    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        """This rank's batches of ``epoch`` from ``start_batch`` on (``sampling.episode_loader``)."""
        return episode_loader(self.train_set, self.batch_per_rank, self.train_cfg.seed, epoch, self.dist.rank,
                              self.dist.world_size, start_batch, self.workers, self.device.type == "cuda")

    def fit(self, resume: bool | str | Path = False, overwrite: bool = False) -> dict[str, Any]:
        """Train to ``total_iters``. ``resume``: continue the run of ``out_dir`` from its newest loadable
        checkpoint (True) or from the given file; ``overwrite``: delete the run ``out_dir`` holds and start
        anew. The directory is locked while the run lasts (rules: fsslab.engine.train.resume, run_dir)."""
        start = resume_mod.start_run(self.out_dir, self.run_config, resume, overwrite, self.total_iters, self.dist)
        try:
            if start.checkpoint is not None:
                state = start.state or resume_mod.load_training_checkpoint(start.checkpoint)
                start.state = None  # the optimiser state may be large: keep only the loaded copy
                self.load_state(state, start.checkpoint)
                del state
            if self.dist.is_main:
                self.logger.start(resumed_at=self.iteration if resume else None)
                atomic_write_text(self.out_dir / "config.yaml", self.run_config.to_yaml())
            return self._fit()
        finally:
            start.release()

    def _fit(self) -> dict[str, Any]:
        tc = self.train_cfg
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_iters,
            initial=self.iteration,
            dynamic_ncols=True,
            desc=self.run_config.name,
            disable=not (self.dist.is_main and tc.progress),
        )
        self.model.train()
        window_start, window_iters = time.perf_counter(), 0
        losses: dict[str, torch.Tensor] = {}
        try:
            while self.iteration < self.total_iters and not self.stopped_early:
                epoch = self.iteration // self.iters_per_epoch
                for batch in self._loader(epoch, self.iteration - epoch * self.iters_per_epoch):
                    if self.iteration >= self.total_iters:
                        break
                    lrs = self.set_learning_rates(self.iteration)
                    try:
                        losses, output = self.train_step(batch)
                    except Exception as exc:
                        if is_oom(exc):
                            raise out_of_memory(exc, self.device, self.iteration, self.batch_size,
                                                self.run_config.data.size) from None
                        raise
                    self.iteration += 1
                    window_iters += 1
                    bar.update(1)
                    if self.iteration % tc.log_every == 0 or self.iteration == self.total_iters:
                        elapsed = time.perf_counter() - window_start
                        rate = window_iters * self.batch_size / max(elapsed, 1e-9)
                        self._log(epoch, losses, lrs, rate, bar)
                        window_start, window_iters = time.perf_counter(), 0
                    if tc.image_every and self.iteration % tc.image_every == 0 and self.dist.is_main:
                        self.logger.image(
                            "train/query_pred_gt", episode_grid(batch, output.logits), self.iteration
                        )
                    if self.evaluate_fn is not None and self.selection.due(self.iteration, self.total_iters):
                        self._evaluate()
                        if self.stopped_early:  # AMNet's stop_interval: no new best for that many epochs
                            break
                    if self.iteration % tc.ckpt_every == 0 and self.iteration < self.total_iters:
                        self._save_periodic()
            if (self.evaluate_fn is not None and not self.stopped_early
                    and self.selection.validates_at_end(self.iteration)):
                self._evaluate()
            self.save("latest.pt")
        finally:
            bar.close()
            self.logger.close()
        return {
            "iteration": self.iteration,
            "losses": {k: float(v) for k, v in losses.items()},
            "best_metric": self.best_metric,
            "metrics": self.last_eval,
            "out_dir": str(self.out_dir),
            "selection": self.selection.rule,
            "model_file": str(self.out_dir / self.selection.model_file),
            "stopped_early": self.stopped_early,
        }

    def _log(
        self, epoch: int, losses: dict[str, torch.Tensor], lrs: dict[str, float], rate: float, bar: Any
    ) -> None:
        names = sorted(losses)
        values = dist_utils.all_reduce_mean(torch.stack([losses[k].float().reshape(()) for k in names]))
        mean_losses = dict(zip(names, values.tolist()))
        record = {
            "iteration": self.iteration,
            "epoch": epoch,
            "loss": mean_losses,
            "lr": lrs,
            "episodes_per_s": rate,
        }
        self.logger.record(record)
        bar.set_postfix(
            loss=f"{mean_losses.get('total', float('nan')):.4f}",
            lr=f"{next(iter(lrs.values())):.2e}",
            eps=f"{rate:.1f}/s",
        )

    def _evaluate(self) -> None:
        metrics = self.evaluate_fn(self.model) if self.evaluate_fn is not None else {}
        self.model.train()
        if not metrics:
            return
        self.last_eval = metrics
        self.logger.record(
            {
                "iteration": self.iteration,
                "eval": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
        score = metrics.get("miou")
        if (
            score is not None
            and math.isfinite(score)
            and self.selection.may_keep(self.iteration)
            and (self.best_metric is None or score > self.best_metric)
        ):
            self.best_metric = float(score)
            self.validations_since_best = 0
            self.save("best.pt")
        else:
            self.validations_since_best += 1
            self.stopped_early = self.selection.should_stop(self.validations_since_best)


__all__ = [
    "BuiltOptimizer",
    "Trainer",
    "TrainingStopped",
    "build_optimizers",
    "poly_factor",
    "seed_everything",
]
