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

import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsslab.data.eval_protocols import EVAL_PROTOCOLS, get_protocol, to_label_resolution
from fsslab.data.io import DatasetError, max_pixels
from fsslab.data.io import binary_mask as _binary_mask
from fsslab.data.transforms import normalize
from fsslab.data.weak import box_to_label, strokes_to_label
from fsslab.engine.evaluate import AMP_DTYPES as ENGINE_AMP_DTYPES
from fsslab.engine.evaluate import warn_if_emulated_bf16
from fsslab.predict.io import (
    OutputSet,
    PredictError,
    check_box,
    collect_queries,
    load_image_header,
    parse_box,
    read_mask,
    read_scribble,
)

AMP_DTYPES = {"none": None, **ENGINE_AMP_DTYPES}
DEFAULT_SIZE = 473  # the papers' evaluation size, for a bare nn.Module without a config
MIN_SIZE, MAX_SIZE = 16, 4096  # model input side: below, nothing is left; above, memory explodes (60000: 43 GB)


def _as_rgb(image: Any, what: str) -> np.ndarray:
    """An RGB uint8 [H,W,3] array of a numpy array ([H,W] grey replicated) or a PIL image (EXIF applied)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        try:
            image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (OSError, ValueError) as err:
            raise PredictError(f"{what}: the PIL image cannot be read ({err})") from None
    if not isinstance(image, np.ndarray):
        raise PredictError(f"{what}: expected an RGB uint8 numpy array [H,W,3], a PIL image, or (for queries) a "
                           f"path or folder; got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PredictError(f"{what}: the image must be RGB uint8 [H,W,3], got {image.dtype} {tuple(image.shape)}")
    if 0 in image.shape[:2]:
        raise PredictError(f"{what}: the image is empty ({image.shape[0]}x{image.shape[1]} pixels)")
    budget = max_pixels()
    if image.shape[0] * image.shape[1] > budget:
        raise PredictError(f"{what}: the image is {image.shape[1]}x{image.shape[0]} (WxH), over fsslab's budget of "
                           f"{budget / 1e6:.1f} megapixels; resize it, or raise the budget with "
                           "fsslab.data.io.set_max_pixels(N) or FSSLAB_MAX_PIXELS")
    return image


@dataclass
class Support:
    """One shot: an RGB uint8 [H,W,3] image (or a PIL image) and its label [H,W], read by fsslab's one mask
    convention (``fsslab.data.io.binary_mask``, as the CLI reads mask files): 0 background and one other value
    (1, 255, ...) the object, or VOC style 0/1/255 with 255 an ignore band; anything else is refused."""

    image: np.ndarray
    label: np.ndarray
    kind: str = "mask"  # how the label was given: "mask", "box" or "scribble"
    source: str = "support"
    label_file: str | None = None  # the mask or scribble file it was read from (never taken as a query)

    def __post_init__(self) -> None:
        image = _as_rgb(self.image, f"support {self.source}")
        label = np.asarray(self.label)
        if label.shape != image.shape[:2]:
            raise PredictError(f"support {self.source}: label {tuple(label.shape)} and image "
                               f"{tuple(image.shape[:2])} differ in size")
        try:
            label = _binary_mask(label, f"of support {self.source}", "the label")
        except DatasetError as err:
            raise PredictError(str(err)) from None
        self.image, self.label = image, label

    @classmethod
    def from_files(cls, image: str | Path, mask: str | Path | None = None,
                   box: str | Sequence[int] | None = None, scribble: str | Path | None = None) -> Support:
        """Read a support image with exactly one of: a ``mask`` file, a ``box`` (``"x0,y0,x1,y1"`` or four
        ints, x1/y1 exclusive) or a ``scribble`` image (``fsslab.predict.io`` documents the encodings)."""
        if sum(v is not None for v in (mask, box, scribble)) != 1:
            raise PredictError(f"support {image}: give exactly one of a mask, a box or a scribble")
        pixels, header = load_image_header(image, "support image")
        shape = pixels.shape[:2]
        if mask is not None:
            return cls(pixels, read_mask(mask, header, str(image)), "mask", f"{image}:{mask}", str(mask))
        if box is not None:
            corners = parse_box(box) if isinstance(box, str) else parse_box(",".join(str(v) for v in box))
            check_box(corners, shape, str(image))
            return cls(pixels, box_to_label(shape, corners), "box", f"{image} box {','.join(map(str, corners))}")
        strokes = read_scribble(scribble, header, str(image))  # type: ignore[arg-type]
        return cls(pixels, strokes_to_label(strokes), "scribble", f"{image} scribble {scribble}", str(scribble))


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
        elif isinstance(data.get("config"), dict):
            cfg = config_from_dict(data["config"])
        elif "config" in data:
            raise PredictError(f"checkpoint {checkpoint}: its 'config' entry is a {type(data['config']).__name__}, "
                               "not a config mapping; pass --config")
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
    check_finite_weights(module, description.split(":", 1)[1] if ":" in description else description)
    return PredictModel(module.eval(), int(cfg.data.val_size), cfg.eval.protocol, description)


def check_finite_weights(module: nn.Module, source: str) -> None:
    """Refuse a model whose parameters or buffers hold NaN or inf (a diverged run): its every output would be
    NaN, i.e. an all-foreground (or all-background) mask with an undefined confidence."""
    bad = [name for name, tensor in module.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise PredictError(f"{source}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {', '.join(bad[:3])}): "
                           "the run it comes from diverged; use an earlier checkpoint of that run")


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


def _is_pil(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


def _as_queries(queries: Any, exclude: Sequence[str | Path] = ()) -> list[tuple[str, Any]]:
    if isinstance(queries, (str, Path, np.ndarray)) or _is_pil(queries):
        queries = [queries]
    if not isinstance(queries, Iterable):
        raise PredictError(f"queries: expected image paths, folders, RGB uint8 arrays or PIL images (or a list of "
                           f"them), got {type(queries).__name__}")
    items: list[tuple[str, Any]] = []
    for index, query in enumerate(queries):
        if isinstance(query, np.ndarray) or _is_pil(query):
            items.append((f"query_{index}", query))
        elif isinstance(query, (str, Path)):
            items.extend((str(path), path) for path in collect_queries([query], exclude))
        else:
            raise PredictError(f"query {index}: expected an image path, a folder, an RGB uint8 array or a PIL "
                               f"image, got {type(query).__name__}")
    if not items:
        raise PredictError("no query image given")
    return items


def _query_image(query: Any, name: str) -> np.ndarray:
    if isinstance(query, (str, Path)):
        return load_image_header(query, "query image")[0]
    return _as_rgb(query, name)


def check_size(size: Any, what: str = "size") -> int:
    """The model input side as an int in MIN_SIZE..MAX_SIZE, or a PredictError naming the value."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise PredictError(f"{what} must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels (the model's input "
                           f"side; the output keeps each query's own size), got {size!r}")
    return int(size)


def iter_predictions(model: nn.Module | PredictModel, supports: Sequence[Support], queries: Any, *,
                     size: int | None = None, protocol: str | None = None,
                     device: str | torch.device | None = None, amp: str = "none",
                     progress: bool = False) -> Iterator[Prediction]:
    """Like :func:`predict`, one :class:`Prediction` at a time (for folders too large to keep in memory)."""
    if isinstance(model, PredictModel):
        size = model.size if size is None else size
        protocol = protocol or model.protocol
        module = model.module
    elif isinstance(model, nn.Module):
        module = model
    else:
        raise PredictError(f"model: expected an fsslab model (fsslab.predict.load_model or an nn.Module), got "
                           f"{type(model).__name__}")
    size, protocol = check_size(DEFAULT_SIZE if size is None else size), protocol or "fsslab"
    if protocol not in EVAL_PROTOCOLS:
        raise PredictError(f"unknown protocol {protocol!r}; valid: {sorted(EVAL_PROTOCOLS)}")
    if isinstance(supports, Support):
        supports = [supports]
    if not isinstance(supports, Sequence) or not all(isinstance(s, Support) for s in supports):
        raise PredictError("supports: expected a list of fsslab.predict.Support (Support.from_files(...) or "
                           "Support(image, label))")
    if amp not in AMP_DTYPES:
        raise PredictError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    if not supports:
        raise PredictError("no support given: at least one support image with a mask, a box or a scribble")
    device = resolve_device(device)
    if amp == "fp16" and device.type != "cuda":
        raise PredictError("amp fp16 needs a CUDA device; use bf16 on the CPU")
    items = _as_queries(queries, exclude=[s.label_file for s in supports if s.label_file])
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
        if not bool(torch.isfinite(logits).all()):
            raise PredictError(f"the model's output for {name} holds NaN or inf: its weights or inputs are broken "
                               "(a diverged checkpoint?); nothing was written")
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


def write_predictions(predictions: Iterable[Prediction], out_dir: str | Path, *, overwrite: bool = False,
                      protected: Iterable[str | Path] = ()) -> list[dict[str, Any]]:
    """For each prediction write ``<stem>_mask.png`` (0/255, the query's size), ``<stem>_overlay.png`` and
    a line of ``<out_dir>/predictions.jsonl``; returns the JSON records.

    The set is written as a whole (``fsslab.predict.io.OutputSet``): ``out_dir`` is checked before the first
    prediction is computed; a folder that already holds predictions is refused unless ``overwrite``; nothing
    lands in ``out_dir`` unless every prediction succeeded; no file that is not an earlier prediction (the
    queries, the ``protected`` files, a user's file) is ever replaced: such a name gets a number instead."""
    outputs = OutputSet(out_dir, overwrite=overwrite, protected=protected)
    try:
        for prediction in predictions:
            outputs.add(prediction.source, prediction.image, prediction.mask, prediction.summary())
    except BaseException:
        outputs.abort()
        raise
    return outputs.commit()


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
