"""Object-pixel accuracy of a dense wide-vocabulary checkpoint (synthetic/backbone_pretrain_wide) on held-out scenes.

64 scenes of ``fsslab.data.synthetic.wide.render_wide`` with seed 99 (training uses seed 0) at 96 px: top-1 and top-5
accuracy over the object pixels (the class id of the object under each pixel) and the background accuracy
(docs/backbone.md, "What each attempt measured").

    python benchmarks/probe_wide_dense.py runs/synthetic/backbone_pretrain_wide_fold0/iter_0001000.pt
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from fsslab.config import config_from_dict
from fsslab.data.synthetic.wide import render_wide
from fsslab.data.transforms import normalize
from fsslab.engine.build import architecture
from fsslab.engine.checkpoint import load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--scenes", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = config_from_dict(ckpt["config"])
    model = architecture(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    n_classes = int(cfg.data.params.get("n_classes", 4000))
    images, labels = zip(*[render_wide(99, i, 96, n_classes) for i in range(args.scenes)])
    x = torch.stack([normalize(image.astype(np.float32)) for image in images])
    y = torch.from_numpy(np.stack(labels))
    with torch.no_grad():
        logits = torch.cat([model({"query_img": x[i:i + 16]}).logits for i in range(0, len(x), 16)])
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
    pred, top5, objects = logits.argmax(1), logits.topk(5, 1).indices.permute(0, 2, 3, 1), y > 0
    print(f"{args.checkpoint}: object-pixel accuracy {(pred[objects] == y[objects]).float().mean():.3f}, top-5 "
          f"{(top5[objects] == y[objects][:, None]).any(1).float().mean():.3f}, background "
          f"{(pred[~objects] == 0).float().mean():.3f} ({args.scenes} scenes, seed 99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
