"""Model selection: which checkpoint is a run's model, when it validates, and when it stops early.

``train.selection`` names the rule (``SELECTIONS``). The references select differently, and most of them on the
test episodes themselves, which is optimistic: the number reported is the best of many looks at the test set.

| rule | validates | keeps | stops early | as in |
|---|---|---|---|---|
| ``latest`` | every ``train.eval_every`` iterations and at the end, when ``train.validate`` (logged; best.pt kept) | ``latest.pt`` | no | fsslab's default |
| ``best_val`` | the same | ``best.pt`` | no | a validation split (fsslab's episodes of ``eval.split``) |
| ``amnet`` | every epoch | ``best.pt`` | after ``train.stop_interval`` epochs without a new best | AMNet ``train.py`` (on the test episodes) |
| ``ipmt`` | every epoch after epoch ``train.select_after`` (71: IPMT's ``epoch > 70``, 0-based) | ``best.pt`` | no | IPMT ``train.py`` (on the test episodes) |
| ``bam_stage1`` | every epoch, the base learner's base-class mIoU on the val images | ``best.pt`` | as ``amnet`` | BAM ``train_base.py`` (``best.pth``; ``stop_interval`` 75) |

The Trainer (fsslab.engine.train.trainer) asks a ``SelectionPlan`` when to validate (``due``), whether a validation may become ``best.pt``
(``may_keep``) and whether to stop (``should_stop``); ``model_file`` names the file that later stages read
(a prerequisite run's model, ``fsslab.engine.prerequisites``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fsslab.errors import ConfigError

SELECTIONS: dict[str, str] = {
    "latest": "the last iteration (latest.pt); validation, when train.validate, is logged and best.pt kept",
    "best_val": "the best validation (best.pt), validated every train.eval_every iterations and at the end",
    "amnet": "AMNet train.py: validated every epoch on the test episodes, the best kept (best.pt), stopped after "
             "train.stop_interval epochs without a new best (optimistic: selected on the test episodes)",
    "ipmt": "IPMT train.py: validated every epoch after epoch train.select_after, the best kept (best.pt) "
            "(optimistic: selected on the test episodes)",
    "bam_stage1": "BAM train_base.py: the base learner validated every epoch on the val images' base classes, "
                  "the best kept (best.pt, BAM's best.pth), stopped as amnet",
}
EPOCH_RULES = ("amnet", "ipmt", "bam_stage1")


def selected_file(rule: str) -> str:
    """The checkpoint of a run that is its model under ``rule``: best.pt or latest.pt."""
    return "latest.pt" if rule == "latest" else "best.pt"


@dataclass(frozen=True)
class SelectionPlan:
    """A rule applied to a run of ``total_iters`` iterations of ``iters_per_epoch`` each."""

    rule: str
    eval_every: int  # iterations between validations (0: only at the end)
    first_iteration: int = 0  # validations before this iteration are not kept (IPMT's epoch > 70)
    stop_interval: int | None = None  # validations without a new best before the run stops (AMNet)

    def due(self, iteration: int, total_iters: int) -> bool:
        """Whether to validate after ``iteration`` iterations (the end's validation is the Trainer's own)."""
        if not self.eval_every or iteration >= total_iters or iteration % self.eval_every:
            return False
        return iteration >= self.first_iteration

    def validates_at_end(self, iteration: int) -> bool:
        """Whether the run's last iteration is validated (IPMT validates nothing before its epoch 71)."""
        return iteration >= self.first_iteration

    def may_keep(self, iteration: int) -> bool:
        return iteration >= self.first_iteration

    def should_stop(self, validations_since_best: int) -> bool:
        return self.stop_interval is not None and validations_since_best >= self.stop_interval

    @property
    def model_file(self) -> str:
        return selected_file(self.rule)


def selection_plan(rule: str, iters_per_epoch: int, eval_every: int = 0, stop_interval: int | None = None,
                   select_after: int = 0) -> SelectionPlan:  # fmt: skip
    """The plan of ``rule`` for epochs of ``iters_per_epoch`` iterations (``eval_every``: latest, best_val)."""
    if rule not in SELECTIONS:
        raise ConfigError(f"unknown train.selection {rule!r}; valid: {sorted(SELECTIONS)}")
    if rule not in EPOCH_RULES:
        return SelectionPlan(rule, eval_every)
    first = (select_after + 1) * iters_per_epoch if rule == "ipmt" else 0
    return SelectionPlan(rule, iters_per_epoch, first, stop_interval if rule in ("amnet", "bam_stage1") else None)


__all__ = ["EPOCH_RULES", "SELECTIONS", "SelectionPlan", "selected_file", "selection_plan"]
