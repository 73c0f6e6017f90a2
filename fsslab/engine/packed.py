"""The packed weight format of the zoo: one tensor as fp32, fp16 or per-channel int8 (``fsslab.zoo`` writes and
reads packed model files; this module is the codec, below the zoo, so that a training run can start from a
shipped file: ``fsslab.engine.checkpoint.load_checkpoint`` decodes a packed weights file into a state dict).

A packed *weights file* (the zoo's ``shared/*.pt``, e.g. the shipped backbone) is
``{"format": FORMAT, "storage": ..., "tensors": {state-dict key: encoded tensor}, ...}``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

FORMAT = 1
STORAGES = ("fp32", "fp16", "int8")


def encode_tensor(tensor: torch.Tensor, storage: str) -> dict[str, torch.Tensor]:
    """One tensor in the packed format; non-float tensors are always stored exactly."""
    if not tensor.is_floating_point() or storage == "fp32":
        return {"value": tensor.clone()}
    if storage == "int8" and tensor.dim() >= 2 and tensor.numel() >= 1024:
        # symmetric per-output-channel quantisation: the scale follows each filter's own range
        flat = tensor.float().flatten(1)  # [C_out, rest]
        scale = flat.abs().amax(1).clamp_min(1e-12) / 127.0  # [C_out]
        q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {"value": q.view_as(tensor), "scale": scale}
    return {"value": tensor.to(torch.float16) if storage in ("fp16", "int8") else tensor.clone()}


def decode_tensor(item: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    value = item["value"]
    if "scale" in item:  # int8: [C_out, ...] * scale[C_out]
        value = (value.float().flatten(1) * item["scale"][:, None]).view(value.shape)
    return value.to(dtype)


def is_packed_weights(data: Any) -> bool:
    """Whether a loaded file is a packed weights file (a zoo shared file) rather than a run checkpoint."""
    return (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("tensors"), dict)
            and "model" not in data and "dtypes" not in data)


def decode_weights(tensors: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state dict of a packed weights file: float tensors back to float32 (a shared file records no dtypes:
    the models are float32), the others as stored."""
    state = {}
    for key, item in tensors.items():
        stored = item["value"]
        state[key] = decode_tensor(item, torch.float32 if stored.is_floating_point() or "scale" in item
                                   else stored.dtype)
    return state


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def fingerprint(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Shape, dtype and content hash: tensors equal bit for bit share a fingerprint."""
    data = tensor.detach().cpu().contiguous()
    return tuple(data.shape), str(data.dtype), hashlib.sha1(data.reshape(-1).view(torch.uint8).numpy().tobytes()
                                                            if data.numel() else b"").hexdigest()


__all__ = ["FORMAT", "STORAGES", "decode_tensor", "decode_weights", "dtype_name", "encode_tensor", "fingerprint",
           "is_packed_weights"]
