"""Run logging on rank 0: JSONL records, TensorBoard scalars and image grids, tqdm progress."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from fsslab.batch import IGNORE_INDEX
from fsslab.engine.train.run_dir import notice
from fsslab.files import atomic_write_text
from fsslab.jsonl import parse_jsonl

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _mask_to_rgb(mask: torch.Tensor) -> torch.Tensor:
    """[H,W] in {0,1,255} → [3,H,W]: background black, foreground white, ignore grey."""
    rgb = torch.zeros(3, *mask.shape)
    rgb[:, mask == 1] = 1.0
    rgb[:, mask == IGNORE_INDEX] = 0.5
    return rgb


def episode_grid(batch: dict[str, torch.Tensor], logits: torch.Tensor, max_items: int = 4) -> torch.Tensor:
    """[3, n·H, 3·W] image in [0,1]: per row, the query, the prediction and the ground truth."""
    rows = []
    for i in range(min(max_items, logits.shape[0])):
        image = (batch["query_img"][i].detach().float().cpu() * _STD + _MEAN).clamp(0, 1)
        pred = logits[i].detach().argmax(0).cpu()
        target = batch["query_mask"][i].detach().cpu()
        rows.append(torch.cat([image, _mask_to_rgb(pred), _mask_to_rgb(target)], dim=2))
    return torch.cat(rows, dim=1)


def _plain(value: Any) -> Any:
    """JSON-safe copy: tensors → floats, NaN/inf → None-free strings JSON accepts (json allows NaN)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class RunLogger:
    """Writes ``log.jsonl`` and TensorBoard events under ``out_dir``; everything is a no-op off rank 0.

    Nothing is created before ``start`` (or the first record): the Trainer first checks and locks the run
    directory, which may refuse the run or clear the previous one."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.tensorboard = tensorboard
        self.jsonl = self.out_dir / "log.jsonl"
        self._writer = None
        self._started = False

    def start(self, resumed_at: int | None = None) -> None:
        """Create the directory and the TensorBoard writer. ``resumed_at``: the iteration a resumed run
        continues from; log.jsonl keeps only the records up to it, and TensorBoard hides later events."""
        if not self.enabled or self._started:
            return
        self._started = True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None:
            self.truncate_after(resumed_at)
        if self.tensorboard:
            try:  # imported lazily: tensorboard is heavy and optional at import time
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(
                    log_dir=str(self.out_dir / "tensorboard"),
                    purge_step=None if resumed_at is None else resumed_at + 1,
                )
            except Exception as exc:  # noqa: BLE001 - optional: any failure only disables TensorBoard
                warnings.warn(f"TensorBoard logging disabled ({exc}); log.jsonl is still written")

    def truncate_after(self, iteration: int) -> None:
        """Drop JSONL records logged after ``iteration`` (steps redone after a resume), a torn last record
        (the run was killed while writing it) and unreadable lines, each with a notice naming the file."""
        if not (self.enabled and self.jsonl.exists()):
            return
        records, torn, bad = parse_jsonl(self.jsonl)
        if torn:
            notice(f"{self.jsonl}: dropped a torn last record (the run was interrupted while writing it)")
        if bad:
            notice(f"{self.jsonl}: dropped {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:5]))})")
        kept = [line for line, record in records if record.get("iteration", 0) <= iteration]
        # rewritten atomically (a kill here loses nothing), and always: a last record cut just before its
        # newline parses, but the next record would be glued to it
        atomic_write_text(self.jsonl, "".join(line + "\n" for line in kept))

    def record(self, record: dict[str, Any]) -> None:
        """Append one JSON line and mirror its numeric leaves as TensorBoard scalars."""
        if not self.enabled:
            return
        self.start()
        record = _plain(record)
        with self.jsonl.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            step = record.get("iteration", 0)
            for key, value in _flatten(record).items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def image(self, tag: str, grid: torch.Tensor, iteration: int) -> None:
        if self.enabled and self._writer is not None:
            self._writer.add_image(tag, grid, iteration)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._started = False


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


__all__ = ["RunLogger", "episode_grid"]
