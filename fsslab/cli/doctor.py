"""``fsslab doctor CONFIG [overrides]``: the pre-flight of a run, in seconds, before hours of GPU time.

Prints one line per missing piece with the command that fixes it (``fsslab.engine.prerequisites.preflight``:
data root, lists and listed files, fold indices, base classes in the labels, the ImageNet file, the run it
starts from, the device, free disk) and exits 1 when something the run needs is missing (notices alone: 0).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

DESCRIPTION = """Check, in seconds, that a run of CONFIG has what it needs: data root, lists and the files they
list, fold indices, base classes in the training labels, the ImageNet initialisation (key names and shapes;
sha256 where published, docs/weights.md), the stage-1 or pretraining checkpoint it starts from, the device and
the free disk for its checkpoints. One line per problem with the command that fixes it; exit status 1 when
something is missing."""


def add_doctor_parser(commands: Any) -> None:
    """``fsslab doctor CONFIG [overrides] [--eval]``, a sub-command of ``commands`` (the ``fsslab`` parser's)."""
    doctor = commands.add_parser("doctor", help="pre-flight check of a run: data, weights, stage 1, device, disk",
                                 description=DESCRIPTION)  # fmt: skip
    doctor.add_argument("config", help="a YAML file or a shipped name such as pascal/amformer_r50_fold0_1shot")
    doctor.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    doctor.add_argument("--eval", action="store_true",
                        help="check for `fsslab eval` only (no training data, device or disk checks)")
    doctor.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from fsslab.config import load_config
    from fsslab.engine.prerequisites import preflight

    start = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    problems = preflight(cfg, training=not args.eval)
    for problem in problems:
        print(problem.line())
    blocking = [p for p in problems if p.blocking]
    notices = len(problems) - len(blocking)
    verdict = (f"{len(blocking)} missing" if blocking else "ready") + (f", {notices} notice(s)" if notices else "")
    print(f"fsslab doctor {args.config}: {verdict} ({time.perf_counter() - start:.1f} s)")
    return 1 if blocking else 0


__all__ = ["add_doctor_parser", "run_doctor"]
