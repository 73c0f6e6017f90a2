"""Typed values of a config: coercion to a field's annotated type, and the YAML text of ``key=value`` overrides.

Kept apart from ``fsslab.config`` (the dataclasses and their loading) because none of it knows the sections.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import yaml

from fsslab.errors import ConfigError


def flow_yaml(value: Any) -> str:
    """``value`` as one-line YAML (a flow mapping/list), the form a ``key=value`` override takes."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def parse_value(text: str) -> Any:
    """Typed value of an override's right-hand side: ints, floats, bools, null, lists (YAML syntax)."""
    from fsslab.config.safe_yaml import load_yaml

    try:
        value = load_yaml(text, f"override value {text[:40]!r}")  # anchors/aliases bounded
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".e") and value.strip() else value
        except ValueError:
            return value
    return value


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``hint`` (int → float allowed, "1e-4" → float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message is the clearest
            return coerce(value, options[0], where)
        for arg in options:  # the first member that accepts the value
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        (item,) = typing.get_args(hint) or (Any,)
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string; float() accepts it
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if value is None:  # an empty override (`key=`) or YAML null: never the string "None"
            raise ConfigError(f"{where}: expected a string, got nothing (write {where}=\"\" for an empty string)")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


__all__ = ["coerce", "flow_yaml", "parse_value"]
