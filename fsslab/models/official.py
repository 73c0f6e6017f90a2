"""Load checkpoints saved by the official IPMT / AMFormer scripts into fsslab models (and export back)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from fsslab.errors import CheckpointError, ConfigError

# arch -> module providing build_reference_model(**kw), official_to_fsslab(sd), fsslab_to_official(sd)
_OFFICIAL_MODULES = {"ipmt": "fsslab.models.ipmt.official", "amformer": "fsslab.models.amformer.official"}


def _arch_module(arch: str):
    if arch not in _OFFICIAL_MODULES:
        raise ConfigError(f"no official checkpoint format for {arch!r}; valid: {sorted(_OFFICIAL_MODULES)}")
    return importlib.import_module(_OFFICIAL_MODULES[arch])


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``{'state_dict': ...}`` or a plain state_dict safely; strip DataParallel/DDP ``module.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or pickled objects that weights_only refuses
        raise CheckpointError(f"cannot read checkpoint {path} safely (weights_only=True): {err}") from err
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (expected {{'state_dict': {{name: tensor}}}})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, hint: str = "") -> None:
    """Raise a CheckpointError summarising missing / unexpected / mis-shaped keys, if any.

    Only the counts and the first few keys of each kind are named: torch's own error lists every key (tens of
    kilobytes for another model), which hides the one fact that matters, that the checkpoint is of another
    model or width. ``hint`` is appended (e.g. what the checkpoint was trained as).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def first(items: list[str]) -> str:
            return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")

        kinds = (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes))
        details = "; ".join(f"{name}: {first(items)}" for name, items in kinds if items)
        raise CheckpointError(
            f"checkpoint {source} does not match the model: {len(missing)} missing / {len(unexpected)} unexpected "
            f"/ {len(shapes)} shape-mismatched keys (first few: {details}){hint}")


def rename_by_prefix(key: str, rules: list[tuple[str, str]], source: str, layout: str = "AMFormer") -> str:
    """``key`` renamed through its longest matching ``(old prefix, new prefix)`` rule (a whole dotted prefix)."""
    best = max((r for r in rules if key == r[0] or key.startswith(r[0] + ".")), key=lambda r: len(r[0]),
               default=None)
    if best is None:
        raise CheckpointError(f"{source} key {key!r} has no counterpart (unknown {layout} checkpoint layout)")
    return best[1] + key[len(best[0]):]


def load_official(arch: str, path: str | Path, **kwargs: Any) -> torch.nn.Module:
    """Build ``arch`` with the reference hyper-parameters (kwargs: shot, layers, reproduce_official, ...)
    and load the official checkpoint at ``path``; the model is returned in eval mode."""
    module = _arch_module(arch)
    model = module.build_reference_model(**kwargs)
    state = module.official_to_fsslab(read_official_state_dict(path))
    check_keys(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_official(arch: str, model: torch.nn.Module, path: str | Path, epoch: int = 0) -> None:
    """Save ``model`` in the official scripts' format (``{'epoch', 'state_dict': {'module.'+key}}``)."""
    state = _arch_module(arch).fsslab_to_official(model.state_dict())
    torch.save({"epoch": epoch, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
