"""What a run config holds: its sections as dataclasses (fields, types, defaults, what each means) and the values
checked beyond their type (choices, ranges).

Loading a config (YAML, overrides, derived values, placeholders) is ``fsslab.config``'s job, coercing a value to a
field's type ``fsslab.config.values``'; both read this module, which knows nothing of files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from fsslab.errors import ConfigError


@dataclass
class DataConfig:
    """Which episodes to train/evaluate on and how they are built."""

    # "pascal" | "coco" | "synthetic" | "fss1000" | "folder" (class folders, your split: data.params.classes
    # or data.params.split_file; fsslab.data.episodes.folder)
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
    # PSPNet: every image of the list, novel classes as background, no area filter; fsslab.data.base_data) or
    # "procedural" (the wide shape vocabulary rendered on the fly, data.params its knobs; fsslab.data.synthetic.wide)
    # or "procedural_episodes" (few-shot episodes over that vocabulary, rendered on the fly: WideEpisodes)
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
    grad_sync: str = "auto"  # multi-GPU gradient sync: "auto" | "ddp" | "manual" (engine/trainer.py, step.py)
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
    # model selection (fsslab.engine.selection): which checkpoint is the run's model and when the run
    # validates. "latest" (latest.pt; validations, when train.validate, only logged), "best_val" (best.pt of
    # the validations every eval_every iterations), and the references' rules, which select on the test
    # episodes (optimistic): "amnet" (every epoch, best.pt, early stop after stop_interval epochs without a new
    # best), "ipmt" (every epoch after epoch select_after, best.pt), "bam_stage1" (the base learner's base-class
    # mIoU on the val images every epoch, best.pt as BAM's best.pth, the same early stop). A later stage (a
    # prerequisite's model, model.params.pretrained) reads the model file.
    selection: str = "latest"
    stop_interval: int | None = None  # amnet, bam_stage1: epochs without a new best before the run stops
    select_after: int = 0  # ipmt: validations start after this many epochs (IPMT's `epoch > 70`, 0-based: 71)
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
    # how queries are resized, mapped back and scored (fsslab.data.eval_protocols): "fsslab" (long side to
    # data.val_size, never upscaled; the exact inverse back; mIoU over the classes with episodes), "ipmt"
    # (PFENet/IPMT Resize, always to val_size; scored as IPMT's test.py: the whole square stretched back to
    # L×L, which loses a few IoU, and mIoU over all novel classes), "amformer" (AMNet: stretched to a square,
    # scored as its test.py), "hsnet" (the same stretch, scored at the input size as HSNet's test.py)
    protocol: str = "fsslab"
    # "mismatched": a control where each query gets the supports of another class (engine.controls);
    # the drop from "matched" measures how much the model relies on its supports
    supports: str = "matched"
    # also run the controls beside the result (fsslab.engine.runner.run_controls): the oracle (must score
    # ~100), mismatched supports (the drop is how much the model reads its supports), the K-shot gain
    # (the same model given 1 and 5 shots) and the all-foreground reference (the floor a model must beat)
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
# training sets rendered in the data loader (fsslab.data.synthetic.wide): nothing on disk to check
RENDERED_TRAIN_DATA = ("procedural", "procedural_episodes")
CHOICES: dict[tuple[str, str], tuple[Any, ...]] = {
    ("data", "dataset"): ("pascal", "coco", "synthetic", "fss1000", "folder"),
    ("data", "protocol"): ("pfenet", "bam"),
    ("data", "support_label"): ("mask", "box", "scribble"),
    ("data", "coco_split"): ("interleaved", "contiguous"),
    ("data", "train_split"): ("train", "pretrain"),
    ("data", "train_data"): ("episodes", "base", *RENDERED_TRAIN_DATA),
    ("train", "amp"): ("none", "bf16", "fp16"),
    ("train", "grad_sync"): ("auto", "ddp", "manual"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "objective_index"): ("global", "epoch"),
    ("train", "selection"): ("latest", "best_val", "amnet", "ipmt", "bam_stage1"),
    ("eval", "amp"): ("none", "bf16", "fp16"),
    ("eval", "support_label"): (None, "mask", "box", "scribble"),
    ("eval", "supports"): SUPPORT_MODES,
    ("eval", "protocol"): ("fsslab", "ipmt", "amformer", "hsnet"),
}
FREE_DICTS = {
    ("data", "params"),
    ("data", "synthetic"),
    ("model", "params"),
}  # keys inside are validated by their consumer

# section name -> its dataclass, in the order of a config file
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "expected": ExpectedConfig,
}


def check_ranges(cfg: RunConfig) -> None:
    """Values whose type is right but whose range is not (checked once the whole config is built)."""
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
        (cfg.train.selection == "latest" or cfg.train.validate,
         (f"train.selection={cfg.train.selection} selects on validations: set train.validate=true "
          "(or train.selection=latest)")),
        (cfg.train.stop_interval is None or cfg.train.stop_interval >= 1,
         f"train.stop_interval must be >= 1 epochs (or null: no early stop), got {cfg.train.stop_interval}"),
        (cfg.train.stop_interval is None or cfg.train.selection in ("amnet", "bam_stage1"),
         (f"train.stop_interval stops early under train.selection=amnet or bam_stage1 only (now "
          f"{cfg.train.selection})")),
        (cfg.train.select_after >= 0, f"train.select_after must be >= 0 epochs, got {cfg.train.select_after}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


__all__ = [
    "CHOICES",
    "FREE_DICTS",
    "SECTIONS",
    "SUPPORT_MODES",
    "DataConfig",
    "EvalConfig",
    "ExpectedConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "check_ranges",
]
