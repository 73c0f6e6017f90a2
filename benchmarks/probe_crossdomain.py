"""Does a backbone's prototype read its support on shapes it has never seen? The cross-domain probe (#25).

The prototype baseline's cosine map (``PrototypeBaseline``: masked average of the support's layer2+layer3 features,
cosine to every query position) on episodes of the cross-domain preset (data/crossdomain; no training reads it),
scored without a threshold as AUROCs per episode, averaged:

- ``target/other``: target pixels against the pixels of the query's *other objects* (every query holds 2-3 objects
  of different classes, overlapping);
- ``target/background``: target pixels against background pixels;
- each with the episode's own support (matched) and with a support of another class (mismatched).

An untrained network already separates objects from background, and a saliency-like feature ranks every object
above the background whatever the support; only ``gap = AUROC(target/other, matched) − AUROC(target/other,
mismatched)`` measures support reading (DESIGN, "The sandbox's ImageNet"). A backbone is given as a run checkpoint
whose ``backbone.`` weights initialise the baseline (a backbone_pretrain_* run's latest.pt or iter_*.pt), as the
shipped baseline (``--pretrained NAME``: today's backbone) or as nothing (``--untrained``).

    python benchmarks/probe_crossdomain.py --pretrained baseline_tiny_fold0_1shot
    python benchmarks/probe_crossdomain.py runs/synthetic/backbone_pretrain_wide_fold0/iter_0002000.pt
    python benchmarks/probe_crossdomain.py --untrained
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from fsslab.data.lists import MIN_AREA
from fsslab.data.transforms import normalize


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half (Mann-Whitney U / (n_pos n_neg))."""
    if not len(pos) or not len(neg):
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    sorted_scores = scores[order]  # average ranks of ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first[counts > 1], counts[counts > 1], strict=True):
        ranks[order[start:start + count]] = ranks[order[start:start + count]].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _load_split(root: Path, split: str, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, labels = [], []
    for line in (root / "lists" / f"{split}.txt").read_text().splitlines():
        image_path, label_path = line.split()
        image = cv2.imread(str(root / image_path), cv2.IMREAD_COLOR)[..., ::-1]
        label = cv2.imread(str(root / label_path), cv2.IMREAD_UNCHANGED)
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR))
        labels.append(cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST))
    return images, labels


def episodes(labels: list[np.ndarray], classes: list[int], n: int, seed: int) -> list[tuple[int, int, int, int, int]]:
    """(class, query, support, other class, its support) tuples; every image shows its class with >= MIN_AREA
    pixels at the original size (scaled here to the probe's size)."""
    scale = labels[0].size / (144.0 * 144.0)  # the generator's mean image area
    holders = {c: [i for i, lab in enumerate(labels) if (lab == c).sum() >= MIN_AREA * scale] for c in classes}
    usable = [c for c in classes if len(holders[c]) >= 2]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = int(rng.choice(usable))
        query, support = (int(i) for i in rng.choice(holders[c], 2, replace=False))
        other = int(rng.choice([o for o in usable if o != c]))
        donor = int(rng.choice([i for i in holders[other] if i != query]))
        out.append((c, query, support, other, donor))
    return out


def build_probe_model(checkpoint: str | None, pretrained: str | None, layers: str | None = None):
    from fsslab.config import load_config
    from fsslab.engine.build import build_run_model

    if pretrained:
        from fsslab.zoo import load_pretrained

        return load_pretrained(pretrained).eval()
    cfg = load_config("synthetic/baseline_tiny", [f"model.init_checkpoint={checkpoint or 'null'}",
                                                   "model.prerequisite=null"]
                      + ([f"model.params.feature_layers=[{layers}]"] if layers else []))
    return build_run_model(cfg).eval()


@torch.no_grad()
def probe(model, root: Path, n_episodes: int, seed: int, size: int, classes: list[int]) -> dict[str, float]:
    images, labels = _load_split(root, "val", size)
    cache: dict[int, torch.Tensor] = {}

    def feats(i: int) -> torch.Tensor:
        if i not in cache:
            cache[i] = model.features(normalize(images[i].astype(np.float32))[None])[0]
        return cache[i]

    def prototype(i: int, c: int) -> torch.Tensor:
        f = feats(i)
        mask = torch.from_numpy((labels[i] == c).astype(np.float32))[None, None]
        mask = F.interpolate(mask, f.shape[-2:], mode="bilinear", align_corners=True)[0]
        return (f * mask).sum((1, 2)) / mask.sum().clamp_min(1e-6)

    rows = {k: [] for k in ("to_matched", "to_mismatched", "tb_matched", "tb_mismatched")}
    for c, query, support, other, donor in episodes(labels, classes, n_episodes, seed):
        f = feats(query)
        label = labels[query]
        target, others, background = label == c, (label != c) & (label != 0) & (label != 255), label == 0
        for name, proto in (("matched", prototype(support, c)), ("mismatched", prototype(donor, other))):
            cos = F.cosine_similarity(f, proto[:, None, None], dim=0)[None, None]
            cos = F.interpolate(cos, label.shape, mode="bilinear", align_corners=True)[0, 0].numpy()
            rows[f"to_{name}"].append(_auroc(cos[target], cos[others]))
            rows[f"tb_{name}"].append(_auroc(cos[target], cos[background]))
    out = {k: float(np.nanmean(v)) for k, v in rows.items()}
    out["gap"] = out["to_matched"] - out["to_mismatched"]
    out["episodes"] = n_episodes
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a run checkpoint whose backbone.* initialises the baseline")
    parser.add_argument("--pretrained", help="a shipped baseline (fsslab zoo list), e.g. baseline_tiny_fold0_1shot")
    parser.add_argument("--untrained", action="store_true", help="a randomly initialised backbone")
    parser.add_argument("--root", default="data/crossdomain", help="the cross-domain benchmark "
                        "(fsslab data synth --root data/crossdomain --preset crossdomain)")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--layers", default=None, help="backbone stages to compare, e.g. 'layer3, layer4' (default: "
                        "the baseline's layer2, layer3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=112, help="square probe size (the eval's val_size)")
    parser.add_argument("--classes", default="all", help="'all' 20 classes or 'fold0' (classes 1-5)")
    parser.add_argument("--json", help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    if sum(map(bool, (args.checkpoint, args.pretrained, args.untrained))) != 1:
        parser.error("give one of: CHECKPOINT, --pretrained NAME, --untrained")
    torch.manual_seed(0)
    model = build_probe_model(args.checkpoint, args.pretrained, args.layers)
    classes = list(range(1, 21)) if args.classes == "all" else list(range(1, 6))
    out = probe(model, Path(args.root), args.episodes, args.seed, args.size, classes)
    what = args.checkpoint or (f"pretrained:{args.pretrained}" if args.pretrained else "untrained")
    print(f"{what}: AUROC target/other matched {out['to_matched']:.3f} mismatched {out['to_mismatched']:.3f} "
          f"gap {out['gap']:+.3f} | target/background matched {out['tb_matched']:.3f} mismatched "
          f"{out['tb_mismatched']:.3f} ({args.episodes} episodes, {args.classes} classes, seed {args.seed})")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"backbone": what, "command": " ".join(sys.argv), **out}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
