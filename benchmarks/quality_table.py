"""The quality tables of the README and docs/quality.md, printed from the `fsslab eval --json` files of `benchmarks/train_synthetic_zoo.sh`.

    python benchmarks/quality_table.py [--evals runs/evals] [--timings runs/synthetic/timings.tsv]

Nothing is typed by hand: every cell is read from an evaluation file (named by the script's `evaluate` calls) or
from the timings the chain recorded; a missing file prints as "–".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODELS = {"baseline": "prototype baseline", "ipmt": "IPMT", "amformer": "AMFormer"}


def _load(evals: Path, tag: str) -> dict | None:
    path = evals / f"{tag}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pm(result: dict | None, key: str = "miou") -> str:
    return "–" if result is None else f"{result[key]:.2f} ± {result[key + '_std']:.2f}"


def _signed(value: float) -> str:
    """+1.23 / −1.23 (the typographic minus of the README's tables)."""
    return f"{value:+.2f}".replace("-", "−")


def main_table(evals: Path) -> list[str]:
    header = ("| model | 1-shot | oracle | mismatched supports (drop) | 1-shot model given 5 shots (gain) "
              "| trained 5-shot (− 1-shot) | box supports (− masks) |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    reference = ((_load(evals, "baseline_1shot") or {}).get("controls") or {}).get("all_foreground")
    if reference:
        lines.append(f"| all-foreground reference (control) | {_pm(reference)} | | | | | |")
    for key, name in MODELS.items():
        one, five, box = (_load(evals, f"{key}_{t}") for t in ("1shot", "5shot", "1shot_box"))
        controls = (one or {}).get("controls") or {}
        oracle = f"{controls['oracle']['miou']:.2f}" if controls else "–"
        mismatched = (f"{controls['mismatched']['miou']:.2f} ({_signed(-controls['drop'])})" if controls else "–")
        given5 = (f"{controls['five_shot']['miou']:.2f} ({_signed(controls['shot_gain'])})" if controls else "–")
        trained5 = "–" if five is None or one is None else f"{_pm(five)} ({_signed(five['miou'] - one['miou'])})"
        boxed = "–" if box is None or one is None else f"{_pm(box)} ({_signed(box['miou'] - one['miou'])})"
        lines.append(f"| {name} | {_pm(one)} | {oracle} | {mismatched} | {given5} | {trained5} | {boxed} |")
    return lines


def fold_table(evals: Path, fold: int) -> list[str]:
    lines = [f"| fold {fold}, 1-shot | mIoU | FB-IoU | oracle | mismatched (drop) |", "|---|---|---|---|---|"]
    for key, name in MODELS.items():
        one = _load(evals, f"{key}_fold{fold}_1shot")
        controls = (one or {}).get("controls") or {}
        extra = (f"{controls['oracle']['miou']:.2f} | {controls['mismatched']['miou']:.2f} ({_signed(-controls['drop'])})"
                 if controls else "– | –")
        lines.append(f"| {name} | {_pm(one)} | {_pm(one, 'fbiou')} | {extra} |")
    return lines


def crossdomain_table(evals: Path) -> list[str]:
    """The cross-domain preset (the `crossdomain` step): each 1-shot model with every control, the all-foreground
    reference first."""
    lines = ["| cross-domain, fold 0, 1-shot | mIoU | oracle | mismatched (drop) | given 5 shots (gain) | − all-foreground |",
             "|---|---|---|---|---|---|"]
    reference = None
    rows = []
    for key, name in MODELS.items():
        one = _load(evals, f"{key}_crossdomain_1shot")
        controls = (one or {}).get("controls") or {}
        if not controls:
            rows.append(f"| {name} | {_pm(one)} | – | – | – | – |")
            continue
        reference = reference or controls.get("all_foreground")
        margin = controls.get("margin_over_all_foreground")
        rows.append(f"| {name} | {_pm(one)} | {controls['oracle']['miou']:.2f} | {controls['mismatched']['miou']:.2f} "
                    f"({_signed(-controls['drop'])}) | {controls['five_shot']['miou']:.2f} "
                    f"({_signed(controls['shot_gain'])}) | {'–' if margin is None else _signed(margin)} |")
    if reference:
        lines.append(f"| all-foreground reference (control) | {_pm(reference)} | | | | |")
    return lines + rows


def base_table(evals: Path) -> list[str]:
    """The base-class analysis of the 1-shot evaluations (fsslab eval: base_share, miou_without_base)."""
    lines = ["| fold 0, 1-shot | mIoU | predicted foreground on base-class objects | mIoU, base objects removed (gain) |",
             "|---|---|---|---|"]
    for key, name in MODELS.items():
        one = _load(evals, f"{key}_1shot")
        if one is None or one.get("base_share") is None:
            lines.append(f"| {name} | {_pm(one)} | – | – |")
            continue
        gain = _signed(one["miou_without_base"] - one["miou"])
        lines.append(f"| {name} | {_pm(one)} | {one['base_share']:.1f}% | {one['miou_without_base']:.2f} ({gain}) |")
    return lines


def timing_table(timings: Path) -> list[str]:
    if not timings.is_file():
        return ["(no timings recorded)"]
    # a step that ran again (its result deleted to retrain it with a changed config) appends a new row: the
    # last row of each step is the run whose result exists; the order is that of each step's first run
    latest: dict[str, int] = {}
    for row in timings.read_text().splitlines():
        name, seconds, _ = row.split("\t", 2)
        latest[name] = int(seconds)
    lines = ["| step | wall time |", "|---|---|"]
    lines += [f"| {name} | {seconds // 60} min {seconds % 60:02d} s |" for name, seconds in latest.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=Path, default=Path("runs/evals"))
    parser.add_argument("--timings", type=Path, default=Path("runs/synthetic/timings.tsv"))
    args = parser.parse_args(argv)
    print("\n".join([*main_table(args.evals), "", *crossdomain_table(args.evals), "", *fold_table(args.evals, 1), "",
                     *base_table(args.evals), "", *timing_table(args.timings)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
