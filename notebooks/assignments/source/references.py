"""Instructor material: the reference implementations of the exercises and the common mistakes the checks name.

Not part of the fsslab package and not released to students (``fsslab course release`` copies notebooks only).
The student-side checks (``fsslab.lab.assignments``) compare an answer with the outputs this file computed on
fixed inputs, stored in ``fsslab/lab/assignment_checks.npz``: inputs, expected outputs and the output of each
known mistake, never the code. After changing a reference, a mistake or an input, rewrite that file:

    python notebooks/assignments/source/references.py            # writes fsslab/lab/assignment_checks.npz
    python notebooks/assignments/source/references.py --check    # exit 1 if the shipped file differs

(tests/lab/test_assignments.py runs the check.) The references stay separate from the models' own primitives
(``fsslab.models.layers``): the exercises' contracts are simpler ([N,C] prototypes, no shots, no chunking) and
a change in the models must not change what a student's answer is checked against.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

IGNORE_INDEX = 255
POOL_EPS = 5e-4  # masked average pooling: PFENet / BAM / AMFormer use this epsilon on the mask area
PRIOR_EPS = 1e-7  # prior mask: cosine normalisation and min-max normalisation
MASK_BIAS = -1e4  # attention logit added outside the query mask (IPMT uses -10000, not -inf)
DATA_FILE = Path(__file__).resolve().parents[3] / "fsslab" / "lab" / "assignment_checks.npz"


# ----------------------------------------------------------------------------- references (and mistakes)

def masked_average_pool(feat, mask, eps=POOL_EPS, area="mask", apply_mask=True):
    pooled = (feat * mask if apply_mask else feat).sum(dim=(2, 3))
    if area == "hw":
        return pooled / (feat.shape[2] * feat.shape[3])
    return pooled / (mask.sum(dim=(2, 3)) + eps)  # [N,C]


def prior_mask(query, support, mask, masked=True, reduce="max", minmax=True):
    n, _, h, w = query.shape
    support = support * mask if masked else support
    q = query.flatten(2)  # [N,C,hw]
    s = support.flatten(2)
    sim = torch.einsum("ncq,ncs->nqs", q, s) / (q.norm(dim=1)[:, :, None] * s.norm(dim=1)[:, None, :] + PRIOR_EPS)
    prior = sim.max(dim=2).values if reduce == "max" else sim.mean(dim=2)  # [N,hw]
    if minmax:
        lo, hi = prior.min(dim=1, keepdim=True).values, prior.max(dim=1, keepdim=True).values
        prior = (prior - lo) / (hi - lo + PRIOR_EPS)
    return prior.view(n, 1, h, w)


def intersection_union(pred, target, ignore=True):
    valid = target != IGNORE_INDEX if ignore else torch.ones_like(target, dtype=torch.bool)
    p, t = (pred == 1) & valid, (target == 1) & valid
    return int((p & t).sum()), int((p | t).sum())


def classwise_miou(preds, targets, class_ids, ignore=True, per_episode_mean=False):
    inter: dict[int, float] = {}
    union: dict[int, float] = {}
    per_class_ious: dict[int, list[float]] = {}
    for pred, target, c in zip(preds, targets, class_ids):
        i, u = intersection_union(pred, target, ignore)
        inter[int(c)] = inter.get(int(c), 0) + i
        union[int(c)] = union.get(int(c), 0) + u
        per_class_ious.setdefault(int(c), []).append(i / u if u else 1.0)
    if per_episode_mean:  # a common mistake: average the episodes' IoUs inside each class
        return sum(sum(v) / len(v) for v in per_class_ious.values()) / len(per_class_ious)
    return sum(inter[c] / union[c] if union[c] else 1.0 for c in inter) / len(inter)


def episode_iou(preds, targets, ignore=True):
    ious = []
    for pred, target in zip(preds, targets):
        i, u = intersection_union(pred, target, ignore)
        ious.append(i / u if u else 1.0)
    return sum(ious) / len(ious)


def pooled_iou(preds, targets):  # a mistake: one IoU over all pixels of all episodes
    i_all = sum(intersection_union(p, t)[0] for p, t in zip(preds, targets))
    u_all = sum(intersection_union(p, t)[1] for p, t in zip(preds, targets))
    return i_all / u_all


def prototype_update(prototype, query_feat, query_mask, w_q, w_k, w_v, scale=True, residual=True,
                     mask_mode="normal", softmax_dim=-1):
    c = prototype.shape[-1]
    logits = (prototype @ w_q) @ (query_feat @ w_k).transpose(1, 2)  # [B,1,N]
    if scale:
        logits = logits / math.sqrt(c)
    if mask_mode != "none":
        keep = query_mask if mask_mode == "normal" else ~query_mask
        logits = logits + torch.where(keep, 0.0, MASK_BIAS)[:, None, :]
    update = logits.softmax(dim=softmax_dim) @ (query_feat @ w_v)  # [B,1,C]
    return prototype + update if residual else update


# exercise 4: the references are fsslab's own (fsslab.lab.ablation.difference_interval and verdict, what `fsslab
# ablate` computes its tables with); only the mistakes are written here

def welch_mistake(full, ablated, mistake):
    """fsslab's 95% Welch interval of mean(full) - mean(ablated) as it comes out with one known mistake."""
    from fsslab.lab.ablation import difference_interval, t_quantile

    if mistake == "welch_sign":  # mean(ablated) - mean(full)
        d, lo, hi = difference_interval(full, ablated)
        return -d, -hi, -lo
    n1, n2 = len(full), len(ablated)
    spread = statistics.pvariance if mistake == "welch_ddof0" else statistics.variance
    v1, v2 = spread(full) / n1, spread(ablated) / n2
    d, se = statistics.fmean(full) - statistics.fmean(ablated), math.sqrt(v1 + v2)
    if se == 0:  # no spread: every variant of the formula gives (d, d, d)
        return d, d, d
    if mistake == "welch_z":
        quantile = 1.96
    elif mistake == "welch_pooled_df":
        quantile = t_quantile(0.975, n1 + n2 - 2)
    else:  # welch_ddof0: Welch's degrees of freedom, from the variances divided by n
        quantile = t_quantile(0.975, (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1)))
    return d, d - quantile * se, d + quantile * se


def verdict_mistake(interval, claim, margin, mistake):
    """fsslab's verdict as it comes out with one known mistake (None: no interval, as fsslab says)."""
    from fsslab.lab.ablation import verdict

    if interval is None:
        return verdict(None)
    d, lo, hi = interval
    if mistake == "verdict_mean_only":  # the mean difference decides alone
        lo = hi = d
    elif mistake == "verdict_small_loss_lo" and claim == "small_loss":  # the interval's ends swapped
        lo, hi = hi, lo
    return verdict((d, lo, hi), claim, margin)


def mismatched_drop(run, mistake=None):
    matched, mismatched = run["miou"], run["mismatched_miou"]
    if mistake == "drop_sign":
        return mismatched - matched
    if mistake == "drop_relative":
        return 100 * (matched - mismatched) / matched
    return matched - mismatched  # fsslab.engine.ControlReport.drop


def _telling(expected, mistakes):
    """The mistakes whose output differs from the expected one and from every other mistake's (a mistake that
    gives the right answer, or the same wrong one as another, cannot be named)."""
    def same(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "US" or b.dtype.kind in "US":
            return a.shape == b.shape and bool(np.all(a == b))
        return a.shape == b.shape and np.allclose(a, b, atol=1e-4, rtol=0)

    return {k: v for k, v in mistakes.items()
            if not same(v, expected) and not any(same(v, w) for j, w in mistakes.items() if j != k)}


def exercise_4_cases() -> dict[str, list[dict]]:
    from fsslab.lab.ablation import difference_interval, verdict

    out: dict[str, list[dict]] = {}
    scores = [  # mIoU per training seed: (full, ablated)
        ("three seeds each", [51.11, 49.62, 50.37], [48.93, 50.12, 46.05]),
        ("three against five seeds, unequal spread", [52.4, 47.9, 50.6], [49.8, 49.5, 50.1, 49.6, 49.9]),
        ("the ablated model is better", [45.2, 46.1, 44.3], [50.2, 50.9, 49.5]),
        ("no spread on either side", [50.0, 50.0], [47.5, 47.5]),
        ("one seed on one side: no interval", [50.2], [48.1, 49.0]),
    ]
    mistakes = ("welch_z", "welch_pooled_df", "welch_ddof0", "welch_sign")
    out["welch_difference"] = []
    for name, full, ablated in scores:
        expected = difference_interval(full, ablated)
        wrong = {} if expected is None else {m: welch_mistake(full, ablated, m) for m in mistakes}
        out["welch_difference"].append({"name": name, "inputs": [full, ablated], "expected": expected or (),
                                        "atol": 1e-4, "mistakes": _telling(expected or (), wrong)})

    intervals = [  # (interval of full - ablated, claim, margin)
        ((3.2, 1.1, 5.3), "full_better", 5.0), ((-2.5, -4.0, -1.0), "full_better", 5.0),
        ((1.5, -0.7, 3.7), "full_better", 5.0), ((-0.8, -2.9, 1.3), "full_better", 5.0),
        ((1.9, 0.4, 3.4), "small_loss", 5.0), ((7.5, 6.1, 8.9), "small_loss", 5.0),
        ((5.6, 3.0, 8.2), "small_loss", 5.0), ((1.6, 0.9, 2.3), "small_loss", 2.0),
        (None, "full_better", 5.0),
    ]
    mistakes = ("verdict_mean_only", "verdict_small_loss_lo")
    out["verdict"] = []
    for interval, claim, margin in intervals:
        expected = verdict(interval, claim, margin)
        name = (f"{claim}, interval [{interval[1]:+.1f}, {interval[2]:+.1f}]" + (f", margin {margin:g}" if
                claim == "small_loss" else "") if interval else "no interval (one seed)")
        wrong = {m: verdict_mistake(interval, claim, margin, m) for m in mistakes}
        out["verdict"].append({"name": name, "inputs": [interval or (), claim, margin], "expected": expected,
                               "atol": 0.0, "mistakes": _telling(expected, wrong)})

    runs = [  # an evaluation result as the notebook's training cell returns it (mIoU in %)
        ("a model that reads its supports", {"miou": 49.22, "mismatched_miou": 10.15, "fbiou": 68.41}),
        ("a model that ignores its supports", {"miou": 31.4, "mismatched_miou": 30.9, "fbiou": 60.2}),
    ]
    out["mismatched_drop"] = [
        {"name": name, "inputs": [list(run), list(run.values())], "expected": mismatched_drop(run), "atol": 1e-6,
         "mistakes": _telling(mismatched_drop(run), {m: mismatched_drop(run, m) for m in ("drop_sign",
                                                                                          "drop_relative")})}
        for name, run in runs]
    return out


# ----------------------------------------------------------------------------- the check cases

def iou_example():
    """The episodes of exercise 2 (fsslab.lab.assignments.iou_example builds the same ones)."""
    from fsslab.lab.assignments import iou_example as shipped

    return shipped()


def cases() -> dict[str, list[dict]]:
    """Per check: its cases, each {name, inputs, expected, mistakes: {id: output}, atol}. Mistake ids name the
    hints in fsslab.lab.assignments.HINTS."""
    out: dict[str, list[dict]] = {}

    # exercise 1a
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 6, 5, generator=g)
    mask = (torch.rand(2, 1, 6, 5, generator=g) > 0.6).float()
    ones, empty = torch.ones(2, 1, 6, 5), torch.zeros(2, 1, 6, 5)
    one_hot = torch.zeros(1, 1, 3, 3)
    one_hot[0, 0, 1, 2] = 1.0
    small = torch.arange(18.0).view(1, 2, 3, 3)
    pool = masked_average_pool
    out["masked_average_pool"] = [
        {"name": "random features and mask", "inputs": [feat, mask], "expected": pool(feat, mask), "atol": 1e-5,
             "mistakes": {"pool_area_hw": pool(feat, mask, area="hw"),
                       "pool_no_mask": pool(feat, mask, area="hw", apply_mask=False),
                       "pool_no_eps": pool(feat, mask, eps=0.0)}},
        {"name": "full mask", "inputs": [feat, ones], "expected": pool(feat, ones), "atol": 1e-6,
             "mistakes": {"pool_full_no_eps": pool(feat, ones, area="hw")}},
        {"name": "empty mask (no foreground)", "inputs": [feat, empty], "expected": pool(feat, empty), "atol": 1e-5,
             "mistakes": {}},
        {"name": "a single foreground pixel", "inputs": [small, one_hot], "expected": pool(small, one_hot), "atol": 1e-5,
             "mistakes": {"pool_area_hw": pool(small, one_hot, area="hw"),
                       "pool_no_eps": pool(small, one_hot, eps=0.0)}},
    ]

    # exercise 1b
    g = torch.Generator().manual_seed(1)
    query = torch.relu(torch.randn(2, 6, 5, 4, generator=g))
    support = torch.relu(torch.randn(2, 6, 5, 4, generator=g))
    mask = (torch.rand(2, 1, 5, 4, generator=g) > 0.5).float()
    q = torch.zeros(1, 2, 1, 3)
    q[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    q[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    q[0, :, 0, 2] = torch.tensor([1.0, 1.0])
    s = torch.zeros(1, 2, 1, 3)
    s[0, :, 0, 0] = torch.tensor([1.0, 0.0])  # foreground
    s[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # background (masked out)
    m = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    out["prior_mask"] = [
        {"name": "random features", "inputs": [query, support, mask], "expected": prior_mask(query, support, mask),
             "atol": 1e-4, "mistakes": {"prior_unmasked": prior_mask(query, support, mask, masked=False),
                                  "prior_mean": prior_mask(query, support, mask, reduce="mean"),
                                  "prior_no_minmax": prior_mask(query, support, mask, minmax=False)}},
        {"name": "hand-made example (query pixel 0 equals the support foreground)", "inputs": [q, s, m],
             "expected": prior_mask(q, s, m), "atol": 1e-4,
             "mistakes": {"prior_unmasked": prior_mask(q, s, m, masked=False)}},
    ]

    # exercise 2
    preds, targets, classes = iou_example()
    perfect = [(t == 1).long() for t in targets]
    scalar = torch.tensor
    out["classwise_miou"] = [
        {"name": "constructed example", "inputs": [preds, targets, classes],
             "expected": scalar(classwise_miou(preds, targets, classes)), "atol": 1e-6,
             "mistakes": {"iou_no_ignore": scalar(classwise_miou(preds, targets, classes, ignore=False)),
                       "miou_per_episode_mean": scalar(classwise_miou(preds, targets, classes,
                                                                      per_episode_mean=True)),
                       "miou_is_episode_iou": scalar(episode_iou(preds, targets))}},
        {"name": "perfect predictions", "inputs": [perfect, targets, classes], "expected": scalar(1.0), "atol": 1e-6,
             "mistakes": {"iou_no_ignore": scalar(classwise_miou(perfect, targets, classes, ignore=False))}},
    ]
    blank = torch.zeros(4, 4, dtype=torch.long)
    out["episode_iou"] = [
        {"name": "constructed example", "inputs": [preds, targets], "expected": scalar(episode_iou(preds, targets)),
             "atol": 1e-6, "mistakes": {"iou_no_ignore": scalar(episode_iou(preds, targets, ignore=False)),
                                  "episode_is_classwise": scalar(classwise_miou(preds, targets, classes)),
                                  "episode_pooled": scalar(pooled_iou(preds, targets))}},
        {"name": "an episode with empty prediction and target", "inputs": [[blank], [blank]], "expected": scalar(1.0),
             "atol": 1e-6, "mistakes": {}},
    ]

    # exercise 3
    g = torch.Generator().manual_seed(3)
    b, n, c = 2, 12, 8
    proto = torch.randn(b, 1, c, generator=g)
    feat = torch.randn(b, n, c, generator=g)
    mask = torch.rand(b, n, generator=g) > 0.5
    mask[:, 0] = True
    w = [torch.randn(c, c, generator=g) / math.sqrt(c) for _ in range(3)]
    args = [proto, feat, mask, *w]
    update = prototype_update
    single = torch.zeros(b, n, dtype=torch.bool)
    single[:, 5] = True
    single_args = [proto, feat, single, *w]
    out["prototype_update"] = [
        {"name": "random episode", "inputs": args, "expected": update(*args), "atol": 1e-4,
             "mistakes": {"update_no_residual": update(*args, residual=False),
                       "update_no_scale": update(*args, scale=False),
                       "update_inverted_mask": update(*args, mask_mode="inverted"),
                       "update_no_mask": update(*args, mask_mode="none"),
                       "update_softmax_dim": update(*args, softmax_dim=1)}},
        # with a single unmasked pixel the attention is one-hot: the update is that pixel's value vector
        {"name": "a single masked pixel", "inputs": single_args, "expected": proto + (feat[:, 5:6] @ w[2]), "atol": 1e-4,
             "mistakes": {"update_no_residual": update(*single_args, residual=False),
                       "update_inverted_mask": update(*single_args, mask_mode="inverted")}},
    ]
    out.update(exercise_4_cases())
    return out


# ----------------------------------------------------------------------------- the data file

def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return torch.stack(list(value)).numpy()
    return np.asarray(value)


def arrays() -> dict[str, np.ndarray]:
    """The npz content: ``<check>/<k>/name``, ``/atol``, ``/in<i>``, ``/expected``, ``/mistake/<id>``."""
    flat: dict[str, np.ndarray] = {}
    for check, check_cases in cases().items():
        flat[f"{check}/cases"] = np.asarray(len(check_cases))
        for k, case in enumerate(check_cases):
            flat[f"{check}/{k}/name"] = np.asarray(case["name"])
            flat[f"{check}/{k}/atol"] = np.asarray(case["atol"])
            flat[f"{check}/{k}/inputs"] = np.asarray(len(case["inputs"]))
            for i, value in enumerate(case["inputs"]):
                flat[f"{check}/{k}/in{i}"] = _array(value)
            flat[f"{check}/{k}/expected"] = _array(case["expected"])
            for mistake, value in case["mistakes"].items():
                flat[f"{check}/{k}/mistake/{mistake}"] = _array(value)
    return flat


def differences(path: Path = DATA_FILE) -> list[str]:
    """The keys whose stored value differs from what the references compute now (empty: up to date)."""
    fresh = arrays()
    with np.load(path, allow_pickle=False) as stored:
        keys = set(stored.files) | set(fresh)
        return sorted(k for k in keys if k not in stored.files or k not in fresh
                      or stored[k].dtype != fresh[k].dtype or not np.array_equal(stored[k], fresh[k]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) fsslab/lab/assignment_checks.npz.")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the file is stale")
    parser.add_argument("--out", type=Path, default=DATA_FILE)
    args = parser.parse_args(argv)
    if args.check:
        stale = differences(args.out)
        print("\n".join(f"stale: {k}" for k in stale) or f"{args.out} is up to date")
        return 1 if stale else 0
    np.savez_compressed(args.out, **arrays())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
