"""fsslab.engine, the public API of evaluation and inference: what the CLI, the notebooks and users call.

Training lives in ``fsslab.engine.train`` (``Trainer``, ``run_training``), which this package does not import, so
that loading a model for inference never imports the training loop.

- ``evaluate`` takes explicit arguments; ``run_evaluation`` and ``run_controls`` are its adapters from a
  ``RunConfig``; ``build`` turns a ``RunConfig`` into datasets and a model.
- Inference on episodes: ``load_run``, ``build_run_model``, ``predict_fn``, ``trace_runner``.
- Analysis: the controls (``MismatchedSupports``, ``ControlReport``), per-episode scores and failure modes,
  metrics.
- What a run needs on disk: the engine only checks it (``check_data``, ``check_prerequisite``); ``prepare_data``
  (and ``fsslab.engine.train.train_prerequisites``) prepare it, explicitly.
"""

from fsslab.engine.build import (
    architecture,
    build_run_model,
    build_train_set,
    eval_dataset_factory,
    load_model_weights,
)
from fsslab.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from fsslab.engine.controls import MismatchedSupports, with_supports
from fsslab.engine.episodes import FAILURE_MODES, EpisodeScore, episode_scores, failure_summary, hardest
from fsslab.engine.evaluate import EvalResult, evaluate, evaluate_seed
from fsslab.engine.inference import load_run, predict_fn, trace_runner
from fsslab.engine.metrics import IoUAccumulator, intersection_union, logits_at_label_resolution, mask_iou
from fsslab.engine.prerequisites import check_data, check_prerequisite, prepare_data
from fsslab.engine.runner import ControlReport, run_controls, run_evaluation

__all__ = [
    "FAILURE_MODES",
    "CheckpointError",
    "ControlReport",
    "EpisodeScore",
    "EvalResult",
    "IoUAccumulator",
    "MismatchedSupports",
    "architecture",
    "atomic_save",
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
    "mask_iou",
    "predict_fn",
    "prepare_data",
    "run_controls",
    "run_evaluation",
    "trace_runner",
    "with_supports",
]
