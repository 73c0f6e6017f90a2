"""The trace entries fsslab.viz reads, derived from the models' own ``TRACE_KEYS`` (one place states them).

Each spec maps a trace key to (shape and meaning, batch dimension). The batch dimension is where the key's
documented shape names ``B``: IPMT stacks per-layer entries layer-first ([L,B,...]); everything else is
batch-first; an entry shared by the batch ([2] fusion weights) has none. Shapes use L = layers, K = shots,
h,w = feature grid, M = heads, P = points, N = parts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from fsslab.models.amformer import TRACE_KEYS as AMFORMER_TRACE_KEYS
from fsslab.models.ipmt import TRACE_KEYS as IPMT_TRACE_KEYS

TraceSpec = Mapping[str, tuple[str, "int | None"]]


def trace_spec(keys: Mapping[str, str]) -> dict[str, tuple[str, int | None]]:
    """``{key: (description, batch dim)}`` from a model's ``TRACE_KEYS`` ``{key: "[shape]: meaning"}``."""
    spec: dict[str, tuple[str, int | None]] = {}
    for key, description in keys.items():
        shape = re.search(r"\[([^\]]*)\]", description)
        if shape is None:
            raise ValueError(f"TRACE_KEYS[{key!r}] states no [shape]: {description!r}")
        dims = [d.strip() for d in shape.group(1).split(",")]
        spec[key] = (description, dims.index("B") if "B" in dims else None)
    return spec


IPMT_TRACE = trace_spec(IPMT_TRACE_KEYS)
AMFORMER_TRACE = trace_spec(AMFORMER_TRACE_KEYS)


def find(trace: Mapping[str, Any], spec: TraceSpec, name: str, required: bool = True) -> Any:
    """The (batched) trace entry ``name``; a clear error gives its documented shape and lists what the trace
    holds."""
    if name not in spec:
        raise KeyError(f"'{name}' is not a documented trace key; documented: {sorted(spec)}")
    value = trace.get(name)
    if value is not None:
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if required:
        raise KeyError(f"trace has no '{name}' ({spec[name][0]}); trace keys are {sorted(trace)}")
    return None


def episode_entry(trace: Mapping[str, Any], spec: TraceSpec, name: str, index: int,
                  required: bool = True) -> torch.Tensor | None:
    """Trace entry ``name`` of episode ``index`` (its batch dimension removed, layers kept first)."""
    value = find(trace, spec, name, required)
    if value is None:
        return None
    batch_dim = spec[name][1]
    if batch_dim is None:  # shared by the whole batch
        return value
    if not 0 <= index < value.shape[batch_dim]:
        raise IndexError(f"episode index {index} out of range: trace entry '{name}' holds {value.shape[batch_dim]}")
    return value.select(batch_dim, index)


__all__ = ["AMFORMER_TRACE", "IPMT_TRACE", "episode_entry", "find", "trace_spec"]
