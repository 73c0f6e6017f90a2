"""Re-run notebooks in quick mode and keep only the outputs that nbval checks (cells marked NBVAL_CHECK_OUTPUT).

Notebooks are committed without outputs, except the small text outputs of deterministic cells, which
`pytest --nbval-lax` compares on every run. After a deliberate change to what such a cell prints (e.g. a new
synthetic-generator version), refresh them with:

    FSSLAB_QUICK=1 python notebooks/refresh_checked_outputs.py notebooks/00_data_prep.ipynb
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

MARKER = "# NBVAL_CHECK_OUTPUT"


def refresh(path: Path, timeout: int = 600) -> int:
    """Execute ``path`` and write it back with outputs only on checked cells; returns how many it kept."""
    if os.environ.get("FSSLAB_QUICK") != "1":
        raise SystemExit("set FSSLAB_QUICK=1: the checked outputs are those of the quick mode that CI runs")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    kept = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if MARKER in cell.source:
            cell.outputs = [o for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"]
            kept += 1
        else:
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)  # ipywidgets state saved by the run: large and useless without a kernel
    nbformat.write(nb, path)
    return kept


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: kept the outputs of {refresh(Path(name))} checked cell(s)")
