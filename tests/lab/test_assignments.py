"""fsslab.lab.assignments: each check names typical wrong answers, accepts a correct one, reports and never
raises; the cases it compares with are the ones the instructor's references (outside the package) computed."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fsslab.lab import assignments as A

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
REFERENCES = ROOT / "notebooks" / "assignments" / "source" / "references.py"


def _references():
    spec = importlib.util.spec_from_file_location("assignment_references", REFERENCES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ correct answers written independently

def good_pool(feat, mask):
    return torch.einsum("nchw,nhw->nc", feat, mask[:, 0]) / (mask.flatten(1).sum(1, keepdim=True) + 5e-4)


def good_prior(query, support, mask, masked=True, reduce="max", minmax=True):
    n, _, h, w = query.shape
    s = (support * mask if masked else support).flatten(2)
    q = query.flatten(2)
    cos = torch.bmm(q.transpose(1, 2), s) / (torch.bmm(q.norm(dim=1, keepdim=True).transpose(1, 2),
                                                       s.norm(dim=1, keepdim=True)) + 1e-7)
    prior = cos.amax(dim=2) if reduce == "max" else cos.mean(dim=2)
    if minmax:
        lo, hi = prior.amin(1, keepdim=True), prior.amax(1, keepdim=True)
        prior = (prior - lo) / (hi - lo + 1e-7)
    return prior.reshape(n, 1, h, w)


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


def per_episode_in_class(preds, targets, classes):
    ious = {}
    for p, t, c in zip(preds, targets, classes):
        i, u = _iu(p, t)
        ious.setdefault(c, []).append(i / u if u else 1.0)
    return sum(sum(v) / len(v) for v in ious.values()) / len(ious)


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


def _messages(result):
    return " | ".join(c.message for c in result.cases) + (result.error or "")


# ------------------------------------------------------------------ correct answers pass

@pytest.mark.parametrize("check, fn", [
    ("masked_average_pool", good_pool), ("prior_mask", good_prior), ("classwise_miou", good_classwise),
    ("episode_iou", good_episode), ("prototype_update", good_update)])
def test_checks_accept_a_correct_answer(check, fn, capsys):
    result = A.run_check(check, fn)
    assert result.ok and result.passed == result.total >= 2, result.text()
    getattr(A, f"check_{check}")(fn)
    assert capsys.readouterr().out == f"✔ {check}: all {result.total} cases pass\n"


# ------------------------------------------------------------------ wrong answers are named

@pytest.mark.parametrize("check, wrong, message, mistake", [
    ("masked_average_pool", lambda f, m: (f * m).mean(dim=(2, 3)), "divide by the mask area", "pool_area_hw"),
    ("masked_average_pool", lambda f, m: f.mean(dim=(2, 3)), "multiply the features by the mask", "pool_no_mask"),
    ("masked_average_pool", lambda f, m: (f * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)), "add eps=5e-4",
     "pool_no_eps"),
    ("prior_mask", lambda q, s, m: good_prior(q, s, m, masked=False), ("multiply the support features by the "
     "support mask"), "prior_unmasked"),
    ("prior_mask", lambda q, s, m: good_prior(q, s, m, reduce="mean"), "maximum similarity", "prior_mean"),
    ("prior_mask", lambda q, s, m: good_prior(q, s, m, minmax=False), "min-max normalise", "prior_no_minmax"),
    ("classwise_miou", lambda p, t, c: good_classwise(p, t, c, ignore=False), "255", "iou_no_ignore"),
    ("classwise_miou", lambda p, t, c: good_episode(p, t), "group the episodes by class", "miou_is_episode_iou"),
    ("classwise_miou", per_episode_in_class, "sum intersections and unions", "miou_per_episode_mean"),
    ("episode_iou", lambda p, t: good_episode(p, t, ignore=False), "255", "iou_no_ignore"),
    ("episode_iou", lambda p, t: good_classwise(p, t, A.iou_example()[2]) if len(p) == 3 else 1.0,
     "average the episodes", "episode_is_classwise"),
    ("episode_iou", lambda p, t: sum(_iu(a, b)[0] for a, b in zip(p, t)) / max(1, sum(_iu(a, b)[1] for a, b
                                                                                      in zip(p, t))),
     "do not pool all pixels", "episode_pooled"),
    ("prototype_update", lambda *a: good_update(*a, residual=False), "residual", "update_no_residual"),
    ("prototype_update", lambda *a: good_update(*a, scale=False), "sqrt(C)", "update_no_scale"),
    ("prototype_update", lambda *a: good_update(*a, invert=True), "0 inside the mask", "update_inverted_mask"),
    ("prototype_update", lambda *a: good_update(*a, dim=1), "softmax over the query pixels", "update_softmax_dim"),
    ("prototype_update", lambda p, f, m, *w: good_update(p, f, torch.ones_like(m), *w), "add the mask bias",
     "update_no_mask"),
])
def test_checks_name_common_mistakes(check, wrong, message, mistake):
    result = A.run_check(check, wrong)
    assert not result.ok and result.error is None
    named = [c for c in result.cases if c.mistake == mistake]
    assert named and message in named[0].message, result.text()


@pytest.mark.parametrize("check, wrong, message", [
    ("masked_average_pool", lambda f, m: good_pool(f, m)[..., None, None],
     r"wrong shape \(2, 8, 1, 1\), expected \(2, 8\).*reshape"),
    ("masked_average_pool", lambda f, m: good_pool(f, m) + 0.01, r"max \|error\| 0.01"),
    ("masked_average_pool", lambda f, m: good_pool(f, m).numpy(), "expected a torch.Tensor, got ndarray"),
    ("masked_average_pool", lambda f, m: (f * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)), "NaN.*epsilon"),
    ("prior_mask", lambda q, s, m: good_prior(q, s, m)[:, 0], r"wrong shape .*\[N,1,h,w\]"),
    ("classwise_miou", lambda p, t, c: 0.5, r"got 0.5000, expected 0.7090"),
    ("classwise_miou", lambda p, t, c: "0.7", "expected a Python float, got str"),
    ("episode_iou", lambda p, t: sum(_iu(a, b)[0] / _iu(a, b)[1] if _iu(a, b)[1] else float("nan")
                                     for a, b in zip(p, t)) / len(p), "NaN"),
    ("prototype_update", lambda *a: good_update(*a)[:, 0], r"wrong shape \(2, 8\)"),
])
def test_checks_explain_other_wrong_answers(check, wrong, message):
    import re

    assert re.search(message, _messages(A.run_check(check, wrong)))


def test_unfinished_and_failing_answers_give_one_line_and_no_exception(capsys):
    def stub(feat, mask):
        # YOUR CODE HERE
        raise NotImplementedError()

    def broken(feat, mask):
        return feat @ mask  # wrong shapes for matmul

    A.check_masked_average_pool(stub)
    A.check_masked_average_pool(broken)
    A.check_prior_mask(None)
    A.check_episode_iou(42)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == ("✘ masked_average_pool: not implemented yet: replace `raise NotImplementedError()` with "
                        "your code (0 of 4 cases pass)")
    assert "your function raised RuntimeError" in out and "(in broken, line" in out
    assert "✘ prior_mask: no function named prior_mask" in out
    assert "✘ episode_iou: expected a function, got int" in out
    assert "Traceback" not in out and all(len(line) < 400 for line in lines)


def test_a_check_cannot_be_fooled_by_an_answer_that_changes_its_inputs():
    def writes_into_mask(feat, mask):
        out = good_pool(feat, mask)
        mask.zero_()
        return out

    assert A.run_check("masked_average_pool", writes_into_mask).ok
    assert A.run_check("masked_average_pool", good_pool).ok  # the stored cases are intact


def test_report_errors_turns_an_exception_into_one_line(capsys):
    def unfinished():
        raise NotImplementedError()

    with A.report_errors():
        print("before")
        unfinished()
        print("never")
    with A.report_errors():
        {}["key"]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "before" and out[1] == "✘ this cell stopped: unfinished is not implemented yet (the next cells still run)"
    assert out[2].startswith("✘ this cell stopped: the code raised KeyError: 'key' (in test_report_errors")
    assert out[2].endswith("(the next cells still run)") and len(out) == 3


def test_result_bundle_carries_the_machine_readable_result():
    bundle = A.run_check("masked_average_pool", lambda f, m: (f * m).mean(dim=(2, 3)))._repr_mimebundle_()
    data = bundle[A.RESULT_MIME]
    assert data["check"] == "masked_average_pool" and (data["passed"], data["total"]) == (2, 4)
    assert bundle["text/plain"].startswith("✘ masked_average_pool: 2 of 4 cases pass")
    assert data["cases"][0]["mistake"] == "pool_area_hw"


# ------------------------------------------------------------------ the stored cases

def test_stored_cases_are_what_the_references_compute():
    assert _references().differences() == [], (
        "rewrite them: python notebooks/assignments/source/references.py")


def test_every_stored_mistake_has_a_hint_and_the_iou_cases_are_the_notebooks_episodes():
    with np.load(A.DATA_FILE, allow_pickle=False) as data:
        mistakes = {k.rsplit("/", 1)[1] for k in data.files if "/mistake/" in k}
        checks = {k.split("/")[0] for k in data.files}
    assert mistakes <= set(A.HINTS) and checks == set(A.CHECKS) - {"predicted_ablation"}  # live only
    assert set(A.LIVE) <= set(A.CHECKS) and all(A._stored(c) or c in A.LIVE for c in A.CHECKS)
    preds, targets, classes = A.iou_example()
    stored = A._stored("classwise_miou")[0].inputs
    assert all(torch.equal(a, b) for a, b in zip(stored[0], preds)) and stored[2] == classes
    assert all(torch.equal(a, b) for a, b in zip(stored[1], targets))


def test_constructed_example_separates_the_two_metrics():
    preds, targets, classes = A.iou_example()
    classwise, episode = good_classwise(preds, targets, classes), good_episode(preds, targets)
    assert classwise - episode > 0.15  # the point of the exercise: a large, explainable gap
    assert good_classwise(preds, targets, classes, ignore=False) != pytest.approx(classwise)  # 255 matters


def test_the_references_pass_their_own_checks():
    """Every stored case is passed by the function that computed it (exercise 4: fsslab's own, which the checks
    refuse as such, so through a wrapper); the cases of exercises 1-3 are unchanged by exercise 4's."""
    from fsslab.lab.ablation import difference_interval, verdict

    ref = _references()
    answers = {"masked_average_pool": ref.masked_average_pool, "prior_mask": ref.prior_mask,
               "classwise_miou": ref.classwise_miou, "episode_iou": ref.episode_iou,
               "prototype_update": ref.prototype_update,
               "welch_difference": lambda f, a: difference_interval(f, a),
               "verdict": lambda i, c="full_better", m=5.0: verdict(i, c, m),
               "mismatched_drop": ref.mismatched_drop}
    runs = {"full": {0: {"miou": 50.0, "mismatched_miou": 20.0}}}
    for check, fn in answers.items():
        result = A.run_check(check, fn, *([runs] if check == "mismatched_drop" else []))
        assert result.ok, result.text()


def test_the_package_holds_no_reference_implementation():
    """The references live in notebooks/assignments/source/references.py, outside the wheel."""
    names = {n.name for n in ast.walk(ast.parse(REFERENCES.read_text())) if isinstance(n, ast.FunctionDef)}
    reference_functions = {"masked_average_pool", "prior_mask", "classwise_miou", "episode_iou",
                           "prototype_update", "intersection_union"} & names
    assert len(reference_functions) == 6
    for path in (ROOT / "fsslab" / "lab").glob("*.py"):
        defined = {n.name.lstrip("_") for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.FunctionDef)}
        assert defined & reference_functions == set(), path


# ------------------------------------------------------------------ exercise 4: the paper's claims

def good_welch(full, ablated, z=None, pooled_df=False, ddof=1, sign=1):
    """The 95% Welch interval with numpy and scipy's t quantile (not fsslab's code), and its known mistakes."""
    stats = pytest.importorskip("scipy.stats")
    x, y = np.asarray(full, dtype=float), np.asarray(ablated, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    v1, v2 = x.var(ddof=ddof) / len(x), y.var(ddof=ddof) / len(y)
    d, se = sign * (x.mean() - y.mean()), math.sqrt(v1 + v2)
    if se == 0:
        return d, d, d
    df = len(x) + len(y) - 2 if pooled_df else (v1 + v2) ** 2 / (v1 ** 2 / (len(x) - 1) + v2 ** 2 / (len(y) - 1))
    half = (z or stats.t.ppf(0.975, df)) * se
    return float(d), float(d - half), float(d + half)


def good_verdict(interval, claim="full_better", margin=5.0, mean_only=False, swap=False):
    if interval is None:
        return "no interval (n < 2)"
    d, lo, hi = interval
    lo, hi = (d, d) if mean_only else (hi, lo) if swap and claim == "small_loss" else (lo, hi)
    if claim == "full_better":
        return "holds" if lo > 0 else "reversed" if hi < 0 else "not shown at this scale"
    return "holds" if hi < margin else "does not hold" if lo > margin else "not shown at this scale"


RUNS = {"full": {0: {"miou": 49.5, "mismatched_miou": 17.25, "fbiou": 68.0},
                 1: {"miou": 48.75, "mismatched_miou": 16.5, "fbiou": 67.5}},
        "w/o ensemble": {0: {"miou": 44.0, "mismatched_miou": 20.5, "fbiou": 64.0}}}


@pytest.mark.parametrize("check, fn", [("welch_difference", good_welch), ("verdict", good_verdict)])
def test_exercise_4_checks_accept_a_correct_answer(check, fn, capsys):
    result = A.run_check(check, fn)
    assert result.ok and result.total >= 5, result.text()
    getattr(A, f"check_{check}")(fn)
    assert capsys.readouterr().out == f"✔ {check}: all {result.total} cases pass\n"


def test_the_welch_check_agrees_with_the_interval_fsslab_ablate_computes():
    from fsslab.lab.ablation import difference_interval

    for case in A._stored("welch_difference"):
        ours, fsslab = good_welch(*case.inputs), difference_interval(*case.inputs)
        assert (ours is None) == (fsslab is None) and (ours is None or np.allclose(ours, fsslab, atol=1e-6))


@pytest.mark.parametrize("check, wrong, message, mistake", [
    ("welch_difference", lambda f, a: good_welch(f, a, z=1.96), "not 1.96", "welch_z"),
    ("welch_difference", lambda f, a: good_welch(f, a, pooled_df=True), "n1 + n2 - 2", "welch_pooled_df"),
    ("welch_difference", lambda f, a: good_welch(f, a, ddof=0), "divides by n - 1", "welch_ddof0"),
    ("welch_difference", lambda f, a: good_welch(f, a, sign=-1), "mean(full) - mean(ablated)", "welch_sign"),
    ("verdict", lambda i, c="full_better", m=5.0: good_verdict(i, c, m, mean_only=True), "interval's ends",
     "verdict_mean_only"),
    ("verdict", lambda i, c="full_better", m=5.0: good_verdict(i, c, m, swap=True), "hi < margin",
     "verdict_small_loss_lo"),
    ("mismatched_drop", lambda r: r["mismatched_miou"] - r["miou"], "matched - mismatched", "drop_sign"),
    ("mismatched_drop", lambda r: 100 * (r["miou"] - r["mismatched_miou"]) / r["miou"], "not a ratio",
     "drop_relative"),
])
def test_exercise_4_checks_name_common_mistakes(check, wrong, message, mistake):
    result = A.run_check(check, wrong, *([RUNS] if check == "mismatched_drop" else []))
    assert not result.ok and result.error is None
    named = [c for c in result.cases if c.mistake == mistake]
    assert named and message in named[0].message, result.text()


@pytest.mark.parametrize("check, wrong, message", [
    ("welch_difference", lambda f, a: good_welch(f, a) or (0.0, 0.0, 0.0), "expected None: with fewer than 2"),
    ("welch_difference", lambda f, a: list(good_welch(f, a) or [])[:2] or None, "3 floats, got list"),
    ("welch_difference", lambda f, a: (float("nan"),) * 3 if len(f) == len(a) == 2 else good_welch(f, a),
     "got NaN — both sides without spread"),
    ("welch_difference", lambda f, a: (statistics_mean(f) - statistics_mean(a)) / 0 if len(f) == 2 else
     good_welch(f, a), "raised ZeroDivisionError"),
    ("verdict", lambda i, c="full_better", m=5.0: good_verdict(i, c, m).capitalize(), "write it exactly as fsslab"),
    ("verdict", lambda i, c="full_better", m=5.0: 1, "expected a str, got int"),
])
def test_exercise_4_checks_explain_other_wrong_answers(check, wrong, message):
    assert message in _messages(A.run_check(check, wrong))


def statistics_mean(values):
    return sum(values) / len(values)


def test_the_checks_refuse_fsslabs_own_functions():
    from fsslab.lab.ablation import difference_interval, verdict

    for check, fn in (("welch_difference", difference_interval), ("verdict", verdict)):
        result = A.run_check(check, fn)
        assert result.passed == 0 and "fsslab's own fsslab.lab.ablation." in result.error, result.text()


@pytest.mark.parametrize("answer, passed, message", [
    ("w/o ensemble", True, ""), ("w/o query mining", True, ""), ("box supports", True, ""),
    ("full", False, "'full' is the full model"), ("W/O d", False, "did you mean 'w/o D'?"),
    ("w/o ensembel", False, "did you mean 'w/o ensemble'?"), ("bigger backbone", False, "'w/o D'"),
    (3, False, "expected a variant name (a str), got int"),
])
def test_the_prediction_check_wants_a_variant_name_not_a_right_guess(answer, passed, message):
    result = A.run_check("predicted_ablation", lambda: answer)
    assert result.total == 1 and result.ok is passed and message in _messages(result), result.text()


def test_the_drop_check_runs_on_the_students_own_runs(capsys):
    def drop(result):
        return result["miou"] - result["mismatched_miou"]

    result = A.run_check("mismatched_drop", drop, RUNS)
    assert result.ok and result.total == 3 and result.cases[-1].case == "your own runs (3 evaluations)"
    assert "no runs of yours" in _messages(A.run_check("mismatched_drop", drop))  # the training cell did not run
    assert "runs is not {variant: {seed:" in _messages(A.run_check("mismatched_drop", drop, {"full": [1, 2]}))
    # an answer that looks the stored results up passes those, not the student's own runs
    table = {(r["miou"], r["mismatched_miou"]): r["miou"] - r["mismatched_miou"] for r in
             (c.inputs[0] for c in A._stored("mismatched_drop"))}
    cheat = A.run_check("mismatched_drop", lambda r: table.get((r["miou"], r["mismatched_miou"]), 0.0), RUNS)
    assert cheat.passed == 2 and "full, seed 0: got 0.0000, expected 32.2500" in _messages(cheat)
    A.check_mismatched_drop(drop, RUNS)
    assert capsys.readouterr().out == "✔ mismatched_drop: all 3 cases pass\n"


def test_an_unknown_check_or_input_is_reported_not_passed():
    unknown = A.run_check("welch", lambda f, a: None)
    assert not unknown.ok and unknown.error.startswith("unknown check 'welch'")
    extra = A.run_check("predicted_ablation", lambda: "w/o D", {"full": {}})  # the prediction takes no runs
    assert not extra.ok and extra.cases[-1].message.startswith("could not run: TypeError")


def test_unfinished_exercise_4_answers_give_one_line(capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    A.check_predicted_ablation(stub)
    A.check_welch_difference(stub)
    A.check_mismatched_drop(stub, {})
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"✘ {c}: not implemented yet: replace `raise NotImplementedError()` with your code (0 of {n} "
                     "cases pass)" for c, n in (("predicted_ablation", 1), ("welch_difference", 5),
                                                ("mismatched_drop", 3))]
