"""Structured configs (OmegaConf, pydantic) against fsslab's hand-written coercion: the same overrides through each.

Not a dependency of fsslab: run it in an environment that has both (docs/config.md records the result):
    pip install omegaconf pydantic && python benchmarks/config_libraries.py
"""

from __future__ import annotations

import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

start = time.perf_counter()
from omegaconf import OmegaConf

OMEGACONF_IMPORT_MS = (time.perf_counter() - start) * 1000
start = time.perf_counter()
import pydantic

PYDANTIC_IMPORT_MS = (time.perf_counter() - start) * 1000

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fsslab.config import load_config
from fsslab.errors import ConfigError


@dataclass
class Train:  # a slice of fsslab's schema: one field of each kind
    iterations: int = 100
    base_lr: float = 0.0025
    amp: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    out_dir: str | None = None
    protocol: str = "fsslab"  # choices: fsslab, ipmt, amformer, hsnet (OmegaConf has no Literal, only Enum)


@dataclass
class Model:
    name: str = "ipmt"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    train: Train = field(default_factory=Train)
    model: Model = field(default_factory=Model)


class PTrain(pydantic.BaseModel, extra="forbid"):
    iterations: int = 100
    base_lr: float = 0.0025
    amp: bool = False
    seeds: list[int] = [0]
    out_dir: str | None = None
    protocol: typing.Literal["fsslab", "ipmt", "amformer", "hsnet"] = "fsslab"


class PModel(pydantic.BaseModel, extra="forbid"):
    name: str = "ipmt"
    params: dict[str, Any] = {}


class PRun(pydantic.BaseModel, extra="forbid"):
    train: PTrain = PTrain()
    model: PModel = PModel()


CASES = [
    ("unknown key", "train.iteratons=5"),
    ("integer from text", "train.iterations=abc"),
    ("1e-4 (a string in YAML 1.1)", "train.base_lr=1e-4"),
    ("list from a scalar", "train.seeds=3"),
    ("free dict", "model.params={backbone: resnet50, shot: 5}"),
    ("not one of the choices", "train.protocol=ipmtt"),
    ("empty value for a string", "train.out_dir="),
]
# fsslab's own names for the same keys (its schema puts seeds and protocol under eval)
FSSLAB_KEYS = {"train.protocol": "eval.protocol", "train.seeds": "eval.seeds"}


def through_omegaconf(override: str) -> str:
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Run), OmegaConf.from_dotlist([override]))
    except Exception as err:  # noqa: BLE001 - every library error is a result here
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    section, key = override.split("=")[0].split(".")
    return f"accepted: {key} = {OmegaConf.to_container(cfg)[section].get(key)!r}"


def through_pydantic(override: str) -> str:
    dotted, _, text = override.partition("=")  # pydantic has no dotted overrides: YAML-parse the value as fsslab does
    section, key = dotted.split(".")
    try:
        run = PRun.model_validate({section: {key: yaml.safe_load(text) if text else None}})
    except pydantic.ValidationError as err:
        return "ValidationError: " + " ".join(line.strip() for line in str(err).splitlines()[1:3])
    return f"accepted: {key} = {getattr(getattr(run, section), key)!r}"


def through_fsslab(override: str) -> str:
    dotted, _, text = override.partition("=")
    try:
        cfg = load_config("synthetic/ipmt_tiny", [f"{FSSLAB_KEYS.get(dotted, dotted)}={text}"])
    except ConfigError as err:
        return f"ConfigError: {err}"
    section, key = FSSLAB_KEYS.get(dotted, dotted).split(".")
    return f"accepted: {key} = {getattr(getattr(cfg, section), key)!r}"


def main() -> None:
    print(f"import: omegaconf {OMEGACONF_IMPORT_MS:.0f} ms, pydantic {PYDANTIC_IMPORT_MS:.0f} ms")
    for name, override in CASES:
        print(f"\n{name}: {override}")
        for label, run in (("omegaconf", through_omegaconf), ("pydantic", through_pydantic), ("fsslab", through_fsslab)):
            print(f"  {label:9s} {run(override)[:200]}")


if __name__ == "__main__":
    main()
