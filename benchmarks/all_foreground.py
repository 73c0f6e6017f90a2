"""The all-foreground reference: predict every pixel of every query as the episode's class.

A floor next to a model's mIoU (what "segment everything" scores on the same episodes), evaluated through the same
path as the models and the oracle (``fsslab.engine.runner.run_evaluation``: same episodes, seeds and protocol);
the oracle runs next to it and must score 100. fsslab's controls (``eval.controls=true``) have no such row.

    python benchmarks/all_foreground.py synthetic/baseline_tiny data.root=data/crossdomain \
        'data.synthetic={preset: crossdomain}' [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from fsslab.config import load_config, replace_section
from fsslab.engine.prerequisites import prepare_data
from fsslab.engine.runner import run_evaluation
from fsslab.models.base import FewShotModel
from fsslab.models.oracle import QueryLabelOracle
from fsslab.models.output import FSSOutput


class AllForeground(FewShotModel):
    """logits [B,2,H,W] = (0, 1) everywhere: the whole query is the class. A control; nothing to train."""

    is_control = True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def forward(self, batch, trace: bool = False) -> FSSOutput:
        b, _, h, w = batch["query_img"].shape
        logits = torch.zeros(b, 2, h, w, device=self.anchor.device)
        logits[:, 1] = 1.0
        return FSSOutput(logits=logits, trace={} if trace else None)

    def loss(self, output, batch):
        raise RuntimeError("the all-foreground reference is a control: it has nothing to train")

    def optimizer_specs(self, base_lr, weight_decay):
        raise RuntimeError("the all-foreground reference is a control: it has nothing to train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a config naming the data (e.g. synthetic/baseline_tiny)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    prepare_data(cfg)
    out = {}
    with torch.no_grad():
        for name, model, config in (("oracle", QueryLabelOracle(), replace_section(cfg, "model", name="oracle")),
                                    ("all_foreground", AllForeground(), cfg)):
            result = run_evaluation(config, model, progress=False)
            out[name] = {"miou": result.miou_mean, "miou_std": result.miou_std, "fbiou": result.fbiou_mean,
                         "seeds": cfg.eval.seeds, "episodes": cfg.eval.episodes, "shot": cfg.eval.shot}
            print(f"{name:<16} mIoU {result.miou_mean:6.2f} ± {result.miou_std:.2f}   FB-IoU {result.fbiou_mean:6.2f}"
                  f"   ({len(cfg.eval.seeds)} seeds x {cfg.eval.episodes} episodes, {cfg.eval.shot}-shot)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": sys.argv, **out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
