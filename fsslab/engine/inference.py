"""Inference on episodes: a run's trained model, per-episode predictions and traced forwards (batch of one)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsslab.batch import batch_of_one
from fsslab.config import RunConfig
from fsslab.engine.build import build_run_model, load_model_weights
from fsslab.engine.checkpoint import load_checkpoint


def load_run(cfg: RunConfig, checkpoint: str | Path | None = None) -> nn.Module:
    """The model of a run directory (``<out_dir>/latest.pt`` unless ``checkpoint``), in eval mode."""
    path = checkpoint or Path(cfg.train.out_dir) / "latest.pt"
    return load_model_weights(build_run_model(cfg, full_checkpoint=True), load_checkpoint(path), path).eval()


def predict_fn(model: nn.Module) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """``predict(sample) -> [H,W]`` 0/1 prediction at input resolution, for one un-batched episode."""

    @torch.no_grad()
    def predict(sample: Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = batch_of_one(sample)
        return model.eval()(batch).logits.argmax(1)[0]

    return predict


def trace_runner(model: nn.Module, datasets: Mapping[int, Sequence[Mapping[str, Any]]]
                 ) -> Callable[[int, int], tuple[dict[str, torch.Tensor], Mapping[str, Any]]]:
    """``run_fn`` for ``fsslab.viz.ipmt_explorer``: episode ``i`` of ``datasets[shot]`` as a batch of one, run
    through ``model(batch, trace=True)`` in eval mode without gradients. Returns (batch, trace) on the CPU."""

    def run(episode: int, shot: int) -> tuple[dict[str, torch.Tensor], Mapping[str, Any]]:
        if shot not in datasets:
            raise KeyError(f"no dataset for {shot} shot(s); available: {sorted(datasets)}")
        sample = datasets[shot][episode]
        batch = batch_of_one(sample)
        device = next(model.parameters()).device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        model.eval()
        with torch.no_grad():
            output = model(batch, trace=True)
        if output.trace is None:
            raise ValueError(f"{type(model).__name__} returned no trace")
        return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}, output.trace

    return run


__all__ = ["load_run", "predict_fn", "trace_runner"]
