"""Official AMFormer (github:Wyxdm/AMNet) checkpoints <-> fsslab AMFormer.

Key layout differences are pure renames (listed in ``_rules``), with one exception: the official
``supp_merge`` conv (a support-side 1x1 conv whose output is never used by the official forward) has
no counterpart in fsslab. Its keys are **dropped** on import (recorded in the log, never silently) and
exported as zeros, so an exported checkpoint loads strictly into the official model with the same
outputs.
"""

from __future__ import annotations

import logging

import torch

from fsslab.errors import ConfigError
from fsslab.models.amformer.model import AMFormer
from fsslab.models.official import rename_by_prefix
from fsslab.models.pspnet import bam_pspnet_rules

log = logging.getLogger(__name__)

DEAD_OFFICIAL_PREFIXES = ("supp_merge.",)
_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.attn.linear_q": "attn.q_proj",
          "attn.attn.linear_k": "attn.k_proj", "attn.attn.linear_v": "attn.v_proj",
          "attn.attn.linear_o": "attn.out_proj", "attn.sr": "attn.reduce", "attn.norm": "attn.reduce_norm",
          "ffn.layers.0": "ffn.fc1", "ffn.layers.1": "ffn.dwconv", "ffn.layers.4": "ffn.fc2"}
_PART = {"parts": "part_queries", "q_fc": "q_proj", "k_fc": "k_proj", "v_fc": "v_proj", "proj": "out_proj",
         "layer_norms": "norm", "ffn.layers.0.0": "ffn_in", "ffn.layers.1": "ffn_out"}


def _rules() -> list[tuple[str, str]]:
    """(official prefix, fsslab prefix) pairs; a key maps through its longest matching prefix."""
    rules = bam_pspnet_rules("base_learnear.2", "base_learner.")
    rules += [("down_supp", "reduce_support"), ("down_query", "reduce_query"), ("query_merge", "query_fusion"),
              ("gram_merge", "gram_fusion"), ("cls_merge", "learner_fusion"), ("kshot_rw", "shot_reweight")]
    mt, g = "transformer.mix_transformer.", "generator."

    def block(off: str, fss: str) -> list[tuple[str, str]]:
        return [(f"{off}.{a}", f"{fss}.{b}") for a, b in _BLOCK.items()]

    for i in range(3):
        off, fss = f"{mt}down_sample_layers.{i}", f"{g}encoder_stages.{i}"
        rules += [(f"{off}.0.projection", f"{fss}.embed"), (f"{off}.0.norm", f"{fss}.embed_norm"),
                  (f"{off}.3", f"{fss}.norm")]
        rules += block(f"{off}.1", f"{fss}.blocks.0") + block(f"{off}.2", f"{fss}.blocks.1")
    mining = [f"{mt}match_layers1.{i}" for i in range(3)] + [f"{mt}match_layers_r1.0", f"{mt}match_layers_r2.0"]
    for j, off in enumerate(mining):
        rules += block(f"{off}.0", f"{g}mining_layers.{j}.block")
        rules += [(f"{off}.1.conv", f"{g}mining_layers.{j}.fuse.0"), (f"{off}.1.bn", f"{g}mining_layers.{j}.fuse.1")]
    fusion = [f"{mt}parse_layers.{i}" for i in range(3)] + [f"{mt}parse_layer_r1", f"{mt}parse_layer_r2"]
    rules += [(off, f"{g}fusion_heads.{j}") for j, off in enumerate(fusion)]
    rules += [(f"{mt}{name}", f"{g}mask_heads.{j}") for j, name in enumerate(("cls", "cls_r1", "cls_r2"))]
    for i in range(3):
        rules += [(f"part.{i}.{a}", f"discriminator.part_attention.{i}.{b}") for a, b in _PART.items()]
        rules += [(f"binary_cls.{i}.conv", f"discriminator.classifiers.{i}.net")]
    return rules


def official_to_fsslab(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official AMFormer state_dict (no ``module.`` prefix) -> fsslab ``AMFormer`` state_dict."""
    rules = _rules()
    dead = sorted(k for k in sd if k.startswith(DEAD_OFFICIAL_PREFIXES))
    if dead:
        log.info("dropping %d official key(s) of the unused supp_merge branch: %s", len(dead), dead)
    return {rename_by_prefix(k, rules, "official"): v for k, v in sd.items() if k not in dead}


def fsslab_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fsslab ``AMFormer`` state_dict -> official layout (``supp_merge.0.weight`` exported as zeros)."""
    rules = [(b, a) for a, b in _rules()]
    out = {rename_by_prefix(k, rules, "fsslab"): v for k, v in sd.items()}
    hidden, fused = sd["reduce_support.0.weight"].shape[0], sd["query_fusion.0.weight"].shape[0]
    out["supp_merge.0.weight"] = sd["query_fusion.0.weight"].new_zeros(fused, 2 * hidden, 1, 1)
    return out


def build_reference_model(shot: int = 1, layers: int = 50, dataset: str = "pascal",
                          reproduce_official: bool = False, **kw) -> AMFormer:
    """AMFormer with the hyper-parameters of ``config/<dataset>/<dataset>_split0_resnet<layers>_manet.yaml``."""
    if dataset not in ("pascal", "coco"):
        raise ConfigError(f"unknown dataset {dataset!r}; valid: 'pascal', 'coco'")
    if layers not in (50, 101):
        raise ConfigError(f"AMFormer reference backbones are ResNet-50/101, got layers={layers}")
    kw.setdefault("n_base_classes", 15 if dataset == "pascal" else 60)
    return AMFormer(backbone=f"resnet{layers}", shot=shot, reproduce_official=reproduce_official, **kw)
