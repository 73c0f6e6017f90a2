"""How well does a synthetic-ImageNet backbone know the benchmark's classes? A few-shot probe without training.

The pretrained 21-way PSPNet (``backbone_pretrain_tiny``) labels every support pixel; the majority class over the
support's foreground is the episode's guessed class, and the query's pixels of that class are the prediction.
Prints how often the guessed class is the episode's class and the class-wise IoU of those predictions
("classifier matching") on the evaluation episodes of a config: if the backbone cannot tell the classes apart,
no few-shot model built on it can read its supports.

    python benchmarks/probe_backbone.py runs/calib/runs/bXXXX/backbone_pretrain_tiny/latest.pt \
        data.root=... 'data.synthetic={...}' data.val_size=112 --episodes 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from fsslab.batch import IGNORE_INDEX
from fsslab.config import load_config
from fsslab.engine.build import eval_dataset_factory
from fsslab.engine.checkpoint import load_checkpoint
from fsslab.models import build_model


def probe(checkpoint: str, overrides: list[str], episodes: int, seed: int = 0) -> dict[str, float]:
    cfg = load_config("synthetic/backbone_pretrain_tiny", overrides)
    factory, _ = eval_dataset_factory(cfg)
    dataset = factory(seed, episodes)
    model = build_model({"name": cfg.model.name, **cfg.model.params})
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.eval()
    n_classes = cfg.model.params["n_classes"]
    inter, union = np.zeros(n_classes), np.zeros(n_classes)
    right = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            class_id = int(sample["class_id"])
            query_pred = model({"query_img": sample["query_img"][None]}).logits.argmax(1)[0]  # [H,W]
            support_pred = model({"query_img": sample["support_imgs"][:1]}).logits.argmax(1)[0]
            votes = torch.bincount(support_pred[sample["support_masks"][0] == 1], minlength=n_classes)
            votes[0] = 0  # background never names the class
            guess = int(votes.argmax())
            right += guess == class_id
            target, valid = sample["query_mask"] == 1, sample["query_mask"] != IGNORE_INDEX
            pred = query_pred == guess
            inter[class_id] += (pred & target & valid).sum().item()
            union[class_id] += ((pred | target) & valid).sum().item()
    seen = union > 0
    return {"support_class_accuracy": 100.0 * right / len(dataset), "episodes": len(dataset),
            "classifier_matching_miou": 100.0 * float(np.mean(inter[seen] / union[seen]))}


def novel_leakage(root: str, fold: int = 0) -> tuple[int, int]:
    """(training images that qualify under PFENet's lists, those of them that also hold a novel-class object):
    PFENet's lists label such objects background, teaching a model to suppress the classes it is tested on."""
    import cv2

    from fsslab.data.lists import MIN_AREA
    from fsslab.data.synthetic import fold_classes

    novel = fold_classes(fold)
    qualifying = leaking = 0
    for path in sorted(Path(root, "SegmentationClassAug").glob("train_*.png")):
        counts = np.bincount(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).ravel(), minlength=256)
        if any(counts[c] >= MIN_AREA for c in range(1, 21) if c not in novel):
            qualifying += 1
            leaking += bool(counts[novel].sum())
    return qualifying, leaking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="latest.pt of a backbone_pretrain_tiny run")
    parser.add_argument("overrides", nargs="*", help="config overrides of the benchmark (data.root, data.synthetic...)")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--leakage", metavar="ROOT", help="only count the PFENet-list training images of the "
                        "benchmark at ROOT (fold 0) that hold a novel-class object")
    args = parser.parse_args(argv)
    if args.leakage:
        qualifying, leaking = novel_leakage(args.leakage)
        print(f"{leaking} of {qualifying} PFENet-list training images ({100 * leaking / qualifying:.1f}%) hold a "
              "novel-class object (labelled background in their episodes)")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = probe(args.checkpoint, args.overrides, args.episodes)
    print(f"support class right {out['support_class_accuracy']:.1f}% of {out['episodes']} episodes; "
          f"classifier-matching mIoU {out['classifier_matching_miou']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
