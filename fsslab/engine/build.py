"""From a RunConfig to the datasets and the model of a run: what training, evaluation and inference share.

These adapters read what is on disk and never prepare it: a missing synthetic benchmark or prerequisite run is an
error naming the command that prepares it (``fsslab.engine.prerequisites``). Nothing here imports the training
loop, so loading a model for inference stays light.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsslab.config import RunConfig
from fsslab.data import build_dataset
from fsslab.data.base_data import BaseClassDataset
from fsslab.data.classes import get_benchmark
from fsslab.data.episodes.benchmarks import CocoEpisodes
from fsslab.data.episodes.folder import FolderEpisodes, FSS1000Episodes
from fsslab.data.episodes.options import EpisodeOptions
from fsslab.data.lists import TRAINING_SPLITS
from fsslab.data.synthetic import label_classes_on_disk
from fsslab.engine.checkpoint import load_checkpoint
from fsslab.engine.controls import with_supports
from fsslab.engine.prerequisites import check_data
from fsslab.engine.sampling import seed_everything
from fsslab.errors import CheckpointError, ConfigError
from fsslab.models import BASE_LABEL_MODELS, MODEL_REGISTRY, build_model, model_options
from fsslab.models.official import check_keys
from fsslab.models.oracle import CONTROL_MODELS


def dataset_options(cfg: RunConfig, split: str) -> tuple[Any, dict[str, Any]]:
    """``(EpisodeOptions, own)`` of ``split`` (a training or an evaluation split): the episodes' options from
    ``cfg.data`` (and ``cfg.eval.protocol``), and the dataset's own keyword arguments of ``build_dataset`` (COCO's
    ``folds``; a class folder's ``classes``, ``split_file``, ``mask_threshold``). ``data.params`` fill either."""

    data = cfg.data
    training = split in TRAINING_SPLITS
    params = dict(data.params)
    _check_data_params(params, data.dataset)
    own: dict[str, Any] = {"folds": data.coco_split} if data.dataset == "coco" else {}
    own.update({k: params.pop(k) for k in list(params) if k not in EpisodeOptions.names()})
    values: dict[str, Any] = {
        "size": data.size if training else data.val_size,
        "protocol": data.protocol,
        "support_label": data.support_label,
    }
    if training:
        augmentation = {
            "scale": (data.scale_min, data.scale_max),
            "rotate": (data.rotate_min, data.rotate_max),
        }
        augmentation.update(params.pop("augmentation", None) or {})
        values["augmentation"] = augmentation
    else:
        params.pop("augmentation", None)
        values["eval_protocol"] = cfg.eval.protocol
    return EpisodeOptions(**{**values, **params}), own


def dataset_kwargs(cfg: RunConfig, split: str) -> dict[str, Any]:
    """Keyword arguments of ``fsslab.data.build_dataset`` for ``split``: every field of ``dataset_options``'
    ``EpisodeOptions`` and the dataset's own arguments, as one mapping."""
    options, own = dataset_options(cfg, split)
    return {**options.as_kwargs(), **own}


def _check_data_params(params: dict[str, Any], dataset: str) -> None:
    """data.params are the episodes' options (``EpisodeOptions``) or the dataset's own keyword arguments: an unknown
    one is named with the valid ones here, rather than surfacing as a TypeError from the dataset's constructor."""

    # set from other config fields (or the dataset's positional arguments), not through data.params
    derived = {"self", "root", "benchmark", "split", "fold", "shot", "options", "kwargs"}
    valid = set(EpisodeOptions.names())
    if dataset == "coco":
        valid |= {p for p in inspect.signature(CocoEpisodes.__init__).parameters if p not in derived}
    if dataset in ("fss1000", "folder"):  # class folders: the class split and the mask threshold

        own = FSS1000Episodes if dataset == "fss1000" else FolderEpisodes
        valid |= {p for p in inspect.signature(own.__init__).parameters if p not in derived}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(f"unknown data.params key(s) {unknown}; valid keys: {sorted(valid)}")


def check_base_labels(cfg: RunConfig) -> None:
    """Refuse to train a model that learns from base-class labels on class folders, which have none."""
    if cfg.data.dataset in ("fss1000", "folder") and cfg.model.name in BASE_LABEL_MODELS:
        raise ConfigError(
            f"data.dataset={cfg.data.dataset}: class folders have no base-class annotation (one class per image), "
            f"and model {cfg.model.name} learns from it ({BASE_LABEL_MODELS[cfg.model.name]}); train it on a "
            "dataset with base labels (synthetic, pascal, coco) and evaluate it on the class folders, or train "
            "ipmt or baseline on them"
        )


def build_train_set(cfg: RunConfig) -> Any:

    if cfg.data.train_data == "procedural_episodes":  # episodes over the wide vocabulary, rendered on the fly
        from fsslab.data.synthetic.wide import WideEpisodes

        return WideEpisodes(size=cfg.data.size, shot=cfg.data.shot, **cfg.data.params)
    if cfg.data.train_data == "procedural":  # the wide shape vocabulary, rendered on the fly: nothing on disk
        from fsslab.data.synthetic.wide import WideShapes

        return WideShapes(size=cfg.data.size, **cfg.data.params)  # its own arguments are checked by its constructor
    check_base_labels(cfg)
    check_data(cfg)
    if cfg.data.train_data == "base":  # BAM BaseData: stage 1 on the whole list with base annotations

        unsupported = sorted(set(cfg.data.params) - {"augmentation", "list_path", "base_label"})
        if unsupported:
            raise ConfigError(f"data.params {unsupported} do not apply to data.train_data=base (BAM BaseData: every "
                              "image of the list, no episodes); it takes only augmentation, list_path and base_label")
        options, _ = dataset_options(cfg, cfg.data.train_split)
        n_label_classes = None
        if cfg.data.dataset == "synthetic":  # a procedural pretrain split has its own ids: the data's meta.json says

            n_label_classes = label_classes_on_disk(cfg.data.root, cfg.data.train_split)
        return BaseClassDataset(
            cfg.data.root,
            get_benchmark(cfg.data.dataset, cfg.data.root, cfg.data.coco_split),
            cfg.data.train_split,
            cfg.data.fold,
            size=options.size,
            augmentation=options.augmentation,
            list_path=options.list_path,
            base_label=options.base_label or "base",
            n_label_classes=n_label_classes,
        )
    options, own = dataset_options(cfg, cfg.data.train_split)
    return build_dataset(
        cfg.data.dataset,
        cfg.data.root,
        cfg.data.train_split,
        cfg.data.fold,
        cfg.data.shot,
        options=options,
        **own,
    )


def eval_dataset_factory(cfg: RunConfig) -> tuple[Callable[[int, int], Any], Any]:
    """``(factory(seed, episodes), benchmark)`` for ``evaluate`` and the benchmark (classes, folds, names): the
    episodes of ``cfg.eval`` (split, shot, support label; ``supports="mismatched"`` wraps them in the
    mismatched-support control)."""

    check_data(cfg)
    shot = cfg.eval.shot
    options, own = dataset_options(cfg, cfg.eval.split)
    options = dataclasses.replace(options, support_label=cfg.eval.support_label)

    def episodes_of(seed: int, episodes: int) -> Any:
        return build_dataset(
            cfg.data.dataset,
            cfg.data.root,
            cfg.eval.split,
            cfg.data.fold,
            shot,
            options=dataclasses.replace(options, episodes=episodes, seed=seed),
            **own,
        )

    def factory(seed: int, episodes: int) -> Any:
        return with_supports(episodes_of(seed, episodes), cfg.eval.supports)

    probe = episodes_of(cfg.eval.seeds[0], 1)
    return factory, probe.benchmark


def build_run_model(cfg: RunConfig, full_checkpoint: bool = False) -> nn.Module:
    """Seeded ``build_model`` (same initial weights on every rank), optionally initialised from a file.

    full_checkpoint: the caller loads a whole checkpoint of this model next (``fsslab eval --checkpoint``),
    so the starting points (``model.init_checkpoint``, a ``pretrained`` stage-1 file) are neither read
    nor required: a run's weights evaluate without the runs it started from.
    """

    if cfg.model.name in CONTROL_MODELS:  # the evaluation controls: no params, no starting checkpoint
        return CONTROL_MODELS[cfg.model.name]()
    seed_everything(cfg.train.seed)
    model = architecture(cfg) if full_checkpoint else build_model(model_spec(cfg))
    if cfg.model.init_checkpoint and not full_checkpoint:
        init_from_checkpoint(model, cfg.model.init_checkpoint, cfg.model.init_prefix)
    return model


def architecture(cfg: RunConfig) -> nn.Module:
    """The model of ``cfg`` with nothing read from disk (no ``pretrained`` stage-1 file): the weights come from
    a whole checkpoint of it next (``fsslab eval --checkpoint``, a shipped checkpoint)."""

    spec = model_spec(cfg)
    if "pretrained" in spec:
        spec["pretrained"] = None
    return build_model(spec)


def model_spec(cfg: RunConfig) -> dict[str, Any]:
    """``build_model``'s mapping for ``cfg``: ``{"name": ..., **model.params}``, with ``shot`` from ``data.shot``
    when the model's constructor takes it and the config does not set it (AMFormer's shot re-weighting:
    ``data.shot=5`` is the only override a 5-shot run needs). Asked of the model here, where the config meets the
    models, so that the config layer never imports them."""
    spec = {"name": cfg.model.name, **cfg.model.params}
    if "shot" not in spec and cfg.model.name in MODEL_REGISTRY and "shot" in model_options(cfg.model.name):
        spec["shot"] = cfg.data.shot
    return spec


def load_model_weights(model: nn.Module, checkpoint: dict[str, Any], source: str | Path) -> nn.Module:
    """Load an fsslab checkpoint's ``model`` weights into ``model`` (strictly).

    A checkpoint of another model or width is a CheckpointError that counts the missing / unexpected /
    mis-shaped keys, names the first few and says what the checkpoint was trained as, instead of torch's
    listing of every key.
    """

    recorded = (checkpoint.get("config") or {}).get("model") or {}
    hint = (f"; the checkpoint was trained as model.name={recorded.get('name')} with model.params="
            f"{recorded.get('params')}: evaluate it with the config it was trained with" if recorded else "")
    check_keys(model, checkpoint["model"], str(source), hint=hint)
    broken = [k for k, v in checkpoint["model"].items()
              if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # every output would be NaN: an undefined score rather than a number
        raise CheckpointError(f"checkpoint {source}: {len(broken)} weight tensor(s) hold NaN or inf (e.g. "
                              f"{', '.join(broken[:3])}); the run diverged: evaluate an earlier checkpoint of it")
    model.load_state_dict(checkpoint["model"])
    return model


def init_from_checkpoint(model: nn.Module, path: str | Path, prefix: str = "backbone.") -> int:
    """Copy the checkpoint's ``prefix*`` tensors that the model has with the same shape; returns how many."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"model.init_checkpoint {path} does not exist; train the run that writes it "
            "first (for the synthetic configs: `fsslab train synthetic/pspnet_base_tiny`)"
        )
    state = load_checkpoint(path)["model"]
    own = model.state_dict()
    chosen = {k: v for k, v in state.items() if k.startswith(prefix) and k in own and own[k].shape == v.shape}
    if not chosen:
        raise CheckpointError(
            f"model.init_checkpoint {path}: no '{prefix}*' tensor matches the model's keys/shapes"
        )
    model.load_state_dict(chosen, strict=False)
    if int(os.environ.get("RANK", "0")) == 0:
        # BatchNorm's step counters are bookkeeping, not weights
        weights = [k for k in own if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
        print(f"initialised {len(set(weights) & set(chosen))}/{len(weights)} '{prefix}*' tensors from {path}")
    return len(chosen)

