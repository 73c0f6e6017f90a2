"""Inference path of a frozen ResNet backbone with every FrozenBatchNorm folded into its convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.models.backbones import BasicBlock, Bottleneck, FrozenBatchNorm2d, ResNetBackbone


def can_fold(backbone: nn.Module) -> bool:
    """True for a ResNetBackbone whose norms are all FrozenBatchNorm2d (nothing to train, nothing to update)."""
    return isinstance(backbone, ResNetBackbone) and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())


def _conv_bn(x: torch.Tensor, conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> torch.Tensor:
    """norm(conv(x)) as one convolution: weight * scale, bias = shift (saves two passes over the activation)."""
    scale, shift = norm.scale_and_shift()
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        weight = weight.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation)


def _block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    identity = x if block.downsample is None else _conv_bn(x, block.downsample[0], block.downsample[1])
    out = F.relu_(_conv_bn(x, block.conv1, block.bn1))
    if isinstance(block, Bottleneck):
        out = F.relu_(_conv_bn(out, block.conv2, block.bn2))
        out = _conv_bn(out, block.conv3, block.bn3)
    elif isinstance(block, BasicBlock):
        out = _conv_bn(out, block.conv2, block.bn2)
    else:  # pragma: no cover - can_fold guards the backbone type
        raise TypeError(f"cannot fold block {type(block).__name__}")
    return F.relu_(out.add_(identity))


@torch.no_grad()
def folded_stage(backbone: ResNetBackbone, name: str, x: torch.Tensor) -> torch.Tensor:
    """Same as ``backbone.forward_stage(name, x)`` up to float rounding, with BN folded into the convs."""
    if name == "layer0":
        x = F.relu_(_conv_bn(x, backbone.conv1, backbone.bn1))
        if backbone.stem == "deep":
            x = F.relu_(_conv_bn(x, backbone.conv2, backbone.bn2))
            x = F.relu_(_conv_bn(x, backbone.conv3, backbone.bn3))
        return backbone.maxpool(x)
    for block in getattr(backbone, name):
        x = _block(block, x)
    return x
