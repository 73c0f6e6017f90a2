"""The backbone networks (deep-stem / torchvision ResNets, VGG-16-bn, a tiny ResNet) with dilation, and ``build_backbone``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.errors import CheckpointError, ConfigError
from fsslab.files import sha256_file
from fsslab.models.backbones.weights import LoadReport, load_backbone_weights

BACKBONE_NAMES = ("resnet50", "resnet101", "resnet50_tv", "resnet101_tv", "vgg16", "resnet_tiny")
DILATION_MODES = ("torchvision", "pspnet", "none")
NORM_KINDS = ("frozen", "batch")

# Only used when a caller explicitly asks for them (pretrained="torchvision" or an http(s) URL).
TORCHVISION_URLS = {
    "resnet50_tv": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101_tv": "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: ``x * scale + shift``.

    The four buffers keep the ``BatchNorm2d`` state_dict names so ImageNet files load unchanged.
    ``scale = weight * rsqrt(running_var + eps)`` and ``shift = bias - running_mean * scale`` are
    computed in the same float order as the references (``forward`` is bit-equal to theirs). Inside
    the ResNets the affine is normally folded into the preceding conv instead (``conv_norm``;
    ``fold_into_conv=False`` keeps this module's own forward). Under autocast the affine is cast to
    the activation dtype so bf16/fp16 activations are not promoted to fp32.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, fold_into_conv: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        # read by ``conv_norm``: apply the affine through the preceding conv's weights and bias
        self.fold_into_conv = fold_into_conv
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm2d files carry a step counter that has no meaning for frozen statistics.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[C], [C]: the affine that this layer applies."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N,C,H,W] -> [N,C,H,W], memory format kept
        scale, shift = self.scale_and_shift()
        if x.dtype != scale.dtype:
            scale, shift = scale.to(x.dtype), shift.to(x.dtype)
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, fold_into_conv={self.fold_into_conv}"


def fixed_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) when ``norm`` is a fixed per-channel affine that may be folded, else None."""
    if isinstance(norm, FrozenBatchNorm2d):
        return norm.scale_and_shift() if norm.fold_into_conv else None
    if (isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None
            and getattr(norm, "fold_into_conv", True)):
        scale = (norm.running_var + norm.eps).rsqrt()
        scale = scale if norm.weight is None else norm.weight * scale
        shift = -norm.running_mean * scale
        return scale, shift if norm.bias is None else norm.bias + shift
    return None


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, with a fixed norm (FrozenBatchNorm2d, or BatchNorm2d in eval) folded into the conv.

    Folding (``W * scale``, bias ``shift``) saves one full read+write of every activation (~10% of a
    dilated ResNet-50 forward on CPU) and the conv applies the bias for free. It is recomputed at
    every call (no cached weight copies; gradients reach ``conv.weight`` and the norm's affine as
    usual) and differs from the unfolded arithmetic only by float rounding (~1e-6 relative). Set
    ``fold_into_conv = False`` on a norm (``set_norm_folding``) for the references' exact arithmetic.
    """
    affine = fixed_affine(norm)
    if affine is None:
        return norm(conv(x))
    scale, shift = affine
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv._conv_forward(x, weight, bias)


def set_norm_folding(module: nn.Module, enabled: bool) -> nn.Module:
    """Turn conv+norm folding on/off for every FrozenBatchNorm2d / BatchNorm2d inside ``module``."""
    for m in module.modules():
        if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            m.fold_into_conv = enabled
    return module


def make_norm(norm: str, channels: int) -> nn.Module:
    """``"frozen"`` -> FrozenBatchNorm2d, ``"batch"`` -> nn.BatchNorm2d (both eps 1e-5)."""
    if norm == "frozen":
        return FrozenBatchNorm2d(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ConfigError(f"unknown norm {norm!r}; valid: {list(NORM_KINDS)}")


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride and the dilation, as in the references) -> 1x1, expansion 4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, dilation: int, norm: str,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = make_norm(norm, cout)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        out = F.relu(conv_norm(self.conv1, self.bn1, x), inplace=True)
        out = F.relu(conv_norm(self.conv2, self.bn2, out), inplace=True)
        out = conv_norm(self.conv3, self.bn3, out)
        out += identity  # in place: the affine's output is not needed by autograd
        return F.relu(out, inplace=True)


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first carries the stride; both carry the dilation), expansion 1."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, dilation: int, norm: str,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride, dilation)
        self.bn1 = make_norm(norm, width)
        self.conv2 = _conv3x3(width, width, 1, dilation)
        self.bn2 = make_norm(norm, width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        out = F.relu(conv_norm(self.conv1, self.bn1, x), inplace=True)
        out = conv_norm(self.conv2, self.bn2, out)
        out += identity
        return F.relu(out, inplace=True)


def block_geometry(dilation: str, depths: tuple[int, ...]) -> list[list[tuple[int, int]]]:
    """(stride, dilation) of every block of layer1..layer4 for a dilation mode (output stride 8 or 32).

    ``"torchvision"`` (``replace_stride_with_dilation=[False, True, True]``, IPMT): the first block of
    layer3 keeps dilation 1 and the rest use 2; layer4 starts at 2 and continues with 4.
    ``"pspnet"`` (PSPNet / BAM / AMFormer): every block of layer3 uses 2, every block of layer4 uses 4.
    ``"none"``: plain strides, output stride 32.
    """
    if dilation not in DILATION_MODES:
        raise ConfigError(f"unknown dilation mode {dilation!r}; valid: {list(DILATION_MODES)}")
    geometry = [[(1, 1)] * depths[0], [(2, 1)] + [(1, 1)] * (depths[1] - 1)]
    for stage, depth in ((3, depths[2]), (4, depths[3])):
        rate = 2 if stage == 3 else 4
        if dilation == "none":
            geometry.append([(2, 1)] + [(1, 1)] * (depth - 1))
        elif dilation == "torchvision":
            geometry.append([(1, rate // 2)] + [(1, rate)] * (depth - 1))
        else:
            geometry.append([(1, rate)] * depth)
    return geometry


class StagedBackbone(nn.Module):
    """A backbone made of named stages (``self.stages``, each a module or method taking the previous output)."""

    stages: list[str]

    def forward_stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Run one stage (``"layer0"``..``"layer4"``) on the previous stage's output."""
        if name not in self.stages:
            raise ValueError(f"unknown stage {name!r}; stages: {self.stages}")
        return getattr(self, name)(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage output (with dilation, ResNet layer2..4 share output stride 8)."""
        feats: dict[str, torch.Tensor] = {}
        for name in self.stages:
            x = feats[name] = self.forward_stage(name, x)
        return feats


class ResNetBackbone(StagedBackbone):
    """ResNet feature extractor; stages ``layer0`` (stem + max-pool) and ``layer1``..``layer4``.

    ``stem="deep"``: three 3x3 convs (``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3``), the PSPNet "v2"
    ResNet of ``resnet50_v2.pth``; ``stem="single"``: one 7x7 conv (torchvision layout). Parameter
    names match those files so that they load without renaming.
    """

    def __init__(self, block: type[nn.Module], depths: tuple[int, ...], widths: tuple[int, ...],
                 stem: str, stem_widths: tuple[int, ...], dilation: str = "pspnet", norm: str = "frozen") -> None:
        super().__init__()
        self.stem, self.dilation_mode, self.norm_kind = stem, dilation, norm
        if stem == "deep":
            c1, c2, c3 = stem_widths
            self.conv1, self.bn1 = _conv3x3(3, c1, stride=2), make_norm(norm, c1)
            self.conv2, self.bn2 = _conv3x3(c1, c2), make_norm(norm, c2)
            self.conv3, self.bn3 = _conv3x3(c2, c3), make_norm(norm, c3)
        elif stem == "single":
            c3 = stem_widths[-1]
            self.conv1 = nn.Conv2d(3, c3, 7, stride=2, padding=3, bias=False)
            self.bn1 = make_norm(norm, c3)
        else:
            raise ConfigError(f"unknown stem {stem!r}; valid: ['deep', 'single']")
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        cin = c3
        self.out_channels: dict[str, int] = {"layer0": c3}
        for index, (width, blocks) in enumerate(zip(widths, block_geometry(dilation, depths)), start=1):
            cout = width * block.expansion
            stride0 = blocks[0][0]
            downsample = None
            if stride0 != 1 or cin != cout:
                downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride0, bias=False),
                                           make_norm(norm, cout))
            layer = [block(cin, width, stride0, blocks[0][1], norm, downsample)]
            layer += [block(cout, width, 1, rate, norm, None) for _, rate in blocks[1:]]
            self.add_module(f"layer{index}", nn.Sequential(*layer))
            self.out_channels[f"layer{index}"] = cin = cout
        self.stages = ["layer0", "layer1", "layer2", "layer3", "layer4"]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def layer0(self, x: torch.Tensor) -> torch.Tensor:  # [N,3,H,W] -> [N,C0,ceil(H/4),ceil(W/4)]
        x = F.relu(conv_norm(self.conv1, self.bn1, x), inplace=True)
        if self.stem == "deep":
            x = F.relu(conv_norm(self.conv2, self.bn2, x), inplace=True)
            x = F.relu(conv_norm(self.conv3, self.bn3, x), inplace=True)
        return self.maxpool(x)



# VGG-16 configuration "D" grouped as the references' ``get_vgg16_layer`` slices ``features``:
# layer0 = features[0:7], layer1 = [7:14], layer2 = [14:24], layer3 = [24:34], layer4 = [34:43]
# (the final max-pool, features[43], is dropped). Each stage ends with a ceil-mode 2x2 max-pool
# except layer4, so layer3/layer4 are at output stride 16 (60x60 -> 30x30 at 473).
_VGG_STAGES = ((64, 64, "M"), (128, 128, "M"), (256, 256, 256, "M"), (512, 512, 512, "M"), (512, 512, 512))


class VGGBackbone(StagedBackbone):
    """VGG-16 with BatchNorm (``vgg16_bn``) as five stages; convs keep their biases; norms are not folded."""

    def __init__(self, norm: str = "frozen") -> None:
        super().__init__()
        self.norm_kind = norm
        cin = 3
        self.out_channels = {}
        # index in torchvision's ``features`` of each stage's first module, for weight loading
        self.feature_offsets: dict[str, int] = {}
        offset = 0
        for index, spec in enumerate(_VGG_STAGES):
            modules: list[nn.Module] = []
            for item in spec:
                if item == "M":
                    modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                else:
                    modules += [nn.Conv2d(cin, item, 3, padding=1), make_norm(norm, item), nn.ReLU(inplace=True)]
                    cin = item
            name = f"layer{index}"
            self.add_module(name, nn.Sequential(*modules))
            self.out_channels[name], self.feature_offsets[name] = cin, offset
            offset += len(modules)
        self.stages = [f"layer{i}" for i in range(len(_VGG_STAGES))]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)



_RESNET_SPECS: dict[str, dict[str, Any]] = {
    "resnet50": {"block": Bottleneck, "depths": (3, 4, 6, 3), "stem": "deep", "stem_widths": (64, 64, 128)},
    "resnet101": {"block": Bottleneck, "depths": (3, 4, 23, 3), "stem": "deep", "stem_widths": (64, 64, 128)},
    "resnet50_tv": {"block": Bottleneck, "depths": (3, 4, 6, 3), "stem": "single", "stem_widths": (64,)},
    "resnet101_tv": {"block": Bottleneck, "depths": (3, 4, 23, 3), "stem": "single", "stem_widths": (64,)},
    # Small BasicBlock ResNet for CPU work on the synthetic benchmark, trained from scratch:
    # 1.6 M parameters, ~1.5 GFLOP per 160x160 image, output stride 8.
    "resnet_tiny": {"block": BasicBlock, "depths": (2, 2, 2, 1), "stem": "deep", "stem_widths": (16, 16, 32),
                    "widths": (32, 64, 128, 256)},
}


def build_backbone(name: str, pretrained: str | Path | Mapping[str, Any] | None = None,
                   dilation: str | None = None, norm: str = "frozen", fold_norm: bool = True) -> nn.Module:
    """Build a backbone by name (see ``BACKBONE_NAMES``) and optionally load ImageNet weights.

    dilation: ``"torchvision"`` | ``"pspnet"`` | ``"none"``; None means ``"pspnet"`` (output stride 8).
              VGG-16 has a single layout (the references'; layer3/4 at stride 16) and accepts only
              None, ``"none"`` or ``"pspnet"`` (the PSPNet/BAM code uses it unchanged).
    norm:     ``"frozen"`` (FrozenBatchNorm2d) | ``"batch"`` (nn.BatchNorm2d).
    fold_norm: fold fixed norms into the ResNet convs at forward time (``conv_norm``; faster,
              equal up to float rounding); False keeps the references' exact arithmetic.
    pretrained: None, a local file / state_dict (see ``load_backbone_weights``), ``"torchvision"``
              (download the torchvision ImageNet file of ``*_tv``/``vgg16`` with torch.hub) or an
              explicit http(s) URL.
    """
    if norm not in NORM_KINDS:
        raise ConfigError(f"unknown norm {norm!r}; valid: {list(NORM_KINDS)}")
    if name == "vgg16":
        if dilation not in (None, "none", "pspnet"):
            raise ConfigError(f"vgg16 has no dilation mode {dilation!r}; use None, 'none' or 'pspnet'")
        backbone: nn.Module = VGGBackbone(norm=norm)
    elif name in _RESNET_SPECS:
        spec = dict(_RESNET_SPECS[name])
        spec.setdefault("widths", (64, 128, 256, 512))
        backbone = ResNetBackbone(dilation=dilation or "pspnet", norm=norm, **spec)
    else:
        raise ConfigError(f"unknown backbone {name!r}; valid: {list(BACKBONE_NAMES)}")
    backbone.name = name
    set_norm_folding(backbone, fold_norm)
    if pretrained is not None:
        if isinstance(pretrained, str) and pretrained == "torchvision":
            if name not in TORCHVISION_URLS:
                raise ConfigError(f"no torchvision ImageNet file for {name!r} (available for "
                                 f"{sorted(TORCHVISION_URLS)}); pass a local file such as resnet50_v2.pth")
            pretrained = TORCHVISION_URLS[name]
        load_backbone_weights(backbone, pretrained)
    return backbone



def check_backbone_file(path: str | Path, backbone: str, expected_sha256: str | None = None) -> LoadReport:
    """Check that ``path`` loads into a fresh ``backbone`` (key names and shapes, as ``load_backbone_weights``
    does at the start of a run) and, when given, that its sha256 is ``expected_sha256``; raises CheckpointError
    (FileNotFoundError when it is not there)."""
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise CheckpointError(f"{path}: sha256 {actual} is not the published {expected_sha256}")
    return load_backbone_weights(build_backbone(backbone), path)


