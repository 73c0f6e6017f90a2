"""The control "models": the oracle, which predicts the query's own label, to check the evaluation path, and
the all-foreground reference, which predicts the whole query as the class (the floor a model must beat).

It takes the query's original label (``query_mask_ori``), resizes its one-hot map to where the image content
sits in the model's input (``query_valid_size``; bilinear with antialiasing, so the soft map keeps the
boundaries' sub-pixel positions) and pads it to the input size: the best a model could output at input
resolution. Through a correct evaluation path it scores ~100 mIoU for every protocol and image size;
anything lower is a bug of the evaluation, not of a model. Batches without the evaluation keys (training
batches) get ``query_mask`` itself, the label resized with the image. It is a control and is
labelled as one wherever its numbers are printed; it is never a result.

    fsslab eval synthetic/ipmt_tiny model.name=oracle     # must print ≥ 99.5 mIoU
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import IGNORE_INDEX, Batch
from fsslab.models.base import FewShotModel
from fsslab.models.output import FSSOutput

TRACE_KEYS: dict[str, str] = {}  # nothing to trace: the prediction is the label


class QueryLabelOracle(FewShotModel):
    """logits [B,2,H,W]: foreground where ``query_mask`` is 1, background elsewhere (255 included, which the
    metrics ignore). No parameters; not trainable."""

    is_control = True

    def __init__(self) -> None:
        super().__init__()
        # a buffer so that `.to(device)` moves something and the evaluation can read the device from it
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:
        device = self.anchor.device
        height, width = batch["query_img"].shape[-2:]
        if "query_mask_ori" not in batch:
            return FSSOutput(logits=_one_hot(batch["query_mask"].to(device)), trace={} if trace else None)
        labels = batch["query_mask_ori"].to(device)  # [B,Hc,Wc], 255 outside each label
        logits = torch.zeros(len(labels), 2, height, width, device=device)
        for i, (label, ori, valid) in enumerate(zip(labels, batch["query_ori_size"], batch["query_valid_size"])):
            one_hot = _one_hot(label[None, : int(ori[0]), : int(ori[1])])  # [1,2,h,w]
            size = (int(valid[0]), int(valid[1]))
            if size != tuple(one_hot.shape[-2:]):
                one_hot = F.interpolate(one_hot, size=size, mode="bilinear", align_corners=False, antialias=True)
            logits[i, :, : size[0], : size[1]] = one_hot[0]
        return FSSOutput(logits=logits, trace={} if trace else None)

    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        raise RuntimeError("the oracle is an evaluation control: it has nothing to train")

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list:
        raise RuntimeError("the oracle is an evaluation control: it has nothing to train")


class AllForeground(FewShotModel):
    """logits [B,2,H,W] = (0, 1) everywhere: every query pixel is the class. The reference a model must beat
    clearly: on queries where the target covers a fair share of the image it scores 15-20 mIoU without looking
    at anything (``eval.controls=true`` reports it beside every result). No parameters; not trainable."""

    is_control = True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:
        b, _, h, w = batch["query_img"].shape
        logits = torch.zeros(b, 2, h, w, device=self.anchor.device)
        logits[:, 1] = 1.0
        return FSSOutput(logits=logits, trace={} if trace else None)

    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        raise RuntimeError("the all-foreground reference is an evaluation control: it has nothing to train")

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list:
        raise RuntimeError("the all-foreground reference is an evaluation control: it has nothing to train")


def _one_hot(mask: torch.Tensor) -> torch.Tensor:
    """[B,H,W] in {0,1,255} → [B,2,H,W] float: 1 on the true channel, 0.5/0.5 on ignored pixels."""
    foreground = (mask == 1).float()
    one_hot = torch.stack([1.0 - foreground, foreground], dim=1)
    return torch.where((mask == IGNORE_INDEX)[:, None], torch.full_like(one_hot, 0.5), one_hot)


def is_control(model: nn.Module) -> bool:
    """True for control models (the oracle, all-foreground), whose numbers are printed as controls, never as results."""
    return bool(getattr(getattr(model, "module", model), "is_control", False))


# model.name -> the control (``fsslab eval CONFIG model.name=oracle`` or ``model.name=all_foreground``)
CONTROL_MODELS: dict[str, type[FewShotModel]] = {"oracle": QueryLabelOracle, "all_foreground": AllForeground}


def control_name(model: nn.Module) -> str | None:
    """"oracle" / "all_foreground" for a control model, None for a model."""
    inner = getattr(model, "module", model)
    return next((name for name, cls in CONTROL_MODELS.items() if isinstance(inner, cls)), None)


__all__ = ["CONTROL_MODELS", "TRACE_KEYS", "AllForeground", "QueryLabelOracle", "control_name", "is_control"]
