"""Shipped checkpoints of the synthetic-benchmark models: pack a run compactly, list, verify and load them."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fsslab
from fsslab.config import RunConfig, config_from_dict, flow_yaml, load_config
from fsslab.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from fsslab.errors import ConfigError, FsslabError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints" / "synthetic"
MANIFEST_NAME = "manifest.json"
# everything under the checkpoint directory: the 10 MB of the zoo issue, plus 0.5 MB for the six models the
# few-shot issue (#11) asks to ship (1- and 5-shot baseline, IPMT and AMFormer: 10.1 MB in int8)
BUDGET_BYTES = 10_500_000
FORMAT = 1
STORAGES = ("fp32", "fp16", "int8")
DEFAULT_CHECK = {"seeds": [0], "episodes": 100}
DEFAULT_TOLERANCE = 1e-6  # percentage points; the check eval runs on CPU with one thread (deterministic)


class ZooError(FsslabError, RuntimeError):
    """A packed checkpoint or the manifest is missing, inconsistent or corrupt."""


class UnknownCheckpointName(ZooError, KeyError):
    """No shipped checkpoint has that name (also a KeyError: a failed lookup, as it was before)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------- storage
def _encode(tensor: torch.Tensor, storage: str) -> dict[str, torch.Tensor]:
    """One tensor in the packed format; non-float tensors are always stored exactly."""
    if not tensor.is_floating_point() or storage == "fp32":
        return {"value": tensor.clone()}
    if storage == "int8" and tensor.dim() >= 2 and tensor.numel() >= 1024:
        # symmetric per-output-channel quantisation: the scale follows each filter's own range
        flat = tensor.float().flatten(1)  # [C_out, rest]
        scale = flat.abs().amax(1).clamp_min(1e-12) / 127.0  # [C_out]
        q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {"value": q.view_as(tensor), "scale": scale}
    return {"value": tensor.to(torch.float16) if storage in ("fp16", "int8") else tensor.clone()}


def _decode(item: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    value = item["value"]
    if "scale" in item:  # int8: [C_out, ...] * scale[C_out]
        value = (value.float().flatten(1) * item["scale"][:, None]).view(value.shape)
    return value.to(dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fingerprint(tensor: torch.Tensor) -> tuple[Any, ...]:
    data = tensor.detach().cpu().contiguous()
    return tuple(data.shape), str(data.dtype), hashlib.sha1(data.reshape(-1).view(torch.uint8).numpy().tobytes()
                                                            if data.numel() else b"").hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- manifest
def read_manifest(checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """The manifest (``{"format", "budget_bytes", "shared", "entries"}``); an empty one if there is none."""
    path = Path(checkpoint_dir or CHECKPOINT_DIR) / MANIFEST_NAME
    if not path.is_file():
        return {"format": FORMAT, "budget_bytes": BUDGET_BYTES, "shared": {}, "entries": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
        raise ZooError(f"{path}: not an fsslab zoo manifest (no 'entries' mapping)")
    manifest.setdefault("shared", {})
    return manifest


def _write_manifest(manifest: dict[str, Any], checkpoint_dir: Path) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=checkpoint_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.chmod(tmp, 0o644)  # package data: readable by everyone (mkstemp creates 0600)
    os.replace(tmp, checkpoint_dir / MANIFEST_NAME)


def list_pretrained(checkpoint_dir: str | Path | None = None) -> list[str]:
    """Names of the shipped checkpoints (``load_pretrained`` accepts each)."""
    return sorted(read_manifest(checkpoint_dir)["entries"])


def pretrained_info(name: str, checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry of ``name``: command, config, data seed, metrics, file, sha256, size."""
    entries = read_manifest(checkpoint_dir)["entries"]
    if name not in entries:
        raise UnknownCheckpointName(f"no shipped checkpoint {name!r}; available: {sorted(entries) or 'none'}")
    return entries[name]


def total_size(checkpoint_dir: str | Path | None = None) -> int:
    """Bytes of every file under the checkpoint directory (what the package ships)."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


# ------------------------------------------------------------------------------------------ run config
def _run_config(ckpt: dict[str, Any], path: Path) -> RunConfig:
    if not isinstance(ckpt.get("config"), dict):
        raise ZooError(f"{path}: the checkpoint carries no run config; pack a checkpoint written by `fsslab train`")
    return config_from_dict(ckpt["config"])


def derive_overrides(cfg: RunConfig) -> list[str]:
    """``section.key=value`` overrides that turn the shipped config ``cfg.name`` into ``cfg`` (empty if none)."""
    try:
        shipped = load_config(f"synthetic/{cfg.name}" if "/" not in cfg.name else cfg.name)
    except Exception:  # noqa: BLE001 - not a shipped config: the caller records the full config anyway
        return []
    ours, theirs = cfg.to_dict(), shipped.to_dict()
    overrides = [f"{section}.{key}={flow_yaml(value)}" for section, values in ours.items() if isinstance(values, dict)
                 for key, value in values.items() if theirs[section].get(key) != value and key != "out_dir"]
    if load_config(shipped_name(cfg), overrides).to_dict()["train"]["out_dir"] != ours["train"]["out_dir"]:
        overrides.append(f"train.out_dir={flow_yaml(ours['train']['out_dir'])}")
    return overrides


def shipped_name(cfg: RunConfig) -> str:
    """The shipped config a run came from (``synthetic/<name>``)."""
    return cfg.name if "/" in cfg.name else f"synthetic/{cfg.name}"


def build_from_config(cfg: RunConfig) -> nn.Module:
    """The architecture of ``cfg`` with nothing loaded from disk (weights come from the packed file)."""
    from fsslab.models import build_model, model_class

    params = dict(cfg.model.params)
    signature = inspect.signature(model_class(cfg.model.name).__init__).parameters
    if "shot" in signature:
        params.setdefault("shot", cfg.data.shot)
    if "pretrained" in signature:
        params["pretrained"] = None  # the packed state dict holds every weight, the base learner's included
    return build_model({"name": cfg.model.name, **params})


# ------------------------------------------------------------------------------------------------ pack
def _resolve_checkpoint(run_dir_or_ckpt: str | Path) -> Path:
    path = Path(run_dir_or_ckpt)
    if path.is_dir():
        for candidate in ("latest.pt", "best.pt"):
            if (path / candidate).is_file():
                return path / candidate
        raise ZooError(f"{path}: no latest.pt or best.pt in this run directory")
    if not path.is_file():
        raise ZooError(f"{path}: no such run directory or checkpoint")
    return path


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """CPU evaluation with one thread: the same reduction order, hence the same numbers, on every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_eval(model: nn.Module, cfg: RunConfig, seeds: list[int], episodes: int,
               data_root: str | Path | None = None) -> dict[str, Any]:
    """The reduced, deterministic evaluation recorded at pack time and repeated by ``verify_pretrained``."""
    from fsslab.engine.runner import run_evaluation

    cfg = config_from_dict(cfg.to_dict())
    if data_root is not None:
        cfg.data.root = str(data_root)
    cfg.data.workers = 0
    with _one_thread(), torch.no_grad():
        result = run_evaluation(cfg, model.cpu().eval(), seeds=seeds, episodes=episodes, progress=False,
                                device=torch.device("cpu"))
    return {"seeds": list(seeds), "episodes": episodes, "miou": result.miou_mean, "fbiou": result.fbiou_mean,
            "per_seed": [{"seed": r["seed"], "miou": r["miou"], "fbiou": r["fbiou"]} for r in result.per_seed]}


def _eval_summary(eval_json: str | Path | None) -> dict[str, Any] | None:
    if eval_json is None:
        return None
    data = json.loads(Path(eval_json).read_text())
    missing = [k for k in ("miou", "fbiou", "per_seed") if k not in data]
    if missing:
        raise ZooError(f"{eval_json}: not an `fsslab eval --json` file (missing {missing})")
    keep = ("miou", "miou_std", "fbiou", "fbiou_std", "seeds", "episodes_per_seed", "class_iou")
    summary = {k: data[k] for k in keep if k in data}
    summary["per_seed"] = [{"seed": r["seed"], "miou": r["miou"], "fbiou": r["fbiou"]} for r in data["per_seed"]]
    summary["settings"] = {k: v for k, v in data.get("settings", {}).items() if k != "class_names"}
    summary["checkpoint"] = data.get("checkpoint")
    return summary


def _pack_shared(base: str | Path | None, state: dict[str, torch.Tensor], out: Path, manifest: dict[str, Any],
                 storage: str) -> tuple[dict[str, str], str | None]:
    """Store the tensors of ``state`` equal to one of ``base``'s once in ``shared/<base name>.pt`` (added to
    what is there; its manifest entry updated). Returns ({key in state: key in base}, the shared file or None)."""
    if base is None:
        return {}, None
    shared_refs: dict[str, str] = {}
    base_path = _resolve_checkpoint(base)
    base_ckpt = load_checkpoint(base_path)
    base_state = base_ckpt["model"]
    out_dir_name = Path(str((base_ckpt.get("config") or {}).get("train", {}).get("out_dir", ""))).name
    base_name = out_dir_name or base_path.parent.name
    shared_file = f"shared/{base_name}.pt"
    by_value = {_fingerprint(v): k for k, v in base_state.items()}
    for key, tensor in state.items():
        match = by_value.get(_fingerprint(tensor))
        if match is not None:
            shared_refs[key] = match
    shared_path = out / shared_file
    shared = {"format": FORMAT, "storage": storage, "source": str(base_path), "tensors": {}}
    if shared_path.is_file():
        shared = _load_verified(shared_path, manifest["shared"].get(shared_file, {}).get("sha256"))
        if shared["storage"] != storage:
            raise ZooError(f"{shared_path} stores {shared['storage']}; pack with --storage {shared['storage']}")
    for base_key in sorted(set(shared_refs.values()) - set(shared["tensors"])):
        shared["tensors"][base_key] = _encode(base_state[base_key], storage)
    atomic_save(shared, shared_path)
    os.chmod(shared_path, 0o644)
    manifest["shared"][shared_file] = {"sha256": sha256_file(shared_path), "size": shared_path.stat().st_size,
                                       "source": str(base_path), "storage": storage}
    return shared_refs, shared_file


def _manifest_entry(name: str, path: Path, packed: dict[str, Any], cfg: RunConfig, ckpt: dict[str, Any],
                    source: Path, command: str | None, eval_json: str | Path | None,
                    measured: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry of the packed file ``path``: what it holds, how it was trained, its metrics."""
    overrides = derive_overrides(cfg)
    return {
        "name": name,
        "file": path.name,
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "storage": packed["storage"],
        "shared_file": packed["shared_file"],
        "shared_tensors": len(packed["shared_keys"]),
        "model": cfg.model.name,
        "config": shipped_name(cfg),
        "overrides": overrides,
        "command": command or " ".join(["fsslab train", shipped_name(cfg), *overrides]),
        "data": {"dataset": cfg.data.dataset, "root": cfg.data.root, "synthetic": cfg.data.synthetic,
                 "fold": cfg.data.fold, "shot": cfg.data.shot, "protocol": cfg.data.protocol,
                 "val_size": cfg.data.val_size},
        "iteration": int(ckpt.get("iteration", -1)),
        "fsslab_version": fsslab.__version__,
        "trained_with_fsslab": ckpt.get("fsslab_version"),
        "source": str(source),
        "metrics": _eval_summary(eval_json),
        "check": {**measured, "tolerance": DEFAULT_TOLERANCE},
    }


def pack_checkpoint(run_dir_or_ckpt: str | Path, name: str, eval_json: str | Path | None = None,
                    command: str | None = None, out_dir: str | Path | None = None,
                    base: str | Path | None = None, storage: str = "fp16",
                    check: dict[str, Any] | None = None, data_root: str | Path | None = None) -> dict[str, Any]:
    """Write ``<out_dir>/<name>.pt`` (model weights only, compact) and its manifest entry; return the entry.

    base: the run (directory or checkpoint) the model was initialised from (pretraining or stage 1). Tensors
      equal to one of the base's are not stored in the model's file but once in ``shared/<base name>.pt``,
      shared by every entry packed against the same base (IPMT / AMFormer / the baseline freeze its backbone).
    storage: "fp16" (float tensors as float16, restored to float32), "int8" (per-channel quantised large
      weights, fp16 rest) or "fp32". The metrics of the *packed* model are measured by a reduced evaluation
      (``check``: seeds + episodes, default 1 seed x 100 episodes) that the tests repeat.
    eval_json: the run's full ``fsslab eval --json`` file (its mIoU / FB-IoU / per-seed numbers are recorded).
    command: the exact ``fsslab train ...`` command; default: rebuilt from the run's config.
    """
    if storage not in STORAGES:
        raise ConfigError(f"storage {storage!r}: choose one of {STORAGES}")
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(f"checkpoint name {name!r}: use letters, digits, '_', '-' and '.' only")
    out = Path(out_dir or CHECKPOINT_DIR)
    source = _resolve_checkpoint(run_dir_or_ckpt)
    ckpt = load_checkpoint(source)
    cfg = _run_config(ckpt, source)
    state = {k: v for k, v in ckpt["model"].items()}
    model = build_from_config(cfg)
    own_keys = set(model.state_dict())
    if set(state) != own_keys:
        raise ZooError(f"{source}: its weights do not match the {cfg.model.name} built from its config "
                       f"(missing {sorted(own_keys - set(state))[:5]}, unexpected {sorted(set(state) - own_keys)[:5]})")
    manifest = read_manifest(out)

    shared_refs, shared_file = _pack_shared(base, state, out, manifest, storage)

    packed = {
        "format": FORMAT,
        "name": name,
        "storage": storage,
        "config": cfg.to_dict(),
        "dtypes": {k: _dtype_name(v.dtype) for k, v in state.items()},
        "tensors": {k: _encode(v, storage) for k, v in state.items() if k not in shared_refs},
        "shared_file": shared_file,
        "shared_keys": shared_refs,
    }
    path = out / f"{name}.pt"
    atomic_save(packed, path)
    os.chmod(path, 0o644)

    restored = _restore(packed, out, manifest)
    check = {**DEFAULT_CHECK, **(check or {})}
    measured = check_eval(restored, cfg, list(check["seeds"]), int(check["episodes"]), data_root)
    entry = _manifest_entry(name, path, packed, cfg, ckpt, source, command, eval_json, measured)
    manifest["entries"][name] = entry
    manifest["budget_bytes"] = BUDGET_BYTES
    _write_manifest(manifest, out)
    size = total_size(out)
    if size > BUDGET_BYTES:
        print(f"warning: {out} now holds {size / 1e6:.2f} MB, over the {BUDGET_BYTES / 1e6:.1f} MB budget "
              "(tests/test_zoo.py fails); use --storage int8, a --base, or ship fewer checkpoints")
    return entry


# ------------------------------------------------------------------------------------------------ load
def _load_verified(path: Path, sha256: str | None) -> dict[str, Any]:
    if not path.is_file():
        raise ZooError(f"{path}: listed in the manifest but missing")
    if sha256 is not None and sha256_file(path) != sha256:
        raise ZooError(f"{path}: sha256 differs from the manifest's; the file is corrupt or was replaced")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or not a torch file
        raise ZooError(f"{path}: could not be read safely ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "tensors" not in data:
        raise ZooError(f"{path}: not a packed fsslab checkpoint (format {FORMAT})")
    return data


def _restore(packed: dict[str, Any], checkpoint_dir: Path, manifest: dict[str, Any],
             model_params: dict[str, Any] | None = None) -> nn.Module:
    cfg = config_from_dict(packed["config"])
    if model_params:  # e.g. reproduce_official=true: same weights, other inference behaviour
        cfg.model.params = {**cfg.model.params, **model_params}
    shared: dict[str, Any] = {}
    if packed.get("shared_file"):
        info = manifest["shared"].get(packed["shared_file"])
        if info is None:
            raise ZooError(f"{packed['name']}: shared file {packed['shared_file']} is not in the manifest")
        shared = _load_verified(checkpoint_dir / packed["shared_file"], info["sha256"])["tensors"]
    state = {}
    for key, dtype in packed["dtypes"].items():
        if key in packed["tensors"]:
            item = packed["tensors"][key]
        elif key in packed["shared_keys"] and packed["shared_keys"][key] in shared:
            item = shared[packed["shared_keys"][key]]
        else:
            raise ZooError(f"{packed['name']}: tensor {key} is neither in the file nor in its shared file")
        state[key] = _decode(item, getattr(torch, dtype))
    model = build_from_config(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_pretrained(name: str, checkpoint_dir: str | Path | None = None,
                    device: str | torch.device = "cpu", model_params: dict[str, Any] | None = None) -> nn.Module:
    """The shipped model ``name`` in eval mode (files checked against the manifest's sha256, loaded safely).

    model_params: constructor options that replace the packed config's (inference switches such as IPMT's
    ``reproduce_official``; an option that changes the architecture fails to load the weights)."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    manifest = read_manifest(root)
    entry = pretrained_info(name, root)
    packed = _load_verified(root / entry["file"], entry["sha256"])
    try:
        model = _restore(packed, root, manifest, model_params)
    except CheckpointError as exc:
        raise ZooError(str(exc)) from None
    return model.to(device).eval()


def pretrained_config(name: str, checkpoint_dir: str | Path | None = None,
                      data_root: str | Path | None = None) -> RunConfig:
    """The run config of a shipped checkpoint (optionally pointed at another data root) to evaluate it."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    entry = pretrained_info(name, root)
    cfg = config_from_dict(_load_verified(root / entry["file"], entry["sha256"])["config"])
    if data_root is not None:
        cfg.data.root = str(data_root)
    return cfg


def verify_pretrained(name: str, data_root: str | Path | None = None,
                      checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Repeat the manifest's check evaluation; returns {"expected", "measured", "max_abs_diff", "ok"}."""
    entry = pretrained_info(name, checkpoint_dir)
    model = load_pretrained(name, checkpoint_dir)
    cfg = pretrained_config(name, checkpoint_dir, data_root)
    expected = entry["check"]
    measured = check_eval(model, cfg, expected["seeds"], expected["episodes"])
    diffs = [abs(measured[k] - expected[k]) for k in ("miou", "fbiou")]
    diffs += [abs(m[k] - e[k]) for m, e in zip(measured["per_seed"], expected["per_seed"]) for k in ("miou", "fbiou")]
    worst = max(diffs)
    return {"expected": expected, "measured": measured, "max_abs_diff": worst,
            "ok": worst <= expected.get("tolerance", DEFAULT_TOLERANCE)}


def recheck_pretrained(name: str, eval_json: str | Path | None = None, data_root: str | Path | None = None,
                       checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Re-measure a shipped checkpoint after the *evaluation* changed (the weights do not): repeat its check
    evaluation, record the new values (and the full metrics of ``eval_json``, an ``fsslab eval --json`` file
    of this checkpoint) in the manifest; returns the updated entry."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    manifest = read_manifest(root)
    entry = pretrained_info(name, root)
    model = load_pretrained(name, root)
    cfg = pretrained_config(name, root)
    check = entry["check"]
    measured = check_eval(model, cfg, list(check["seeds"]), int(check["episodes"]), data_root)
    entry = {**entry, "check": {**measured, "tolerance": check.get("tolerance", DEFAULT_TOLERANCE)},
             "rechecked_with_fsslab": fsslab.__version__}  # fmt: skip
    if eval_json is not None:
        entry["metrics"] = _eval_summary(eval_json)
    manifest["entries"][name] = entry
    _write_manifest(manifest, root)
    return entry


__all__ = [
    "BUDGET_BYTES", "CHECKPOINT_DIR", "ZooError", "build_from_config", "check_eval", "derive_overrides",
    "list_pretrained", "load_pretrained", "pack_checkpoint", "pretrained_config", "pretrained_info",
    "read_manifest", "recheck_pretrained", "sha256_file", "total_size", "verify_pretrained",
]
