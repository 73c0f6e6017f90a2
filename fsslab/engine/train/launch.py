"""Training runs from a RunConfig: ``run_training`` and ``train_prerequisites`` (the chain a run starts from)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from fsslab.config import RunConfig
from fsslab.engine import distributed
from fsslab.engine.build import build_run_model, build_train_set, check_base_labels
from fsslab.engine.prerequisites import check_prerequisite, prerequisite_config, prerequisite_finished
from fsslab.engine.runner import run_evaluation
from fsslab.engine.selection import selected_file
from fsslab.engine.train.run_dir import holds_run
from fsslab.engine.train.trainer import Trainer


def run_training(
    cfg: RunConfig, resume: bool | str = False, out_dir: str | Path | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Build data and model from ``cfg``, train (validating with the first eval seed), return the summary.

    ``resume``/``overwrite``: as ``Trainer.fit`` (a directory that holds a run needs one of them)."""

    check_base_labels(cfg)  # before anything is built: a model that needs base labels, on class folders
    check_prerequisite(cfg)  # missing: fsslab train --with-prerequisites (prerequisites.train_prerequisites)
    model = build_run_model(cfg)
    train_set = build_train_set(cfg)

    def validate(m: nn.Module) -> dict[str, Any]:
        result = run_evaluation(cfg, m, seeds=cfg.eval.seeds[:1], progress=False)
        return {"miou": result.miou_mean, "fbiou": result.fbiou_mean}

    if cfg.train.selection == "bam_stage1":  # the base learner's own validation: base-class mIoU on val
        from fsslab.engine.base_eval import base_val_set, evaluate_base_learner

        base_val = base_val_set(cfg)

        def validate(m: nn.Module) -> dict[str, Any]:
            n_classes = int(getattr(m, "n_classes", 0) or cfg.model.params.get("n_classes", 0))
            return evaluate_base_learner(m, base_val, n_classes, cfg.eval.batch_size, cfg.data.workers)

    trainer = Trainer.from_config(cfg, model, train_set, evaluate_fn=validate if cfg.train.validate else None,
                                  out_dir=out_dir)
    try:
        summary = trainer.fit(resume=resume, overwrite=overwrite)
    finally:
        distributed.teardown_distributed()
    if hasattr(train_set, "stats"):  # empty queries, support crops that fell back (this rank's, all its workers)
        summary["data_stats"] = train_set.stats.to_dict()
    return summary



def train_prerequisites(cfg: RunConfig) -> list[Path]:
    """Train the chain of runs ``cfg`` starts from (first the deepest), each unless already finished; returns
    the checkpoints ``cfg`` starts from (empty without a prerequisite)."""

    pre = prerequisite_config(cfg)
    if pre is None:
        return []
    if not prerequisite_finished(pre, str(cfg.model.prerequisite)):
        # the chain below only when this prerequisite must be trained: a finished stage 1 needs no pretraining
        # (fold 1's stage 1 may start from fold 0's pretraining, which its shipped config does not name)
        train_prerequisites(pre)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"training the prerequisite {cfg.model.prerequisite} first (writes {pre.train.out_dir}/"
                  f"{selected_file(pre.train.selection)})")
        # continue whatever run its directory holds (also one killed before its first checkpoint)
        run_training(pre, resume=holds_run(pre.train.out_dir))
    return [Path(pre.train.out_dir) / selected_file(pre.train.selection)]
