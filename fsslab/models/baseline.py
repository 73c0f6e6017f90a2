"""Prototype baseline: masked average pooling of the supports + cosine similarity + a threshold."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import IGNORE_INDEX, Batch
from fsslab.errors import ConfigError
from fsslab.models.backbones import build_backbone
from fsslab.models.base import FewShotModel, OptimizerSpec
from fsslab.models.layers import masked_average_pool
from fsslab.models.output import FSSOutput

TRACE_KEYS = {
    "support_prototypes": "[B,K,C] masked average of each shot's features",
    "prototype": "[B,C] class prototype (mean over shots)",
    "similarity": "[B,1,h,w] cosine similarity of the query features to the prototype",
}


class PrototypeBaseline(FewShotModel):
    """The reference point for IPMT / AMFormer: no learned matching, just a prototype and a threshold.

    Features are the concatenation of ``feature_layers`` (resized to the first one's size), the
    prototype is the masked average of the support features (mean over shots), and the foreground
    score is ``scale * (cosine - threshold)``; logits are ``[0, score]`` upsampled to the input size,
    so the prediction is foreground exactly where the cosine exceeds the threshold.

    ``learn_threshold=True`` makes ``scale`` and ``threshold`` parameters trained with cross-entropy
    on ``query_mask`` (ignore 255); ``freeze_backbone=False`` fine-tunes the backbone too (with
    ``norm="batch"`` and ``optimizer="adamw"``, it trains one from scratch: the episodic backbone pretraining,
    ``synthetic/backbone_pretrain_episodic``). With a
    frozen backbone and a fixed threshold the model is training-free: ``optimizer_specs`` returns no
    optimiser and ``loss`` raises a RuntimeError saying so (evaluate it directly instead).
    """

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = None, dilation: str = "pspnet",
                 norm: str = "frozen", feature_layers: tuple[str, ...] = ("layer2", "layer3"),
                 threshold: float = 0.5, scale: float = 10.0, learn_threshold: bool = False,
                 freeze_backbone: bool = True, ignore_index: int = IGNORE_INDEX, channels_last: bool = True,
                 optimizer: str = "sgd") -> None:
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw' (a backbone trained from scratch), got {optimizer!r}")
        self.optimizer = optimizer
        # channels_last input: oneDNN's convolutions on CPU are faster in that layout (same function; measured
        # -32% at the tiny setting, -13% at ResNet-50 473x473, benchmarks/README.md)
        self.channels_last = channels_last
        self.backbone = build_backbone(backbone, pretrained=pretrained, dilation=dilation, norm=norm)
        unknown = [name for name in feature_layers if name not in self.backbone.stages]
        if not feature_layers or unknown:
            raise ConfigError(f"feature_layers {list(feature_layers)} must be non-empty stages of {backbone}: "
                             f"{self.backbone.stages}")
        self.feature_layers = tuple(feature_layers)
        self.last_stage = max(self.feature_layers, key=self.backbone.stages.index)
        self.freeze_backbone, self.ignore_index = freeze_backbone, ignore_index
        self.backbone.requires_grad_(not freeze_backbone)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=learn_threshold)
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learn_threshold)

    def train(self, mode: bool = True) -> PrototypeBaseline:
        super().train(mode)
        if self.freeze_backbone:  # frozen statistics of a BatchNorm backbone must not drift
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] -> [N,C,h,w]: the chosen stages, concatenated at the first one's resolution."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            x, feats = images, {}
            for stage in self.backbone.stages[: self.backbone.stages.index(self.last_stage) + 1]:
                x = feats[stage] = self.backbone.forward_stage(stage, x)
        size = feats[self.feature_layers[0]].shape[-2:]
        picked = [feats[name] if feats[name].shape[-2:] == size else
                  F.interpolate(feats[name], size, mode="bilinear", align_corners=True)
                  for name in self.feature_layers]
        return torch.cat(picked, dim=1)

    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]  # [B,3,H,W], [B,K,3,H,W]
        b, k = support_imgs.shape[:2]
        size = query_img.shape[-2:]
        # one backbone pass for query and supports
        feats = self.features(torch.cat([query_img, support_imgs.flatten(0, 1)], dim=0))
        query_feat, support_feat = feats[:b], feats[b:]  # [B,C,h,w], [B*K,C,h,w]
        fg = (batch["support_masks"].flatten(0, 1) == 1).unsqueeze(1).to(support_feat.dtype)  # [B*K,1,H,W]
        fg = F.interpolate(fg, support_feat.shape[-2:], mode="bilinear", align_corners=True)
        support_protos = masked_average_pool(support_feat, fg).reshape(b, k, -1)  # [B,K,C]
        prototype = support_protos.mean(dim=1)  # [B,C]
        similarity = F.cosine_similarity(query_feat, prototype[:, :, None, None], dim=1, eps=1e-7)  # [B,h,w]
        similarity = similarity.unsqueeze(1)
        score = self.scale * (similarity - self.threshold)
        score = F.interpolate(score, size, mode="bilinear", align_corners=True)  # [B,1,H,W]
        out = FSSOutput(torch.cat([torch.zeros_like(score), score], dim=1))
        if trace:
            out.trace = {"support_prototypes": support_protos.detach(), "prototype": prototype.detach(),
                         "similarity": similarity.detach()}
        return out

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Cross-entropy on ``query_mask`` (ignore 255); raises for the training-free configuration."""
        if not self._trainable():
            raise RuntimeError("PrototypeBaseline with a frozen backbone and a fixed threshold has nothing to "
                               "train; evaluate it directly, or set learn_threshold=True / freeze_backbone=False")
        ce = F.cross_entropy(output.logits.float(), batch["query_mask"].long(), ignore_index=self.ignore_index)
        return {"total": ce, "ce": ce}

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list[OptimizerSpec]:
        """One SGD (or AdamW) over the trainable parameters (none when training-free); no decay on
        scale/threshold."""
        groups = []
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"params": backbone, "lr": base_lr, "weight_decay": weight_decay})
        calibration = [p for p in (self.scale, self.threshold) if p.requires_grad]
        if calibration:
            groups.append({"params": calibration, "lr": base_lr, "weight_decay": 0.0})
        if not groups:
            return []
        if self.optimizer == "adamw":
            return [OptimizerSpec("main", "adamw", groups)]
        return [OptimizerSpec("main", "sgd", groups, options={"momentum": 0.9})]


__all__ = ["TRACE_KEYS", "PrototypeBaseline"]
