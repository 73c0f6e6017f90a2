"""Checkpoints: atomic writes (temp file + fsync + os.replace), safe loads, RNG states as plain tensors.

A run's checkpoints (``save_checkpoint``) carry their content hash in a sidecar, ``<name>.sha256`` (the
``sha256sum`` format); ``load_checkpoint`` checks it before unpickling, so a flipped byte or a file replaced
after it was written is refused with one line instead of loading wrong weights. The sidecar is written before
the checkpoint is renamed into place and lists the hashes of both the old and the new file until the rename is
done, so a kill at any moment leaves a pair that verifies. A checkpoint without a sidecar (copied elsewhere,
an older fsslab, an official file) loads unchecked.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsslab.engine.packed import decode_weights, is_packed_weights
from fsslab.errors import CheckpointError as _FsslabCheckpointError
from fsslab.files import atomic_write_text, fsync_directory, sha256_file

FORMAT_VERSION = 1


class CheckpointError(_FsslabCheckpointError):
    """A checkpoint file is missing, unreadable or not an fsslab checkpoint."""


DIGEST_SUFFIX = ".sha256"


def digest_path(path: str | Path) -> Path:
    """The sidecar of a checkpoint: ``latest.pt`` -> ``latest.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def recorded_digests(path: str | Path) -> list[str] | None:
    """The hashes the sidecar of ``path`` accepts (None when there is no sidecar)."""
    sidecar = digest_path(path)
    if not sidecar.is_file():
        return None
    try:
        lines = sidecar.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    return [line.split()[0].lower() for line in lines if line.split()]


def _write_digests(path: Path, digests: list[str]) -> None:
    atomic_write_text(digest_path(path), "".join(f"{d}  {path.name}\n" for d in digests))


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint and its sidecar."""
    Path(path).unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def atomic_save(obj: Any, path: str | Path, digest: bool = False) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old file or the complete new one.

    The data goes to a temporary file in the same directory, is flushed and fsync'ed, then renamed over
    ``path`` with ``os.replace`` (atomic on POSIX); the directory entry is fsync'ed too. Any failure
    removes the temporary file and leaves ``path`` untouched. ``digest``: also keep ``<path>.sha256`` (the
    module docstring says how a kill cannot leave a pair that fails to verify).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        new_digest = sha256_file(tmp_name) if digest else None
        if new_digest is not None:  # before the rename: both the old and the new file verify meanwhile
            old = (recorded_digests(path) or []) if path.is_file() else []
            _write_digests(path, [new_digest, *[d for d in old if d != new_digest]])
        os.replace(tmp_name, path)
        if new_digest is not None:
            try:
                _write_digests(path, [new_digest])
            except OSError:  # the sidecar written before the rename lists the new hash too: it still verifies
                pass
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(path.parent)  # make the rename itself durable
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an fsslab checkpoint with ``weights_only=True`` (no code execution from the file).

    A packed weights file of the zoo (``fsslab/checkpoints/synthetic/shared/*.pt``, e.g. the shipped backbone)
    loads as ``{"model": its state dict decoded to float32, "packed": its other fields}``: a run starts from it
    with ``model.init_checkpoint`` as from a run's checkpoint."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pt"))
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file"
                              + (f"; it holds {', '.join(inside[:4])}" if inside else ""))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    expected = recorded_digests(path)
    if expected is not None and sha256_file(path) not in expected:
        raise CheckpointError(
            f"checkpoint {path} does not match the sha256 recorded when it was written ({digest_path(path).name}): "
            "the file is corrupt or was changed since; use another checkpoint of the run (iter_*.pt, best.pt)"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, corrupt, or pickling arbitrary objects
        raise CheckpointError(
            f"checkpoint {path} could not be read safely ({first_line(exc)}); "
            "it may be truncated or not a torch file"
        ) from None
    if is_packed_weights(data):  # a zoo weights file (the shipped backbone): a run may start from it
        try:
            return {"model": decode_weights(data["tensors"]), "format": FORMAT_VERSION,
                    "packed": {k: v for k, v in data.items() if k != "tensors"}}
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path}: a packed weights file with a malformed tensor ({exc})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(
            f"checkpoint {path} is not an fsslab checkpoint (no 'model' entry); "
            "official IPMT/AMFormer files load with fsslab.models.load_official"
        )
    if not isinstance(data["model"], dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data["model"].items()):
        raise CheckpointError(
            f"checkpoint {path}: its 'model' entry is a {type(data['model']).__name__}, not a state dict (names "
            "mapped to tensors); it is not an fsslab checkpoint"
        )
    if not isinstance(data.get("format", FORMAT_VERSION), int) or data.get("format", FORMAT_VERSION) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {data['format']}, newer than this fsslab "
            f"({FORMAT_VERSION}); upgrade fsslab"
        )
    return data


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, shortened: torch's messages run to pages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_checkpoint(obj: Any, path: str | Path) -> Path:
    """``atomic_save`` for a run's checkpoints: a failed write (full disk, quota, I/O error) becomes a
    one-line CheckpointError naming the file; the previous checkpoints stay as they were."""
    path = Path(path)
    try:
        return atomic_save(obj, path, digest=True)
    except (OSError, RuntimeError) as exc:
        # torch reports a full disk as RuntimeError("[enforce fail at inline_container.cc:...] ... file write
        # failed"); the OS as OSError(ENOSPC)
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            "write failed" in str(exc) or "unexpected pos" in str(exc)
        )
        reason = "the disk is full (or over quota)" if full else first_line(exc)
        kept = sorted(p.name for p in path.parent.glob("*.pt") if p.name != "best.pt")
        advice = (f"the checkpoints already in {path.parent} ({', '.join(kept[:3])}) are intact: free space, then "
                  "continue with --resume" if kept else
                  "no checkpoint of this run was written yet: free space, then start the run again with --overwrite")
        raise CheckpointError(f"could not write checkpoint {path}: {reason}; {advice}") from None


def load_model_state(model: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)`` that names, in one line, what does not fit (another model or width)
    instead of torch's listing of every key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
        for k, v in state.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if keys:
            more = f" and {len(keys) - 2} more" if len(keys) > 2 else ""
            problems.append(f"{len(keys)} tensor(s) {what} (e.g. {'; '.join(keys[:2])}{more})")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({type(model).__name__}): {', '.join(problems)}; "
            "it was trained with another model or other model.params"
        )
    model.load_state_dict(state)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain types (weights_only-loadable)."""
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "atomic_save",
    "capture_rng_state",
    "first_line",
    "load_checkpoint",
    "load_model_state",
    "recorded_digests",
    "remove_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]
