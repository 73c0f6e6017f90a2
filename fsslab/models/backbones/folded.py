"""Inference path of a frozen ResNet: each fixed norm folded into its conv, folded weights cached, and on CPU
the ReLU and the residual sum fused into the convolution.

``networks.conv_norm`` folds too but recomputes ``W * scale`` (and, under autocast, the bf16 cast) at
every call; a backbone that never trains (IPMT's, AMFormer's frozen base learner) can cache the folded
weights per (layout, dtype) until a tensor changes -- 2-5% of a 473x473 forward on CPU. On CPU in fp32,
oneDNN applies ``relu(conv + bias)`` and ``relu(conv + bias + identity)`` as post-ops of the convolution
(``torch.ops.mkldnn._convolution_pointwise``, the kernel ``torch.compile`` emits for the same pattern): the
same arithmetic in the same order, without the separate passes of ``relu_`` and ``add_`` over every
activation (bit-equal to the plain stages in channels_last, the models' layout; within float rounding in
NCHW, where oneDNN may choose another algorithm; tests/test_backbones.py). ``frozen_stage_runner`` is the one entry point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.models.backbones.networks import BasicBlock, Bottleneck, ResNetBackbone, fixed_affine

Norm = nn.Module  # FrozenBatchNorm2d, or BatchNorm2d in eval mode (see ``can_fold``)


def can_fold(backbone: nn.Module) -> bool:
    """True for a frozen ResNetBackbone (no parameter requires grad) whose every norm is a fixed affine that
    may be folded: FrozenBatchNorm2d, or BatchNorm2d in eval mode (a frozen PSPNet's), with folding left on
    (``set_norm_folding(backbone, False)`` asks for the references' exact arithmetic)."""
    if not isinstance(backbone, ResNetBackbone) or any(p.requires_grad for p in backbone.parameters()):
        return False
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             or hasattr(m, "fold_into_conv")]
    return all(fixed_affine(m) is not None for m in norms)


def _folded(conv: nn.Conv2d, norm: Norm, channels_last: bool,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight * scale, bias * scale + shift) in the layout / dtype the convolution will use, cached on the
    conv until any of its tensors changes (in-place updates bump ``_version``, new tensors change ``data_ptr``)."""
    def fold() -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = fixed_affine(norm)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        return conv.weight * scale.view(-1, 1, 1, 1), bias

    if torch.compiler.is_compiling():  # traced graphs fold the constants themselves; no Python-side cache
        weight, bias = fold()
        return weight.to(dtype), bias.to(dtype)
    tensors = [conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var]
    state = tuple((t.data_ptr(), t._version) for t in tensors if t is not None)
    cache = conv.__dict__.setdefault("_fsslab_folded", {})  # plain attribute: not in state_dict
    cached = cache.get((channels_last, dtype))
    if cached is not None and cached[0] == state:
        return cached[1]
    weight, bias = fold()
    if channels_last:
        weight = weight.contiguous(memory_format=torch.channels_last)
    folded = (weight.to(dtype), bias.to(dtype))
    cache[(channels_last, dtype)] = (state, folded)
    return folded


def _fusable(x: torch.Tensor) -> bool:
    """oneDNN post-op fusion: CPU fp32 (bf16 keeps the plain path: the fused kernels' bf16 rounding differs),
    outside a traced graph (``torch.compile`` fuses by itself)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and not torch.compiler.is_compiling())


def _conv_bn(x: torch.Tensor, conv: nn.Conv2d, norm: Norm, relu: bool = False,
             residual: torch.Tensor | None = None) -> torch.Tensor:
    """``relu?(norm(conv(x)) [+ residual])`` as one convolution: weight * scale, bias = shift (saves two passes
    over the activation), the ReLU and the residual sum fused into it on CPU (two more)."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else conv.weight.dtype
    x = x.to(dtype)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    weight, bias = _folded(conv, norm, channels_last, dtype)
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if _fusable(x) and isinstance(conv.padding, tuple) and (residual is None or residual.dtype == x.dtype):
        unary = "relu" if relu else None
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *geometry, unary or "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, weight, bias, *geometry, "add", None,
                                                               unary, [], "")
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        out = out.add_(residual)
    return F.relu_(out) if relu else out


def _block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    identity = x if block.downsample is None else _conv_bn(x, block.downsample[0], block.downsample[1])
    out = _conv_bn(x, block.conv1, block.bn1, relu=True)
    if isinstance(block, Bottleneck):
        out = _conv_bn(out, block.conv2, block.bn2, relu=True)
        return _conv_bn(out, block.conv3, block.bn3, relu=True, residual=identity)
    if isinstance(block, BasicBlock):
        return _conv_bn(out, block.conv2, block.bn2, relu=True, residual=identity)
    raise TypeError(f"cannot fold block {type(block).__name__}")  # pragma: no cover - can_fold guards it


@torch.no_grad()
def folded_stage(backbone: ResNetBackbone, name: str, x: torch.Tensor) -> torch.Tensor:
    """Same as ``backbone.forward_stage(name, x)`` up to float rounding, with BN folded into the convs."""
    if name == "layer0":
        x = _conv_bn(x, backbone.conv1, backbone.bn1, relu=True)
        if backbone.stem == "deep":
            x = _conv_bn(x, backbone.conv2, backbone.bn2, relu=True)
            x = _conv_bn(x, backbone.conv3, backbone.bn3, relu=True)
        return backbone.maxpool(x)
    for block in getattr(backbone, name):
        x = _block(block, x)
    return x


def frozen_stage_runner(backbone: nn.Module) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """``run(stage, x)`` for a frozen backbone: ``backbone.forward_stage`` with every fixed norm folded into its
    conv, the folded weights cached and the ReLU / residual sum fused (``folded_stage``) when ``can_fold``,
    else the plain stage (a backbone that trains, or a norm asked not to fold)."""
    if can_fold(backbone):  # same function, four passes over each activation fewer
        def run(stage: str, x: torch.Tensor) -> torch.Tensor:
            return folded_stage(backbone, stage, x)

        return run
    return backbone.forward_stage


__all__ = ["can_fold", "folded_stage", "frozen_stage_runner"]
