"""fsslab: a few-shot semantic segmentation lab (IPMT, AMFormer, episodic data, trainer, notebooks).

Your own images: ``fsslab.predict(model, supports, queries)`` with ``fsslab.load_model(...)`` and
``fsslab.Support.from_files(...)`` (see ``fsslab.predict``; on the command line, ``fsslab predict``).
"""

from __future__ import annotations

import importlib
from typing import Any

from fsslab.version import __version__

# exported lazily (PEP 562), so that `import fsslab` and `fsslab --help` do not import torch
_FROM_PREDICT = ("Prediction", "PredictModel", "Support", "load_model", "write_predictions")


def __getattr__(name: str) -> Any:
    if name == "predict":  # the module, callable as fsslab.predict(model, supports, queries)
        return importlib.import_module("fsslab.predict")
    if name in _FROM_PREDICT:
        return getattr(importlib.import_module("fsslab.predict"), name)
    raise AttributeError(f"module 'fsslab' has no attribute {name!r}")


__all__ = ["PredictModel", "Prediction", "Support", "__version__", "load_model", "predict", "write_predictions"]
