"""Base class of fsslab's few-shot models: the forward/loss/optimiser contract the engine relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fsslab.batch import Batch
from fsslab.models.output import FSSOutput


@dataclass
class OptimizerSpec:
    """One optimiser the trainer must build for a model.

    name:         unique name ("main", "transformer", "generator", "discriminator", ...).
    kind:         "sgd" | "adamw" | "adam".
    param_groups: torch param-group dicts; each has "params" and "lr" (its *initial* lr, already
                  multiplied by the reference's lr multiplier); the poly schedule scales every group.
    objective:    which entry of ``FewShotModel.step_objectives`` this optimiser descends.
    options:      extra optimiser kwargs (momentum, betas, weight_decay, ...).
    """

    name: str
    kind: str
    param_groups: list[dict[str, Any]]
    objective: str = "total"
    options: dict[str, Any] = field(default_factory=dict)


class FewShotModel(nn.Module):
    """Contract: ``forward(batch, trace=False) -> FSSOutput``, ``loss``, ``optimizer_specs``, ``step_objectives``."""

    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Training losses; the dict always has a ``"total"`` entry."""
        raise NotImplementedError  # pragma: no cover

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list[OptimizerSpec]:
        """Default: one SGD (momentum 0.9) over every trainable parameter."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [OptimizerSpec("main", "sgd", [{"params": params, "lr": base_lr}],
                              options={"momentum": 0.9, "weight_decay": weight_decay})]

    def step_objectives(self, losses: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        """Scalars to back-propagate at this iteration, keyed by ``OptimizerSpec.objective``.

        Only optimisers whose objective appears are zeroed/stepped. The default steps everything on
        ``losses["total"]``; AMFormer alternates generator and discriminator objectives.
        """
        return {"total": losses["total"]}


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model that has neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
