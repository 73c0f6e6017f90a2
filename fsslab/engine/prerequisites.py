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

from fsslab.config import RENDERED_TRAIN_DATA, RunConfig, flow_yaml, load_config
from fsslab.data.layout import Problem, check_layout
from fsslab.data.synthetic import SyntheticConfig, write_synthetic_if_missing
from fsslab.engine import distributed
from fsslab.engine.checkpoint import load_checkpoint
from fsslab.engine.selection import selected_file
from fsslab.errors import ConfigError, DatasetError, FsslabError


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


# ------------------------------------------------------------------------------------------- preflight
# float32 parameters of the models a paper config builds, by backbone (the checkpoint estimate of `fsslab doctor`)
MODEL_PARAMETERS = {"resnet50": 60e6, "resnet101": 80e6, "resnet50_tv": 60e6, "resnet101_tv": 80e6, "vgg16": 40e6,
                    "resnet_tiny": 3e6}  # fmt: skip


def checkpoint_budget(cfg: RunConfig) -> int:
    """Bytes the run's checkpoints take at most: (model + optimiser state) × (kept periodic files + latest +
    best), from the backbone's parameter count (``MODEL_PARAMETERS``)."""
    params = MODEL_PARAMETERS.get(str(cfg.model.params.get("backbone", "resnet50")), 60e6)
    return int(params * 4 * 3 * (cfg.train.keep_checkpoints + 2))


def _starting_files(cfg: RunConfig, pre: RunConfig | None) -> list[Problem]:
    """The ImageNet file, the stage-1 / pretraining checkpoint and any other file the model starts from."""
    from fsslab.models.backbones.networks import check_backbone_file
    from fsslab.models.backbones.weights import IMAGENET_FILES

    problems: list[Problem] = []
    if pre is not None and not prerequisite_finished(pre, str(cfg.model.prerequisite)):
        model = Path(pre.train.out_dir) / selected_file(pre.train.selection)
        latest = Path(pre.train.out_dir) / "latest.pt"
        state = "is unfinished" if latest.is_file() else "does not exist"
        problems.append(Problem(
            f"the run starts from {model}, the run of its prerequisite {cfg.model.prerequisite}, which {state}",
            f"fsslab train {cfg.model.prerequisite} data.fold={cfg.data.fold} data.root={shlex.quote(cfg.data.root)}"
            " (or `fsslab train CONFIG --with-prerequisites`)"))
    prerequisite_file = Path(pre.train.out_dir) / selected_file(pre.train.selection) if pre is not None else None
    for key, value in (("model.params.pretrained", cfg.model.params.get("pretrained")),
                       ("model.init_checkpoint", cfg.model.init_checkpoint)):  # fmt: skip
        if not value or not isinstance(value, str) or value.startswith(("http://", "https://", "torchvision")):
            continue
        path = Path(value)
        if prerequisite_file is not None and path.resolve() == prerequisite_file.resolve():
            continue  # checked above, with the command that trains it
        imagenet = IMAGENET_FILES.get(path.name)
        if not path.is_file():
            fix = (f"put PFENet's ImageNet backbone {path.name} at {path} (docs/weights.md: source, size, how to check "
                   f"it), or {key}=PATH" if imagenet else f"train or copy the checkpoint to {path}, or {key}=PATH")
            problems.append(Problem(f"{key} {path} does not exist", fix))
            continue
        if imagenet:
            backbone, sha256 = imagenet
            backbone = str(cfg.model.params.get("backbone", backbone))
            try:
                check_backbone_file(path, backbone, sha256)
            except (FsslabError, OSError, RuntimeError, ValueError) as exc:  # wrong layout, unreadable file
                problems.append(Problem(f"{key} {path} is not the expected {backbone} ImageNet file: {exc}",
                                        f"download it again (docs/weights.md), or {key}=PATH"))
    return problems


def _device_and_disk(cfg: RunConfig) -> list[Problem]:
    import shutil

    import torch

    problems: list[Problem] = []
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        problems.append(Problem("train.device=cuda but no CUDA device is visible (torch.cuda.is_available() is "
                                f"False; torch {torch.__version__}, built for CUDA {torch.version.cuda})",
                                "run on a GPU machine (check nvidia-smi, CUDA_VISIBLE_DEVICES), or train.device=cpu"))
    elif cfg.train.device == "auto" and not torch.cuda.is_available() and cfg.data.dataset != "synthetic":
        problems.append(Problem("no CUDA device: train.device=auto trains on the CPU",
                                "run on a GPU machine for the paper configs, or train.device=cpu to say so",
                                blocking=False))
    out = Path(cfg.train.out_dir)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    free, needed = shutil.disk_usage(existing).free, checkpoint_budget(cfg)
    if free < needed:
        problems.append(Problem(
            f"{free / 2**30:.1f} GiB free at {existing}, the run's checkpoints take up to {needed / 2**30:.1f} GiB "
            f"({cfg.train.keep_checkpoints} periodic + latest + best)",
            f"free disk space, train.out_dir=DIR on a larger disk, or train.keep_checkpoints="
            f"{max(cfg.train.keep_checkpoints - 2, 1)}"))
    return problems


def preflight(cfg: RunConfig, training: bool = True) -> list[Problem]:
    """Everything a run of ``cfg`` needs on disk and in the machine, checked in seconds (``fsslab doctor``):
    data root, lists and listed files, fold indices, base classes in the labels (models learning from them),
    the ImageNet file (key names and shapes; sha256 where published), the run it starts from, the device and
    the free disk for its checkpoints. Returns one Problem per missing piece (empty: ready)."""
    from fsslab.models import BASE_LABEL_MODELS

    problems: list[Problem] = []
    knobs = _synthetic_knobs(cfg)
    if knobs is not None and not (Path(cfg.data.root) / "meta.json").is_file():
        problems.append(Problem(f"the synthetic benchmark of data.synthetic is not at {cfg.data.root} yet "
                                "(`fsslab train`/`fsslab eval` write it first)", synth_command(cfg.data.root, knobs),
                                blocking=False))  # fmt: skip
    else:
        splits = [cfg.eval.split]
        if training and cfg.data.train_data not in RENDERED_TRAIN_DATA:
            splits.insert(0, cfg.data.train_split)
        problems += check_layout(cfg.data.dataset, cfg.data.root, cfg.data.fold, splits=tuple(splits),
                                 protocol=cfg.data.protocol, coco_split=cfg.data.coco_split,
                                 base_labels=training and cfg.model.name in BASE_LABEL_MODELS,
                                 indexed=(cfg.eval.split,) if cfg.data.train_data != "episodes" else None)  # fmt: skip
    try:
        pre = prerequisite_config(cfg)
    except (ConfigError, OSError) as exc:
        pre = None
        problems.append(Problem(f"model.prerequisite {cfg.model.prerequisite} cannot be loaded: {exc}",
                                "model.prerequisite=CONFIG (fsslab config --list)"))
    problems += _starting_files(cfg, pre)
    if training:
        problems += _device_and_disk(cfg)
    return problems


__all__ = ["check_data", "check_prerequisite", "checkpoint_budget", "preflight", "prepare_data",
           "prerequisite_config", "prerequisite_finished", "synth_command"]
