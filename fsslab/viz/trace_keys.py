"""The trace entries fsslab.viz reads from IPMT and AMFormer, with accepted aliases (one place to reconcile)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# canonical name -> (accepted trace keys in order of preference, shape and meaning, batch dimension).
# The shapes follow the models' own ``TRACE_KEYS`` (fsslab/models/ipmt/model.py, fsslab/models/amformer):
# IPMT stacks per-layer entries layer-first ([L,B,...]); everything else is batch-first. L = layers, K = shots,
# h,w = feature grid, M = heads, P = points, S = generator stages (mining + refinements), N = parts.
IPMT_TRACE: dict[str, tuple[tuple[str, ...], str, int]] = {
    "prototypes": (("query_prototypes", "prototypes"), "[L,B,C] prototype after each query layer", 1),
    "mined_prototypes": (("support_prototypes",), "[L,B,C] prototype after each support mining layer", 1),
    "query_masks": (("query_layer_query_masks", "query_mask_logits"),
                    "[L,B,h,w] query mask logits of each query layer's prototype", 1),
    "mined_query_masks": (("support_layer_query_masks",),
                          "[L,B,h,w] query mask logits of each support-mined prototype (before any query update)", 1),
    "support_masks": (("query_layer_support_masks", "support_mask_logits"),
                      "[L,B,K,h,w] support mask logits of each query layer's prototype", 1),
    "prior_mask": (("prior", "prior_mask"), "[B,1,h,w] training-free prior in [0,1]", 0),
    "sampling_locations": (("sampling_locations",),
                           "[L,B,h*w,M,levels,P,2] deformable sampling points, (x, y) in [0,1]", 1),
    "attention_weights": (("sampling_weights", "attention_weights"),
                          "[L,B,h*w,M,levels,P] deformable attention weights", 1),
    "query_cross_attention": (("query_attention", "query_cross_attention"),
                              "[L,B,h,w] prototype -> query attention of each query layer", 1),
    "support_cross_attention": (("support_attention", "support_cross_attention"),
                                "[L,B,K,h,w] prototype -> support attention of each mining layer", 1),
    "support_prototype": (("support_only_prototype",), "[B,C] support-only prototype (optional)", 0),
    "query_prototype": (("query_only_prototype",), "[B,C] query-only prototype from the GT mask (optional)", 0),
    "query_feat": (("query_feat", "query_features"), "[B,C,h,w] query features, prototype space (optional)", 0),
    "support_feat": (("support_feat", "support_features"), "[B,K,C,h,w] support features (optional)", 0),
}

AMFORMER_TRACE: dict[str, tuple[tuple[str, ...], str, int]] = {
    "initial_prediction": (("initial_prediction", "initial_mask"),
                           "[B,1,h,w] prototype cosine / temperature, values below the threshold zeroed", 0),
    "stage_logits": (("meta_logits", "stage_logits"),
                     "[B,S,2,h,w] generator logits: stage 0 = object mining, stages 1.. = refinements", 0),
    "ensemble_logits": (("ensemble_logits",), "[B,S,2,h,w] each stage after the base-learner ensemble", 0),
    "refine_masks": (("refine_masks",), "[B,S-1,h,w] binary masks fed to the refinement stages", 0),
    "mined_mask": (("mined_mask",), "[B,1,h,w] G's mined foreground probability (last stage)", 0),
    "support_activation": (("similarity", "support_activation"),
                           "[B,C',h,w] max cosine of query features to support foreground (per level)", 0),
    "part_maps_real": (("part_maps_real",), "[B,levels,N,h,w] part attention over GT-masked features", 0),
    "part_maps_fake": (("part_maps_fake",), "[B,levels,N,h,w] part attention over G-masked features", 0),
    "d_score_real": (("d_score_real",), "[B,levels] D's P(real) for the ground truth", 0),
    "d_score_fake": (("d_score_fake",), "[B,levels] D's P(real) for G's mask", 0),
    "gram_estimate": (("gram_estimate",), "[B] Gram-matrix estimate of the support-query gap", 0),
    "base_map": (("base_map",), "[B,1,h,w] base learner's probability of base classes", 0),
}


def find(trace: Mapping[str, Any], spec: Mapping[str, tuple[tuple[str, ...], str, int]], name: str,
         required: bool = True) -> Any:
    """The (batched) trace entry ``name`` under any accepted alias; a clear error lists what the trace holds."""
    aliases, meaning, _ = spec[name]
    for alias in aliases:
        if alias in trace and trace[alias] is not None:
            value = trace[alias]
            return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if required:
        raise KeyError(f"trace has no '{name}' ({meaning}); looked for {list(aliases)}, "
                       f"trace keys are {sorted(trace)}")
    return None


def episode_entry(trace: Mapping[str, Any], spec: Mapping[str, tuple[tuple[str, ...], str, int]], name: str,
                  index: int, required: bool = True) -> torch.Tensor | None:
    """Trace entry ``name`` of episode ``index`` (its batch dimension removed, layers kept first)."""
    value = find(trace, spec, name, required)
    if value is None:
        return None
    batch_dim = spec[name][2]
    if not 0 <= index < value.shape[batch_dim]:
        raise IndexError(f"episode index {index} out of range: trace entry '{name}' holds {value.shape[batch_dim]}")
    return value.select(batch_dim, index)
