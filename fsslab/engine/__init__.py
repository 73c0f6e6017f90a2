"""Training and evaluation engine: Trainer (AMP, DDP, G/D objectives, checkpoints), evaluate(), metrics."""

from fsslab.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from fsslab.engine.evaluate import EvalResult, evaluate, evaluate_seed
from fsslab.engine.metrics import IoUAccumulator, intersection_union, logits_at_label_resolution
from fsslab.engine.trainer import Trainer, TrainingStopped, build_optimizers, poly_factor

__all__ = [
    "CheckpointError",
    "EvalResult",
    "IoUAccumulator",
    "Trainer",
    "TrainingStopped",
    "atomic_save",
    "build_optimizers",
    "evaluate",
    "evaluate_seed",
    "intersection_union",
    "load_checkpoint",
    "logits_at_label_resolution",
    "poly_factor",
]
