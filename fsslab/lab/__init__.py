"""Notebook-session helpers: quick vs full mode, the synthetic data root, run configs anchored at the
repository root, and trained-or-fresh models. They prepare what a notebook needs (the benchmark, the runs a
model starts from); the engine they call only checks. Inference helpers live in ``fsslab.engine``
(``load_run``, ``predict_fn``, ``trace_runner``), AMFormer's discriminator analysis in
``fsslab.models.amformer``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsslab.config import SHIPPED_CHECKPOINT_DIR, RunConfig, load_config, replace_section, resolve_config_path
from fsslab.data.synthetic import PRESETS

# The synthetic configs' benchmark, the "default" preset with seed 0 (their data.synthetic, as YAML reads it:
# lists, not tuples; tests/test_lab.py checks that they agree).
FULL_SYNTHETIC: dict[str, Any] = {"seed": 0, **{k: list(v) if isinstance(v, tuple) else v
                                              for k, v in PRESETS["default"].items()}}
# The quick benchmark of notebook 00 (and of CI): the same knobs, 300 training, 150 validation and 150
# pretraining images.
QUICK_SYNTHETIC: dict[str, Any] = {**FULL_SYNTHETIC, "n_train": 300, "n_val": 150, "n_pretrain": 150}
QUICK_ITERATIONS = 2
QUICK_CROSSDOMAIN_IMAGES = 100
QUICK_EPISODES = 8

# What quick mode changes in a shipped synthetic config (notebook_config).
QUICK_CHANGES: dict[str, Any] = {
    "train.iterations": QUICK_ITERATIONS, "train.log_every": 1, "train.ckpt_every": QUICK_ITERATIONS,
    "train.tensorboard": False, "train.image_every": 0, "train.validate": False, "data.workers": 0,
    "data.batch_size": 2, "data.size": 96, "eval.episodes": QUICK_EPISODES, "eval.seeds": [0],
    "eval.batch_size": 4, "data.params.on_small_class": "exclude",
}


def is_quick() -> bool:
    """True under ``FSSLAB_QUICK=1`` (``make test`` and CI): tiny data, a few iterations, few episodes."""
    return os.environ.get("FSSLAB_QUICK", "0") == "1"


def repo_root(start: str | Path | None = None) -> Path:
    """The checkout's root (the directory holding ``pyproject.toml``), searched upwards from ``start``/cwd."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "fsslab").is_dir():
            return candidate
    return here


def synthetic_root(quick: bool | None = None, root: str | Path | None = None, progress: bool = True) -> Path:
    """The synthetic benchmark the notebooks use, generated when missing (``FSSLAB_DATA`` overrides the path).

    quick: ``data/synthetic_quick`` (the small benchmark of notebook 00) else ``data/synthetic`` (the one the
    shipped configs and checkpoints use), both under the repository root (outside a checkout, e.g. from a
    pip-installed fsslab: under the current directory). progress: when the benchmark has to be generated, say
    so and show a progress bar per split (a minute or more on a laptop CPU); nothing is shown when it exists.
    """
    from fsslab.data.synthetic import SyntheticConfig, write_synthetic_if_missing

    quick = is_quick() if quick is None else quick
    path = Path(os.environ.get("FSSLAB_DATA") or root or
                repo_root() / "data" / ("synthetic_quick" if quick else "synthetic"))
    config = SyntheticConfig.from_dict(dict(QUICK_SYNTHETIC if quick else FULL_SYNTHETIC))
    if progress and not (path / "meta.json").is_file():
        sizes = " + ".join(f"{n} {split}" for split, n in config.split_sizes())
        print(f"generating the {'quick' if quick else 'full'} synthetic benchmark ({sizes} images) into {path}; "
              "done once, later runs reuse it", flush=True)
    write_synthetic_if_missing(path, config, progress=progress)
    return path


def notebook_config(name: str, shot: int = 1, quick: bool | None = None, fold: int = 0,
                    overrides: list[str] | tuple[str, ...] = (), data_root: str | Path | None = None) -> RunConfig:
    """The shipped config ``synthetic/<name>`` with paths anchored at the repository root.

    Full mode: the shipped settings, data ``data/synthetic`` and runs ``runs/synthetic/...`` (the runs that
    ``fsslab train`` makes from the repository root, so a notebook resumes or reuses them). Quick mode: the
    quick benchmark, ``QUICK_ITERATIONS`` iterations of batch 2 on 96-pixel crops without validation, one seed of ``QUICK_EPISODES``
    episodes, runs under
    ``runs/notebooks_quick``. The runs the model starts from (``init_checkpoint``, AMFormer's ``pretrained``
    stage 1) are expected in the same runs directory (``ensure_prerequisites`` trains them).
    data_root: use this benchmark as it is (``data.synthetic`` = None: no generation, no config check).
    """
    resolve_config_path(f"synthetic/{name}")  # an unknown name fails here, before any data is generated
    quick = is_quick() if quick is None else quick
    top = repo_root()
    runs = top / "runs" / ("notebooks_quick" if quick else "synthetic")
    data_root = Path(data_root) if data_root is not None else synthetic_root(quick)
    # data.synthetic=None: the benchmark is used as it is (synthetic_root has written it, or it is the caller's)
    changes: dict[str, Any] = {"data.root": str(data_root), "data.synthetic": None, "data.fold": fold,
                               "data.shot": shot, "model.prerequisite": None}
    shipped = load_config(f"synthetic/{name}", changes={"data.shot": shot, "data.fold": fold})
    changes["train.out_dir"] = str(runs / Path(shipped.train.out_dir).name)
    # the runs a model starts from (stage 1) live in the same runs directory; a shipped file (the backbone,
    # "{zoo}/shared/...") is read where it is, in both modes
    if shipped.model.init_checkpoint and not is_shipped_file(shipped.model.init_checkpoint):
        changes["model.init_checkpoint"] = str(runs / Path(shipped.model.init_checkpoint).parent.name / "latest.pt")
    if shipped.model.params.get("pretrained"):
        stage1 = runs / Path(str(shipped.model.params["pretrained"])).parent.name / "latest.pt"
        changes["model.params.pretrained"] = str(stage1)
    if quick:
        changes.update(QUICK_CHANGES)
        if shipped.data.train_data != "episodes":  # stage 1's BaseData, a rendered pretraining: no episode list
            del changes["data.params.on_small_class"]
    return load_config(f"synthetic/{name}", list(overrides), changes=changes)  # the overrides win


def is_shipped_file(path: str | Path) -> bool:
    """Whether ``path`` is a file of the shipped zoo (the pretrained backbone every students' run starts from)."""
    return Path(path).resolve().is_relative_to(SHIPPED_CHECKPOINT_DIR.resolve())


def crossdomain_root(quick: bool | None = None, progress: bool = True) -> Path:
    """The cross-domain preset (``fsslab data synth --preset crossdomain``: 20 shape families no training sees,
    overlapping objects, random surfaces, another background), generated when missing: ``data/crossdomain``
    (1,000 images, what the README measures) or, in quick mode, ``data/crossdomain_quick`` (100 images)."""
    from fsslab.data.synthetic import SyntheticConfig, write_synthetic_if_missing

    quick = is_quick() if quick is None else quick
    path = repo_root() / "data" / ("crossdomain_quick" if quick else "crossdomain")
    config = SyntheticConfig.from_dict({"preset": "crossdomain", **({"n_val": QUICK_CROSSDOMAIN_IMAGES} if quick else {})})
    if progress and not (path / "meta.json").is_file():
        print(f"generating the cross-domain preset ({config.n_val} images) into {path}; done once", flush=True)
    write_synthetic_if_missing(path, config, progress=progress)
    return path


def run_name(name: str, shot: int = 1, fold: int = 0) -> str:
    """The run directory / shipped checkpoint name of a synthetic config (``ipmt_tiny_fold0_1shot``)."""
    return Path(load_config(f"synthetic/{name}", changes={"data.shot": shot, "data.fold": fold}).train.out_dir).name


def trained_or_fresh(name: str, shot: int = 1, fold: int = 0, cfg: RunConfig | None = None,
                     checkpoint: str | Path | None = None) -> tuple[nn.Module, str]:
    """(model in eval mode, where its weights come from): the shipped checkpoint of this shot count when there
    is one, else ``checkpoint`` (e.g. the notebook's own run), else the shipped 1-shot model (every model takes
    any number of supports), else the model freshly built from the config."""
    from fsslab.zoo import list_pretrained, load_pretrained

    shipped, available = run_name(name, shot, fold), list_pretrained()
    if shipped in available:
        return load_pretrained(shipped), f"shipped checkpoint {shipped}"
    from fsslab.engine import build_run_model, load_run

    cfg = cfg or notebook_config(name, shot, fold=fold)
    if checkpoint is not None and Path(checkpoint).is_file():
        return load_run(cfg, checkpoint), f"checkpoint {checkpoint}"
    one_shot = run_name(name, 1, fold)
    if one_shot in available:
        return load_pretrained(one_shot), f"shipped checkpoint {one_shot} (trained 1-shot, given {shot} shots)"
    if cfg.model.init_checkpoint and not Path(cfg.model.init_checkpoint).is_file():
        # no pretraining run either: everything at its initialisation
        cfg = replace_section(cfg, "model", init_checkpoint=None)
    if "pretrained" in cfg.model.params and not Path(str(cfg.model.params["pretrained"])).is_file():
        cfg = replace_section(cfg, "model", params={**cfg.model.params, "pretrained": None})
    torch.manual_seed(0)
    return build_run_model(cfg).eval(), "untrained (no shipped checkpoint yet: numbers are meaningless)"


def train_or_resume(cfg: RunConfig, fresh: bool | None = None) -> dict[str, Any]:
    """Train ``cfg`` (continuing from its ``latest.pt`` when there is one); return the trainer's summary.

    fresh (default: quick mode): start over, deleting the previous *quick* run directory first (only
    directories under ``runs/notebooks_quick`` are ever deleted), so quick runs are reproducible.
    """
    import shutil

    from fsslab.engine.train.launch import run_training
    from fsslab.engine.train.run_dir import holds_run

    fresh = is_quick() if fresh is None else fresh
    out = Path(cfg.train.out_dir)
    if fresh and out.is_dir():
        if out.resolve().parent.name != "notebooks_quick":
            raise ValueError(f"refusing to delete {out}: only quick notebook runs (runs/notebooks_quick/*) are reset")
        shutil.rmtree(out)
    with torch.enable_grad():  # notebooks often switch gradients off globally for their analysis cells
        # a directory holding any run (even one killed before its first checkpoint) is continued, never refused
        return run_training(cfg, resume=holds_run(out))


def ensure_prerequisites(name: str, quick: bool | None = None, fold: int = 0,
                         data_root: str | Path | None = None) -> list[Path]:
    """Train, when missing, the runs ``synthetic/<name>`` starts from (its ``model.prerequisite`` chain: the
    synthetic ImageNet, then stage 1 for AMFormer), where ``notebook_config`` expects them; their checkpoints."""
    chain = []
    prerequisite = load_config(f"synthetic/{name}").model.prerequisite
    while prerequisite:  # ipmt_tiny -> backbone_pretrain_tiny; amformer_tiny -> pspnet_base_tiny -> ...
        chain.insert(0, prerequisite.removeprefix("synthetic/"))
        prerequisite = load_config(prerequisite).model.prerequisite
    done = []
    for step in chain:
        cfg = notebook_config(step, quick=quick, fold=fold, data_root=data_root)
        latest = Path(cfg.train.out_dir) / "latest.pt"
        if not latest.is_file():
            train_or_resume(cfg, fresh=False)
        done.append(latest)
    return done


def eval_row(result: Any) -> dict[str, Any]:
    """A results-table row from an ``EvalResult``: mIoU / FB-IoU mean ± std and the episode count."""
    return {"mIoU": result.miou_mean, "mIoU std": result.miou_std, "FB-IoU": result.fbiou_mean,
            "FB-IoU std": result.fbiou_std, "episodes": result.episodes_per_seed * len(result.seeds)}


__all__ = ["FULL_SYNTHETIC", "QUICK_CHANGES", "QUICK_EPISODES", "QUICK_ITERATIONS", "QUICK_SYNTHETIC",
           "crossdomain_root", "ensure_prerequisites", "eval_row", "is_quick", "is_shipped_file", "notebook_config", "repo_root", "run_name",
           "synthetic_root", "train_or_resume", "trained_or_fresh"]
