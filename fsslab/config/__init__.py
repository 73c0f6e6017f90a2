"""Typed run configuration: YAML files → dataclasses, ``section.key=value`` overrides, strict key checking.

A config is resolved once, when it is built (``config_from_dict`` / ``load_config``): values that default to
another field (``eval.shot``, ``eval.support_label``, a model's ``shot``) are filled there, so the code that
reads a ``RunConfig`` never falls back from one field to another. Change a built config with
``dataclasses.replace`` (``replace_section``), or load it again with ``changes`` when a derived value must
follow (``data.shot``, ``data.fold`` in paths).

What a config holds (the section dataclasses, their choices and ranges) is ``fsslab.config.schema``; coercing a
value to a field's type and parsing an override's text is ``fsslab.config.values``. Their names are re-exported
here: ``fsslab.config`` is the module to import.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fsslab.config.safe_yaml import load_yaml
from fsslab.config.schema import (
    CHOICES,
    FREE_DICTS,
    RENDERED_TRAIN_DATA,
    SECTIONS,
    SUPPORT_MODES,
    DataConfig,
    EvalConfig,
    ExpectedConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    check_ranges,
)
from fsslab.config.values import coerce, flow_yaml, parse_value
from fsslab.errors import ConfigError  # defined there so that every layer can raise it; re-exported here

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# the shipped checkpoints (fsslab.zoo reads them); a config names a shipped file as "{zoo}/shared/backbone_wide.pt"
SHIPPED_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic"
_CHOICES = CHOICES  # the name it had when it was defined here


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
        choices = CHOICES.get((section, key))
        if choices is not None and kwargs[key] not in choices:
            raise ConfigError(f"{where}: {kwargs[key]!r} is not one of {list(choices)}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Validate a nested dict (as read from YAML) into a ``RunConfig``, its derived values filled."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    valid = ["name", *SECTIONS]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid top-level keys: {valid}")
    sections = {name: _build_section(cls, raw.get(name), name) for name, cls in SECTIONS.items()}
    _drop_retired_params(sections["data"])
    cfg = RunConfig(name=str(raw.get("name", "run")), **sections)
    check_ranges(cfg)
    return _fill_derived(cfg)


def _fill_derived(cfg: RunConfig) -> RunConfig:
    """The values that default to another field's, filled once so that no reader falls back between fields."""
    if cfg.eval.shot is None:
        cfg.eval.shot = cfg.data.shot
    if cfg.eval.support_label is None:
        cfg.eval.support_label = cfg.data.support_label
    return cfg


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
    """Fill ``{fold}``, ``{shot}``, ``{dataset}``, ``{name}`` and ``{zoo}`` (the shipped checkpoints' directory) in
    paths and model params (after overrides)."""
    names = {"fold": cfg.data.fold, "shot": cfg.data.shot, "dataset": cfg.data.dataset, "name": cfg.name,
             "zoo": str(SHIPPED_CHECKPOINT_DIR)}
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
    if section not in SECTIONS:
        raise ConfigError(f"{what}: unknown section {section!r}; valid sections: {['name', *SECTIONS]}")
    cls = SECTIONS[section]
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
    elif (section, key) in FREE_DICTS and len(path) == 3:
        node[key] = dict(node.get(key) or {})
        node[key][path[2]] = value
    else:
        raise ConfigError(f"{what}: only {sorted('.'.join(p) for p in FREE_DICTS)} take a third level")


def resolve_config_path(name: str | Path) -> Path:
    """A file path, or a name relative to ``fsslab/configs`` with or without ``.yaml``."""
    candidates = [Path(name)]
    candidates += [CONFIG_DIR / str(name), CONFIG_DIR / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    if Path(name).is_dir():
        raise ConfigError(f"config {str(name)!r} is a directory, not a YAML file; give a file in it, or a shipped "
                          "name (`fsslab config --list`)")
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
        raw = load_yaml(path.read_text(), str(path)) or {}  # anchors/aliases bounded (config.safe_yaml)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path} is unreadable: {exc}") from None
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
    "RENDERED_TRAIN_DATA",
    "SHIPPED_CHECKPOINT_DIR",
    "SUPPORT_MODES",
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
