"""The output every fsslab model returns: logits at input resolution, optional aux tensors and a trace."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FSSOutput:
    """Result of ``model(batch)``.

    logits: [B,2,H,W] background/foreground scores at the input resolution (what metrics use).
    aux:    training-time intermediate tensors the model's ``loss`` needs (not detached): a tensor, or a list of
            tensors for per-stage/per-level entries (AMFormer's ``stage_logits``, ``attention_weights``).
    trace:  filled only with ``trace=True``: documented, detached tensors for analysis; each model
            module documents its keys (name, shape, meaning) in ``TRACE_KEYS``.
    """

    logits: torch.Tensor
    aux: dict[str, torch.Tensor | list[torch.Tensor]] = field(default_factory=dict)
    trace: dict[str, torch.Tensor] | None = None

    def prediction(self) -> torch.Tensor:
        """[B,H,W] long: argmax foreground/background mask."""
        return self.logits.argmax(dim=1)
