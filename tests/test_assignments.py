"""fsslab.lab.assignments: each check rejects typical wrong answers with a useful message and accepts a correct one;
the student notebooks are the solution notebooks with their solution cells replaced by stubs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fsslab.lab import assignments as A

torch.set_num_threads(1)
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"


# ------------------------------------------------------------------ correct answers written independently

def good_pool(feat, mask):
    return torch.einsum("nchw,nhw->nc", feat, mask[:, 0]) / (mask.flatten(1).sum(1, keepdim=True) + 5e-4)


def good_prior(query, support, mask):
    n, _, h, w = query.shape
    s = (support * mask).flatten(2)
    q = query.flatten(2)
    cos = torch.bmm(q.transpose(1, 2), s) / (torch.bmm(q.norm(dim=1, keepdim=True).transpose(1, 2),
                                                       s.norm(dim=1, keepdim=True)) + 1e-7)
    prior = cos.amax(dim=2)
    lo, hi = prior.amin(1, keepdim=True), prior.amax(1, keepdim=True)
    return ((prior - lo) / (hi - lo + 1e-7)).reshape(n, 1, h, w)


def _iu(pred, target, ignore=True):
    valid = (target != 255) if ignore else torch.ones_like(target, dtype=torch.bool)
    p, t = (pred == 1) & valid, (target == 1) & valid
    return int((p & t).sum()), int((p | t).sum())


def good_classwise(preds, targets, classes, ignore=True):
    sums = {}
    for p, t, c in zip(preds, targets, classes):
        i, u = _iu(p, t, ignore)
        si, su = sums.get(c, (0, 0))
        sums[c] = (si + i, su + u)
    return sum(i / u if u else 1.0 for i, u in sums.values()) / len(sums)


def good_episode(preds, targets, ignore=True):
    ious = [i / u if u else 1.0 for i, u in (_iu(p, t, ignore) for p, t in zip(preds, targets))]
    return sum(ious) / len(ious)


def good_update(proto, feat, mask, wq, wk, wv, scale=True, residual=True, invert=False, dim=-1):
    logits = (proto @ wq) @ (feat @ wk).transpose(1, 2)
    if scale:
        logits = logits / math.sqrt(proto.shape[-1])
    keep = ~mask if invert else mask
    attn = (logits + (~keep).float()[:, None] * -1e4).softmax(dim)
    out = attn @ (feat @ wv)
    return proto + out if residual else out


# ------------------------------------------------------------------ exercise 1

def test_masked_average_pool_check_accepts_a_correct_answer(capsys):
    A.check_masked_average_pool(good_pool)
    assert "masked_average_pool: all 4 tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda f, m: (f * m).mean(dim=(2, 3)), "divide by the mask area"),
    (lambda f, m: f.mean(dim=(2, 3)), "multiply the features by the mask"),
    (lambda f, m: (f * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)), "empty mask.*NaN.*epsilon"),
    (lambda f, m: good_pool(f, m)[..., None, None], r"wrong shape \(2, 8, 1, 1\), expected \(2, 8\).*reshape"),
    (lambda f, m: good_pool(f, m) + 0.01, r"max \|error\| 0.01"),
    (lambda f, m: good_pool(f, m).numpy(), "expected a torch.Tensor, got ndarray"),
])
def test_masked_average_pool_check_explains_wrong_answers(wrong, message):
    with pytest.raises(A.CheckFailed, match=message):
        A.check_masked_average_pool(wrong)


def test_prior_check_accepts_a_correct_answer(capsys):
    A.check_prior_mask(good_prior)
    assert "prior_mask: all 2 tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda q, s, m: good_prior(q, s, torch.ones_like(m)), "multiply the support features by the support mask"),
    (lambda q, s, m: A._prior_mask(q, s, m, reduce="mean"), "maximum similarity"),
    (lambda q, s, m: A._prior_mask(q, s, m, minmax=False), "min-max normalise"),
    (lambda q, s, m: good_prior(q, s, m)[:, 0], r"wrong shape .*\[N,1,h,w\]"),
])
def test_prior_check_explains_wrong_answers(wrong, message):
    with pytest.raises(A.CheckFailed, match=message):
        A.check_prior_mask(wrong)


# ------------------------------------------------------------------ exercise 2

def test_constructed_example_separates_the_two_metrics():
    preds, targets, classes = A.iou_example()
    classwise, episode = good_classwise(preds, targets, classes), good_episode(preds, targets)
    assert classwise - episode > 0.15  # the point of the exercise: a large, explainable gap
    assert good_classwise(preds, targets, classes, ignore=False) != pytest.approx(classwise)  # 255 matters


def test_iou_checks_accept_correct_answers(capsys):
    A.check_classwise_miou(good_classwise)
    A.check_episode_iou(good_episode)
    out = capsys.readouterr().out
    assert "classwise_miou: all 2 tests passed" in out and "episode_iou: all 2 tests passed" in out


@pytest.mark.parametrize("wrong, message", [
    (lambda p, t, c: good_classwise(p, t, c, ignore=False), "255"),
    (lambda p, t, c: good_episode(p, t), "group the episodes by class"),
    (lambda p, t, c: A._classwise_miou(p, t, c, per_episode_mean=True), "sum intersections and unions"),
    (lambda p, t, c: 0.5, r"got 0.5000, expected 0.7090"),
    (lambda p, t, c: "0.7", "expected a Python float, got str"),
])
def test_classwise_check_explains_wrong_answers(wrong, message):
    with pytest.raises(A.CheckFailed, match=message):
        A.check_classwise_miou(wrong)


@pytest.mark.parametrize("wrong, message", [
    (lambda p, t: good_episode(p, t, ignore=False), "255"),
    (lambda p, t: good_classwise(p, t, A.iou_example()[2]), "average the episodes"),
    (lambda p, t: sum(_iu(a, b)[0] for a, b in zip(p, t)) / sum(_iu(a, b)[1] for a, b in zip(p, t)),
     "do not pool all pixels"),
    (lambda p, t: sum(_iu(a, b)[0] / _iu(a, b)[1] if _iu(a, b)[1] else float("nan") for a, b in zip(p, t)) / len(p),
     "NaN"),
])
def test_episode_check_explains_wrong_answers(wrong, message):
    with pytest.raises(A.CheckFailed, match=message):
        A.check_episode_iou(wrong)


# ------------------------------------------------------------------ exercise 3

def test_prototype_update_check_accepts_a_correct_answer(capsys):
    A.check_prototype_update(good_update)
    assert "prototype_update: all 2 tests passed" in capsys.readouterr().out


@pytest.mark.parametrize("options, message", [
    ({"residual": False}, "residual"),
    ({"scale": False}, "sqrt"),
    ({"invert": True}, "0 inside the mask"),
    ({"dim": 1}, "softmax over the query pixels"),
])
def test_prototype_update_check_explains_wrong_answers(options, message):
    with pytest.raises(A.CheckFailed, match=message):
        A.check_prototype_update(lambda *args: good_update(*args, **options))


def test_prototype_update_check_catches_a_missing_mask_and_wrong_shape():
    with pytest.raises(A.CheckFailed, match="add the mask bias"):
        A.check_prototype_update(lambda p, f, m, *w: good_update(p, f, torch.ones_like(m), *w))
    with pytest.raises(A.CheckFailed, match=r"wrong shape \(2, 8\)"):
        A.check_prototype_update(lambda *args: good_update(*args)[:, 0])


# ------------------------------------------------------------------ notebooks

def _solutions():
    return sorted((NOTEBOOKS / "solutions").glob("*_solution.ipynb"))


def test_there_are_at_least_three_assignments_with_solutions():
    names = [p.name.replace("_solution", "") for p in _solutions()]
    assert len(names) >= 3
    for name in names:
        assert (NOTEBOOKS / name).is_file(), f"student notebook {name} is missing"


@pytest.mark.parametrize("solution", _solutions(), ids=lambda p: p.stem)
def test_student_notebook_is_in_sync_with_its_solution(solution):
    nbformat = pytest.importorskip("nbformat")
    student = nbformat.read(NOTEBOOKS / solution.name.replace("_solution", ""), as_version=4)
    expected = A.student_version(nbformat.read(solution, as_version=4))
    assert [c["source"] for c in student.cells] == [c["source"] for c in expected["cells"]], (
        "regenerate the student notebooks: python -m fsslab.lab.assignments notebooks/assignments")
    stubs = [c for c in student.cells if "raise NotImplementedError" in c["source"]]
    checks = [c for c in student.cells if "check_" in c["source"] and "import" not in c["source"]]
    assert stubs and checks, "a student notebook needs stubs and check cells"
    assert all(not c.get("outputs") for c in student.cells if c["cell_type"] == "code")
    solution_nb = nbformat.read(solution, as_version=4)
    assert not any("raise NotImplementedError" in c["source"] for c in solution_nb.cells if c["cell_type"] == "code")


def test_student_version_requires_a_stub_for_solution_cells():
    nb = {"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {"tags": ["solution"]}, "outputs": [],
                     "execution_count": 1}]}
    with pytest.raises(ValueError, match="no metadata 'stub'"):
        A.student_version(nb)


def test_nbval_skips_student_notebooks_but_not_solutions():
    import fnmatch
    import runpy
    namespace = runpy.run_path(str(NOTEBOOKS.parent / "conftest.py"))
    globs = [str(NOTEBOOKS.parent / g) for g in namespace["collect_ignore_glob"]]
    student = str(NOTEBOOKS / "01_masked_pooling_prior.ipynb")
    solution = str(NOTEBOOKS / "solutions" / "01_masked_pooling_prior_solution.ipynb")
    assert any(fnmatch.fnmatch(student, g) for g in globs)
    assert not any(fnmatch.fnmatch(solution, g) for g in globs)
