"""fsslab's own error types: problems with what the user gave (a config, a file, a value), not bugs.

The ``fsslab`` command line prints an ``FsslabError`` as one line (exit status 2) and lets every other
exception keep its traceback, so a real bug is never disguised as a user error. Raise these only where the
message names the value or the file and says what to do; anything else should stay a plain exception.

Each type also derives from the built-in exception fsslab raised before it existed (``ValueError``), so
``except ValueError`` in user code keeps working. This module imports nothing: every layer may use it.
"""

from __future__ import annotations


class FsslabError(Exception):
    """Base of fsslab's user-facing errors: the message is complete on its own line."""


class ConfigError(FsslabError, ValueError):
    """A config file, override, keyword option or knob is invalid (unknown key, wrong type, bad value)."""


class DatasetError(FsslabError, ValueError):
    """A dataset file or list is unusable; the message names the file and the problem."""


class PrepError(DatasetError):
    """A dataset-preparation input is unusable (a record of a COCO JSON, a VOC/SBD file)."""


class CheckpointError(FsslabError, ValueError):
    """A checkpoint is unreadable or does not fit the model it is loaded into (another model or width).

    ``fsslab.engine.checkpoint`` has its own ``CheckpointError`` for its file-level checks; the CLI treats
    both alike.
    """


class TargetExistsError(DatasetError, FileExistsError):
    """An output path already holds something fsslab refuses to overwrite (a file, a foreign directory)."""


class FsslabWarning(UserWarning):
    """A notice about data fsslab changed or skipped on the user's behalf (deduplicated lines, a rebuilt cache)."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "FsslabError",
    "FsslabWarning",
    "PrepError",
    "TargetExistsError",
]
