"""Typed run configuration: YAML files → dataclasses, ``section.key=value`` overrides, strict key checking.

A config is resolved once, when it is built (``config_from_dict`` / ``load_config``): values that default to
another field (``eval.shot``, ``eval.support_label``, a model's ``shot``) are filled there, so the code that
reads a ``RunConfig`` never falls back from one field to another. Change a built config with
``dataclasses.replace`` (``replace_section``), or load it again with ``changes`` when a derived value must
follow (``data.shot``, ``data.fold`` in paths).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsslab.config_values import coerce, flow_yaml, parse_value
from fsslab.errors import ConfigError  # defined there so that every layer can raise it; re-exported here

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    """Which episodes to train/evaluate on and how they are built."""

    # "pascal" | "coco" | "synthetic" | "fss1000" | "folder" (class folders, your split: data.params.classes
    # or data.params.split_file; fsslab.data.folder)
    dataset: str = "synthetic"
    root: str = "data/synthetic"
    fold: int = 0
    shot: int = 1
    protocol: str = "pfenet"  # training-list protocol: "pfenet" (IPMT) | "bam" (BAM/HDMNet/AMFormer)
    size: int = 473  # training crop (square)
    val_size: int = 473  # evaluation long-side size
    support_label: str = "mask"  # "mask" | "box" | "scribble" (weak supports)
    coco_split: str = "interleaved"  # COCO-20i fold convention: "interleaved" | "contiguous"
    # training set: "episodes" (episodic, data.protocol's list) or "base" (BAM BaseData, for the stage-1
    # PSPNet: every image of the list, novel classes as background, no area filter; fsslab.data.base_data)
    train_data: str = "episodes"
    train_split: str = "train"  # "pretrain": the synthetic benchmark's backbone corpus (n_pretrain images)
    scale_min: float = 0.9
    scale_max: float = 1.1
    rotate_min: float = -10.0
    rotate_max: float = 10.0
    workers: int = 2
    batch_size: int = 4  # episodes per optimiser step, summed over all ranks
    params: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for build_dataset
    # Synthetic benchmark only: generator knobs (SyntheticConfig fields). When set, `fsslab train`/`fsslab
    # eval` (and the notebooks) write the benchmark at `root` if it is not there yet; it is checked against
    # these knobs if it is (the engine itself only checks: fsslab.engine.prerequisites).
    synthetic: dict[str, Any] | None = None


@dataclass
class ModelConfig:
    """``build_model({"name": name, **params})``; the constructor's signature validates ``params``."""

    name: str = "baseline"
    params: dict[str, Any] = field(default_factory=dict)
    # An fsslab checkpoint whose weights initialise the model before training: only the keys starting with
    # ``init_prefix`` that exist in the model with the same shape are loaded (e.g. the stage-1 PSPNet's
    # ``backbone.`` of the synthetic ImageNet, backbone_pretrain_tiny); none matching is an error.
    init_checkpoint: str | None = None
    init_prefix: str = "backbone."
    # A config whose run writes the file this model starts from (init_checkpoint or params.pretrained).
    # `fsslab train --with-prerequisites` trains it first, on the same data root and fold, when its latest.pt
    # is missing or unfinished; without the flag that is an error naming the command.
    prerequisite: str | None = None


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, logging and checkpointing."""

    epochs: int | None = 1
    iterations: int | None = None  # when set, overrides epochs × iterations-per-epoch
    base_lr: float = 0.0025
    weight_decay: float = 1e-4
    power: float = 0.9  # poly schedule exponent (0 = constant lr)
    warmup_iters: int = 0  # linear warm-up from 0.1% of every group's lr (reference convention)
    amp: str = "none"  # "none" | "bf16" | "fp16"
    channels_last: bool = False
    grad_clip: float | None = None  # max global grad norm per optimiser; None disables
    grad_sync: str = "auto"  # multi-GPU gradient sync: "auto" | "ddp" | "manual" (see engine/trainer.py)
    find_unused_parameters: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    seed: int = 123
    validate: bool = (
        True  # evaluate (first eval seed) every eval_every iterations and at the end; keeps best.pt
    )
    log_every: int = 10
    image_every: int = 0  # iterations between TensorBoard image grids (0: never)
    ckpt_every: int = 500  # iterations between periodic checkpoints (latest.pt is also written then)
    keep_checkpoints: int = 3  # periodic iter_*.pt files kept (latest/best are always kept)
    eval_every: int = 0  # iterations between validations (0: only at the end)
    tensorboard: bool = True
    progress: bool = True
    # the index models that alternate objectives (AMFormer's G/D) see: "global" (the iteration count) or
    # "epoch" (the batch index within the epoch, as AMNet's train.py; an epoch of odd length then steps G
    # twice in a row at its boundary)
    objective_index: str = "global"
    out_dir: str = "runs/default"


@dataclass
class EvalConfig:
    """Episodic evaluation: N episodes for each seed; the mean and spread over seeds are reported."""

    episodes: int = 1000
    seeds: list[int] = field(default_factory=lambda: [123])
    shot: int | None = None  # None in a file: data.shot (filled when the config is built)
    support_label: str | None = None  # None in a file: data.support_label (filled when the config is built)
    batch_size: int = 1
    amp: str = "none"
    split: str = "val"
    # how queries are resized and mapped back (fsslab.data.eval_protocols): "fsslab" (long side to
    # data.val_size, never upscaled), "ipmt" (PFENet/IPMT test_Resize: always to val_size), "amformer"
    # (AMNet test.py: stretched to a square), "hsnet" (the same stretch, HSNet's FSS-1000 test); each is
    # scored by the exact inverse of its transform
    protocol: str = "fsslab"
    # "mismatched": a control where each query gets the supports of another class (engine.controls);
    # the drop from "matched" measures how much the model relies on its supports
    supports: str = "matched"
    # also run the controls beside the result (fsslab.engine.runner.run_controls): the oracle (must score
    # ~100), mismatched supports (the drop is how much the model reads its supports) and the K-shot gain
    # (the same model given 1 and 5 shots)
    controls: bool = False


@dataclass
class ExpectedConfig:
    """What the run should reproduce: the paper's value (mIoU %), under which protocol, and provenance."""

    miou: float | None = None
    fbiou: float | None = None
    protocol: str | None = None
    source: str | None = None
    notes: str | None = None


@dataclass
class RunConfig:
    """A whole run: data, model, train, eval sections + expected result."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    expected: ExpectedConfig = field(default_factory=ExpectedConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON/checkpoint safe)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Values checked beyond their type.
# eval.supports: the normal episodes, or the control of fsslab.engine.controls (which imports this tuple)
SUPPORT_MODES = ("matched", "mismatched")
_CHOICES = {
    ("data", "dataset"): ("pascal", "coco", "synthetic", "fss1000", "folder"),
    ("data", "protocol"): ("pfenet", "bam"),
    ("data", "support_label"): ("mask", "box", "scribble"),
    ("data", "coco_split"): ("interleaved", "contiguous"),
    ("data", "train_split"): ("train", "pretrain"),
    ("data", "train_data"): ("episodes", "base"),
    ("train", "amp"): ("none", "bf16", "fp16"),
    ("train", "grad_sync"): ("auto", "ddp", "manual"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "objective_index"): ("global", "epoch"),
    ("eval", "amp"): ("none", "bf16", "fp16"),
    ("eval", "support_label"): (None, "mask", "box", "scribble"),
    ("eval", "supports"): SUPPORT_MODES,
    ("eval", "protocol"): ("fsslab", "ipmt", "amformer", "hsnet"),
}
_FREE_DICTS = {
    ("data", "params"),
    ("data", "synthetic"),
    ("model", "params"),
}  # keys inside are validated by their consumer


def _valid_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build_section(cls: type, raw: Any, section: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"section '{section}' must be a mapping, got {raw!r}")
    valid = _valid_keys(cls)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in section '{section}'; valid keys: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        where = f"{section}.{key}"
        kwargs[key] = coerce(value, hints[key], where)
        choices = _CHOICES.get((section, key))
        if choices is not None and kwargs[key] not in choices:
            raise ConfigError(f"{where}: {kwargs[key]!r} is not one of {list(choices)}")
    return cls(**kwargs)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "expected": ExpectedConfig,
}


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Validate a nested dict (as read from YAML) into a ``RunConfig``, its derived values filled."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    valid = ["name", *_SECTIONS]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid top-level keys: {valid}")
    sections = {name: _build_section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    _drop_retired_params(sections["data"])
    cfg = RunConfig(name=str(raw.get("name", "run")), **sections)
    _check_ranges(cfg)
    return _fill_derived(cfg)


def _fill_derived(cfg: RunConfig) -> RunConfig:
    """The values that default to another field's, filled once so that no reader falls back between fields."""
    if cfg.eval.shot is None:
        cfg.eval.shot = cfg.data.shot
    if cfg.eval.support_label is None:
        cfg.eval.support_label = cfg.data.support_label
    # a model built for K shots (AMFormer's shot re-weighting): `data.shot=5` is the only override it needs
    if "shot" not in cfg.model.params and _model_takes(cfg.model.name, "shot"):
        cfg.model.params = {**cfg.model.params, "shot": cfg.data.shot}
    return cfg


def _model_takes(name: str, option: str) -> bool:
    """Whether the constructor of the model registered as ``name`` takes ``option`` (an unknown name: False,
    and building it reports the valid names)."""
    import inspect

    from fsslab.models import MODEL_REGISTRY, model_class

    if name not in MODEL_REGISTRY:
        return False
    return option in inspect.signature(model_class(name).__init__).parameters


def replace_section(cfg: RunConfig, section: str, **changes: Any) -> RunConfig:
    """A copy of ``cfg`` with ``changes`` in one section (``dataclasses.replace``; ``cfg`` is left alone).

    Derived values are not re-derived: to change ``data.shot`` or ``data.fold`` load the config again with
    ``load_config(..., changes=...)``, which fills ``eval.shot``, the model's shot and the paths anew."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})


# data.params keys that fsslab no longer needs; configs and checkpoints written before still load.
# ori_canvas: the canvas of original labels is now sized from the episodes themselves.
_RETIRED_DATA_PARAMS = ("ori_canvas",)


def _drop_retired_params(data: DataConfig) -> None:
    if any(key in data.params for key in _RETIRED_DATA_PARAMS):
        data.params = {k: v for k, v in data.params.items() if k not in _RETIRED_DATA_PARAMS}


def _check_ranges(cfg: RunConfig) -> None:
    checks = [
        (cfg.data.shot >= 1, "data.shot must be >= 1"),
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.fold >= 0, "data.fold must be >= 0"),
        (cfg.train.base_lr > 0, "train.base_lr must be > 0"),
        (
            cfg.train.epochs is not None or cfg.train.iterations is not None,
            "set train.epochs or train.iterations",
        ),
        (cfg.train.iterations is None or cfg.train.iterations >= 1,
         f"train.iterations must be >= 1 (or null to train train.epochs epochs), got {cfg.train.iterations}"),
        (cfg.train.epochs is None or cfg.train.epochs >= 1, f"train.epochs must be >= 1, got {cfg.train.epochs}"),
        (cfg.data.size >= 16, f"data.size (the training crop) must be >= 16 pixels, got {cfg.data.size}"),
        (cfg.data.val_size >= 16, f"data.val_size (the evaluation size) must be >= 16 pixels, got {cfg.data.val_size}"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
        (cfg.train.ckpt_every >= 1, "train.ckpt_every must be >= 1"),
        (cfg.eval.episodes >= 1, "eval.episodes must be >= 1"),
        (len(cfg.eval.seeds) >= 1, "eval.seeds needs at least one seed"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _fill_placeholders(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str) and "{" in value:
        try:
            return value.format(**names)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{value!r}: unknown placeholder {exc}; valid: {sorted('{' + k + '}' for k in names)}"
            )
    if isinstance(value, dict):
        return {k: _fill_placeholders(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_placeholders(v, names) for v in value]
    return value


def resolve_placeholders(cfg: RunConfig) -> RunConfig:
    """Fill ``{fold}``, ``{shot}``, ``{dataset}``, ``{name}`` in paths and model params (after overrides)."""
    names = {"fold": cfg.data.fold, "shot": cfg.data.shot, "dataset": cfg.data.dataset, "name": cfg.name}
    cfg.data.root = _fill_placeholders(cfg.data.root, names)
    cfg.train.out_dir = _fill_placeholders(cfg.train.out_dir, names)
    cfg.model.init_checkpoint = _fill_placeholders(cfg.model.init_checkpoint, names)
    cfg.model.params = _fill_placeholders(cfg.model.params, names)
    return cfg


def apply_overrides(raw: dict[str, Any], overrides: list[str], changes: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Apply ``section.key=value`` (or ``section.params.key=value``) overrides to a raw config dict.

    changes: ``{"section.key": value}`` with typed values (no YAML text), applied first: the override strings,
    a user's word, win over what code changes."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in (changes or {}).items():
        _set_dotted(raw, dotted, value, f"change {dotted!r}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        _set_dotted(raw, dotted.strip(), parse_value(text) if dotted.strip() != "name" else text, f"override {item!r}")
    return raw


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, what: str) -> None:
    """``raw[section][key] = value`` (or ``raw[section][key][inner]`` for the free dicts), keys checked."""
    path = dotted.split(".")
    if path == ["name"]:
        raw["name"] = value
        return
    section = path[0]
    if section not in _SECTIONS:
        raise ConfigError(f"{what}: unknown section {section!r}; valid sections: {['name', *_SECTIONS]}")
    cls = _SECTIONS[section]
    if len(path) < 2:
        raise ConfigError(f"{what} must name a key: {section}.<key>=value; valid keys: {_valid_keys(cls)}")
    key = path[1]
    if key not in _valid_keys(cls):
        raise ConfigError(f"{what}: unknown key {key!r} in section '{section}'; valid keys: {_valid_keys(cls)}")
    node = raw.setdefault(section, {}) or {}
    if not isinstance(node, dict):
        raise ConfigError(f"{what}: section '{section}' must be a mapping, got {node!r}")
    raw[section] = node
    if len(path) == 2:
        node[key] = value
    elif (section, key) in _FREE_DICTS and len(path) == 3:
        node[key] = dict(node.get(key) or {})
        node[key][path[2]] = value
    else:
        raise ConfigError(f"{what}: only {sorted('.'.join(p) for p in _FREE_DICTS)} take a third level")


def resolve_config_path(name: str | Path) -> Path:
    """A file path, or a name relative to ``fsslab/configs`` with or without ``.yaml``."""
    candidates = [Path(name)]
    candidates += [CONFIG_DIR / str(name), CONFIG_DIR / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"config {str(name)!r} not found (looked at {[str(c) for c in candidates]}); "
        f"run `fsslab config --list` for the shipped configs"
    )


def load_config(name: str | Path, overrides: list[str] | None = None,
                changes: Mapping[str, Any] | None = None) -> RunConfig:
    """Load a YAML config (path or shipped name), apply ``changes`` (``{"section.key": value}``, typed values:
    what code passes instead of override strings) and then the ``section.key=value`` overrides (YAML text)."""
    path = resolve_config_path(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):  # a list or a scalar at the top: the overrides could not even apply
        raise ConfigError(f"{path}: a config must be a mapping of sections (data:, model:, train:, ...), "
                          f"got a {type(raw).__name__} at the top level")
    try:
        return resolve_placeholders(config_from_dict(apply_overrides(raw, list(overrides or []), changes)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def shipped_configs() -> list[str]:
    """Names (relative to ``fsslab/configs``, without ``.yaml``) of every shipped config."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))


__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExpectedConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "flow_yaml",
    "load_config",
    "parse_value",
    "replace_section",
    "resolve_config_path",
    "resolve_placeholders",
    "shipped_configs",
]
