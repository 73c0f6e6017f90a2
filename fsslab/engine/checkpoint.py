"""Checkpoints: atomic writes (temp file + fsync + os.replace), safe loads, RNG states as plain tensors."""

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

from fsslab.errors import CheckpointError as _FsslabCheckpointError

FORMAT_VERSION = 1


class CheckpointError(_FsslabCheckpointError):
    """A checkpoint file is missing, unreadable or not an fsslab checkpoint."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old file or the complete new one.

    The data goes to a temporary file in the same directory, is flushed and fsync'ed, then renamed over
    ``path`` with ``os.replace`` (atomic on POSIX); the directory entry is fsync'ed too. Any failure
    removes the temporary file and leaves ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename already happened
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an fsslab checkpoint with ``weights_only=True`` (no code execution from the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, corrupt, or pickling arbitrary objects
        raise CheckpointError(
            f"checkpoint {path} could not be read safely ({first_line(exc)}); "
            "it may be truncated or not a torch file"
        ) from None
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(
            f"checkpoint {path} is not an fsslab checkpoint (no 'model' entry); "
            "official IPMT/AMFormer files load with fsslab.models.load_official"
        )
    if data.get("format", FORMAT_VERSION) > FORMAT_VERSION:
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
        return atomic_save(obj, path)
    except (OSError, RuntimeError) as exc:
        # torch reports a full disk as RuntimeError("[enforce fail at inline_container.cc:...] ... file write
        # failed"); the OS as OSError(ENOSPC)
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            "write failed" in str(exc) or "unexpected pos" in str(exc)
        )
        reason = "the disk is full (or over quota)" if full else first_line(exc)
        raise CheckpointError(
            f"could not write checkpoint {path}: {reason}; the checkpoints already in {path.parent} are intact: "
            "free space, then continue with --resume"
        ) from None


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
    "restore_rng_state",
    "save_checkpoint",
]
