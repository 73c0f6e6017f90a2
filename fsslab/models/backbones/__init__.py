"""Feature backbones (deep-stem / torchvision ResNets, VGG-16-bn, a tiny ResNet) with dilation and weight loading.

``networks``: the modules and ``build_backbone``; ``weights``: loading ImageNet / PSPNet-stage files from
the layouts found in the wild; ``folded``: the cached conv+FrozenBN inference path of a frozen ResNet.
"""

from fsslab.models.backbones.folded import frozen_stage_runner
from fsslab.models.backbones.networks import (
    BACKBONE_NAMES,
    DILATION_MODES,
    NORM_KINDS,
    BasicBlock,
    Bottleneck,
    FrozenBatchNorm2d,
    ResNetBackbone,
    VGGBackbone,
    block_geometry,
    build_backbone,
    conv_norm,
    make_norm,
    set_norm_folding,
)
from fsslab.models.backbones.weights import LoadReport, load_backbone_weights

__all__ = [
    "BACKBONE_NAMES",
    "DILATION_MODES",
    "NORM_KINDS",
    "BasicBlock",
    "Bottleneck",
    "FrozenBatchNorm2d",
    "LoadReport",
    "ResNetBackbone",
    "VGGBackbone",
    "block_geometry",
    "build_backbone",
    "conv_norm",
    "frozen_stage_runner",
    "load_backbone_weights",
    "make_norm",
    "set_norm_folding",
]
