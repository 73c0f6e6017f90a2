"""fsslab.engine.train, the training loop: what ``fsslab train`` and the notebooks' training cells call.

- ``launch``: ``run_training`` (a RunConfig to a trained run) and ``train_prerequisites`` (the chain it starts from);
- ``trainer``: ``Trainer`` (AMP, DDP, the G/D objectives, checkpoints), with ``step`` (one optimisation step),
  ``optim`` (each model's optimiser groups and the poly schedule) and ``stops`` (NaN, out-of-memory);
- the run directory: ``run_dir`` (files, atomic writes, the ``flock`` run lock), ``resume`` (which checkpoint a
  run continues from, and whether its config allows it), ``state`` (what a checkpoint captures), ``runlog``
  (the JSONL and TensorBoard logs).
"""

from fsslab.engine.train.launch import run_training, train_prerequisites
from fsslab.engine.train.optim import build_optimizers, poly_factor
from fsslab.engine.train.stops import TrainingStopped
from fsslab.engine.train.trainer import Trainer

__all__ = ["Trainer", "TrainingStopped", "build_optimizers", "poly_factor", "run_training", "train_prerequisites"]
