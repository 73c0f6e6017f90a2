"""Segment your own images: K support images with a mask, a box or a scribble → a mask for every query.

    from fsslab.predict import Support, load_model, predict, write_predictions

    model = load_model(pretrained="ipmt_tiny_fold0_1shot")          # or checkpoint=..., config=...
    supports = [Support.from_files("cat.jpg", mask="cat_mask.png"),   # K shots: mask, box or scribble
                Support.from_files("cat2.jpg", box=(10, 20, 200, 180))]
    results = predict(model, supports, ["query1.jpg", "more_queries/"])
    results[0].mask                                                  # uint8 0/1, the query's own size
    write_predictions(results, "out/")                               # what `fsslab predict` writes

Queries go through the evaluation protocol's input transform (``fsslab.data.eval_protocols``: resize, pad) and
the datasets' ImageNet normalisation, and the logits come back to each query's own size by the protocol's
exact inverse, as in ``fsslab eval``. The module is callable: ``fsslab.predict(model, supports, queries)`` is
``fsslab.predict.predict(...)``.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsslab.batch import IGNORE_INDEX
from fsslab.data.eval_protocols import EVAL_PROTOCOLS, get_protocol, to_label_resolution
from fsslab.data.transforms import normalize
from fsslab.data.weak import box_to_label, strokes_to_label
from fsslab.engine.evaluate import AMP_DTYPES as ENGINE_AMP_DTYPES
from fsslab.engine.evaluate import warn_if_emulated_bf16
from fsslab.predict.io import (
    PredictError,
    check_box,
    collect_queries,
    load_image,
    parse_box,
    read_mask,
    read_scribble,
    unique_stem,
    write_outputs,
)

AMP_DTYPES = {"none": None, **ENGINE_AMP_DTYPES}
DEFAULT_SIZE = 473  # the papers' evaluation size, for a bare nn.Module without a config


@dataclass
class Support:
    """One shot: an RGB uint8 [H,W,3] image and its label uint8 [H,W] (1 object, 0 background, 255 ignore)."""

    image: np.ndarray
    label: np.ndarray
    kind: str = "mask"  # how the label was given: "mask", "box" or "scribble"
    source: str = "support"

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PredictError(f"support {self.source}: the image must be RGB uint8 [H,W,3], got "
                               f"{image.dtype} {tuple(image.shape)}")
        label = np.asarray(self.label)
        if label.shape != image.shape[:2]:
            raise PredictError(f"support {self.source}: label {tuple(label.shape)} and image "
                               f"{tuple(image.shape[:2])} differ in size")
        if not set(np.unique(label).tolist()) <= {0, 1, IGNORE_INDEX}:
            raise PredictError(f"support {self.source}: the label must hold 0 (background), 1 (object) and "
                               f"255 (ignore) only, got {np.unique(label)[:8].tolist()}")
        if not (label == 1).any():
            raise PredictError(f"support {self.source}: the label has no object pixel")
        self.image, self.label = image, label.astype(np.uint8)

    @classmethod
    def from_files(cls, image: str | Path, mask: str | Path | None = None,
                   box: str | Sequence[int] | None = None, scribble: str | Path | None = None) -> Support:
        """Read a support image with exactly one of: a ``mask`` file, a ``box`` (``"x0,y0,x1,y1"`` or four
        ints, x1/y1 exclusive) or a ``scribble`` image (``fsslab.predict.io`` documents the encodings)."""
        if sum(v is not None for v in (mask, box, scribble)) != 1:
            raise PredictError(f"support {image}: give exactly one of a mask, a box or a scribble")
        pixels = load_image(image, "support image")
        shape = pixels.shape[:2]
        if mask is not None:
            return cls(pixels, read_mask(mask, shape, str(image)), "mask", f"{image}:{mask}")
        if box is not None:
            corners = parse_box(box) if isinstance(box, str) else parse_box(",".join(str(v) for v in box))
            check_box(corners, shape, str(image))
            return cls(pixels, box_to_label(shape, corners), "box", f"{image} box {','.join(map(str, corners))}")
        strokes = read_scribble(scribble, shape, str(image))  # type: ignore[arg-type]
        return cls(pixels, strokes_to_label(strokes), "scribble", f"{image} scribble {scribble}")


@dataclass
class PredictModel:
    """A model with the input settings it was evaluated with: ``size`` (data.val_size) and ``protocol``."""

    module: nn.Module
    size: int = DEFAULT_SIZE
    protocol: str = "fsslab"
    description: str = ""


@dataclass
class Prediction:
    """The result for one query at its own size: ``mask`` uint8 0/1 and ``foreground`` probability float32."""

    source: str
    image: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    foreground: np.ndarray = field(repr=False)

    @property
    def foreground_fraction(self) -> float:
        """Share of the query's pixels predicted as the object."""
        return float(self.mask.mean())

    @property
    def mean_confidence(self) -> float:
        """Mean over pixels of the probability of the predicted class (0.5: undecided, 1: certain)."""
        return float(np.maximum(self.foreground, 1.0 - self.foreground).mean())

    def summary(self) -> dict[str, Any]:
        """The JSON record of ``predictions.jsonl`` (without the output file names)."""
        height, width = self.mask.shape
        return {"query": self.source, "height": height, "width": width,
                "foreground_fraction": round(self.foreground_fraction, 6),
                "mean_confidence": round(self.mean_confidence, 6)}


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; a CUDA device that is not there is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PredictError(f"--device {name!r} is not a device (e.g. cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PredictError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def load_model(pretrained: str | None = None, checkpoint: str | Path | None = None,
               config: str | Path | None = None, overrides: Sequence[str] = (), official: bool = False,
               shot: int = 1) -> PredictModel:
    """A model for :func:`predict` from one source, with its evaluation size and protocol:

    - ``pretrained``: a shipped checkpoint (``fsslab zoo list``);
    - ``checkpoint``: an fsslab run checkpoint (latest.pt/best.pt); ``config`` (+ ``overrides``) defaults to
      the config saved in the checkpoint;
    - ``checkpoint`` + ``official=True`` + ``config``: an official IPMT/AMFormer file, built as the config's
      model (ResNet-50/101 from its backbone) for ``shot`` shots.
    """
    from fsslab.config import config_from_dict, load_config

    if (pretrained is None) == (checkpoint is None):
        raise PredictError("give exactly one model: a pretrained name or a checkpoint")
    if pretrained is not None:
        from fsslab.zoo import ZooError, load_pretrained, pretrained_config

        if config is not None or official:
            raise PredictError(f"--pretrained {pretrained} carries its own config; drop --config/--official")
        try:
            cfg = pretrained_config(pretrained)
            module = load_pretrained(pretrained)
        except (ZooError, KeyError) as err:  # KeyError: not a shipped name (its message lists them)
            raise PredictError(f"--pretrained {pretrained}: {err.args[0] if err.args else err}") from None
        description = f"pretrained:{pretrained}"
    elif official:
        from fsslab.models import load_official

        if config is None:
            raise PredictError("--official needs --config (e.g. pascal/ipmt_r50_fold0_1shot): it names the "
                               "architecture, its backbone and the evaluation size")
        cfg = load_config(config, list(overrides))
        layers = 101 if "101" in str(cfg.model.params.get("backbone", "")) else 50
        extra = {"dataset": cfg.data.dataset} if cfg.model.name == "amformer" else {}
        try:
            module = load_official(cfg.model.name, checkpoint, shot=shot, layers=layers, **extra)
        except ValueError as err:  # unreadable file, another architecture, or no official format for the model
            raise PredictError(f"--official {checkpoint}: {str(err)[:500]}") from None
        description = f"official:{checkpoint}"
    else:
        from fsslab.engine import architecture
        from fsslab.engine.checkpoint import load_checkpoint

        data = load_checkpoint(checkpoint)  # type: ignore[arg-type]
        if config is not None:
            cfg = load_config(config, list(overrides))
        elif "config" in data:
            cfg = config_from_dict(data["config"])
        else:
            raise PredictError(f"checkpoint {checkpoint} holds no config; pass --config")
        module = architecture(cfg)
        try:
            module.load_state_dict(data["model"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise PredictError(f"checkpoint {checkpoint} does not fit the model of config {cfg.name}: "
                               f"{' '.join(first[:2])[:300]}") from None
        description = f"checkpoint:{checkpoint}"
    return PredictModel(module.eval(), int(cfg.data.val_size), cfg.eval.protocol, description)


def _support_batch(supports: Sequence[Support], size: int, protocol: str) -> dict[str, torch.Tensor]:
    images, labels, paddings = [], [], []
    for support in supports:
        image, (label,), padding, _ = get_protocol(protocol).apply(support.image, [support.label], size)
        if not (label == 1).any():
            raise PredictError(f"support {support.source}: its object vanishes when the image is resized to the "
                               f"model's input ({size} pixels): draw a larger object or raise --size")
        images.append(normalize(image))
        labels.append(torch.from_numpy(label.astype(np.int64)))
        paddings.append(torch.from_numpy(padding))
    return {"support_imgs": torch.stack(images)[None], "support_masks": torch.stack(labels)[None],
            "support_padding": torch.stack(paddings)[None]}


def _query_batch(image: np.ndarray, size: int, protocol: str) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
    blank = np.zeros(image.shape[:2], np.uint8)  # its padded version marks the padding 255, as a label would
    resized, (label,), padding, valid = get_protocol(protocol).apply(image, [blank], size)
    return ({"query_img": normalize(resized)[None], "query_padding": torch.from_numpy(padding)[None],
             "query_mask": torch.from_numpy(label.astype(np.int64))[None]}, valid)


def _as_queries(queries: Any) -> list[tuple[str, str | Path | np.ndarray]]:
    if isinstance(queries, (str, Path, np.ndarray)):
        queries = [queries]
    items: list[tuple[str, str | Path | np.ndarray]] = []
    for index, query in enumerate(queries):
        if isinstance(query, np.ndarray):
            items.append((f"query_{index}", query))
        else:
            items.extend((str(path), path) for path in collect_queries([query]))
    if not items:
        raise PredictError("no query image given")
    return items


def _query_image(query: str | Path | np.ndarray, name: str) -> np.ndarray:
    if not isinstance(query, np.ndarray):
        return load_image(query, "query image")
    image = np.repeat(query[..., None], 3, axis=2) if query.ndim == 2 else query
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PredictError(f"{name}: a query array must be RGB uint8 [H,W,3], got {image.dtype} {image.shape}")
    return image


def iter_predictions(model: nn.Module | PredictModel, supports: Sequence[Support], queries: Any, *,
                     size: int | None = None, protocol: str | None = None,
                     device: str | torch.device | None = None, amp: str = "none",
                     progress: bool = False) -> Iterator[Prediction]:
    """Like :func:`predict`, one :class:`Prediction` at a time (for folders too large to keep in memory)."""
    if isinstance(model, PredictModel):
        size = size or model.size
        protocol = protocol or model.protocol
        module = model.module
    else:
        module = model
    size, protocol = int(size or DEFAULT_SIZE), protocol or "fsslab"
    if protocol not in EVAL_PROTOCOLS:
        raise PredictError(f"unknown protocol {protocol!r}; valid: {sorted(EVAL_PROTOCOLS)}")
    if size < 16:
        raise PredictError(f"size must be >= 16 pixels, got {size}")
    if amp not in AMP_DTYPES:
        raise PredictError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    if not supports:
        raise PredictError("no support given: at least one support image with a mask, a box or a scribble")
    device = resolve_device(device)
    if amp == "fp16" and device.type != "cuda":
        raise PredictError("amp fp16 needs a CUDA device; use bf16 on the CPU")
    items = _as_queries(queries)
    warn_if_emulated_bf16(amp, device)
    module = module.to(device).eval()
    shots = {k: v.to(device) for k, v in _support_batch(supports, size, protocol).items()}
    from tqdm.auto import tqdm

    for name, query in tqdm(items, desc="predict", unit="image", disable=not progress):
        image = _query_image(query, name)
        batch, valid = _query_batch(image, size, protocol)
        batch = {**{k: v.to(device) for k, v in batch.items()}, **shots}
        dtype = AMP_DTYPES[amp]
        try:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = module(batch).logits.float()
        except RuntimeError as err:  # e.g. out of memory, or a model that cannot take this input
            raise PredictError(f"the model failed on {name}: {str(err).strip().splitlines()[0][:300]}") from None
        (full,) = to_label_resolution(logits, torch.tensor([valid]), torch.tensor([image.shape[:2]]))
        foreground = full.softmax(0)[1].cpu().numpy().astype(np.float32)
        mask = (full.argmax(0) == 1).cpu().numpy().astype(np.uint8)
        yield Prediction(name, image, mask, foreground)


def predict(model: nn.Module | PredictModel, supports: Sequence[Support], queries: Any, *,
            size: int | None = None, protocol: str | None = None, device: str | torch.device | None = None,
            amp: str = "none", progress: bool = False) -> list[Prediction]:
    """Segment every query given the supports; returns one :class:`Prediction` per query image.

    model: a :class:`PredictModel` (``load_model``; its size and protocol are the defaults) or any fsslab
      model. supports: :class:`Support` shots (K >= 1). queries: image paths, folders (their images, sorted),
      RGB uint8 arrays, or one of these. size/protocol: the model's input (``fsslab.data.eval_protocols``).
    device: "cpu", "cuda", "cuda:1" or "auto" (default). amp: "none", "bf16" or "fp16" (CUDA).
    """
    return list(iter_predictions(model, supports, queries, size=size, protocol=protocol, device=device, amp=amp,
                                 progress=progress))


def write_predictions(predictions: Iterable[Prediction], out_dir: str | Path) -> list[dict[str, Any]]:
    """For each prediction write ``<stem>_mask.png`` (0/255, the query's size), ``<stem>_overlay.png`` and
    a line of ``<out_dir>/predictions.jsonl`` (rewritten); returns the JSON records."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / "predictions.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as err:
        raise PredictError(f"cannot write the results to {out}: {err}") from None
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    with handle:
        for prediction in predictions:
            stem = unique_stem(prediction.source, used)
            record = {**prediction.summary(), **write_outputs(out, stem, prediction.image, prediction.mask)}
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            records.append(record)
    return records


class _CallableModule(types.ModuleType):
    """``fsslab.predict(...)`` calls :func:`predict` (the documented way to customise a module)."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[Prediction]:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "PredictError",
    "PredictModel",
    "Prediction",
    "Support",
    "iter_predictions",
    "load_model",
    "predict",
    "resolve_device",
    "write_predictions",
]
