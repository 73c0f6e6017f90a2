"""Benchmark fsslab models: eval-forward and training-step time and peak memory over sizes, shots, devices, precisions.

Same as `fsslab bench`; the logic lives in fsslab.cli.bench. Example (CPU, the reference setting of the issue):
    python benchmarks/bench_models.py --models ipmt,amformer --settings full --sizes 473 --shots 1 \\
        --modes forward --precisions fp32,bf16 --channels-last --repeats 3 --json bench.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fsslab.cli.bench import cli, main, parse_args, run_one

__all__ = ["cli", "main", "parse_args", "run_one"]

if __name__ == "__main__":
    cli()
