"""Model zoo: ``build_model`` for every fsslab model and ``load_official`` for the papers' checkpoints."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from fsslab.errors import ConfigError
from fsslab.models.base import FewShotModel, OptimizerSpec, model_device
from fsslab.models.output import FSSOutput

# name -> "module:Class"; imported lazily so that `import fsslab.models` stays cheap.
MODEL_REGISTRY: dict[str, str] = {
    "ipmt": "fsslab.models.ipmt:IPMT",
    "amformer": "fsslab.models.amformer:AMFormer",
    "baseline": "fsslab.models.baseline:PrototypeBaseline",
    "pspnet": "fsslab.models.pspnet:PSPNet",
    "oracle": "fsslab.models.oracle:QueryLabelOracle",  # evaluation control: predicts the query's label
    "all_foreground": "fsslab.models.oracle:AllForeground",  # evaluation control: the whole query is the class
}
# models whose training reads query_base_mask (the base-class annotation), and what they learn from it
BASE_LABEL_MODELS = {"amformer": "its base learner's map is corrected by the base labels",
                     "pspnet": "the base learner is trained on the base classes"}


def model_class(name: str) -> type:
    """The class registered under ``name`` (clear error listing the valid names)."""
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid models: {sorted(MODEL_REGISTRY)}")
    module_name, cls_name = MODEL_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def model_options(name: str) -> list[str]:
    """The keyword options of the model registered as ``name``: its constructor's parameters, in order.

    Asked of the model itself, so that what takes ``shot`` (or any option) is never listed a second time."""
    return [p for p in inspect.signature(model_class(name).__init__).parameters if p != "self"]


def build_model(cfg: Mapping[str, Any] | Any) -> FewShotModel:
    """Build a model from a mapping (or dataclass with ``name`` and ``params``): ``{"name": ..., **kwargs}``.

    Unknown keyword arguments are rejected with the list of the constructor's valid ones.
    """
    if not isinstance(cfg, Mapping):  # a config dataclass: name + params
        cfg = {"name": cfg.name, **dict(getattr(cfg, "params", {}) or {})}
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name is None:
        raise ConfigError(f"model config needs a 'name' (one of {sorted(MODEL_REGISTRY)})")
    cls = model_class(name)
    valid = model_options(name)
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for model {name!r}; valid options: {valid}")
    return cls(**cfg)


def load_official(arch: str, path: str, **kwargs: Any) -> FewShotModel:
    """Build ``arch`` ("ipmt" | "amformer") with the reference hyper-parameters and load an official checkpoint."""
    from fsslab.models.official import load_official as _load

    return _load(arch, path, **kwargs)


__all__ = [
    "MODEL_REGISTRY",
    "FSSOutput",
    "FewShotModel",
    "OptimizerSpec",
    "build_model",
    "load_official",
    "model_class",
    "model_device",
    "model_options",
]
