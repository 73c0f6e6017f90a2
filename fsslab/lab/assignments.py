"""Checks with feedback for the course exercises in notebooks/assignments, and the student-notebook generator."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fsslab.batch import IGNORE_INDEX

POOL_EPS = 5e-4  # masked average pooling: PFENet / BAM / AMFormer use this epsilon on the mask area
PRIOR_EPS = 1e-7  # prior mask: cosine normalisation and min-max normalisation
MASK_BIAS = -1e4  # attention logit added outside the query mask (IPMT uses -10000, not -inf)


class CheckFailed(AssertionError):
    """A check found a wrong answer; the message says what differs and gives a hint."""


# ----------------------------------------------------------------------------- reference implementations
# They define the exercises; the reference solutions in notebooks/assignments/solutions are written
# independently and checked against them like any student answer.
# They stay separate from the models' own primitives on purpose (``fsslab.models.layers.masked_average_pool``,
# ``prior_mask``): the exercises' contracts are simpler (``[N,C]`` prototypes, no shots, no chunking) and a
# speed or layout change in the models must not change what a student's answer is checked against.

def _masked_average_pool(feat: torch.Tensor, mask: torch.Tensor, eps: float = POOL_EPS) -> torch.Tensor:
    return (feat * mask).sum(dim=(2, 3)) / (mask.sum(dim=(2, 3)) + eps)  # [N,C]


def _prior_mask(query: torch.Tensor, support: torch.Tensor, mask: torch.Tensor, masked: bool = True,
                reduce: str = "max", minmax: bool = True) -> torch.Tensor:
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


def _intersection_union(pred: torch.Tensor, target: torch.Tensor, ignore: bool = True) -> tuple[int, int]:
    valid = target != IGNORE_INDEX if ignore else torch.ones_like(target, dtype=torch.bool)
    p, t = (pred == 1) & valid, (target == 1) & valid
    return int((p & t).sum()), int((p | t).sum())


def _classwise_miou(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], class_ids: Sequence[int],
                    ignore: bool = True, per_episode_mean: bool = False) -> float:
    inter: dict[int, float] = {}
    union: dict[int, float] = {}
    per_class_ious: dict[int, list[float]] = {}
    for pred, target, c in zip(preds, targets, class_ids):
        i, u = _intersection_union(pred, target, ignore)
        inter[int(c)] = inter.get(int(c), 0) + i
        union[int(c)] = union.get(int(c), 0) + u
        per_class_ious.setdefault(int(c), []).append(i / u if u else 1.0)
    if per_episode_mean:  # a common mistake: average the episodes' IoUs inside each class
        return sum(sum(v) / len(v) for v in per_class_ious.values()) / len(per_class_ious)
    return sum(inter[c] / union[c] if union[c] else 1.0 for c in inter) / len(inter)


def _episode_iou(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], ignore: bool = True) -> float:
    ious = []
    for pred, target in zip(preds, targets):
        i, u = _intersection_union(pred, target, ignore)
        ious.append(i / u if u else 1.0)
    return sum(ious) / len(ious)


def _prototype_update(prototype: torch.Tensor, query_feat: torch.Tensor, query_mask: torch.Tensor,
                      w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, scale: bool = True,
                      residual: bool = True, mask_mode: str = "normal", softmax_dim: int = -1) -> torch.Tensor:
    c = prototype.shape[-1]
    logits = (prototype @ w_q) @ (query_feat @ w_k).transpose(1, 2)  # [B,1,N]
    if scale:
        logits = logits / math.sqrt(c)
    if mask_mode != "none":
        keep = query_mask if mask_mode == "normal" else ~query_mask
        logits = logits + torch.where(keep, 0.0, MASK_BIAS)[:, None, :]
    update = logits.softmax(dim=softmax_dim) @ (query_feat @ w_v)  # [B,1,C]
    return prototype + update if residual else update


# ----------------------------------------------------------------------------- feedback machinery

def _fail(check: str, case: str, message: str) -> None:
    raise CheckFailed(f"{check} — {case}: {message}")


def _compare_tensor(check: str, case: str, got: Any, expected: torch.Tensor, shape_hint: str,
                    mistakes: Sequence[tuple[torch.Tensor, str]] = (), atol: float = 1e-5) -> None:
    """Fail with a specific message: wrong type, wrong shape, NaN, a recognised mistake, or the largest error."""
    if not isinstance(got, torch.Tensor):
        _fail(check, case, f"expected a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        extra = (" (same number of elements: a reshape/squeeze is missing?)"
                 if got.numel() == expected.numel() else "")
        _fail(check, case, f"wrong shape {tuple(got.shape)}, expected {tuple(expected.shape)} = {shape_hint}{extra}")
    got = got.detach().float()
    if not torch.isfinite(got).all():
        bad = int((~torch.isfinite(got)).sum())
        _fail(check, case, f"{bad} value(s) are NaN or infinite — a division by zero? (hint: an epsilon in the "
                           "denominator keeps empty masks finite)")
    if torch.allclose(got, expected, atol=atol, rtol=1e-4):
        return
    for wrong, hint in mistakes:
        if wrong.shape == got.shape and torch.allclose(got, wrong, atol=atol, rtol=1e-4):
            _fail(check, case, f"values differ from the expected ones; they match a known mistake. Hint: {hint}")
    diff = (got - expected).abs()
    where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    _fail(check, case, f"values differ: max |error| {float(diff.max()):.4g} at index {where} "
                       f"(got {float(got[where]):.5g}, expected {float(expected[where]):.5g})")


def _compare_float(check: str, case: str, got: Any, expected: float,
                   mistakes: Sequence[tuple[float, str]] = (), tol: float = 1e-6) -> None:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = float(got)
    if not isinstance(got, (int, float)):
        _fail(check, case, f"expected a Python float, got {type(got).__name__}")
    if math.isnan(got):
        _fail(check, case, "got NaN — a class or episode with an empty union? (see the instructions)")
    if abs(got - expected) <= tol:
        return
    for wrong, hint in mistakes:
        if abs(got - wrong) <= tol:
            _fail(check, case, f"got {got:.4f}, expected {expected:.4f}. Hint: {hint}")
    _fail(check, case, f"got {got:.4f}, expected {expected:.4f} (difference {got - expected:+.4f})")


def _passed(check: str, n: int) -> None:
    print(f"✔ {check}: all {n} tests passed")


# ----------------------------------------------------------------------------- exercise 1

def check_masked_average_pool(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """fn(feat [N,C,h,w], mask [N,1,h,w] 0/1 float) -> [N,C]: mean of the features under the mask."""
    name = "masked_average_pool"
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 6, 5, generator=g)
    mask = (torch.rand(2, 1, 6, 5, generator=g) > 0.6).float()
    mistakes = [
        ((feat * mask).mean(dim=(2, 3)), "divide by the mask area (sum of the mask), not by h*w"),
        (feat.mean(dim=(2, 3)), "multiply the features by the mask before summing"),
        ((feat * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)), f"add eps={POOL_EPS} to the mask area"),
    ]
    _compare_tensor(name, "random features and mask", fn(feat, mask), _masked_average_pool(feat, mask),
                    "[N,C]", mistakes)
    ones = torch.ones(2, 1, 6, 5)
    _compare_tensor(name, "full mask", fn(feat, ones), _masked_average_pool(feat, ones), "[N,C]",
                    [(feat.mean(dim=(2, 3)), f"add eps={POOL_EPS} to the mask area, as the references do")],
                    atol=1e-6)
    empty = torch.zeros(2, 1, 6, 5)
    _compare_tensor(name, "empty mask (no foreground)", fn(feat, empty), _masked_average_pool(feat, empty), "[N,C]")
    one_hot = torch.zeros(1, 1, 3, 3)
    one_hot[0, 0, 1, 2] = 1.0
    small = torch.arange(18.0).view(1, 2, 3, 3)
    _compare_tensor(name, "a single foreground pixel", fn(small, one_hot), _masked_average_pool(small, one_hot),
                    "[N,C]")
    _passed(name, 4)


def check_prior_mask(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """fn(query_feat [N,C,h,w], support_feat [N,C,h,w], support_mask [N,1,h,w]) -> prior [N,1,h,w] in [0,1]."""
    name = "prior_mask"
    g = torch.Generator().manual_seed(1)
    query = torch.relu(torch.randn(2, 6, 5, 4, generator=g))
    support = torch.relu(torch.randn(2, 6, 5, 4, generator=g))
    mask = (torch.rand(2, 1, 5, 4, generator=g) > 0.5).float()
    expected = _prior_mask(query, support, mask)
    mistakes = [
        (_prior_mask(query, support, mask, masked=False),
         "multiply the support features by the support mask first: only foreground support pixels count"),
        (_prior_mask(query, support, mask, reduce="mean"),
         "take the maximum similarity over the support pixels, not the mean"),
        (_prior_mask(query, support, mask, minmax=False),
         "min-max normalise each image's prior to [0, 1]: (x - min) / (max - min + eps)"),
    ]
    got = fn(query, support, mask)
    _compare_tensor(name, "random features", got, expected, "[N,1,h,w]", mistakes, atol=1e-4)
    # the query position equal to a support foreground feature gets the highest prior
    q = torch.zeros(1, 2, 1, 3)
    q[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    q[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    q[0, :, 0, 2] = torch.tensor([1.0, 1.0])
    s = torch.zeros(1, 2, 1, 3)
    s[0, :, 0, 0] = torch.tensor([1.0, 0.0])  # foreground
    s[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # background (masked out)
    m = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    _compare_tensor(name, "hand-made example (query pixel 0 equals the support foreground)", fn(q, s, m),
                    _prior_mask(q, s, m), "[N,1,h,w]", [(_prior_mask(q, s, m, masked=False),
                                                         "mask the support features")], atol=1e-4)
    _passed(name, 2)


# ----------------------------------------------------------------------------- exercise 2

def iou_example() -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Episodes on which class-wise mIoU and the mean per-episode IoU disagree: (preds, targets, class_ids).

    Class 1: a large object segmented well and a tiny object missed completely; class 2: one medium object
    half found. Class-wise IoU pools pixels, so the tiny miss barely counts; the per-episode mean gives
    that episode as much weight as the large one. Ignore pixels (255) sit on the object boundaries.
    """
    size = 32
    preds, targets, classes = [], [], []

    def episode(target_box, pred_box, class_id):
        target = torch.zeros(size, size, dtype=torch.long)
        y0, y1, x0, x1 = target_box
        target[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = IGNORE_INDEX  # boundary band
        target[y0:y1, x0:x1] = 1
        pred = torch.zeros(size, size, dtype=torch.long)
        if pred_box is not None:
            py0, py1, px0, px1 = pred_box
            pred[py0:py1, px0:px1] = 1
        preds.append(pred)
        targets.append(target)
        classes.append(class_id)

    episode((2, 30, 2, 30), (1, 31, 1, 28), 1)  # large object, nearly perfect (spills into the 255 band)
    episode((10, 13, 10, 13), None, 1)  # tiny object, missed
    episode((8, 24, 8, 24), (7, 25, 7, 16), 2)  # medium object, half found
    return preds, targets, classes


def check_classwise_miou(fn: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[int]], float]
                         ) -> None:
    """fn(preds, targets, class_ids) -> class-wise mIoU (sum I and U per class over its episodes, IoU_c =
    I_c / U_c, mean over the classes; 255 ignored; a class whose union is empty counts as IoU 1)."""
    name = "classwise_miou"
    preds, targets, classes = iou_example()
    expected = _classwise_miou(preds, targets, classes)
    mistakes = [
        (_classwise_miou(preds, targets, classes, ignore=False),
         "pixels labelled 255 in the target must be left out of both intersection and union"),
        (_classwise_miou(preds, targets, classes, per_episode_mean=True),
         "sum intersections and unions over all episodes of a class before dividing"),
        (_episode_iou(preds, targets), "that is the mean per-episode IoU: group the episodes by class first"),
    ]
    _compare_float(name, "constructed example", fn(preds, targets, classes), expected, mistakes)
    perfect = [(t == 1).long() for t in targets]
    _compare_float(name, "perfect predictions", fn(perfect, targets, classes), 1.0,
                   [(_classwise_miou(perfect, targets, classes, ignore=False), "ignore the 255 pixels")])
    _passed(name, 2)


def check_episode_iou(fn: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], float]) -> None:
    """fn(preds, targets) -> mean over episodes of the foreground IoU (255 ignored; empty union -> 1)."""
    name = "episode_iou"
    preds, targets, classes = iou_example()
    expected = _episode_iou(preds, targets)
    mistakes = [
        (_episode_iou(preds, targets, ignore=False), "pixels labelled 255 must be left out"),
        (_classwise_miou(preds, targets, classes), "that is the class-wise mIoU: average the episodes' IoUs"),
    ]
    i_all = sum(_intersection_union(p, t)[0] for p, t in zip(preds, targets))
    u_all = sum(_intersection_union(p, t)[1] for p, t in zip(preds, targets))
    mistakes.append((i_all / u_all, "compute one IoU per episode and average them, do not pool all pixels"))
    _compare_float(name, "constructed example", fn(preds, targets), expected, mistakes)
    empty = torch.zeros(4, 4, dtype=torch.long)
    _compare_float(name, "an episode with empty prediction and target", fn([empty], [empty]), 1.0)
    _passed(name, 2)


# ----------------------------------------------------------------------------- exercise 3

def check_prototype_update(fn: Callable[..., torch.Tensor]) -> None:
    """fn(prototype [B,1,C], query_feat [B,N,C], query_mask [B,N] bool, w_q, w_k, w_v [C,C]) -> [B,1,C]:
    prototype + softmax((P w_q)(F w_k)^T / sqrt(C) + bias) (F w_v), bias = 0 inside the mask, -1e4 outside."""
    name = "prototype_update"
    g = torch.Generator().manual_seed(3)
    b, n, c = 2, 12, 8
    proto = torch.randn(b, 1, c, generator=g)
    feat = torch.randn(b, n, c, generator=g)
    mask = torch.rand(b, n, generator=g) > 0.5
    mask[:, 0] = True
    w = [torch.randn(c, c, generator=g) / math.sqrt(c) for _ in range(3)]
    args = (proto, feat, mask, *w)
    mistakes = [
        (_prototype_update(*args, residual=False), "add the update to the prototype (residual connection)"),
        (_prototype_update(*args, scale=False), "divide the attention logits by sqrt(C)"),
        (_prototype_update(*args, mask_mode="inverted"), "the bias must be 0 inside the mask and -1e4 outside"),
        (_prototype_update(*args, mask_mode="none"), "add the mask bias: only masked query pixels may be attended"),
        (_prototype_update(*args, softmax_dim=1), "softmax over the query pixels (the last dimension)"),
    ]
    _compare_tensor(name, "random episode", fn(*args), _prototype_update(*args), "[B,1,C]", mistakes, atol=1e-4)
    # with a single unmasked pixel the attention is one-hot: the update is that pixel's value vector
    single = torch.zeros(b, n, dtype=torch.bool)
    single[:, 5] = True
    expected = proto + (feat[:, 5:6] @ w[2])
    _compare_tensor(name, "a single masked pixel", fn(proto, feat, single, *w), expected, "[B,1,C]",
                    [(_prototype_update(proto, feat, single, *w, mask_mode="inverted"),
                      "the bias must be 0 inside the mask and -1e4 outside")], atol=1e-4)
    _passed(name, 2)


# ----------------------------------------------------------------------------- student notebooks

SOLUTION_TAG = "solution"


def student_version(solution: dict[str, Any]) -> dict[str, Any]:
    """The student notebook of a reference-solution notebook (an nbformat dict).

    Cells tagged ``solution`` are replaced by their ``metadata["stub"]`` source (which raises
    NotImplementedError); cells tagged ``solution-only`` are dropped; every output is cleared.
    """
    import copy

    nb = copy.deepcopy(solution)
    cells = []
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution-only" in tags:
            continue
        if SOLUTION_TAG in tags:
            stub = cell["metadata"].get("stub")
            if not stub:
                raise ValueError(f"a cell tagged '{SOLUTION_TAG}' has no metadata 'stub': {cell['source'][:60]!r}")
            cell["source"] = stub
            cell["metadata"] = {k: v for k, v in cell["metadata"].items() if k != "stub"}
            cell["metadata"]["tags"] = [t if t != SOLUTION_TAG else "student" for t in tags]
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    nb["cells"] = cells
    return nb


def write_student_notebooks(assignments_dir: str | Path) -> list[Path]:
    """Regenerate ``<dir>/XX_name.ipynb`` from ``<dir>/solutions/XX_name_solution.ipynb``."""
    import nbformat

    written = []
    for path in sorted(Path(assignments_dir, "solutions").glob("*_solution.ipynb")):
        nb = nbformat.read(path, as_version=4)
        target = Path(assignments_dir) / path.name.replace("_solution", "")
        nbformat.write(nbformat.from_dict(student_version(nb)), target)
        written.append(target)
    return written


if __name__ == "__main__":  # python -m fsslab.lab.assignments notebooks/assignments
    import sys

    for p in write_student_notebooks(sys.argv[1] if len(sys.argv) > 1 else "notebooks/assignments"):
        print(f"wrote {p}")
