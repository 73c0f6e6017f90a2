"""``fsslab zoo pack|pack-weights|prune|list|verify|recheck``: the shipped checkpoints from the command line (logic in fsslab.zoo)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _cmd_zoo_pack(args: argparse.Namespace) -> int:
    from fsslab.zoo.pack import pack_checkpoint

    check = {}
    if args.check_seeds is not None:
        check["seeds"] = args.check_seeds
    if args.check_episodes is not None:
        check["episodes"] = args.check_episodes
    name = args.name or (Path(args.run).name if Path(args.run).is_dir() else Path(args.run).parent.name)
    entry = pack_checkpoint(args.run, name, eval_json=args.eval_json, command=args.command_line,
                            out_dir=args.dir, base=args.base, storage=args.storage, check=check or None,
                            data_root=args.data_root, replace_shared=args.replace_shared)
    shown = {k: entry[k] for k in ("name", "file", "size", "sha256", "shared_file", "command", "check")}
    print(json.dumps(shown, indent=2))
    return 0


def _cmd_zoo_list(args: argparse.Namespace) -> int:
    from fsslab.zoo import read_manifest, total_size

    manifest = read_manifest(args.dir, required=args.dir is not None)  # a mistyped --dir is an error, not "none"
    if not manifest["entries"]:
        print("no shipped checkpoints (pack one with `fsslab zoo pack RUN_DIR --name NAME`)")
        return 0
    print(f"{'name':<32} {'model':<9} {'shot':>4} {'mIoU':>7} {'FB-IoU':>7} {'check mIoU':>10} {'size MB':>8}")
    def number(value: Any, digits: int = 2) -> str:
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    for name, e in sorted(manifest["entries"].items()):  # a field an entry lacks shows as "-"
        metrics = e.get("metrics") if isinstance(e.get("metrics"), dict) else {}
        check = e.get("check") if isinstance(e.get("check"), dict) else {}
        data = e.get("data") if isinstance(e.get("data"), dict) else {}
        size = e.get("size") / 1e6 if isinstance(e.get("size"), (int, float)) else None
        print(f"{name:<32} {e.get('model', '-')!s:<9} {data.get('shot', '-')!s:>4} {number(metrics.get('miou')):>7} "
              f"{number(metrics.get('fbiou')):>7} {number(check.get('miou')):>10} {number(size):>8}")
    print(f"total on disk: {total_size(args.dir) / 1e6:.2f} MB (budget {manifest['budget_bytes'] / 1e6:.1f} MB)")
    return 0


def _cmd_zoo_pack_weights(args: argparse.Namespace) -> int:
    from fsslab.zoo.pack import pack_weights

    record = pack_weights(args.run, args.name, args.command_line, prefix=args.prefix, storage=args.storage,
                          out_dir=args.dir, replace=args.replace)
    print(f"shared/{args.name}.pt: {record['tensors']} '{args.prefix}*' tensors, {record['size'] / 1e6:.2f} MB "
          f"({record['storage']}), from {record['source']} (iteration {record['iteration']})")
    return 0


def _cmd_zoo_prune(args: argparse.Namespace) -> int:
    from fsslab.zoo.pack import prune_shared

    removed = prune_shared(args.dir)
    print(f"deleted {', '.join(removed)}" if removed else "every shared file is read by an entry: nothing deleted")
    return 0


def _cmd_zoo_verify(args: argparse.Namespace) -> int:
    from fsslab.zoo import list_pretrained, read_manifest, verify_pretrained, verify_weights

    if args.dir is not None:
        read_manifest(args.dir, required=True)
    if not args.names:  # the shared weights (the shipped backbone) first: every model reads one
        for file, state in verify_weights(args.dir).items():
            print(f"{file}: sha256 matches the manifest, loads safely -> {state}")
    names = args.names or list_pretrained(args.dir)
    failed = 0
    for name in names:
        report = verify_pretrained(name, data_root=args.data_root, checkpoint_dir=args.dir)
        failed += not report["ok"]
        print(f"{name}: mIoU {report['measured']['miou']:.4f} (manifest {report['expected']['miou']:.4f}), "
              f"max |diff| {report['max_abs_diff']:.2e} -> {'ok' if report['ok'] else 'MISMATCH'}")
    return 1 if failed else 0


def _cmd_zoo_recheck(args: argparse.Namespace) -> int:
    from fsslab.zoo import recheck_pretrained

    entry = recheck_pretrained(args.name, eval_json=args.eval_json, data_root=args.data_root,
                               checkpoint_dir=args.dir)  # fmt: skip
    metrics = entry.get("metrics") or {}
    print(f"{args.name}: check mIoU {entry['check']['miou']:.4f}"
          + (f"; metrics mIoU {metrics['miou']:.2f}" if "miou" in metrics else ""))  # fmt: skip
    return 0


def add_zoo_parser(commands: Any) -> None:
    """``fsslab zoo pack|pack-weights|prune|list|verify|recheck``, a sub-command of ``commands`` (the ``fsslab`` parser's)."""
    zoo = commands.add_parser(
        "zoo",
        help="shipped checkpoints: pack a run, list, verify",
        description="Checkpoints shipped in fsslab/checkpoints/synthetic (manifest.json).",
    )
    zoo_commands = zoo.add_subparsers(dest="zoo_command", metavar="WHAT", required=True)
    pack = zoo_commands.add_parser(
        "pack",
        help="pack a run (directory or .pt) into a compact shipped checkpoint + manifest entry",
        description="Write <dir>/<name>.pt and its manifest entry (command, config, data seed, metrics, sha256). "
        "Runs a reduced deterministic evaluation of the packed model, which tests/test_zoo.py repeats.",
    )
    pack.add_argument("run", help="run directory (latest.pt is used) or checkpoint file")
    pack.add_argument("--name", default=None,
                      help="name for load_pretrained (default: the run directory's name, e.g. ipmt_tiny_fold0_1shot)")
    pack.add_argument("--eval-json", dest="eval_json", default=None, help="the run's `fsslab eval --json` file")
    pack.add_argument("--command", dest="command_line", default=None,
                      help="the exact `fsslab train ...` command (default: rebuilt from the run's config)")
    pack.add_argument("--base", default=None,
                      help="the run/checkpoint the model started from (pretraining or stage 1): tensors "
                      "equal to it are stored once, in shared/<base>.pt")
    pack.add_argument("--storage", choices=["fp16", "int8", "fp32"], default="fp16")
    pack.add_argument("--replace-shared", dest="replace_shared", action="store_true",
                      help="rewrite shared/<base>.pt when --base is a retrained run (then pack again the entries "
                           "that read it; their names are printed)")
    pack.add_argument("--check-seeds", dest="check_seeds", type=int, nargs="+", default=None,
                      help="seeds of the reduced check evaluation (default 0)")
    pack.add_argument("--check-episodes", dest="check_episodes", type=int, default=None,
                      help="episodes per seed of the check evaluation (default 100)")
    pack.add_argument("--data-root", dest="data_root", default=None, help="data root (default: the run's)")
    pack.add_argument("--dir", default=None, help="checkpoint directory (default: fsslab/checkpoints/synthetic)")
    pack.set_defaults(func=_cmd_zoo_pack)
    weights = zoo_commands.add_parser(
        "pack-weights",
        help="ship a run's backbone as shared/<name>.pt, the file the students' chain starts from",
        description="Write shared/<name>.pt (the run's --prefix tensors, int8 by default) and its manifest record "
        "(the command that trained it, the run's config and iteration). Configs start from it with "
        "model.init_checkpoint: \"{zoo}/shared/<name>.pt\"; models packed with --base it store only what they "
        "changed.")
    weights.add_argument("run", help="run directory (latest.pt is used) or checkpoint file")
    weights.add_argument("--name", required=True, help="file name under shared/ (e.g. backbone_wide)")
    weights.add_argument("--command", dest="command_line", required=True,
                         help="the exact `fsslab train ...` command that reproduces the run")
    weights.add_argument("--prefix", default="backbone.", help="the state-dict prefix to ship (default backbone.)")
    weights.add_argument("--storage", choices=["fp16", "int8", "fp32"], default="int8")
    weights.add_argument("--replace", action="store_true", help="replace an existing shared/<name>.pt")
    weights.add_argument("--dir", default=None, help="checkpoint directory (default: fsslab/checkpoints/synthetic)")
    weights.set_defaults(func=_cmd_zoo_pack_weights)
    prune = zoo_commands.add_parser("prune", help="delete shared files that no entry reads (shipped weights stay)")
    prune.add_argument("--dir", default=None, help="checkpoint directory (default: fsslab/checkpoints/synthetic)")
    prune.set_defaults(func=_cmd_zoo_prune)
    listing = zoo_commands.add_parser("list", help="list the shipped checkpoints and their metrics")
    listing.add_argument("--dir", default=None, help="checkpoint directory (default: the shipped one)")
    listing.set_defaults(func=_cmd_zoo_list)
    verify = zoo_commands.add_parser("verify", help="re-run the manifest's check evaluation")
    verify.add_argument("names", nargs="*", help="checkpoint names (default: all)")
    verify.add_argument("--data-root", dest="data_root", default=None)
    verify.add_argument("--dir", default=None)
    verify.set_defaults(func=_cmd_zoo_verify)
    recheck = zoo_commands.add_parser(
        "recheck", help="re-measure a shipped checkpoint after the evaluation changed (weights unchanged)",
        description="Repeat the check evaluation of NAME and record it (and --eval-json's metrics) in the manifest.")
    recheck.add_argument("name", help="checkpoint name")
    recheck.add_argument("--eval-json", dest="eval_json", default=None,
                         help="an `fsslab eval --json` file of this checkpoint: its metrics replace the manifest's")
    recheck.add_argument("--data-root", dest="data_root", default=None)
    recheck.add_argument("--dir", default=None)
    recheck.set_defaults(func=_cmd_zoo_recheck)


__all__ = ["add_zoo_parser"]
