"""Official IPMT checkpoints <-> fsslab IPMT: reference hyper-parameters and the state_dict key mapping."""

from __future__ import annotations

from typing import Any

import torch

from fsslab.errors import CheckpointError, ConfigError
from fsslab.models.ipmt.model import IPMT

# Official names of the head modules (IPMTnetwork attributes) -> fsslab attributes; indices inside are kept.
_HEAD_NAMES = {
    "adjust_feature_supp": "support_reduce", "adjust_feature_qry": "query_reduce",
    "qry_merge_feat": "query_merge", "supp_merge_feat": "support_merge", "merge_res": "query_residual",
    "ini_cls": "initial_classifier", "merge_multi_lvl_reduce": "fusion_reduce",
    "merge_multi_lvl_sum": "fusion_residual", "cls": "classifier",
}
_ATTENTION_NAMES = {"q_fc": "q_proj", "k_fc": "k_proj", "v_fc": "v_proj", "q1_fc": "q_proj", "k1_fc": "k_proj",
                    "v1_fc": "v_proj", "proj": "out_proj"}
_FFN_NAMES = {"layers.0.0.weight": "fc1.weight", "layers.1.weight": "fc2.weight"}
_NUM_LAYERS = 5  # the official transformer's depth (index arithmetic of its flat layer_norms / ffns lists)


def build_reference_model(shot: int = 1, layers: int = 50, reproduce_official: bool = False,
                          **kwargs: Any) -> IPMT:
    """IPMT with the paper's hyper-parameters (ResNet-``layers``, hidden 384, 5 layers, 1 head, 9 points)."""
    if layers not in (50, 101):
        raise ConfigError(f"official IPMT uses ResNet-50 or ResNet-101, got layers={layers}")
    options = {"backbone": f"resnet{layers}", "pretrained": None, "shot": shot, "hidden_dim": 384,
               "num_layers": _NUM_LAYERS, "num_heads": 1, "deform_points": 9,
               "reproduce_official": reproduce_official}
    options.update(kwargs)
    return IPMT(**options)


def _transformer_key(rest: str) -> str | None:
    """Official key below ``transformer.`` -> fsslab key below ``transformer.``; None = unused official weight."""
    parts = rest.split(".")
    head = parts[0]
    if head in ("cross_layers", "decoder_cross_attention_layers"):
        layer = "support_layers" if head == "cross_layers" else "query_layers"
        inner = "attention" if head == "cross_layers" else "prototype_attention"
        return f"{layer}.{parts[1]}.{inner}.{_ATTENTION_NAMES[parts[2]]}.{'.'.join(parts[3:])}"
    if head == "qry_self_layers":
        return f"query_layers.{parts[1]}.self_attention.{'.'.join(parts[2:])}"
    if head == "layer_norms":
        index, tail = int(parts[1]), ".".join(parts[2:])
        if index < 2 * _NUM_LAYERS:  # support layer c uses norms 2c (after attention), 2c+1 (after FFN)
            return f"support_layers.{index // 2}.{('norm_attn', 'norm_ffn')[index % 2]}.{tail}"
        if index < 4 * _NUM_LAYERS:  # query layer l uses 10+2l (after deformable attn), 11+2l (after FFN)
            index -= 2 * _NUM_LAYERS
            return f"query_layers.{index // 2}.{('norm_self', 'norm_ffn')[index % 2]}.{tail}"
        return None  # layer_norms.20-29: built by the reference, never used by its forward
    if head == "ffns":
        index, tail = int(parts[1]), _FFN_NAMES[".".join(parts[2:])]
        if index < _NUM_LAYERS:
            return f"support_layers.{index}.ffn.{tail}"
        if index < 2 * _NUM_LAYERS:
            return f"query_layers.{index - _NUM_LAYERS}.ffn.{tail}"
        return None  # ffns.10-14: built, never used
    if head == "update_q":
        return f"query_updates.{parts[1]}.merge.{'.'.join(parts[3:])}"
    if head == "res_q":
        return f"query_updates.{parts[1]}.residual.{'.'.join(parts[2:])}"
    if head == "mask_embed":
        return f"mask_head.embed.{_FFN_NAMES['.'.join(parts[1:])]}"
    if head == "decoder_norm":
        return f"mask_head.norm.{'.'.join(parts[1:])}"
    if rest == "prototype.weight":
        return "initial_prototype"
    if rest == "level_embed":
        return "level_embed"
    raise KeyError(rest)


def _official_to_fsslab_key(key: str) -> str | None:
    if key.startswith("backbone.body."):
        return "backbone." + key[len("backbone.body."):]
    if key.startswith("transformer."):
        mapped = _transformer_key(key[len("transformer."):])
        return None if mapped is None else "transformer." + mapped
    head, _, tail = key.partition(".")
    if head in _HEAD_NAMES:
        return f"{_HEAD_NAMES[head]}.{tail}"
    raise KeyError(key)


def official_to_fsslab(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official IPMTnetwork state_dict (``module.`` already stripped) to fsslab names.

    The official transformer builds ``layer_norms.20-29`` and ``ffns.10-14`` (4.43 M params) but its
    forward never uses them: they are dropped here (fsslab builds no dead modules). Unknown keys raise.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        try:
            mapped = _official_to_fsslab_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if mapped is not None:
            out[mapped] = value
    if unknown:
        raise CheckpointError(f"{len(unknown)} key(s) are not part of the official IPMT layout: {unknown[:10]}")
    return out


def _fsslab_to_official_key(key: str) -> str:
    if key.startswith("backbone."):
        return "backbone.body." + key[len("backbone."):]
    head, _, tail = key.partition(".")
    if head != "transformer":
        inverse = {v: k for k, v in _HEAD_NAMES.items()}
        if head not in inverse:
            raise KeyError(key)
        return f"{inverse[head]}.{tail}"
    if tail == "initial_prototype":
        return "transformer.prototype.weight"
    if tail == "level_embed":
        return "transformer.level_embed"
    parts = tail.split(".")
    inverse_ffn = {v: k for k, v in _FFN_NAMES.items()}
    if parts[0] == "mask_head":
        if parts[1] == "embed":
            return f"transformer.mask_embed.{inverse_ffn['.'.join(parts[2:])]}"
        return f"transformer.decoder_norm.{'.'.join(parts[2:])}"
    if parts[0] == "query_updates":
        if parts[2] == "merge":
            return f"transformer.update_q.{parts[1]}.0.{'.'.join(parts[3:])}"
        return f"transformer.res_q.{parts[1]}.{'.'.join(parts[3:])}"
    layer, module, rest = int(parts[1]), parts[2], parts[3:]
    support = parts[0] == "support_layers"
    if module in ("attention", "prototype_attention"):
        base = "cross_layers" if support else "decoder_cross_attention_layers"
        names = {"q_proj": "q_fc", "k_proj": "k_fc", "v_proj": "v_fc", "out_proj": "proj"}
        name = names[rest[0]] if support or rest[0] == "out_proj" else names[rest[0]][0] + "1_fc"
        return f"transformer.{base}.{layer}.{name}.{'.'.join(rest[1:])}"
    if module == "self_attention":
        return f"transformer.qry_self_layers.{layer}.{'.'.join(rest)}"
    if module == "ffn":
        return f"transformer.ffns.{layer + (0 if support else _NUM_LAYERS)}.{inverse_ffn['.'.join(rest)]}"
    order = {"norm_attn": 0, "norm_ffn": 1, "norm_self": 0}[module]
    index = 2 * layer + order + (0 if support else 2 * _NUM_LAYERS)
    return f"transformer.layer_norms.{index}.{'.'.join(rest)}"


def fsslab_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fsslab IPMT state_dict -> official IPMTnetwork names (strict-loadable by the official code).

    The official model's unused ``layer_norms.20-29`` / ``ffns.10-14`` are filled with LayerNorm's
    default (ones / zeros) and zero FFN weights, sized from the used ones: they never affect its output.
    """
    out = {_fsslab_to_official_key(k): v for k, v in sd.items()}
    used_norm, used_ffn = out.get("transformer.layer_norms.0.weight"), out.get("transformer.ffns.0.layers.0.0.weight")
    if used_norm is not None:
        for index in range(4 * _NUM_LAYERS, 6 * _NUM_LAYERS):
            out[f"transformer.layer_norms.{index}.weight"] = torch.ones_like(used_norm)
            out[f"transformer.layer_norms.{index}.bias"] = torch.zeros_like(used_norm)
    if used_ffn is not None:
        for index in range(2 * _NUM_LAYERS, 3 * _NUM_LAYERS):
            out[f"transformer.ffns.{index}.layers.0.0.weight"] = torch.zeros_like(used_ffn)
            out[f"transformer.ffns.{index}.layers.1.weight"] = torch.zeros_like(used_ffn.t())
    return out


__all__ = ["build_reference_model", "fsslab_to_official", "official_to_fsslab"]
