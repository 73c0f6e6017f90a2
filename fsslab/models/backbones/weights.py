"""Loading ImageNet / PSPNet-stage weights into fsslab backbones from the layouts found in the wild."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsslab.errors import CheckpointError


@dataclass
class LoadReport:
    """What ``load_backbone_weights`` did: loaded keys, keys it ignored on purpose and why."""

    source: str
    loaded: int
    ignored: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        reasons = sorted(set(self.ignored.values()))
        return f"{self.source}: loaded {self.loaded} tensors, ignored {len(self.ignored)} ({'; '.join(reasons)})"


# PSPNet/BAM ``layer0`` Sequential index -> deep-stem module name (also used for BAM PSPNet checkpoints)
DEEP_STEM_FROM_SEQUENTIAL = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


def _read_state(path_or_state: str | Path | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_state, Mapping):
        state, source = dict(path_or_state), "<state_dict>"
    elif isinstance(path_or_state, str) and re.match(r"https?://", path_or_state):
        state = torch.hub.load_state_dict_from_url(path_or_state, map_location="cpu", weights_only=True)
        source = path_or_state
    else:
        path = Path(path_or_state)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weight file {str(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, non-tensor payloads refused by weights_only
            raise CheckpointError(f"cannot read backbone weights from {str(path)!r}: {err}") from err
        source = str(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: expected a state_dict (name -> tensor), got {type(state).__name__}")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, source


def _translate_keys(backbone: nn.Module, state: dict[str, torch.Tensor],
                    ignored: dict[str, str]) -> dict[str, torch.Tensor]:
    """Map the known file layouts onto the backbone's parameter names; record what is ignored."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head = key.split(".", 1)[0]
        if head in ("fc", "classifier", "avgpool"):
            ignored[key] = "ImageNet classifier"
            continue
        if hasattr(backbone, "feature_offsets"):  # VGGBackbone: torchvision ``features.N``
            match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
            if match:  # torchvision vgg16_bn: features.N -> the stage slice that holds module N
                index = int(match.group(1))
                stage = max((s for s in backbone.stages if backbone.feature_offsets[s] <= index),
                            key=lambda s: backbone.feature_offsets[s])
                key = f"{stage}.{index - backbone.feature_offsets[stage]}.{match.group(2)}"
        else:
            match = re.fullmatch(r"layer0\.(\d+)\.(.+)", key)
            if match and getattr(backbone, "stem", None) == "deep":  # PSPNet/BAM `layer0` Sequential
                key = f"{DEEP_STEM_FROM_SEQUENTIAL.get(match.group(1), 'layer0.' + match.group(1))}.{match.group(2)}"
        out[key] = value
    return out


def load_backbone_weights(backbone: nn.Module, path_or_state: str | Path | Mapping[str, Any]) -> LoadReport:
    """Load ImageNet (or PSPNet-stage) weights into a backbone of ``build_backbone``; strict.

    Accepts a local file read with ``weights_only=True`` (or a state_dict, or an http(s) URL fetched
    with torch.hub) in the deep-stem "v2" layout (``resnet50_v2.pth``), the torchvision layout
    (``resnet50-19c8e357.pth``, ``vgg16_bn-*.pth``) or the PSPNet ``layer0.{0,1,3,4,6,7}`` stem layout,
    optionally wrapped in ``{'state_dict': ...}`` and prefixed ``module.``. Classifier keys (``fc.*``,
    ``classifier.*``) and BatchNorm step counters are ignored and reported; anything else missing,
    unexpected or of the wrong shape raises a ValueError naming the file and the keys.
    """
    state, source = _read_state(path_or_state)
    ignored: dict[str, str] = {}
    state = _translate_keys(backbone, state, ignored)
    own = backbone.state_dict()
    for key in [k for k in state if k.endswith("num_batches_tracked") and k not in own]:
        ignored[key] = "BatchNorm step counter (frozen BN has none)"
        del state[key]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        hint = ""
        stem = state.get("conv1.weight")
        if stem is not None and stem.shape[-1] == 7 and getattr(backbone, "stem", None) == "deep":
            hint = " (the file has a 7x7 torchvision stem: build the '_tv' backbone for it)"
        elif stem is not None and stem.shape[-1] == 3 and getattr(backbone, "stem", None) == "single":
            hint = " (the file has the deep 3x3 'v2' stem: build 'resnet50'/'resnet101' for it)"
        raise CheckpointError(
            f"{source} does not match backbone {getattr(backbone, 'name', type(backbone).__name__)}{hint}: "
            f"{len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}, "
            f"{len(mismatched)} shape mismatches {mismatched[:8]}")
    # BatchNorm step counters absent from the file (torchvision / frozen-BN sources) keep their value.
    for key in [k for k in own if k.endswith("num_batches_tracked") and k not in state]:
        state[key] = own[key]
    backbone.load_state_dict(state, strict=True)
    return LoadReport(source=source, loaded=len(state), ignored=ignored)


# The ImageNet initialisations the paper configs expect (PFENet's "backbones" archive, also BAM's and IPMT's
# initmodel/): file name -> (backbone, sha256 or None where the source publishes none). docs/weights.md.
IMAGENET_FILES: dict[str, tuple[str, str | None]] = {
    "resnet50_v2.pth": ("resnet50", None),
    "resnet101_v2.pth": ("resnet101", None),
}


__all__ = ["DEEP_STEM_FROM_SEQUENTIAL", "IMAGENET_FILES", "LoadReport", "load_backbone_weights"]
