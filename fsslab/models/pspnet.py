"""PSPNet (dilated ResNet + pyramid pooling), the base learner of BAM / AMFormer, trainable on base classes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import IGNORE_INDEX, Batch
from fsslab.errors import ConfigError
from fsslab.models.backbones import build_backbone
from fsslab.models.backbones.weights import DEEP_STEM_FROM_SEQUENTIAL
from fsslab.models.base import FewShotModel, OptimizerSpec
from fsslab.models.official import check_keys, read_official_state_dict, rename_by_prefix
from fsslab.models.output import FSSOutput

TRACE_KEYS = {
    "layer4": "[B,C4,h,w] backbone output (output stride 8)",
    "embedding": "[B,head_channels,h,w] classifier features after conv3x3+BN, before ReLU (AMFormer's base feature)",
    "base_logits": "[B,n_classes,h,w] class scores at feature resolution",
}


class PPMBranch(nn.Module):
    """One pyramid level: average-pool to ``bin`` x ``bin``, 1x1 conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, bin_size: int) -> None:
        super().__init__()
        self.bin_size = bin_size
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,C,h,w] -> [B,C',bin,bin]
        return F.relu(self.bn(self.conv(F.adaptive_avg_pool2d(x, self.bin_size))), inplace=True)


class PPM(nn.Module):
    """Pyramid pooling: the input concatenated with every branch upsampled back (bilinear, corners aligned).

    Output channels: ``in_channels + len(bins) * branch_channels`` (2048 + 4*512 = 4096 for ResNet-50).
    """

    def __init__(self, in_channels: int, branch_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(PPMBranch(in_channels, branch_channels, b) for b in bins)
        self.out_channels = in_channels + len(bins) * branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size, mode="bilinear", align_corners=True) for branch in self.branches]
        return torch.cat([x, *pooled], dim=1)


class SegmentationHead(nn.Module):
    """conv3x3 -> BN -> ReLU -> Dropout2d -> conv1x1; ``embed`` stops before the ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, n_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(mid_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.out = nn.Conv2d(mid_channels, n_classes, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        # not in place: callers (AMFormer) keep using the pre-ReLU embedding
        return self.out(self.dropout(F.relu(embedding)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


class PSPNet(FewShotModel):
    """PSPNet base learner (BAM ``model/PSPNet.py`` layout), a ``FewShotModel`` for stage-1 training.

    ``forward(batch)`` reads ``batch["query_img"]`` and returns ``FSSOutput(logits=[B,n_classes,H,W])``
    (background + base classes, **not** the usual 2 channels); ``loss`` is cross-entropy against
    ``batch["query_base_mask"]`` (ignore 255). BAM's base learner has no auxiliary head, so by
    default neither has this one (its state_dict maps 1:1 onto official PSPNet checkpoints);
    ``aux_weight > 0`` adds the classic PSPNet layer3 head (conv3x3 -> 256, BN, ReLU, dropout, 1x1)
    whose CE is added with that weight during training.
    """

    def __init__(self, backbone: str = "resnet50", n_classes: int = 16, pretrained: str | None = None,
                 dilation: str = "pspnet", norm: str = "batch", bins: tuple[int, ...] = (1, 2, 3, 6),
                 dropout: float = 0.1, aux_weight: float = 0.0, ignore_index: int = IGNORE_INDEX,
                 head_lr_multiplier: float = 10.0, optimizer: str = "sgd", head_channels: int = 512,
                 backbone_lr_multiplier: float = 1.0, channels_last: bool = True,
                 train_logits: str = "input") -> None:
        super().__init__()
        # "features": in training, logits stay at the backbone's resolution and the loss reads the label there
        # (nearest): a head of thousands of classes (the wide pretraining, data.train_data=procedural) then costs
        # 1/64 of its full-resolution logits; evaluation always upsamples to the input
        if train_logits not in ("input", "features"):
            raise ConfigError(f"train_logits must be 'input' or 'features', got {train_logits!r}")
        self.train_logits = train_logits
        # channels_last input: oneDNN's convolutions on CPU are faster in that layout (same function; measured
        # -28% at the tiny setting, -2% at ResNet-50 473x473, benchmarks/README.md)
        self.channels_last = channels_last
        if optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' (BAM) or 'adamw', got {optimizer!r}")
        self.optimizer = optimizer
        self.n_classes, self.aux_weight, self.ignore_index = n_classes, aux_weight, ignore_index
        self.head_lr_multiplier = head_lr_multiplier
        # BAM's `index_split`: 0 on PASCAL (backbone at the base lr), -1 on COCO (every group at 10x)
        self.backbone_lr_multiplier = backbone_lr_multiplier
        self.backbone = build_backbone(backbone, pretrained=pretrained, dilation=dilation, norm=norm)
        feat_channels = self.backbone.out_channels["layer4"]
        self.ppm = PPM(feat_channels, feat_channels // len(bins), tuple(bins))
        self.head = SegmentationHead(self.ppm.out_channels, head_channels, n_classes, dropout)
        self.aux_head = None
        if aux_weight > 0:
            self.aux_head = SegmentationHead(self.backbone.out_channels["layer3"], 256, n_classes, dropout)

    def decode(self, layer4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """layer4 [B,C4,h,w] -> (embedding [B,head_channels,h,w] pre-ReLU, class logits [B,n_classes,h,w])."""
        embedding = self.head.embed(self.ppm(layer4))
        return embedding, self.head.classify(embedding)

    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:
        image = batch["query_img"]  # [B,3,H,W]
        size = image.shape[-2:]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(image)
        embedding, logits = self.decode(feats["layer4"])
        low = self.training and self.train_logits == "features"
        out = FSSOutput(logits if low else F.interpolate(logits, size, mode="bilinear", align_corners=True))
        if self.training and self.aux_head is not None:
            aux = self.aux_head(feats["layer3"])
            out.aux["aux_logits"] = aux if low else F.interpolate(aux, size, mode="bilinear", align_corners=True)
        if trace:
            out.trace = {"layer4": feats["layer4"].detach(), "embedding": embedding.detach(),
                         "base_logits": logits.detach()}
        return out

    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """``main``: CE(logits, query_base_mask); ``aux`` (with an aux head) weighted by ``aux_weight``."""
        target = batch["query_base_mask"].long()  # [B,H,W]: 0 bg, 1..n_base, 255 ignore
        if output.logits.shape[-2:] != target.shape[-2:]:  # train_logits="features": the label where each logit
            # sits when upsampled (align_corners=True: logit j at pixel j·(H−1)/(h−1))
            (h, w), (big_h, big_w) = output.logits.shape[-2:], target.shape[-2:]
            rows = torch.linspace(0, big_h - 1, h, device=target.device).round().long()
            cols = torch.linspace(0, big_w - 1, w, device=target.device).round().long()
            target = target[:, rows][:, :, cols]
        losses = {"main": F.cross_entropy(output.logits.float(), target, ignore_index=self.ignore_index)}
        total = losses["main"]
        if "aux_logits" in output.aux:
            losses["aux"] = F.cross_entropy(output.aux["aux_logits"].float(), target, ignore_index=self.ignore_index)
            total = total + self.aux_weight * losses["aux"]
        losses["total"] = total
        return losses

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list[OptimizerSpec]:
        """BAM ``train_base.py``: SGD (momentum 0.9); backbone at the base lr (× ``backbone_lr_multiplier``:
        10 on COCO, BAM's ``index_split: -1``), PPM and heads 10x.

        ``optimizer="adamw"`` (the base lr for every group, the backbone's × ``backbone_lr_multiplier``) is for
        the synthetic benchmark's stage 1, where SGD needs far more iterations than a CPU run can afford; a
        multiplier below 1 keeps more of a pretrained backbone's generality (0 freezes it in effect).
        """
        def trainable(module: nn.Module | None) -> list[nn.Parameter]:
            return [] if module is None else [p for p in module.parameters() if p.requires_grad]

        if self.optimizer == "adamw":
            if self.backbone_lr_multiplier == 1.0:  # one group: the recipe the shipped stage 1 was trained with
                groups = [{"params": trainable(self), "lr": base_lr}]
            else:
                in_backbone = {id(p) for p in trainable(self.backbone)}
                groups = [{"params": trainable(self.backbone), "lr": base_lr * self.backbone_lr_multiplier},
                          {"params": [p for p in trainable(self) if id(p) not in in_backbone], "lr": base_lr}]
            return [OptimizerSpec("main", "adamw", [g for g in groups if g["params"]],
                                  options={"weight_decay": weight_decay})]
        head_lr = base_lr * self.head_lr_multiplier
        groups = [{"params": trainable(self.backbone), "lr": base_lr * self.backbone_lr_multiplier},
                  {"params": trainable(self.ppm), "lr": head_lr},
                  {"params": trainable(self.head) + trainable(self.aux_head), "lr": head_lr}]
        return [OptimizerSpec("main", "sgd", [g for g in groups if g["params"]],
                              options={"momentum": 0.9, "weight_decay": weight_decay})]


def bam_pspnet_rules(official_head: str, prefix: str) -> list[tuple[str, str]]:
    """(official BAM/AMFormer name, fsslab PSPNet name) prefix pairs; ``official_head`` names the final 1x1
    classifier (``cls.4`` in BAM's PSPNet, ``base_learnear.2`` inside AMFormer), ``prefix`` is put before
    every fsslab name (``base_learner.`` inside AMFormer)."""
    rules = [(f"layer0.{i}", f"{prefix}backbone.{name}") for i, name in DEEP_STEM_FROM_SEQUENTIAL.items()]
    rules += [(f"layer{i}", f"{prefix}backbone.layer{i}") for i in range(1, 5)]
    for i in range(4):
        rules += [(f"ppm.features.{i}.1", f"{prefix}ppm.branches.{i}.conv"),
                  (f"ppm.features.{i}.2", f"{prefix}ppm.branches.{i}.bn")]
    rules += [("cls.0", f"{prefix}head.conv"), ("cls.1", f"{prefix}head.bn"), (official_head, f"{prefix}head.out")]
    return rules


def load_pspnet_weights(pspnet: nn.Module, path: str | Path) -> None:
    """Load a stage-1 PSPNet checkpoint (fsslab ``PSPNet`` or official BAM ``model/PSPNet.py`` layout) strictly."""
    state = read_official_state_dict(path)
    if not any(k.startswith("backbone.") for k in state):  # official BAM layout: layer0.., ppm.features, cls
        rules = bam_pspnet_rules("cls.4", "")
        state = {rename_by_prefix(k, rules, f"PSPNet checkpoint {path}", layout="PSPNet"): v
                 for k, v in state.items()}
    check_keys(pspnet, state, str(path))
    pspnet.load_state_dict(state, strict=True)


__all__ = ["PPM", "TRACE_KEYS", "PSPNet", "SegmentationHead", "bam_pspnet_rules", "load_pspnet_weights"]
