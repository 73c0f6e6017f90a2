"""A run directory holds one run: no silent overwrite, one writer at a time, and the leftovers of killed runs.

- A fresh run into a directory that already holds a run (``latest.pt``, ``best.pt``, ``iter_*.pt`` or
  ``log.jsonl``) is refused unless it resumes that run or ``--overwrite`` deletes its files first.
- ``run.lock`` (pid, host, start time) is held for the run's lifetime: a second run into the directory is
  refused with the first one's pid and host; a lock whose process is gone (same host) is removed with a notice.
- Hidden ``.*.tmp`` files are interrupted atomic writes (a killed checkpoint save): removed on the next start.

Under DDP only rank 0 touches the directory (``fsslab.engine.train.resume.start_run`` calls this module there).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fsslab.engine.checkpoint import CheckpointError

LOCK_NAME = "run.lock"
# the files that make a directory "hold a run" (config.yaml and tensorboard/ alone are written before
# the first record and say nothing was trained)
RUN_PATTERNS = ("latest.pt", "best.pt", "iter_*.pt", "log.jsonl")
TEMP_PATTERN = ".*.tmp"  # what atomic_save / atomic_write_text leave when killed mid-write
_UNREADABLE_LOCK_GRACE_S = 10.0  # an empty lock younger than this is still being written by its owner
_HELD: set[str] = set()  # locks this process holds (tells its own live lock from a dead run's)


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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that ``path`` is either the old file or the complete new one (as atomic_save)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (Linux), or None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name (field 2) may hold spaces and parentheses


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks since boot): tells the locker from a later process with its pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_alive(pid: int, started_ticks: str | None) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] == "Z":  # killed, not yet reaped by its parent
            return False
        if started_ticks is not None and len(fields) > 19 and fields[19] != started_ticks:
            return False  # the pid was reused by another process
    return True


class RunLock:
    """``out_dir/run.lock`` holding ``{"pid", "host", "started", "ticks"}`` as JSON, created exclusively and
    complete: the content is written to a temporary file first, then hard-linked to the lock's name (which
    fails if the lock exists), so that no one ever sees a lock without its owner (O_EXCL and a write after it
    where the filesystem has no hard links)."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock, recovering a stale one; raises RunDirError naming the live holder."""
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "ticks": _process_start(os.getpid()),
        }
        for _ in range(5):  # a few rounds: another process may take or drop the lock meanwhile
            if self._create(json.dumps(info)):
                self.held = True
                _HELD.add(str(self.path.resolve()))
                return
            holder = self._read()
            if holder is None:  # removed meanwhile: try again
                continue
            problem = self._live_holder(holder)
            if problem:
                raise RunDirError(problem)
            self._remove_stale(holder)
        raise RunDirError(f"could not take the lock {self.path}: other processes keep taking it")

    def _create(self, content: str) -> bool:
        """Create the lock with ``content``; False when it exists."""
        fd, tmp = tempfile.mkstemp(prefix=f".{LOCK_NAME}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except FileNotFoundError:  # the holder's clean-up of stale temporary files took ours: look again
                return False
            except OSError:  # no hard links here
                pass
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def release(self) -> None:
        """Delete the lock if this process holds it (safe to call twice)."""
        if not self.held:
            return
        self.held = False
        _HELD.discard(str(self.path.resolve()))
        holder = self._read()
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any] | None:
        """The lock's content; ``{}`` when unreadable (being written, or its writer died), None when gone."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return {"_text": text, "_age": age}
        return data if isinstance(data, dict) else {"_text": text, "_age": age}

    def _live_holder(self, holder: dict[str, Any]) -> str | None:
        """Why the lock cannot be taken (its holder may still run), or None when it is stale."""
        where = self.path.parent
        if "pid" not in holder:
            if holder.get("_age", 0.0) < _UNREADABLE_LOCK_GRACE_S:
                return f"run directory {where} is being locked by another process right now ({self.path})"
            return None
        pid, host, started = holder["pid"], holder.get("host"), holder.get("started", "?")
        if host != socket.gethostname():
            return (
                f"run directory {where} is in use by another fsslab run (pid {pid} on host {host}, started "
                f"{started}); fsslab cannot check a process on another host: if that run has ended, delete "
                f"{self.path}; otherwise train into another directory (--out / train.out_dir)"
            )
        if pid == os.getpid() and str(self.path.resolve()) not in _HELD:
            return None  # a run of this process that ended without releasing (os._exit); nothing writes now
        if pid == os.getpid() or _pid_alive(int(pid), holder.get("ticks")):
            return (
                f"run directory {where} is in use by another fsslab run (pid {pid} on {host}, started "
                f"{started}; lock {self.path}): wait for it to end or train into another directory "
                "(--out / train.out_dir)"
            )
        return None

    def _remove_stale(self, holder: dict[str, Any]) -> None:
        """Remove a dead run's lock. The lock is first renamed to a name of this process's own, so that of
        two processes recovering it at once only one removes it, and a lock taken meanwhile is put back."""
        grabbed = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.replace(self.path, grabbed)
        except FileNotFoundError:
            return
        try:
            text: str | None = grabbed.read_text()
        except OSError:
            text = None
        if "pid" in holder:
            try:
                same = json.loads(text or "") == holder
            except json.JSONDecodeError:
                same = False
        else:
            same = text == holder.get("_text")
        if not same:  # another process took the lock in between: give it back
            try:
                os.link(grabbed, self.path)
            except FileExistsError:
                pass
            grabbed.unlink(missing_ok=True)
            return
        grabbed.unlink(missing_ok=True)
        if "pid" in holder:
            notice(
                f"removed the stale lock {self.path} of pid {holder['pid']} (started "
                f"{holder.get('started', '?')}; that process no longer runs on {holder.get('host')})"
            )
        else:
            notice(f"removed the unreadable lock {self.path} (its writer died while creating it)")


__all__ = [
    "LOCK_NAME",
    "RUN_PATTERNS",
    "RunDirError",
    "RunLock",
    "atomic_write_text",
    "clear_run",
    "describe_files",
    "holds_run",
    "notice",
    "refuse_fresh_start",
    "remove_stale_temps",
    "run_files",
]
