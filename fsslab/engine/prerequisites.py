"""What a run needs on disk before it starts: its data and the runs it starts from.

The engine only checks (``check_data``, ``check_prerequisite``) and fails fast with the command that prepares
what is missing; preparing is explicit: ``prepare_data`` (``fsslab train``/``fsslab eval`` and the notebooks'
``fsslab.lab`` helpers call it for the synthetic benchmark a config names in ``data.synthetic``) and
``train_prerequisites`` (``fsslab train --with-prerequisites``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from fsslab.config import RunConfig, flow_yaml, load_config
from fsslab.data.synthetic import SyntheticConfig, write_synthetic_if_missing
from fsslab.engine import distributed
from fsslab.engine.checkpoint import load_checkpoint
from fsslab.engine.selection import selected_file
from fsslab.errors import ConfigError, DatasetError


# ----------------------------------------------------------------------------------------------- data
def _synthetic_knobs(cfg: RunConfig) -> dict[str, Any] | None:
    """The generator knobs of the benchmark ``cfg`` names, or None when it names none (data used as it is)."""
    if cfg.data.dataset != "synthetic" or cfg.data.synthetic is None:
        return None
    return dict(cfg.data.synthetic)


def synth_command(root: str | Path, knobs: dict[str, Any]) -> str:
    """The ``fsslab data synth`` command that writes the benchmark of ``knobs`` at ``root``."""
    knobs = dict(knobs)
    words = ["fsslab", "data", "synth", "--root", str(root)]
    if "preset" in knobs:
        words += ["--preset", str(knobs.pop("preset"))]
    words += [f"{key}={flow_yaml(value)}" for key, value in knobs.items()]
    return shlex.join(words)


def check_data(cfg: RunConfig) -> None:
    """Fail fast (DatasetError naming the command that writes it) when the synthetic benchmark that ``cfg``
    names in ``data.synthetic`` is not at ``data.root``; one that is there is checked against the knobs."""
    knobs = _synthetic_knobs(cfg)
    if knobs is None:
        return

    root = Path(cfg.data.root)
    if not (root / "meta.json").is_file():
        raise DatasetError(
            f"data.root {root} holds no synthetic benchmark (no meta.json); write it with "
            f"`{synth_command(root, knobs)}`, or run `fsslab train`/`fsslab eval`, which write the benchmark "
            "their config's data.synthetic names"
        )
    write_synthetic_if_missing(root, SyntheticConfig.from_dict(knobs))  # present: only compared with the knobs


def prepare_data(cfg: RunConfig, progress: bool = True) -> None:
    """Write the synthetic benchmark ``cfg`` names in ``data.synthetic`` at ``data.root`` when it is not there
    (checked against the knobs when it is). Under torchrun rank 0 writes it while the others wait at a barrier,
    so call it after ``distributed.setup_distributed``."""
    knobs = _synthetic_knobs(cfg)
    if knobs is None:
        return

    if distributed.is_main_process():
        if not (Path(cfg.data.root) / "meta.json").is_file():
            print(f"writing the synthetic benchmark of data.synthetic at {cfg.data.root}")
        write_synthetic_if_missing(cfg.data.root, SyntheticConfig.from_dict(knobs), progress=progress)
    distributed.barrier()


# ------------------------------------------------------------------------------------ prerequisite runs
def prerequisite_config(cfg: RunConfig) -> RunConfig | None:
    """The run ``cfg.model.prerequisite`` names, on the same data root, fold, generator knobs and device; None
    when there is none or when ``cfg`` starts from another checkpoint than the prerequisite's model file
    (``latest.pt``, or ``best.pt`` under a selecting ``train.selection``: ``selection.selected_file``)."""
    if not cfg.model.prerequisite:
        return None
    pre = load_config(cfg.model.prerequisite, changes={
        "data.fold": cfg.data.fold, "data.root": cfg.data.root, "data.synthetic": cfg.data.synthetic,
        "train.device": cfg.train.device})
    model = Path(pre.train.out_dir) / selected_file(pre.train.selection)
    starts_from = [cfg.model.init_checkpoint, cfg.model.params.get("pretrained")]
    if not any(path and Path(str(path)).resolve() == model.resolve() for path in starts_from):
        return None  # the run was pointed at another starting checkpoint: the prerequisite's run is not read
    return pre


def prerequisite_finished(pre: RunConfig, name: str) -> bool:
    """Whether ``pre``'s run is on disk and finished; a run from other data is an error (ConfigError)."""
    latest = Path(pre.train.out_dir) / "latest.pt"
    if not latest.is_file():
        return False
    previous = load_checkpoint(latest)
    _check_same_benchmark(previous.get("config") or {}, pre, latest, name)
    return pre.train.iterations is None or previous["iteration"] >= pre.train.iterations


def check_prerequisite(cfg: RunConfig, config_name: str | None = None) -> None:
    """Fail fast (ConfigError naming the commands) when the run ``cfg`` starts from is missing or unfinished."""
    pre = prerequisite_config(cfg)
    if pre is None or prerequisite_finished(pre, str(cfg.model.prerequisite)):
        return
    latest = Path(pre.train.out_dir) / "latest.pt"
    state = "is unfinished" if latest.is_file() else "does not exist"
    this = shlex.quote(config_name) if config_name else "CONFIG"
    model = Path(pre.train.out_dir) / selected_file(pre.train.selection)
    raise ConfigError(
        f"this run starts from {model}, the run of its prerequisite {cfg.model.prerequisite}, which {state}: "
        f"train it first with `fsslab train {this} ... --with-prerequisites` (trains the prerequisite chain, "
        f"then this run), or `fsslab train {cfg.model.prerequisite} data.fold={cfg.data.fold} "
        f"data.root={shlex.quote(cfg.data.root)}`"
    )




def _check_same_benchmark(recorded: dict[str, Any], wanted: RunConfig, path: Path, name: str) -> None:
    """A prerequisite run found on disk must come from this run's data: another benchmark's backbone would be
    reused silently (its out_dir does not depend on data.root or the generator knobs)."""
    data = recorded.get("data") or {}
    same_root = Path(str(data.get("root"))).resolve() == Path(wanted.data.root).resolve()
    if same_root and data.get("synthetic") == wanted.data.synthetic:
        return
    raise ConfigError(
        f"{path} was trained on {data.get('root')} (synthetic knobs {data.get('synthetic')}), but this run "
        f"uses {wanted.data.root} (knobs {wanted.data.synthetic}). Train the prerequisite for this data into its "
        f"own directory (`fsslab train {name} data.root=... train.out_dir=DIR`), then "
        "start from it with model.init_checkpoint=DIR/latest.pt (or model.params.pretrained) and "
        "model.prerequisite=null"
    )


__all__ = ["check_data", "check_prerequisite", "prepare_data", "prerequisite_config", "prerequisite_finished",
           "synth_command"]
