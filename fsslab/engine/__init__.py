"""fsslab.engine, the public API of training and evaluation: what the CLI, the notebooks and users call.

- ``Trainer`` (AMP, DDP, G/D objectives, checkpoints) and ``evaluate`` take explicit arguments; ``run_training``,
  ``run_evaluation`` and ``run_controls`` are their adapters from a ``RunConfig``.
- Inference on episodes: ``load_run``, ``build_run_model``, ``predict_fn``, ``trace_runner``.
- Analysis: the controls (``MismatchedSupports``, ``ControlReport``), per-episode scores and failure modes,
  metrics.
- What a run needs on disk: the engine only checks it (``check_data``, ``check_prerequisite``); ``prepare_data``
  and ``train_prerequisites`` prepare it, explicitly.
"""

from fsslab.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from fsslab.engine.controls import MismatchedSupports, with_supports
from fsslab.engine.episodes import FAILURE_MODES, EpisodeScore, episode_scores, failure_summary, hardest
from fsslab.engine.evaluate import EvalResult, evaluate, evaluate_seed
from fsslab.engine.inference import load_run, predict_fn, trace_runner
from fsslab.engine.metrics import IoUAccumulator, intersection_union, logits_at_label_resolution
from fsslab.engine.optim import build_optimizers, poly_factor
from fsslab.engine.prerequisites import check_data, check_prerequisite, prepare_data, train_prerequisites
from fsslab.engine.runner import (
    ControlReport,
    architecture,
    build_run_model,
    build_train_set,
    eval_dataset_factory,
    load_model_weights,
    run_controls,
    run_evaluation,
    run_training,
)
from fsslab.engine.stops import TrainingStopped
from fsslab.engine.trainer import Trainer

__all__ = [
    "FAILURE_MODES",
    "CheckpointError",
    "ControlReport",
    "EpisodeScore",
    "EvalResult",
    "IoUAccumulator",
    "MismatchedSupports",
    "Trainer",
    "TrainingStopped",
    "architecture",
    "atomic_save",
    "build_optimizers",
    "build_run_model",
    "build_train_set",
    "check_data",
    "check_prerequisite",
    "episode_scores",
    "eval_dataset_factory",
    "evaluate",
    "evaluate_seed",
    "failure_summary",
    "hardest",
    "intersection_union",
    "load_checkpoint",
    "load_model_weights",
    "load_run",
    "logits_at_label_resolution",
    "poly_factor",
    "predict_fn",
    "prepare_data",
    "run_controls",
    "run_evaluation",
    "run_training",
    "trace_runner",
    "train_prerequisites",
    "with_supports",
]
