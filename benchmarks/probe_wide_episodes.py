"""Does a pretraining checkpoint read its support on its own distribution? Episode IoU on held-out wide episodes.

The recipe's prototype model (``synthetic/backbone_pretrain_episodic``: the baseline with its backbone trained) on
96 episodes of ``fsslab.data.synthetic.wide.WideEpisodes`` rendered with seed 99 (training uses seed 0): foreground
IoU averaged over episodes with each episode's support (matched) and with the previous episode's (mismatched), and
the all-foreground reference (the target's share of the query). ``--init CKPT`` instead builds that model with its
backbone initialised from CKPT's ``backbone.*`` (a run or a zoo weights file; threshold 0.5, scale 10) (docs/backbone.md).

    python benchmarks/probe_wide_episodes.py runs/synthetic/backbone_pretrain_episodic_fold0/latest.pt
    python benchmarks/probe_wide_episodes.py --init runs/synthetic/backbone_pretrain_tiny_fold0/latest.pt
"""

from __future__ import annotations

import argparse
import sys

import torch

from fsslab.config import config_from_dict, load_config
from fsslab.data.synthetic.wide import WideEpisodes
from fsslab.engine.build import architecture, build_run_model
from fsslab.engine.checkpoint import load_checkpoint

KEYS = ("query_img", "query_mask", "support_imgs", "support_masks")


def episode_iou(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int = 32) -> float:
    with torch.no_grad():
        pred = torch.cat([model({k: v[i:i + chunk] for k, v in batch.items()}).logits.argmax(1)
                          for i in range(0, len(batch["query_img"]), chunk)])
    target, fg = batch["query_mask"] == 1, pred == 1
    return float(((fg & target).sum((1, 2)).float() / (fg | target).sum((1, 2)).clamp(min=1)).mean() * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a backbone_pretrain_episodic checkpoint")
    parser.add_argument("--init", help="a checkpoint whose backbone.* initialises the recipe's model")
    parser.add_argument("--episodes", type=int, default=96)
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == bool(args.init):
        parser.error("give CHECKPOINT or --init CKPT")
    torch.set_num_threads(1)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        model = architecture(config_from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["model"])
    else:
        model = build_run_model(load_config("synthetic/backbone_pretrain_episodic",
                                            [f"model.init_checkpoint={args.init}", "model.prerequisite=null"]))
    model.eval()
    data = WideEpisodes(seed=99)
    items = [data[i] for i in range(args.episodes)]
    batch = {k: torch.stack([item[k] for item in items]) for k in KEYS}
    mismatched = dict(batch, support_imgs=batch["support_imgs"].roll(1, 0),
                      support_masks=batch["support_masks"].roll(1, 0))
    reference = float((batch["query_mask"] == 1).float().mean((1, 2)).mean() * 100)
    print(f"{args.checkpoint or args.init}: episode IoU matched {episode_iou(model, batch):.1f} mismatched "
          f"{episode_iou(model, mismatched):.1f} (all-foreground {reference:.1f}; {args.episodes} episodes, seed 99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
