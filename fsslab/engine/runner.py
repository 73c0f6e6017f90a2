"""From a RunConfig to datasets, a model, a training run and an evaluation (used by CLI and notebooks).

These are the adapters from ``RunConfig`` to the engine's explicit arguments (``evaluate``, ``Trainer``). They
read what is on disk and never prepare it: a missing synthetic benchmark or prerequisite run is an error
naming the command that prepares it (``fsslab.engine.prerequisites``).
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

from fsslab.config import RunConfig, replace_section
from fsslab.engine.checkpoint import load_checkpoint
from fsslab.engine.evaluate import EvalResult, evaluate
from fsslab.engine.prerequisites import check_data, check_prerequisite
from fsslab.errors import CheckpointError, ConfigError
from fsslab.models.oracle import QueryLabelOracle, is_control


def dataset_options(cfg: RunConfig, split: str) -> tuple[Any, dict[str, Any]]:
    """``(EpisodeOptions, own)`` of ``split`` (a training or an evaluation split): the episodes' options from
    ``cfg.data`` (and ``cfg.eval.protocol``), and the dataset's own keyword arguments of ``build_dataset`` (COCO's
    ``folds``; a class folder's ``classes``, ``split_file``, ``mask_threshold``). ``data.params`` fill either."""
    from fsslab.data.episode_options import EpisodeOptions
    from fsslab.data.lists import TRAINING_SPLITS

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
    from fsslab.data.episode_options import EpisodeOptions
    from fsslab.data.episodic import CocoEpisodes

    # set from other config fields (or the dataset's positional arguments), not through data.params
    derived = {"self", "root", "benchmark", "split", "fold", "shot", "options", "kwargs"}
    valid = set(EpisodeOptions.names())
    if dataset == "coco":
        valid |= {p for p in inspect.signature(CocoEpisodes.__init__).parameters if p not in derived}
    if dataset in ("fss1000", "folder"):  # class folders: the class split and the mask threshold
        from fsslab.data.folder import FolderEpisodes, FSS1000Episodes

        own = FSS1000Episodes if dataset == "fss1000" else FolderEpisodes
        valid |= {p for p in inspect.signature(own.__init__).parameters if p not in derived}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(f"unknown data.params key(s) {unknown}; valid keys: {sorted(valid)}")


def build_train_set(cfg: RunConfig) -> Any:
    from fsslab.data import build_dataset

    check_data(cfg)
    if cfg.data.train_data == "base":  # BAM BaseData: stage 1 on the whole list with base annotations
        from fsslab.config import ConfigError
        from fsslab.data.base_data import BaseClassDataset
        from fsslab.data.classes import get_benchmark

        unsupported = sorted(set(cfg.data.params) - {"augmentation", "list_path", "base_label"})
        if unsupported:
            raise ConfigError(f"data.params {unsupported} do not apply to data.train_data=base (BAM BaseData: every "
                              "image of the list, no episodes); it takes only augmentation, list_path and base_label")
        options, _ = dataset_options(cfg, cfg.data.train_split)
        n_label_classes = None
        if cfg.data.dataset == "synthetic":  # a procedural pretrain split has its own ids: the data's meta.json says
            from fsslab.data.synthetic import label_classes_on_disk

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
    from fsslab.data import build_dataset
    from fsslab.engine.controls import with_supports

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
    from fsslab.engine.sampling import seed_everything
    from fsslab.models import build_model

    if cfg.model.name == "oracle":  # the evaluation control: no params, no starting checkpoint
        return QueryLabelOracle()
    seed_everything(cfg.train.seed)
    model = architecture(cfg) if full_checkpoint else build_model(cfg.model)
    if cfg.model.init_checkpoint and not full_checkpoint:
        init_from_checkpoint(model, cfg.model.init_checkpoint, cfg.model.init_prefix)
    return model


def architecture(cfg: RunConfig) -> nn.Module:
    """The model of ``cfg`` with nothing read from disk (no ``pretrained`` stage-1 file): the weights come from
    a whole checkpoint of it next (``fsslab eval --checkpoint``, a shipped checkpoint)."""
    from fsslab.models import build_model

    params = dict(cfg.model.params)
    if "pretrained" in params:
        params["pretrained"] = None
    return build_model({"name": cfg.model.name, **params})


def load_model_weights(model: nn.Module, checkpoint: dict[str, Any], source: str | Path) -> nn.Module:
    """Load an fsslab checkpoint's ``model`` weights into ``model`` (strictly).

    A checkpoint of another model or width is a CheckpointError that counts the missing / unexpected /
    mis-shaped keys, names the first few and says what the checkpoint was trained as, instead of torch's
    listing of every key.
    """
    from fsslab.models.official import check_keys

    recorded = (checkpoint.get("config") or {}).get("model") or {}
    hint = (f"; the checkpoint was trained as model.name={recorded.get('name')} with model.params="
            f"{recorded.get('params')}: evaluate it with the config it was trained with" if recorded else "")
    check_keys(model, checkpoint["model"], str(source), hint=hint)
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


def run_evaluation(
    cfg: RunConfig,
    model: nn.Module,
    seeds: list[int] | None = None,
    episodes: int | None = None,
    shot: int | None = None,
    support_label: str | None = None,
    progress: bool = True,
    device: torch.device | None = None,
) -> EvalResult:
    """Evaluate ``model`` as ``cfg.eval`` says (seeds, episodes, shot, support label, amp); the arguments, when
    given, replace those of ``cfg.eval`` (``cfg`` is the adapter to ``evaluate``'s explicit arguments)."""
    changes = {"shot": shot, "support_label": support_label, "seeds": list(seeds) if seeds else None,
               "episodes": episodes}
    cfg = replace_section(cfg, "eval", **{k: v for k, v in changes.items() if v is not None})
    factory, benchmark = eval_dataset_factory(cfg)
    built: list[Any] = []

    def keeping(seed: int, count: int) -> Any:  # keeps every seed's episodes for their loading counters
        dataset = factory(seed, count)
        built.append(getattr(dataset, "dataset", dataset))  # the episodes inside a mismatched-support control
        return dataset

    n_classes, novel = benchmark.n_classes, benchmark.novel_classes(cfg.data.fold)
    settings = {
        "dataset": cfg.data.dataset,
        "fold": cfg.data.fold,
        "shot": cfg.eval.shot,
        "support_label": cfg.eval.support_label,
        "supports": cfg.eval.supports,
        "protocol": cfg.data.protocol,
        "eval_protocol": cfg.eval.protocol,
        "val_size": cfg.data.val_size,
        "amp": cfg.eval.amp,
        "model": cfg.model.name,
        "control": "oracle" if is_control(model) else None,
        "class_names": {c: benchmark.class_name(c) for c in novel}
        if hasattr(benchmark, "class_name")
        else {},
    }
    result = evaluate(
        model,
        keeping,
        cfg.eval.seeds,
        cfg.eval.episodes,
        n_classes,
        novel,
        cfg.eval.batch_size,
        cfg.eval.amp,
        device=device,
        workers=cfg.data.workers,
        progress=progress,
        settings=settings,
    )
    from fsslab.data.episode_stats import sum_stats

    result.data_stats = sum_stats(d.stats for d in built if hasattr(d, "stats"))
    return result


@dataclasses.dataclass
class ControlReport:
    """A result and its controls on the same episodes and protocol (mIoU values in %)."""

    result: EvalResult  # the evaluation as configured
    oracle: EvalResult  # the query's own label: ~100 when the evaluation path is right
    mismatched: EvalResult  # every query with the supports of another class
    one_shot: EvalResult  # the same model with 1 support
    five_shot: EvalResult  # ... and with 5

    @property
    def drop(self) -> float:
        """matched − mismatched mIoU: how much the model relies on its supports."""
        return self.result.miou_mean - self.mismatched.miou_mean

    @property
    def shot_gain(self) -> float:
        """5-shot − 1-shot mIoU of the same model."""
        return self.five_shot.miou_mean - self.one_shot.miou_mean

    def table(self) -> str:
        def row(name: str, r: EvalResult, note: str = "") -> str:
            return f"{name:<26} {r.miou_mean:>7.2f} ± {r.miou_std:<5.2f} {r.fbiou_mean:>7.2f}  {note}"

        lines = [
            f"{'controls (same episodes)':<26} {'mIoU':>7}   {'':5} {'FB-IoU':>7}",
            row("result", self.result, f"{self.result.settings.get('shot')}-shot, supports as configured"),
            row("oracle (control)", self.oracle, "the query's own label: must be ~100"),
            row("mismatched supports", self.mismatched, f"drop {self.drop:+.2f} (matched − mismatched)"),
            row("1 shot", self.one_shot),
            row("5 shots", self.five_shot, f"gain {self.shot_gain:+.2f} (5-shot − 1-shot)"),
        ]
        r = self.result
        if r.miou_without_base_mean is not None:
            lines.append(f"{'base objects removed':<26} {r.miou_without_base_mean:>7.2f}   {'':5} {'':>7}  "
                         f"{r.base_share_mean:.1f}% of the predicted foreground lay on base-class objects")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def brief(r: EvalResult) -> dict[str, Any]:
            return {"miou": r.miou_mean, "miou_std": r.miou_std, "fbiou": r.fbiou_mean, "fbiou_std": r.fbiou_std,
                    "base_share": r.base_share_mean, "miou_without_base": r.miou_without_base_mean}

        return {"oracle": brief(self.oracle), "mismatched": brief(self.mismatched), "one_shot": brief(self.one_shot),
                "five_shot": brief(self.five_shot), "drop": self.drop, "shot_gain": self.shot_gain,
                "base_share": self.result.base_share_mean,
                "miou_without_base": self.result.miou_without_base_mean}  # fmt: skip


def run_controls(
    cfg: RunConfig,
    model: nn.Module,
    result: EvalResult | None = None,
    progress: bool = True,
    device: torch.device | None = None,
) -> ControlReport:
    """``result`` (evaluated here when None) with its controls on the same data, seeds and protocol."""
    def with_eval(**changes: Any) -> RunConfig:
        return replace_section(cfg, "eval", **changes)

    def run(config: RunConfig, net: nn.Module, shot: int | None = None) -> EvalResult:
        return run_evaluation(config, net, shot=shot, progress=progress, device=device)

    result = result or run(cfg, model)
    oracle_cfg = replace_section(cfg, "model", name="oracle")
    shot = result.settings.get("shot")
    return ControlReport(
        result=result,
        oracle=run(oracle_cfg, QueryLabelOracle().to(device or torch.device("cpu"))),
        mismatched=run(with_eval(supports="mismatched"), model),
        one_shot=result if shot == 1 and cfg.eval.supports == "matched" else run(with_eval(supports="matched"), model, 1),
        five_shot=result if shot == 5 and cfg.eval.supports == "matched" else run(with_eval(supports="matched"), model, 5),
    )


def run_training(
    cfg: RunConfig, resume: bool | str = False, out_dir: str | Path | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Build data and model from ``cfg``, train (validating with the first eval seed), return the summary.

    ``resume``/``overwrite``: as ``Trainer.fit`` (a directory that holds a run needs one of them)."""
    from fsslab.engine import distributed
    from fsslab.engine.trainer import Trainer

    check_prerequisite(cfg)  # missing: fsslab train --with-prerequisites (prerequisites.train_prerequisites)
    model = build_run_model(cfg)
    train_set = build_train_set(cfg)

    def validate(m: nn.Module) -> dict[str, Any]:
        result = run_evaluation(cfg, m, seeds=cfg.eval.seeds[:1], progress=False)
        return {"miou": result.miou_mean, "fbiou": result.fbiou_mean}

    trainer = Trainer.from_config(cfg, model, train_set, evaluate_fn=validate if cfg.train.validate else None,
                                  out_dir=out_dir)
    try:
        summary = trainer.fit(resume=resume, overwrite=overwrite)
    finally:
        distributed.teardown_distributed()
    if hasattr(train_set, "stats"):  # empty queries, support crops that fell back (this rank's, all its workers)
        summary["data_stats"] = train_set.stats.to_dict()
    return summary


__all__ = [
    "ControlReport",
    "architecture",
    "build_run_model",
    "build_train_set",
    "dataset_kwargs",
    "dataset_options",
    "eval_dataset_factory",
    "init_from_checkpoint",
    "load_model_weights",
    "run_controls",
    "run_evaluation",
    "run_training",
]
