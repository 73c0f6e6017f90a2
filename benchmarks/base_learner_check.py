"""How well a stage-1 base learner (PSPNet on the base classes) separates base-class objects from novel targets.

    python benchmarks/base_learner_check.py runs/synthetic/pspnet_base_tiny_fold0/latest.pt [--config synthetic/pspnet_base_tiny]
        [--episodes 300] [--seed 0] [OVERRIDES ...]

AMFormer (after BAM) turns the base learner's "any base class" probability into background evidence: it helps only
if base-class objects are found and novel targets are not. On the query images of the few-shot evaluation episodes
(the config's fold, ``eval`` split and resolution), this prints

* the share of the novel targets' pixels that the base learner calls a base class (should be small),
* the IoU of "any base class" against the base-class objects of the queries, and
* the base classes' mIoU over the queries (classes present in them; false positives count).

docs/calibration.md, step 7.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from fsslab.batch import IGNORE_INDEX
from fsslab.config import load_config
from fsslab.engine import load_run
from fsslab.engine.build import eval_dataset_factory


@torch.no_grad()
def base_learner_stats(checkpoint: str, config: str, overrides: list[str], episodes: int, seed: int) -> dict:
    cfg = load_config(config, overrides)
    model = load_run(cfg, checkpoint).eval()
    n_base = model.n_classes - 1 if hasattr(model, "n_classes") else None
    factory, _ = eval_dataset_factory(cfg)
    target_as_base = target_pixels = any_inter = any_union = 0
    class_inter = torch.zeros(256, dtype=torch.float64)
    class_union = torch.zeros(256, dtype=torch.float64)
    class_pixels = torch.zeros(256, dtype=torch.float64)
    for batch in DataLoader(factory(seed, episodes), batch_size=8):
        pred = model({"query_img": batch["query_img"]}).logits.argmax(1)  # [B,H,W]: 0 background, 1..n_base
        base, target = batch["query_base_mask"], batch["query_mask"] == 1  # [B,H,W] each
        valid = base != IGNORE_INDEX
        target_as_base += int(((pred > 0) & target).sum())
        target_pixels += int(target.sum())
        predicted_any, true_any = (pred > 0) & valid, (base > 0) & valid
        any_inter += int((predicted_any & true_any).sum())
        any_union += int((predicted_any | true_any).sum())
        for c in range(1, int(pred.max().clamp_min(base[valid].max())) + 1):  # false positives count too
            p, t = (pred == c) & valid, base == c
            class_inter[c] += float((p & t).sum())
            class_union[c] += float((p | t).sum())
            class_pixels[c] += float(t.sum())
    seen = class_pixels > 0  # the classes present in the queries
    return {
        "target_called_base": 100 * target_as_base / max(target_pixels, 1),
        "any_base_iou": 100 * any_inter / max(any_union, 1),
        "base_miou": float(100 * (class_inter[seen] / class_union[seen]).mean()) if seen.any() else float("nan"),
        "base_classes_seen": int(seen.sum()),
        "n_base": n_base,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*", help="config overrides, section.key=value")
    parser.add_argument("--config", default="synthetic/pspnet_base_tiny")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    stats = base_learner_stats(args.checkpoint, args.config, args.overrides, args.episodes, args.seed)
    print(f"{args.checkpoint}: novel-target pixels called base {stats['target_called_base']:.1f}%, "
          f"'any base class' IoU {stats['any_base_iou']:.1f}, base mIoU {stats['base_miou']:.1f} "
          f"({stats['base_classes_seen']} base classes in the queries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
