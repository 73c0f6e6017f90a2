"""``fsslab ablate TABLE``: the papers' ablation tables in miniature (logic in fsslab.lab.ablation)."""

from __future__ import annotations

import argparse
import json
import shlex

DESCRIPTION = """\
Train every variant of an ablation table with the shipped recipe (one run per variant and seed, under
ROOT/TABLE/VARIANT/seedK), evaluate each with its controls (eval.controls=true: oracle, mismatched supports,
1/5 shots, base-class share) and write ROOT/TABLE/results.json and ROOT/TABLE/table.md: variant, mIoU
mean ± std over seeds, mismatched drop, base-class share, full − variant with its 95% Welch t-interval, the
paper's number ("not verified" where nobody checked it) and a verdict computed by the rule printed under
the table. Finished runs and evaluations are skipped, so an interrupted table continues where it stopped.

TABLE: a built-in table (amformer: w/o D, w/o ensemble, G with 1 or 0 passes, box supports; ipmt: 1-4
layers, w/o query mining, w/o prior, w/o deep supervision) or a YAML file with the same fields
(name, full, seeds, variants: [{name, config, overrides, claim, margin, paper, note}])."""

EPILOG = """\
examples:
  fsslab ablate amformer --variants "full,w/o D" --seeds 0       one variant pair, one seed (a smoke run)
  fsslab ablate ipmt                                             the whole IPMT table, 3 seeds
  fsslab ablate amformer --quick                                 pipeline check: 2 iterations, 4 episodes
  fsslab ablate amformer --merge a/results.json b/results.json --json merged.json    one table from two sessions
overrides (section.key=value) apply to every run after the variant's own."""


def _command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this table, recorded in results.json (rebuilt from the parsed arguments, so it
    reads the same whether fsslab was called as a program, a module or from Python)."""
    parts = ["fsslab", "ablate", args.table, *args.overrides]
    for flag, value in (("--variants", args.variants), ("--seeds", args.seeds), ("--start", args.start)):
        if value:
            parts += [flag, value]
    if args.root != "runs/ablate":
        parts += ["--root", args.root]
    if args.quick:
        parts.append("--quick")
    return shlex.join(parts)


def _cmd_ablate(args: argparse.Namespace) -> int:
    from fsslab.lab.ablation import load_table, run_ablation

    if args.merge:
        from fsslab.errors import ConfigError
        from fsslab.lab.ablation import format_table, merge_results

        if not args.json:
            raise ConfigError("fsslab ablate --merge: name the merged file with --json OUT.json")
        results = merge_results(args.merge)
        if results["table"]["name"] != load_table(args.table).name:
            raise ConfigError(f"fsslab ablate --merge: the files hold table {results['table']['name']!r}, "
                              f"not {args.table!r}")
        print(format_table(load_table(args.table), results["rows"]))
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2, default=str)
        print(f"wrote {args.json} (merged from {len(args.merge)} files)")
        return 0
    if args.list:
        table = load_table(args.table)
        for v in table.variants:
            print(f"{v.name:<24} {v.config:<28} {' '.join(v.overrides) or '(as shipped)'}")
        return 0
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    results = run_ablation(args.table, root=args.root, seeds=seeds, variants=variants, quick=args.quick,
                           start=args.start, extra=args.overrides, command=_command_line(args))
    print(results["text"])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({k: v for k, v in results.items() if k != "text"}, handle, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


def add_ablate_parser(commands: argparse._SubParsersAction) -> None:
    ablate = commands.add_parser("ablate", help="the papers' ablation tables: train variants x seeds, controls, "
                                 "verdicts", description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ablate.add_argument("table", help="amformer | ipmt | a YAML table file")
    ablate.add_argument("overrides", nargs="*", metavar="section.key=value", help="overrides for every run")
    ablate.add_argument("--root", default="runs/ablate", help="where the runs and the table go (default runs/ablate)")
    ablate.add_argument("--seeds", default=None, help="comma-separated training seeds (default: the table's, 0,1,2)")
    ablate.add_argument("--variants", default=None, help="comma-separated variant names (default: all; the full "
                        "model's runs are always needed for the differences)")
    ablate.add_argument("--quick", action="store_true", help="pipeline check: 2 iterations of batch 2, 4 eval "
                        "episodes of one seed, the quick benchmark (numbers mean nothing)")
    ablate.add_argument("--start", choices=("prerequisites", "shipped"), default=None,
                        help="starting points: train the config's prerequisite chain when missing (the recipe from "
                        "scratch; default), or take the frozen backbone / stage-1 PSPNet of the shipped zoo model "
                        "(default with --quick)")
    ablate.add_argument("--list", action="store_true", help="list the table's variants and exit")
    ablate.add_argument("--json", default=None, help="also write the results to this file")
    ablate.add_argument("--merge", nargs="+", default=None, metavar="RESULTS.json",
                        help="trains nothing: one table from results.json files of this table made elsewhere "
                        "(other sessions or machines; each variant/seed from one file), written to --json")
    ablate.set_defaults(func=_cmd_ablate)
