"""Files written whole or not at all, and their content hashes: the one definition of each, shared by checkpoints,
run directories, the zoo and the weight checks (imports nothing of fsslab)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", permissions: int | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; when the block ends, flush, fsync and rename it over
    ``path`` (``os.replace``: atomic on POSIX), so that ``path`` is either the old file or the complete new one.
    Any failure removes the temporary file (a hidden ``.<name>.*.tmp``; a kill may leave one, which
    ``run_dir.remove_stale_temps`` clears) and leaves ``path`` untouched. ``permissions``: the new file's mode
    (mkstemp creates 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if permissions is not None:
            os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, permissions: int | None = None) -> None:
    """Write ``text`` to ``path`` whole or not at all (``atomic_file``)."""
    with atomic_file(path, "w", permissions) as handle:
        handle.write(text)


def fsync_directory(path: str | os.PathLike) -> None:
    """Make the renames inside directory ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        dir_fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


__all__ = ["atomic_file", "atomic_write_text", "fsync_directory", "sha256_file"]
