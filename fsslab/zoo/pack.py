"""Pack a training run into a compact shipped checkpoint and its manifest entry (``fsslab zoo pack``).

The packed file holds the weights only (fp16, int8 or fp32, tensors shared with the base run stored once) and
the run config; the entry records how it was trained and a reduced, deterministic evaluation of the packed
model that ``fsslab.zoo.verify_pretrained`` repeats. Reading and loading packed files is ``fsslab.zoo``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fsslab import zoo
from fsslab.config import RunConfig, config_from_dict, flow_yaml, load_config
from fsslab.engine.build import architecture
from fsslab.engine.checkpoint import atomic_save, load_checkpoint
from fsslab.engine.packed import FORMAT, STORAGES, decode_weights, dtype_name, encode_tensor, fingerprint
from fsslab.errors import ConfigError
from fsslab.files import sha256_file
from fsslab.version import __version__
from fsslab.zoo import (
    BUDGET_BYTES,
    DEFAULT_CHECK,
    DEFAULT_TOLERANCE,
    ZooError,
    check_eval,
    eval_summary,
    load_verified,
    read_manifest,
    restore_packed,
    total_size,
    write_manifest,
)

# How far (mIoU points, check episodes) a packed model may score from its run's fp32 weights: int8 rounding
# moves the shipped synthetic models by at most 0.21 (the manifest records both: check.miou, check.run_miou).
PACKING_TOLERANCE = 2.0


# ------------------------------------------------------------------------------------------ run config
def _run_config(ckpt: dict[str, Any], path: Path) -> RunConfig:
    if not isinstance(ckpt.get("config"), dict):
        raise ZooError(f"{path}: the checkpoint carries no run config; pack a checkpoint written by `fsslab train`")
    return config_from_dict(ckpt["config"])


def derive_overrides(cfg: RunConfig) -> list[str]:
    """``section.key=value`` overrides that turn the shipped config ``cfg.name`` into ``cfg`` (empty if none).

    Section by section, each against the shipped config with the overrides so far: the values derived from
    others (``eval.shot`` and the model's ``shot`` from ``data.shot``) follow their source instead of being
    written again."""
    try:
        load_config(shipped_name(cfg))
    except Exception:  # noqa: BLE001 - not a shipped config: the caller records the full config anyway
        return []
    ours, overrides = cfg.to_dict(), []
    for section in ("data", "model", "train", "eval", "expected"):
        theirs = load_config(shipped_name(cfg), overrides).to_dict()
        overrides += [f"{section}.{key}={flow_yaml(value)}" for key, value in ours[section].items()
                      if theirs[section].get(key) != value and key != "out_dir"]
    if load_config(shipped_name(cfg), overrides).to_dict()["train"]["out_dir"] != ours["train"]["out_dir"]:
        overrides.append(f"train.out_dir={flow_yaml(ours['train']['out_dir'])}")
    return overrides


def shipped_name(cfg: RunConfig) -> str:
    """The shipped config a run came from (``synthetic/<name>``)."""
    return cfg.name if "/" in cfg.name else f"synthetic/{cfg.name}"


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


def _check_name(name: str, what: str) -> None:
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(f"{what} {name!r}: use letters, digits, '_', '-' and '.' only")


def _same_encoding(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _pack_shared(base: str | Path | None, state: dict[str, torch.Tensor], out: Path, manifest: dict[str, Any],
                 storage: str, name: str = "", replace_shared: bool = False) -> tuple[dict[str, str], str | None]:
    """Store the tensors of ``state`` equal to one of ``base``'s once in ``shared/<base name>.pt`` (added to
    what is there; its manifest entry updated). Returns ({key in state: key in base}, the shared file or None).

    A shared file written from an earlier run of the same name (a retrained stage 1) holds other values under the
    same keys: that is an error unless ``replace_shared``, which rewrites the file from ``base`` alone; the other
    entries that read it must then be packed again (their names are printed)."""
    if base is None:
        return {}, None
    shared_refs: dict[str, str] = {}
    base_path = _resolve_checkpoint(base)
    if _shipped_weights_file(base_path, out) is not None:
        return _refs_to_shipped(base_path, state, out, manifest)
    base_ckpt = load_checkpoint(base_path)
    base_state = base_ckpt["model"]
    out_dir_name = Path(str((base_ckpt.get("config") or {}).get("train", {}).get("out_dir", ""))).name
    base_name = out_dir_name or base_path.parent.name
    shared_file = f"shared/{base_name}.pt"
    by_value = {fingerprint(v): k for k, v in base_state.items()}
    for key, tensor in state.items():
        match = by_value.get(fingerprint(tensor))
        if match is not None:
            shared_refs[key] = match
    shared_path = out / shared_file
    shared = {"format": FORMAT, "storage": storage, "source": str(base_path), "tensors": {}}
    if shared_path.is_file():
        shared = load_verified(shared_path, manifest["shared"].get(shared_file, {}).get("sha256"))
        if shared["storage"] != storage:
            raise ZooError(f"{shared_path} stores {shared['storage']}; pack with --storage {shared['storage']}")
        stale = [k for k in sorted(set(shared_refs.values()) & set(shared["tensors"]))
                 if not _same_encoding(shared["tensors"][k], encode_tensor(base_state[k], storage))]
        readers = sorted(n for n, e in manifest["entries"].items() if e.get("shared_file") == shared_file and n != name)
        if stale and not replace_shared:
            raise ZooError(
                f"{shared_path} holds {len(stale)} tensors (e.g. {stale[0]}) that differ from {base_path}: it was "
                f"packed from an earlier {base_name} run. Pack with --replace-shared to rewrite it from {base_path}, "
                f"then pack again the other entries that read it: {readers or 'none'}")
        if stale:
            shared = {"format": FORMAT, "storage": storage, "source": str(base_path), "tensors": {}}
            if readers:
                print(f"rewrote {shared_file} from {base_path}: pack these entries again, they read it: "
                      f"{', '.join(readers)}")
    for base_key in sorted(set(shared_refs.values()) - set(shared["tensors"])):
        shared["tensors"][base_key] = encode_tensor(base_state[base_key], storage)
    atomic_save(shared, shared_path)
    os.chmod(shared_path, 0o644)
    manifest["shared"][shared_file] = {"sha256": sha256_file(shared_path), "size": shared_path.stat().st_size,
                                       "source": str(base_path), "storage": storage}
    return shared_refs, shared_file


def _shipped_weights_file(path: Path, out: Path) -> str | None:
    """``shared/<name>.pt`` when ``path`` is a weights file of the zoo ``out`` (a shipped backbone), else None."""
    try:
        relative = path.resolve().relative_to(out.resolve())
    except ValueError:
        return None
    return relative.as_posix() if relative.parts[0] == "shared" else None


def _refs_to_shipped(base_path: Path, state: dict[str, torch.Tensor], out: Path, manifest: dict[str, Any]
                     ) -> tuple[dict[str, str], str]:
    """A model trained from a shipped weights file (``model.init_checkpoint: {zoo}/shared/...``) reads the
    tensors it kept unchanged from that file; the file itself is never rewritten here."""
    shared_file = _shipped_weights_file(base_path, out)
    assert shared_file is not None
    record = manifest["shared"].get(shared_file)
    if record is None:
        raise ZooError(f"{base_path}: not listed under 'shared' in {out}/manifest.json")
    shipped = load_verified(base_path, record.get("sha256"))
    by_value = {fingerprint(v): k for k, v in decode_weights(shipped["tensors"]).items()}
    refs = {key: by_value[fingerprint(t)] for key, t in state.items() if fingerprint(t) in by_value}
    return refs, shared_file


def pack_weights(run_dir_or_ckpt: str | Path, name: str, command: str, prefix: str = "backbone.",
                 storage: str = "int8", out_dir: str | Path | None = None, replace: bool = False) -> dict[str, Any]:
    """Ship the ``prefix*`` tensors of a run (a pretrained backbone) as ``shared/<name>.pt``, a packed weights
    file that runs start from (``model.init_checkpoint: "{zoo}/shared/<name>.pt"``) and that the models packed
    with ``--base`` it read their unchanged tensors from. Its manifest record carries the command that trained
    it, the run's config and iteration. An existing file is replaced only with ``replace`` (every model trained
    from it must then be retrained)."""
    if storage not in STORAGES:
        raise ConfigError(f"storage {storage!r}: choose one of {STORAGES}")
    _check_name(name, "weights name")
    out = Path(out_dir or zoo.CHECKPOINT_DIR)
    source = _resolve_checkpoint(run_dir_or_ckpt)
    ckpt = load_checkpoint(source)
    cfg = _run_config(ckpt, source)
    tensors = {k: encode_tensor(v, storage) for k, v in ckpt["model"].items() if k.startswith(prefix)}
    if not tensors:
        raise ZooError(f"{source}: no '{prefix}*' tensor to ship")
    manifest = read_manifest(out)
    shared_file = f"shared/{name}.pt"
    path = out / shared_file
    readers = sorted(n for n, e in manifest["entries"].items() if e.get("shared_file") == shared_file)
    if path.exists() and not replace:
        raise ZooError(f"{path} exists (read by {readers or 'no entry'}); pass --replace to ship another one, then "
                       "retrain and repack every model trained from it")
    atomic_save({"format": FORMAT, "storage": storage, "source": str(source), "tensors": tensors}, path)
    os.chmod(path, 0o644)
    manifest["shared"][shared_file] = {
        "sha256": sha256_file(path), "size": path.stat().st_size, "source": str(source), "storage": storage,
        "kind": "weights", "prefix": prefix, "tensors": len(tensors), "config": shipped_name(cfg),
        "command": command, "iteration": int(ckpt.get("iteration", -1)),
        "trained_with_fsslab": ckpt.get("fsslab_version"), "fsslab_version": __version__,
    }
    manifest["budget_bytes"] = BUDGET_BYTES
    write_manifest(manifest, out)
    return manifest["shared"][shared_file]


def prune_shared(out_dir: str | Path | None = None) -> list[str]:
    """Delete the shared files that no entry reads any more (a retrained base's old file), except shipped
    weights files (``kind: weights``: runs start from them); returns what was deleted."""
    out = Path(out_dir or zoo.CHECKPOINT_DIR)
    manifest = read_manifest(out)
    read = {e.get("shared_file") for e in manifest["entries"].values()}
    unused = [f for f, record in manifest["shared"].items() if f not in read and record.get("kind") != "weights"]
    for file in unused:
        (out / file).unlink(missing_ok=True)
        del manifest["shared"][file]
    write_manifest(manifest, out)
    return unused


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
        "fsslab_version": __version__,
        "trained_with_fsslab": ckpt.get("fsslab_version"),
        "source": str(source),
        "metrics": eval_summary(eval_json),
        "check": {**measured, "tolerance": DEFAULT_TOLERANCE},
    }


def pack_checkpoint(run_dir_or_ckpt: str | Path, name: str, eval_json: str | Path | None = None,
                    command: str | None = None, out_dir: str | Path | None = None,
                    base: str | Path | None = None, storage: str = "fp16",
                    check: dict[str, Any] | None = None, data_root: str | Path | None = None,
                    replace_shared: bool = False) -> dict[str, Any]:
    """Write ``<out_dir>/<name>.pt`` (model weights only, compact) and its manifest entry; return the entry.

    base: the run (directory or checkpoint) the model was initialised from (pretraining or stage 1). Tensors
      equal to one of the base's are not stored in the model's file but once in ``shared/<base name>.pt``,
      shared by every entry packed against the same base (IPMT / AMFormer / the baseline freeze its backbone).
    storage: "fp16" (float tensors as float16, restored to float32), "int8" (per-channel quantised large
      weights, fp16 rest) or "fp32". The metrics of the *packed* model are measured by a reduced evaluation
      (``check``: seeds + episodes, default 1 seed x 100 episodes) that the tests repeat.
    eval_json: the run's full ``fsslab eval --json`` file (its mIoU / FB-IoU / per-seed numbers are recorded).
    command: the exact ``fsslab train ...`` command; default: rebuilt from the run's config.
    replace_shared: rewrite ``shared/<base name>.pt`` when it holds another run's values (a retrained base);
      without it that is a ZooError naming the entries that read the file.
    """
    if storage not in STORAGES:
        raise ConfigError(f"storage {storage!r}: choose one of {STORAGES}")
    _check_name(name, "checkpoint name")
    out = Path(out_dir or zoo.CHECKPOINT_DIR)  # read now: the one definition, which a caller may point elsewhere
    source = _resolve_checkpoint(run_dir_or_ckpt)
    ckpt = load_checkpoint(source)
    cfg = _run_config(ckpt, source)
    state = {k: v for k, v in ckpt["model"].items()}
    model = architecture(cfg)
    own_keys = set(model.state_dict())
    if set(state) != own_keys:
        raise ZooError(f"{source}: its weights do not match the {cfg.model.name} built from its config "
                       f"(missing {sorted(own_keys - set(state))[:5]}, unexpected {sorted(set(state) - own_keys)[:5]})")
    manifest = read_manifest(out)

    shared_refs, shared_file = _pack_shared(base, state, out, manifest, storage, name, replace_shared)

    packed = {
        "format": FORMAT,
        "name": name,
        "storage": storage,
        "config": cfg.to_dict(),
        "dtypes": {k: dtype_name(v.dtype) for k, v in state.items()},
        "tensors": {k: encode_tensor(v, storage) for k, v in state.items() if k not in shared_refs},
        "shared_file": shared_file,
        "shared_keys": shared_refs,
    }
    path = out / f"{name}.pt"
    atomic_save(packed, path)
    os.chmod(path, 0o644)

    restored = restore_packed(packed, out, manifest)
    check = {**DEFAULT_CHECK, **(check or {})}
    seeds, episodes = list(check["seeds"]), int(check["episodes"])
    measured = check_eval(restored, cfg, seeds, episodes, data_root)
    # the run's own fp32 weights on the same episodes: the packed model must score what the run scores, up to
    # its storage's rounding, or packing changed the model (e.g. another run's tensors in a shared file)
    model.load_state_dict(state)
    run_miou = check_eval(model, cfg, seeds, episodes, data_root)["miou"]
    measured["run_miou"] = run_miou
    if abs(measured["miou"] - run_miou) > PACKING_TOLERANCE:
        path.unlink()
        raise ZooError(f"{name}: the packed model scores {measured['miou']:.2f} mIoU on the check episodes, the run "
                       f"{source} {run_miou:.2f}: packing changed the model (more than the {PACKING_TOLERANCE} "
                       f"points {storage} rounding may cost); nothing was recorded")
    entry = _manifest_entry(name, path, packed, cfg, ckpt, source, command, eval_json, measured)
    manifest["entries"][name] = entry
    manifest["budget_bytes"] = BUDGET_BYTES
    write_manifest(manifest, out)
    size = total_size(out)
    if size > BUDGET_BYTES:
        print(f"warning: {out} now holds {size / 1e6:.2f} MB, over the {BUDGET_BYTES / 1e6:.1f} MB budget "
              "(tests/test_zoo.py fails); use --storage int8, a --base, or ship fewer checkpoints")
    return entry


__all__ = ["derive_overrides", "pack_checkpoint", "pack_weights", "prune_shared", "shipped_name"]
