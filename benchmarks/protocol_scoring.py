"""The same predictions scored by fsslab's evaluation protocols and by the official scoring loops.

For each protocol the oracle's logits (the query's own label at input resolution, ``model.name=oracle``) of
the same episodes go through fsslab's scoring (``logits_at_label_resolution`` with the protocol's mapping and
``IoUAccumulator.summary`` with its class mean: what ``fsslab eval ... eval.protocol=NAME`` computes) and
through the transcriptions of the official loops in tests/data/test_official_scoring.py (IPMT ``test.py``,
AMNet ``test.py``, HSNet ``test.py``). docs/protocols.md reports the numbers.

    python benchmarks/protocol_scoring.py --size 473 --episodes 1000                 # odd-sized VOC images
    python benchmarks/protocol_scoring.py --root data/synthetic --size 473           # the synthetic benchmark
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from data.test_eval_protocols import write_odd_sized_voc
from data.test_official_scoring import NOVEL, OFFICIAL

from fsslab.data import build_dataset
from fsslab.data.eval_protocols import get_protocol
from fsslab.engine.metrics import IoUAccumulator, logits_at_label_resolution
from fsslab.models.oracle import QueryLabelOracle


def score(root: Path, dataset: str, name: str, size: int, episodes: int, seed: int) -> dict[str, float]:
    """fsslab's and the official mIoU / FB-IoU of the oracle on ``episodes`` episodes of fold 0."""
    data = build_dataset(dataset, root, "val", 0, 1, size=size, episodes=episodes, seed=seed, eval_protocol=name)
    protocol, oracle = get_protocol(name), QueryLabelOracle()
    accumulator, samples = IoUAccumulator(data.benchmark.n_classes), []
    for batch in DataLoader(data, batch_size=1):
        logits = oracle(batch).logits.float()
        pred, target = logits_at_label_resolution(logits, batch, protocol.mapping)
        accumulator.update(pred, target, batch["class_id"])
        if name in OFFICIAL:
            if protocol.mapping == "input":
                samples.append((logits, batch["query_mask"], int(batch["class_id"][0])))
            else:
                h, w = (int(v) for v in batch["query_ori_size"][0])
                samples.append((logits, batch["query_mask_ori"][:, :h, :w], int(batch["class_id"][0])))
    summary = accumulator.summary(NOVEL, protocol.class_mean)
    out = {"fsslab_miou": 100 * summary["miou"], "fsslab_fbiou": 100 * summary["fbiou"]}
    if name in OFFICIAL:
        out["official_miou"], out["official_fbiou"] = OFFICIAL[name](samples)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="a VOC-layout benchmark (default: odd-sized VOC images, 90-300 px, written to a temp dir)")
    parser.add_argument("--dataset", default=None, help="pascal | synthetic (default: synthetic when --root has "
                        "meta.json with a generator config, else pascal)")  # fmt: skip
    parser.add_argument("--size", type=int, default=473)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocols", nargs="+", default=["fsslab", "ipmt", "amformer", "hsnet"])
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = args.root or write_odd_sized_voc(Path(tempfile.mkdtemp()) / "odd_voc")
    dataset = args.dataset or ("synthetic" if args.root and (root / "meta.json").is_file() and
                               "config" in (root / "meta.json").read_text() else "pascal")  # fmt: skip
    print(f"{dataset} at {root}, fold 0, {args.episodes} episodes of seed {args.seed}, size {args.size}")
    print(f"{'protocol':<10} {'fsslab mIoU':>12} {'official mIoU':>14} {'fsslab FB-IoU':>14} {'official FB-IoU':>16}")
    for name in args.protocols:
        start = time.perf_counter()
        r = score(root, dataset, name, args.size, args.episodes, args.seed)
        official = (f"{r['official_miou']:>14.2f} {r['fsslab_fbiou']:>14.2f} {r['official_fbiou']:>16.2f}"
                    if "official_miou" in r else f"{'-':>14} {r['fsslab_fbiou']:>14.2f} {'-':>16}")
        print(f"{name:<10} {r['fsslab_miou']:>12.2f} {official}   ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
