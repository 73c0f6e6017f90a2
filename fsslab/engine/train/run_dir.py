"""A run directory holds one run: no silent overwrite, one writer at a time, and the leftovers of killed runs.

- A fresh run into a directory that already holds a run (``latest.pt``, ``best.pt``, ``iter_*.pt`` or
  ``log.jsonl``) is refused unless it resumes that run or ``--overwrite`` deletes its files first.
- ``run.lock`` is held with ``flock(2)`` for the run's lifetime: a second run into the directory is refused with
  the first one's pid and host; the kernel releases the lock when its process ends, however it ends.
- Hidden ``.*.tmp`` files are interrupted atomic writes (a killed checkpoint save): removed on the next start.

Under DDP only rank 0 touches the directory (``fsslab.engine.train.resume.start_run`` calls this module there).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from fsslab.engine.checkpoint import CheckpointError
from fsslab.files import atomic_write_text  # noqa: F401 - the run directory writes with it (trainer, runlog)

try:
    import fcntl

    msvcrt = None
except ImportError:  # Windows
    import msvcrt  # type: ignore[no-redef]

    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "run.lock"
# the files that make a directory "hold a run" (config.yaml and tensorboard/ alone are written before
# the first record and say nothing was trained)
RUN_PATTERNS = ("latest.pt", "best.pt", "iter_*.pt", "log.jsonl")
TEMP_PATTERN = ".*.tmp"  # what atomic_save / atomic_write_text leave when killed mid-write


class RunDirError(CheckpointError):
    """The run directory cannot be used as asked (it holds another run, or another process is writing it)."""


def notice(message: str) -> None:
    """A one-line notice on stderr: something was repaired or skipped, and the run goes on."""
    print(f"fsslab: notice: {message}", file=sys.stderr, flush=True)


def run_files(out_dir: str | Path) -> list[Path]:
    """The files of ``out_dir`` that show it holds a run (empty when it holds none or does not exist)."""
    out_dir = Path(out_dir)
    return sorted({p for pattern in RUN_PATTERNS for p in out_dir.glob(pattern) if p.is_file()})


def holds_run(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a run that a fresh start would overwrite (resume it instead)."""
    return bool(run_files(out_dir))


def describe_files(files: list[Path]) -> str:
    """``latest.pt, 3 iter_*.pt, log.jsonl``: what a run directory holds, in a few words."""
    periodic = [f for f in files if f.name.startswith("iter_")]
    names = [f.name for f in files if f not in periodic]
    if periodic:
        names.append(f"{len(periodic)} iter_*.pt" if len(periodic) > 1 else periodic[0].name)
    return ", ".join(names)


def remove_stale_temps(out_dir: str | Path) -> int:
    """Delete the temporary files of interrupted writes (call with the run's lock held); returns how many."""
    out_dir = Path(out_dir)
    stale = [p for p in out_dir.glob(TEMP_PATTERN) if p.is_file()]
    size = 0
    for path in stale:
        try:
            size += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    if stale:
        notice(
            f"removed {len(stale)} stale temporary file{'s' if len(stale) > 1 else ''} "
            f"({size / 1e6:.1f} MB) left in {out_dir} by an interrupted checkpoint or log write"
        )
    return len(stale)


def clear_run(out_dir: str | Path) -> list[str]:
    """Delete a run's files (checkpoints, log, config.yaml, tensorboard/) and nothing else; their names."""
    out_dir = Path(out_dir)
    removed = [p.name for p in run_files(out_dir)]
    for path in run_files(out_dir):
        path.unlink()
    for sidecar in out_dir.glob("*.pt.sha256"):  # the checkpoints' content hashes (fsslab.engine.checkpoint)
        sidecar.unlink(missing_ok=True)
    if (out_dir / "config.yaml").is_file():
        (out_dir / "config.yaml").unlink()
        removed.append("config.yaml")
    if (out_dir / "tensorboard").is_dir():
        shutil.rmtree(out_dir / "tensorboard")
        removed.append("tensorboard/")
    return removed


def refuse_fresh_start(out_dir: Path, files: list[Path]) -> RunDirError:
    """The error for a fresh run into a directory that holds one."""
    return RunDirError(
        f"{out_dir} already holds a run ({describe_files(files)}): continue it with --resume, replace it "
        "with --overwrite, or train into another directory (--out / train.out_dir)"
    )


# ------------------------------------------------------------------------------------------------ lock
def _try_lock(fd: int) -> bool:
    """An exclusive, non-blocking lock on ``fd``; False when another open file holds it. The kernel releases it
    when the file is closed or its process ends, however it ends (kill -9 included): no stale lock to recover."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # Windows: a byte-range lock on the first byte
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        raise
    return True


class RunLock:
    """``out_dir/run.lock``, held with ``flock(2)`` while the run lasts (``msvcrt.locking`` on Windows).

    A second run into the directory is refused with the holder's pid, host and start time, which the holder
    writes into the file once it holds it. The lock belongs to the open file, so the kernel drops it when the
    holder ends, whatever kills it; a ``run.lock`` left by a killed run is just a file that the next run
    locks and rewrites. The holder deletes the file on release; a process that opened the old file just before
    locks an unlinked inode, sees that the path no longer names it, and tries again."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raises RunDirError naming the live holder."""
        for _ in range(5):  # a few rounds: a holder may release (and delete the file) in between
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = self._read(fd)
                os.close(fd)
                raise RunDirError(self._in_use(holder))
            if not self._still_the_lock(fd):
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            self._fd, self.held = fd, True
            return
        raise RunDirError(f"could not take the lock {self.path}: other processes keep taking it")

    def _still_the_lock(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        """What the holder wrote (``{}`` while it has not written yet)."""
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _in_use(self, holder: dict[str, Any]) -> str:
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}; "
               if holder else "")
        return (f"run directory {self.path.parent} is in use by another fsslab run ({who}lock {self.path}): wait for "
                "it to end or train into another directory (--out / train.out_dir)")

    def release(self) -> None:
        """Delete the lock file and drop the lock if this process holds it (safe to call twice)."""
        if not self.held or self._fd is None:
            return
        self.held = False
        if self._still_the_lock(self._fd):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # drops the lock
        self._fd = None


__all__ = [
    "LOCK_NAME",
    "RUN_PATTERNS",
    "RunDirError",
    "RunLock",
    "clear_run",
    "describe_files",
    "holds_run",
    "notice",
    "refuse_fresh_start",
    "remove_stale_temps",
    "run_files",
]
