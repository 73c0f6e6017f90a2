"""Starting a run in its directory: protection and lock (run_dir), the checkpoint to resume from (the newest
loadable one) and whether the config may change on resume. Loading that checkpoint into the Trainer is
``Trainer.load_state``.

Resume rules (docs/training.md, "Run directories and resuming"):
- ``--resume`` continues from the newest checkpoint that loads (``latest.pt`` or an ``iter_*.pt``), skipping
  unreadable ones with a notice; ``--resume PATH`` uses that file.
- A directory whose run was killed before its first checkpoint holds only a log: ``--resume`` starts that
  run again from iteration 0 (its old files are removed first, so no record is duplicated), which is what an
  uninterrupted run would have done; a fresh start there needs ``--overwrite``, as in any directory that
  holds a run.
- The config may differ from the checkpoint's only in the keys of ``RESUME_BOOKKEEPING`` (no effect on the
  weights) and ``RESUME_APPLIED`` (take effect from the resumed iteration on); any other change is refused
  with the list of changed keys.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fsslab.config import ConfigError, RunConfig, config_from_dict
from fsslab.engine import checkpoint as ckpt
from fsslab.engine import distributed as dist_utils
from fsslab.engine.train.run_dir import (
    RunDirError,
    RunLock,
    clear_run,
    describe_files,
    notice,
    refuse_fresh_start,
    remove_stale_temps,
    run_files,
)

# Keys (or sections) whose change on resume leaves the training itself alone: names, logging, checkpoint
# cadence, validation and where it runs (train.device: CPU and GPU differ in the last bits, nothing else).
RESUME_BOOKKEEPING = (
    "name",
    "expected",
    "eval",
    "data.workers",  # episodes do not depend on the worker that draws them (SeededEpisodes)
    "train.log_every",
    "train.image_every",
    "train.ckpt_every",
    "train.keep_checkpoints",
    "train.eval_every",
    "train.validate",
    "train.selection",  # which checkpoints are kept and when the run validates (fsslab.engine.selection)
    "train.stop_interval",
    "train.select_after",
    "train.tensorboard",
    "train.progress",
    "train.out_dir",
    "train.device",
    "train.find_unused_parameters",
)
# Keys whose change takes effect from the resumed iteration on: a longer (or shorter) schedule, and the two
# remedies of a NaN stop. The poly schedule is recomputed from the new values; the optimisers' momenta are kept.
RESUME_APPLIED = ("train.iterations", "train.epochs", "train.base_lr", "train.grad_clip")
_TRAINING_KEYS = ("optimizers", "scaler", "rng", "iteration")
_PERIODIC = re.compile(r"iter_(\d+)\.pt")


@dataclass
class RunStart:
    """What ``start_run`` decided: the checkpoint to resume from (and, on rank 0, its loaded state)."""

    checkpoint: Path | None = None
    state: dict[str, Any] | None = None
    lock: RunLock | None = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _allowed(key: str, allowed: tuple[str, ...]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allowed)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaves; an empty dict has none (``model.params: {}`` and no key mean the same)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def _config_fields() -> set[str]:
    """``name``, ``data.root``, ``model.params``, ...: the fields of this fsslab's RunConfig."""
    cfg, fields = RunConfig(), set()
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            fields |= {f"{field.name}.{inner.name}" for inner in dataclasses.fields(value)}
        else:
            fields.add(field.name)
    return fields


def _with_derived(saved: dict[str, Any]) -> dict[str, Any]:
    """The saved config with its derived values as this fsslab has them (a run written before they were filled at
    load time recorded eval.shot: null, which is no change); a config this fsslab cannot read (a retired field) is
    compared as saved."""
    try:
        filled = config_from_dict(saved).to_dict()
    except ConfigError:
        return saved
    return _without_default_shot(filled)


def _without_default_shot(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without ``model.params.shot`` when it equals ``data.shot``: the model is built with that value
    either way (``engine.build.model_spec``; runs written before 2026-12-07 recorded it), so it is no change."""
    params = config["model"]["params"]
    if params.get("shot") == config["data"]["shot"]:
        config = {**config, "model": {**config["model"], "params": {k: v for k, v in params.items() if k != "shot"}}}
    return config


def config_changes(saved: dict[str, Any], cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every key that differs, inside free dicts such as
    model.params too. A field the saved config lacks (written by an older fsslab) counts as changed only
    when the new value is not its default; a field this fsslab no longer has is ignored."""
    old, new = _flatten(_with_derived(saved)), _flatten(_without_default_shot(cfg.to_dict()))
    defaults, fields = _flatten(RunConfig().to_dict()), _config_fields()
    changes: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        if key not in new:
            if ".".join(key.split(".")[:2]) in fields:  # e.g. a model.params key dropped
                changes[key] = (old[key], "(absent)")
        elif key not in old:
            if not (key in defaults and new[key] == defaults[key]):
                changes[key] = ("(absent)", new[key])
        elif old[key] != new[key]:
            changes[key] = (old[key], new[key])
    return changes


def _format(changes: dict[str, tuple[Any, Any]], limit: int = 8) -> str:
    shown = [f"{k} {old!r} -> {new!r}" for k, (old, new) in list(changes.items())[:limit]]
    more = f", and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(shown) + more


def check_resume_config(state: dict[str, Any], cfg: RunConfig, path: Path, total_iters: int) -> None:
    """Refuse (ConfigError) a resume whose config changes the run; a notice for the allowed changes."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        notice(f"{path} records no config: fsslab cannot check that this run's config matches it")
        changes: dict[str, tuple[Any, Any]] = {}
    else:
        changes = config_changes(saved, cfg)
    refused = {k: v for k, v in changes.items() if not _allowed(k, RESUME_BOOKKEEPING + RESUME_APPLIED)}
    if refused:
        raise ConfigError(
            f"--resume: the config differs from the one {path} was trained with: {_format(refused)}. Resuming "
            "would change the run mid-way: use the original values (the run's config.yaml), or start a new run "
            "(--overwrite, or another --out). Allowed on resume: "
            f"{', '.join(RESUME_APPLIED)}, logging/checkpoint/eval settings, data.workers, train.device"
        )
    if int(state["iteration"]) > total_iters:
        raise ConfigError(
            f"--resume: {path} is at iteration {state['iteration']}, past the end of this config's schedule "
            f"({total_iters} iterations): raise train.iterations (or train.epochs), or start a new run"
        )
    applied = {k: v for k, v in changes.items() if _allowed(k, RESUME_APPLIED)}
    if applied:
        notice(f"resuming {path} with {_format(applied)}: applied from iteration {state['iteration']} on")


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """``load_checkpoint`` plus the entries a resume needs (a weights-only file cannot be resumed)."""
    state = ckpt.load_checkpoint(path)
    missing = [k for k in _TRAINING_KEYS if k not in state]
    if missing:
        raise ckpt.CheckpointError(
            f"checkpoint {path} holds no training state ({', '.join(missing)} missing): it cannot be "
            "resumed; start a new run from its weights with model.init_checkpoint"
        )
    return state


def newest_checkpoint(out_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable of ``latest.pt`` and ``iter_*.pt`` (None when there is neither); unreadable ones
    are skipped with a notice, and when all are unreadable the error lists each with its problem.

    ``latest.pt`` is written right after its ``iter_*.pt``, so only an ``iter_*.pt`` beyond latest.pt's
    iteration (a kill between the two writes, a full disk) or an unreadable latest.pt makes another file
    the newest; only those are loaded."""
    failures: list[tuple[Path, str]] = []
    chosen: tuple[Path, dict[str, Any]] | None = None
    latest, floor = out_dir / "latest.pt", -1
    if latest.is_file():
        try:
            chosen = (latest, load_training_checkpoint(latest))
            floor = int(chosen[1]["iteration"])
        except ckpt.CheckpointError as exc:
            failures.append((latest, str(exc)))
    periodic = sorted(
        ((int(m.group(1)), p) for p in out_dir.glob("iter_*.pt") if (m := _PERIODIC.fullmatch(p.name))),
        reverse=True,
    )
    for iteration, path in periodic:
        if iteration <= floor:
            break
        try:
            chosen = (path, load_training_checkpoint(path))
            break
        except ckpt.CheckpointError as exc:
            failures.append((path, str(exc)))
    if chosen is None and failures:
        raise ckpt.CheckpointError(
            f"--resume: no loadable checkpoint in {out_dir} ({', '.join(p.name for p, _ in failures)} are "
            f"unreadable; the first: {failures[0][1]}); start over with --overwrite"
        )
    for _, failure in failures:
        notice(f"skipped an unreadable checkpoint: {failure}")
    if chosen is not None and failures:
        notice(f"resuming from {chosen[0]} (iteration {chosen[1]['iteration']})")
    return chosen


def find_checkpoint(out_dir: Path, path: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """``(state, file)`` of ``path``, or of the newest loadable checkpoint in ``out_dir`` when None."""
    found = (Path(path), load_training_checkpoint(path)) if path else newest_checkpoint(out_dir)
    if found is None:
        raise ckpt.CheckpointError(f"--resume: no checkpoint in {out_dir} (nothing to resume)")
    return found[1], found[0]


def _prepare(
    out_dir: Path, cfg: RunConfig, resume: bool | str | Path, overwrite: bool, total_iters: int
) -> RunStart:
    """Rank 0: lock the directory, clean up after killed runs, refuse or clear, pick the checkpoint."""
    if resume and overwrite:
        raise RunDirError("--resume continues the run in the directory and --overwrite deletes it: give one")
    explicit = None if resume is True or not resume else Path(resume)
    if resume and explicit is None and not out_dir.is_dir():
        raise ckpt.CheckpointError(
            f"--resume: no checkpoint in {out_dir} (nothing to resume: the directory does not exist)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out_dir)
    lock.acquire()  # before anything else: another live run must not see its files cleaned or cleared
    try:
        remove_stale_temps(out_dir)
        files = run_files(out_dir)
        if not resume:
            if files and not overwrite:
                raise refuse_fresh_start(out_dir, files)
            removed = clear_run(out_dir) if overwrite else []  # also a killed run's config.yaml, tensorboard/
            if removed:
                notice(f"--overwrite: deleted the previous run in {out_dir} ({', '.join(removed)})")
            return RunStart(lock=lock)
        if explicit is not None:
            if files and explicit.resolve().parent != out_dir.resolve():
                raise RunDirError(
                    f"{out_dir} holds another run ({describe_files(files)}): resume {explicit} into an empty "
                    "directory (--out), or resume that run in its own directory"
                )
            found: tuple[Path, dict[str, Any]] | None = (explicit, load_training_checkpoint(explicit))
        else:
            found = newest_checkpoint(out_dir)
        if found is None:
            if not files:
                raise ckpt.CheckpointError(
                    f"--resume: no checkpoint in {out_dir} (nothing to resume): start the run without --resume"
                )
            notice(
                f"{out_dir} holds no checkpoint (its run stopped before the first one): --resume starts it "
                f"again from iteration 0, replacing its {', '.join(clear_run(out_dir))}"
            )
            return RunStart(lock=lock)
        check_resume_config(found[1], cfg, found[0], total_iters)
        return RunStart(checkpoint=found[0], state=found[1], lock=lock)
    except BaseException:
        lock.release()
        raise


def start_run(
    out_dir: Path,
    cfg: RunConfig,
    resume: bool | str | Path,
    overwrite: bool,
    total_iters: int,
    dist: dist_utils.DistInfo,
) -> RunStart:
    """Prepare ``out_dir`` for a run (rank 0) and tell every rank the outcome, so that a refusal stops all
    ranks rather than leaving the others waiting in the first collective."""
    if not dist.distributed:
        return _prepare(out_dir, cfg, resume, overwrite, total_iters)
    start, error, outcome = RunStart(), None, [None]
    if dist.is_main:
        try:
            start = _prepare(out_dir, cfg, resume, overwrite, total_iters)
            outcome = [{"checkpoint": str(start.checkpoint) if start.checkpoint else None}]
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks heard of it
            error, outcome = exc, [{"error": str(exc), "type": type(exc).__name__}]
    torch.distributed.broadcast_object_list(outcome, src=0)
    result = outcome[0]
    if error is not None:
        raise error
    if "error" in result:
        kind = {"ConfigError": ConfigError, "CheckpointError": ckpt.CheckpointError}.get(result["type"], RunDirError)
        raise kind(f"(rank 0) {result['error']}")
    if not dist.is_main and result["checkpoint"]:
        start.checkpoint = Path(result["checkpoint"])
    return start


def resume_advice(out_dir: Path, last_checkpoint: tuple[Path, int] | None) -> str:
    """How to continue after a stop: the checkpoint ``--resume`` would use, or that there is none."""
    if last_checkpoint is not None and last_checkpoint[0].is_file():
        return f"--resume continues from {last_checkpoint[0]} (iteration {last_checkpoint[1]})"
    return f"no checkpoint exists yet in {out_dir}: start over with --overwrite"


__all__ = [
    "RESUME_APPLIED",
    "RESUME_BOOKKEEPING",
    "RunStart",
    "check_resume_config",
    "config_changes",
    "find_checkpoint",
    "load_training_checkpoint",
    "newest_checkpoint",
    "resume_advice",
    "start_run",
]
