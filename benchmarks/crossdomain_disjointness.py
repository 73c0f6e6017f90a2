"""Are the cross-domain preset's 20 families new shapes? Their nearest neighbours among every training shape.

For each cross-domain family: the IoU of its canonical outline with two instances of itself at the preset's
diversity (jitter +0.4 against -0.4: what "the same class" scores), and its best IoU over 24 rotations and a mirror
image (outlines scaled to equal area, centred on the centroid; ``crossdomain.max_aligned_iou``) against the
benchmark's 20 families, the 100 procedural pretraining classes and the wide vocabulary's first N classes (ids of the
nearest in brackets). A family is new when every nearest neighbour scores below its own instances.

    python benchmarks/crossdomain_disjointness.py [--wide 4000]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fsslab.data.synthetic.crossdomain import CROSSDOMAIN_FAMILIES, canonical_mask, max_aligned_iou
from fsslab.data.synthetic.procedural import procedural_parts
from fsslab.data.synthetic.shapes import SHAPE_FAMILIES
from fsslab.data.synthetic.wide import wide_class


def table(n_wide: int) -> list[dict]:
    zero = lambda: 0.0
    sets = {"benchmark": [f(zero) for _, f in SHAPE_FAMILIES],
            "procedural": [procedural_parts(c, zero) for c in range(1, 101)],
            f"wide{n_wide}": [list(wide_class(c)[1]) for c in range(1, n_wide + 1)]}
    masks = {name: np.stack([canonical_mask(p) for p in parts]) for name, parts in sets.items()}
    rows = []
    for name, family in CROSSDOMAIN_FAMILIES:
        row = {"family": name,
               "self": float(max_aligned_iou(family(lambda: 0.4), canonical_mask(family(lambda: -0.4))[None])[0])}
        for set_name, m in masks.items():
            iou = max_aligned_iou(family(zero), m)
            row[set_name] = (float(iou.max()), int(iou.argmax()) + 1)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", type=int, default=4000, help="wide-vocabulary classes to compare with")
    args = parser.parse_args(argv)
    rows = table(args.wide)
    sets = [k for k in rows[0] if k not in ("family", "self")]
    print("| family | itself (±0.4) | " + " | ".join(f"nearest {s}" for s in sets) + " |")
    print("|---" * (2 + len(sets)) + "|")
    new = 0
    for r in rows:
        nearest = max(r[s][0] for s in sets)
        new += nearest < r["self"]
        print(f"| {r['family']} | {r['self']:.2f} | " + " | ".join(f"{r[s][0]:.2f} (#{r[s][1]})" for s in sets) + " |")
    print(f"{new} of {len(rows)} families: every nearest neighbour below the family's own instances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
