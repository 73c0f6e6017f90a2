"""Helpers shared by ``parity_ipmt.py`` and ``parity_amformer.py``: the harness import, small and
whole-image support objects, interleaved timing and the fsslab/official ratio table.

Not a benchmark of its own; the parity scripts import it from this folder (they run as scripts, so
``benchmarks/`` is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from types import ModuleType

import torch

DEFAULT_HARNESS = os.environ.get("OFFICIAL_REF_DIR", "/work/shared/tools/official_ref")
SUPPORT_OBJECTS = ("small", "whole")
# "whole": label 1 everywhere but a background frame this wide. 8 px at 473x473 is one cell of the
# 60x60 feature grid, so neither model's "support is all foreground" guard (IPMT resets the corners)
# fires, and the object's bounding box is the whole image.
WHOLE_BORDER_PX = 8
# the ratio table's columns -> the variant each script runs for it (fsslab variants only)
RATIO_COLUMNS = ("fp32", "channels_last", "bf16")


def load_harness(path: str | Path, env_vars: Iterable[str]) -> ModuleType:
    """Import ``official_ref`` from the harness folder ``path``; exit with a hint when it cannot run."""
    missing = [name for name in env_vars if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (see /work/shared/tools/official_ref/README.md)")
    if not (Path(path) / "official_ref.py").is_file():
        raise SystemExit(f"no official_ref.py in {str(path)!r} (pass --harness or set OFFICIAL_REF_DIR)")
    sys.path.insert(0, str(Path(path).resolve()))
    import official_ref  # outside the repository: imported only here, at run time

    return official_ref


def add_support_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--support-object", choices=(*SUPPORT_OBJECTS, "both"), default="both",
                        help="small: the harness's ellipse; whole: label 1 on all but a thin frame "
                             "(no advantage for code that only looks around the object); default both")


def add_bf16_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-bf16", action="store_true",
                        help="leave the bf16 autocast variant out (timing rounds and its difference to the "
                             "official output): on a CPU without AVX512-BF16 or AMX, bf16 is emulated and 5-24x "
                             "slower than fp32, and it would take most of the run")


def timed_variant(variant: str, no_bf16: bool) -> bool:
    return not (no_bf16 and "bf16" in variant)


def support_objects(choice: str) -> tuple[str, ...]:
    return SUPPORT_OBJECTS if choice == "both" else (choice,)


def whole_image_support(inputs: dict, border: int = WHOLE_BORDER_PX) -> dict:
    """The harness episode with every support mask replaced by a whole-image object (images unchanged)."""
    s_y = torch.zeros_like(inputs["s_y"])
    s_y[..., border:-border, border:-border] = 1
    return {**inputs, "s_y": s_y}


def harness_inputs(ref: ModuleType, shot: int, support_object: str, seed: int = 0) -> dict:
    """The harness's seeded episode with a ``small`` (its own) or ``whole`` support object."""
    inputs = ref.make_inputs(shot=shot, seed=seed)
    return whole_image_support(inputs) if support_object == "whole" else inputs


def interleaved_times(runs: dict[Hashable, Callable[[], object]], rounds: int
                      ) -> tuple[dict[Hashable, list[float]], dict[Hashable, list[float]]]:
    """Wall and process-CPU seconds of every run, ``rounds`` times; each round runs every callable once,
    so a change of machine load hits all of them alike."""
    wall: dict[Hashable, list[float]] = {key: [] for key in runs}
    cpu: dict[Hashable, list[float]] = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return wall, cpu


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio_spread(mine: list[float], official: list[float]) -> dict[str, float]:
    """Ratio of the medians, and min/max of the per-round ratios (a round runs both back to back)."""
    per_round = [m / o for m, o in zip(mine, official)]
    return {"median": statistics.median(mine) / statistics.median(official),
            "min": min(per_round), "max": max(per_round)}


def summarize(times: dict[tuple[str, str], list[float]], columns: dict[str, str]) -> dict[str, dict]:
    """Per support object: seconds (median/min/max) of every variant and fsslab/official ratios per column.

    ``times`` is keyed by (support object, variant); ``columns`` maps a ratio column to its variant."""
    out: dict[str, dict] = {}
    for support in dict.fromkeys(s for s, _ in times):
        official = times[(support, "official")]
        out[support] = {
            "seconds": {variant: spread(t) for (s, variant), t in times.items() if s == support},
            "ratio_to_official": {column: ratio_spread(times[(support, variant)], official)
                                  for column, variant in columns.items() if (support, variant) in times},
        }
    return out


def _median_and_range(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"


def format_ratio_table(summary: dict[str, dict], title: str) -> str:
    """One row per support object: official seconds, then fsslab/official per column (per-round min-max)."""
    head = f"{'support':8}" + "".join(f" {c:>20}" for c in ("official s", *RATIO_COLUMNS))
    lines = [title, head, "-" * len(head)]
    for support, row in summary.items():
        cells = [row["seconds"]["official"], *(row["ratio_to_official"].get(c) for c in RATIO_COLUMNS)]
        lines.append(f"{support:8}" + "".join(f" {_median_and_range(cell) if cell else 'not timed':>20}"
                                              for cell in cells))
    return "\n".join(lines)


def format_seconds(summary: dict[str, dict], label: str) -> str:
    """Every variant's median and min/max seconds, one line each."""
    return "\n".join(f"  {label:>4} {support:6} {variant:<28} median {s['median']:7.3f} s  "
                     f"min {s['min']:7.3f}  max {s['max']:7.3f}"
                     for support, row in summary.items() for variant, s in row["seconds"].items())


class _NoModuleTracking:
    """Stands in for the flop counter's module tracker, which fails on modules called under ``no_grad`` with
    inputs that require grad; only the global total is read here."""

    def __init__(self) -> None:
        self.parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _fused_conv_flops(x_shape, second, third, *_, out_shape=None, **__) -> int:
    """FLOPs of ``mkldnn._convolution_pointwise``: (x, weight, bias, ...) or, for the ``binary`` overload
    (the fused residual sum), (x, other, weight, bias, ...) -- the counter keys formulas by op packet."""
    from torch.utils.flop_counter import conv_flop_count

    weight_shape = third if isinstance(third, torch.Size) and len(third) == 4 else second
    return conv_flop_count(x_shape, weight_shape, out_shape, transposed=False)


def counted_gmac(run: Callable[[], object]) -> float:
    """Multiply-accumulates (1e9) of the convolutions and matrix products of one ``run()``, counted by
    ``torch.utils.flop_counter``, which also learns fsslab's fused oneDNN convolutions here (2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    if hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        mapping = {torch.ops.mkldnn._convolution_pointwise: _fused_conv_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        run()
    return counter.get_total_flops() / 2e9


def peak_gmac_per_s(threads: int, rounds: int = 5) -> float:
    """The best fp32 multiply-accumulate rate this CPU sustains on the models' largest layers: the faster of
    a [3600,2048]x[2048,512] matrix product and a channels_last 3x3 convolution 512->512 at 60x60 (ResNet-50's
    layer4 at 473x473), median of ``rounds``. Any exact implementation of a forward of G GMAC takes at least
    G / this seconds here."""
    torch.set_num_threads(threads)
    a, b = torch.randn(3600, 2048), torch.randn(2048, 512)
    x = torch.randn(1, 512, 60, 60).contiguous(memory_format=torch.channels_last)
    w = torch.randn(512, 512, 3, 3).contiguous(memory_format=torch.channels_last)
    cases = {3600 * 2048 * 512: lambda: a @ b,
             3600 * 512 * 512 * 9: lambda: torch.nn.functional.conv2d(x, w, padding=1)}
    rates = []
    with torch.no_grad():
        for macs, fn in cases.items():
            fn()
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            rates.append(macs / statistics.median(times) / 1e9)
    return max(rates)


def format_floor(gmac: dict[str, float], seconds: dict[str, float], peak: float, official_seconds: float,
                 title: str) -> str:
    """Per variant: counted GMAC, median seconds, achieved GMAC/s, and the time and fsslab/official ratio the
    same work would take at the CPU's peak rate (the floor of any exact implementation)."""
    head = f"  {'variant':<30} {'GMAC':>8} {'median s':>9} {'GMAC/s':>8} {'at peak s':>10} {'ratio at peak':>14}"
    lines = [title, head, "  " + "-" * (len(head) - 2)]
    for name, work in gmac.items():
        sec = seconds.get(name)
        achieved = f"{work / sec:8.1f}" if sec else f"{'-':>8}"
        lines.append(f"  {name:<30} {work:8.1f} {sec if sec else float('nan'):9.3f} {achieved} "
                     f"{work / peak:10.3f} {work / peak / official_seconds:14.3f}")
    return "\n".join(lines)


def add_floor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the work count (GMAC of the official and the default fsslab forward) and the "
                             "CPU's peak rate, i.e. the time any exact implementation needs here")


def report_floor(runs: dict[tuple[str, str], Callable[[], object]], wall: dict[str, dict], variants: Iterable[str],
                 threads: int, title: str) -> dict[str, dict]:
    """Count the work of ``variants`` per support object (``runs`` keyed by (support, variant)), measure the
    CPU's peak rate and print ``format_floor`` per support object, against the official median seconds."""
    peak = peak_gmac_per_s(threads)
    out: dict[str, dict] = {"peak_gmac_per_s": peak}
    for support, row in wall.items():
        gmac = {variant: counted_gmac(runs[(support, variant)]) for variant in variants}
        seconds = {variant: row["seconds"][variant]["median"] for variant in variants}
        print(format_floor(gmac, seconds, peak, seconds["official"],
                           f"  {title}, {support} support: work and the floor at this CPU's peak "
                           f"({peak:.1f} GMAC/s)"))
        out[support] = {"gmac": gmac, "floor_ratio": gmac[variants[-1]] / peak / seconds["official"]}
    return out
