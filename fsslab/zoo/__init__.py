"""Shipped checkpoints of the synthetic-benchmark models: the manifest, list, load, verify (packing a run is
``fsslab.zoo.pack``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsslab.config import SHIPPED_CHECKPOINT_DIR, RunConfig, config_from_dict, replace_section
from fsslab.engine.build import architecture
from fsslab.engine.checkpoint import CheckpointError
from fsslab.engine.packed import FORMAT, decode_tensor
from fsslab.errors import FsslabError
from fsslab.files import atomic_write_text, sha256_file
from fsslab.version import __version__

CHECKPOINT_DIR = SHIPPED_CHECKPOINT_DIR
MANIFEST_NAME = "manifest.json"
# everything under the checkpoint directory: the 25 MB the backbone issue (#25) allows for the shipped backbone,
# stage 1 and the six models (1- and 5-shot baseline, IPMT and AMFormer: 10.2 MB in int8 today)
BUDGET_BYTES = 25_000_000
DEFAULT_CHECK = {"seeds": [0], "episodes": 100}
DEFAULT_TOLERANCE = 1e-6  # percentage points; the check eval runs on CPU with one thread (deterministic)


class ZooError(FsslabError, RuntimeError):
    """A packed checkpoint or the manifest is missing, inconsistent or corrupt."""


class UnknownCheckpointName(ZooError, KeyError):
    """No shipped checkpoint has that name (also a KeyError: a failed lookup, as it was before)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""


# -------------------------------------------------------------------------------------------- manifest
def inside(root: Path, file: Any, where: str) -> Path:
    """``root / file`` for a manifest's relative ``file``, refused unless it stays inside ``root`` (no absolute
    path, no ``..``, no symbolic link out of it): the zoo is a closed set."""
    if not isinstance(file, str) or not file.strip():
        raise ZooError(f"{where}: 'file' must be a path relative to the zoo directory, got {file!r}")
    relative = Path(file)
    if relative.is_absolute() or ".." in relative.parts:
        raise ZooError(f"{where}: file {file!r} points outside the zoo directory {root} (absolute or '..'); "
                       "a manifest may only name files inside its own directory")
    path = root / relative
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise ZooError(f"{where}: file {file!r} resolves outside the zoo directory {root} (a symbolic link?)") from None
    return path


def _check_record(root: Path, record: Any, where: str, file: Any) -> None:
    if not isinstance(record, dict):
        raise ZooError(f"{where}: expected a mapping, got {type(record).__name__}")
    inside(root, file, where)
    digest = record.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ZooError(f"{where}: 'sha256' must be the 64 hex digits of the file's hash, got {digest!r}; every zoo "
                       "file is verified before it is loaded")


def validate_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """Refuse (ZooError, one line) a manifest that is not a closed, verifiable set: every entry and shared file
    names a file inside the manifest's directory and carries its sha256; entries name their shared file."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
        raise ZooError(f"{path}: not an fsslab zoo manifest (no 'entries' mapping)")
    shared = manifest.setdefault("shared", {})
    if not isinstance(shared, dict):
        raise ZooError(f"{path}: 'shared' must map shared files to their records, got {type(shared).__name__}")
    root = path.parent
    for name, record in shared.items():
        _check_record(root, record, f"{path}: shared file {name!r}", name)
    for name, entry in manifest["entries"].items():
        where = f"{path}: entry {name!r}"
        _check_record(root, entry, where, entry.get("file") if isinstance(entry, dict) else None)
        link = entry.get("shared_file")
        if link is not None and link not in shared:
            raise ZooError(f"{where}: its shared file {link!r} is not listed under 'shared'")
    return manifest


def read_manifest(checkpoint_dir: str | Path | None = None, required: bool = False) -> dict[str, Any]:
    """The manifest (``{"format", "budget_bytes", "shared", "entries"}``), validated (``validate_manifest``);
    an empty one if there is none, unless ``required`` (a ``--dir`` given to list, verify or load from)."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    path = root / MANIFEST_NAME
    if not path.is_file():
        if required and not root.is_dir():
            raise ZooError(f"zoo directory {root} does not exist")
        if required:
            raise ZooError(f"{root} holds no zoo manifest ({MANIFEST_NAME}): not a checkpoint directory of "
                           "`fsslab zoo pack`")
        return {"format": FORMAT, "budget_bytes": BUDGET_BYTES, "shared": {}, "entries": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZooError(f"{path}: unreadable ({exc})") from None
    return validate_manifest(manifest, path)


def write_manifest(manifest: dict[str, Any], checkpoint_dir: Path) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    # package data: readable by everyone
    atomic_write_text(checkpoint_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n", 0o644)


def list_pretrained(checkpoint_dir: str | Path | None = None) -> list[str]:
    """Names of the shipped checkpoints (``load_pretrained`` accepts each)."""
    return sorted(read_manifest(checkpoint_dir)["entries"])


def pretrained_info(name: str, checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """The manifest entry of ``name``: command, config, data seed, metrics, file, sha256, size."""
    entries = read_manifest(checkpoint_dir, required=checkpoint_dir is not None)["entries"]
    if name not in entries:
        raise UnknownCheckpointName(f"no shipped checkpoint {name!r}; available: {sorted(entries) or 'none'}")
    return entries[name]


def total_size(checkpoint_dir: str | Path | None = None) -> int:
    """Bytes of every file under the checkpoint directory (what the package ships)."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


# ------------------------------------------------------------------------------------------------ pack
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
    from fsslab.engine.prerequisites import prepare_data
    from fsslab.engine.runner import run_evaluation

    cfg = replace_section(cfg, "data", workers=0, **({"root": str(data_root)} if data_root is not None else {}))
    prepare_data(cfg, progress=False)  # the benchmark the packed config names, written when it is not there
    with _one_thread(), torch.no_grad():
        result = run_evaluation(cfg, model.cpu().eval(), seeds=seeds, episodes=episodes, progress=False,
                                device=torch.device("cpu"))
    return {"seeds": list(seeds), "episodes": episodes, "miou": result.miou_mean, "fbiou": result.fbiou_mean,
            "per_seed": [{"seed": r["seed"], "miou": r["miou"], "fbiou": r["fbiou"]} for r in result.per_seed]}


def eval_summary(eval_json: str | Path | None) -> dict[str, Any] | None:
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


# ------------------------------------------------------------------------------------------------ load
def load_verified(path: Path, sha256: str | None) -> dict[str, Any]:
    """A zoo file, loaded (weights_only) only after its sha256 matched ``sha256`` (required)."""
    if not path.is_file():
        raise ZooError(f"{path}: listed in the manifest but missing")
    if not isinstance(sha256, str):
        raise ZooError(f"{path}: the manifest records no sha256 for it; a zoo file is never loaded unverified")
    if sha256_file(path) != sha256.lower():
        raise ZooError(f"{path}: sha256 differs from the manifest's; the file is corrupt or was replaced")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or not a torch file
        raise ZooError(f"{path}: could not be read safely ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "tensors" not in data:
        raise ZooError(f"{path}: not a packed fsslab checkpoint (format {FORMAT})")
    return data


def restore_packed(packed: dict[str, Any], checkpoint_dir: Path, manifest: dict[str, Any],
             model_params: dict[str, Any] | None = None) -> nn.Module:
    cfg = config_from_dict(packed["config"])
    if model_params:  # e.g. reproduce_official=true: same weights, other inference behaviour
        cfg = replace_section(cfg, "model", params={**cfg.model.params, **model_params})
    shared: dict[str, Any] = {}
    if packed.get("shared_file"):
        info = manifest["shared"].get(packed["shared_file"])
        if info is None:
            raise ZooError(f"{packed['name']}: shared file {packed['shared_file']} is not in the manifest")
        shared_path = inside(checkpoint_dir, packed["shared_file"], f"{packed['name']}: shared file")
        shared = load_verified(shared_path, info.get("sha256"))["tensors"]
    state = {}
    for key, dtype in packed["dtypes"].items():
        if key in packed["tensors"]:
            item = packed["tensors"][key]
        elif key in packed["shared_keys"] and packed["shared_keys"][key] in shared:
            item = shared[packed["shared_keys"][key]]
        else:
            raise ZooError(f"{packed['name']}: tensor {key} is neither in the file nor in its shared file")
        state[key] = decode_tensor(item, getattr(torch, dtype))
    model = architecture(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_pretrained(name: str, checkpoint_dir: str | Path | None = None,
                    device: str | torch.device = "cpu", model_params: dict[str, Any] | None = None) -> nn.Module:
    """The shipped model ``name`` in eval mode (files checked against the manifest's sha256, loaded safely).

    model_params: constructor options that replace the packed config's (inference switches such as IPMT's
    ``reproduce_official``; an option that changes the architecture fails to load the weights)."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    manifest = read_manifest(root, required=checkpoint_dir is not None)
    entry = pretrained_info(name, root)
    packed = load_verified(inside(root, entry["file"], f"entry {name!r}"), entry["sha256"])
    if packed.get("name", name) != name:
        raise ZooError(f"entry {name!r}: its file {entry['file']} holds the checkpoint {packed.get('name')!r}")
    if entry.get("shared_file") != packed.get("shared_file"):
        raise ZooError(f"entry {name!r}: the manifest names the shared file {entry.get('shared_file')!r}, its "
                       f"file {packed.get('shared_file')!r}")
    try:
        model = restore_packed(packed, root, manifest, model_params)
    except CheckpointError as exc:
        raise ZooError(str(exc)) from None
    return model.to(device).eval()


def pretrained_config(name: str, checkpoint_dir: str | Path | None = None,
                      data_root: str | Path | None = None) -> RunConfig:
    """The run config of a shipped checkpoint (optionally pointed at another data root) to evaluate it."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    entry = pretrained_info(name, root)
    cfg = config_from_dict(load_verified(inside(root, entry["file"], f"entry {name!r}"), entry["sha256"])["config"])
    return cfg if data_root is None else replace_section(cfg, "data", root=str(data_root))


def verify_pretrained(name: str, data_root: str | Path | None = None,
                      checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Repeat the manifest's check evaluation; returns {"expected", "measured", "max_abs_diff", "ok"}."""
    entry = pretrained_info(name, checkpoint_dir)
    expected = entry.get("check")
    if not isinstance(expected, dict) or not all(k in expected for k in ("seeds", "episodes", "miou", "fbiou",
                                                                         "per_seed")):
        raise ZooError(f"entry {name!r} records no complete check evaluation ('check': seeds, episodes, miou, "
                       "fbiou, per_seed): repack it with `fsslab zoo pack` or measure it with `fsslab zoo recheck`")
    model = load_pretrained(name, checkpoint_dir)
    cfg = pretrained_config(name, checkpoint_dir, data_root)
    measured = check_eval(model, cfg, expected["seeds"], expected["episodes"])
    diffs = [abs(measured[k] - expected[k]) for k in ("miou", "fbiou")]
    diffs += [abs(m[k] - e[k]) for m, e in zip(measured["per_seed"], expected["per_seed"]) for k in ("miou", "fbiou")]
    worst = max(diffs)
    return {"expected": expected, "measured": measured, "max_abs_diff": worst,
            "ok": worst <= expected.get("tolerance", DEFAULT_TOLERANCE)}


def verify_weights(checkpoint_dir: str | Path | None = None) -> dict[str, str]:
    """Check every shared weights file (the shipped backbone and the stage-1 weights) against the manifest's
    sha256 and load it safely; returns {file: "ok"} or raises ZooError naming the file."""
    root = Path(checkpoint_dir or CHECKPOINT_DIR)
    manifest = read_manifest(root, required=checkpoint_dir is not None)
    for file, record in manifest["shared"].items():
        load_verified(inside(root, file, f"shared file {file!r}"), record.get("sha256"))
    return {file: "ok" for file in manifest["shared"]}


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
             "rechecked_with_fsslab": __version__}  # fmt: skip
    if eval_json is not None:
        entry["metrics"] = eval_summary(eval_json)
    manifest["entries"][name] = entry
    write_manifest(manifest, root)
    return entry


__all__ = [
    "BUDGET_BYTES", "CHECKPOINT_DIR", "ZooError", "check_eval",
    "list_pretrained", "load_pretrained", "pretrained_config", "pretrained_info",
    "read_manifest", "recheck_pretrained", "total_size", "verify_pretrained", "verify_weights",
]
