"""Checks with feedback for the course exercises (notebooks/assignments): ``check_masked_average_pool(fn)`` and
friends run a student's function on fixed cases and print one short line per case: passed, a recognised
mistake named with a hint, a wrong shape or type, NaNs, the largest error, or the exception the function
raised, never a traceback.

**A check reports, it never raises**: in Jupyter an exception stops "Run All" at that cell, so one unfinished
exercise would hide the feedback of all the others; the grader (``fsslab course grade``, fsslab.lab.course)
reads the same results from the check's output (a ``application/vnd.fsslab.check+json`` bundle beside the
text). For the same reason ``with report_errors():`` around a cell that uses the student's functions turns an
exception into one line and lets the next cells run.

The reference implementations are not in this package: they are instructor material
(``notebooks/assignments/source/references.py``), which stored its inputs, expected outputs and the outputs
of the known mistakes in ``assignment_checks.npz`` beside this module. The checks compare with those arrays.
Exercise 4 (the papers' claims) reimplements fsslab's own statistics (``fsslab.lab.ablation``), so its stored
cases come from that code and a check refuses fsslab's function itself. Two checks end with a *live* case
(``LIVE``), computed from the student's notebook rather than stored: the predicted ablation must be a variant
name of ``fsslab.lab.ablation.TABLES``, and the mismatched drop must agree with the student's own runs.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsslab.batch import IGNORE_INDEX

DATA_FILE = Path(__file__).with_name("assignment_checks.npz")
RESULT_MIME = "application/vnd.fsslab.check+json"  # the grader reads check results from this output

# the feedback for each known mistake (the mistake's output on the check's inputs is in DATA_FILE)
HINTS = {
    "pool_area_hw": "divide by the mask area (sum of the mask), not by h*w",
    "pool_no_mask": "multiply the features by the mask before summing",
    "pool_no_eps": "add eps=5e-4 to the mask area",
    "pool_full_no_eps": "add eps=5e-4 to the mask area, as the references do",
    "prior_unmasked": "multiply the support features by the support mask first: only foreground support pixels "
                      "count",
    "prior_mean": "take the maximum similarity over the support pixels, not the mean",
    "prior_no_minmax": "min-max normalise each image's prior to [0, 1]: (x - min) / (max - min + eps)",
    "iou_no_ignore": "pixels labelled 255 in the target must be left out of both intersection and union",
    "miou_per_episode_mean": "sum intersections and unions over all episodes of a class before dividing",
    "miou_is_episode_iou": "that is the mean per-episode IoU: group the episodes by class first",
    "episode_is_classwise": "that is the class-wise mIoU: average the episodes' IoUs",
    "episode_pooled": "compute one IoU per episode and average them, do not pool all pixels",
    "update_no_residual": "add the update to the prototype (residual connection)",
    "update_no_scale": "divide the attention logits by sqrt(C)",
    "update_inverted_mask": "the bias must be 0 inside the mask and -1e4 outside",
    "update_no_mask": "add the mask bias: only masked query pixels may be attended",
    "update_softmax_dim": "softmax over the query pixels (the last dimension)",
    "welch_z": "use the t quantile with the Welch degrees of freedom, t_quantile(0.975, df), not 1.96: with a "
               "few seeds the normal quantile makes the interval far too narrow",
    "welch_pooled_df": "Welch's degrees of freedom are (v1 + v2)^2 / (v1^2/(n1-1) + v2^2/(n2-1)) with v = s^2/n, "
                       "not n1 + n2 - 2 (that is the pooled t-test's, which assumes equal variances)",
    "welch_ddof0": "the sample variance divides by n - 1 (statistics.variance, np.var(..., ddof=1)), not by n",
    "welch_sign": "the difference is mean(full) - mean(ablated): positive when the component helps",
    "verdict_mean_only": "decide with the interval's ends, not with the mean difference: 'holds' needs the whole "
                         "interval on the claim's side (lo > 0, or hi < margin)",
    "verdict_small_loss_lo": "'loses little' holds only if the whole interval is below the margin (hi < margin) and "
                             "does not hold only if the whole interval is above it (lo > margin)",
    "drop_sign": "the drop is matched - mismatched: positive when the model reads its supports",
    "drop_relative": "the drop is a difference of mIoU points (matched - mismatched), not a ratio",
}
SHAPES = {"masked_average_pool": "[N,C]", "prior_mask": "[N,1,h,w]", "prototype_update": "[B,1,C]"}
# how the stored inputs of a check become the arguments of the student's function (default: tensors)
INPUT_KINDS = {"classwise_miou": "lists", "episode_iou": "lists", "welch_difference": "lists",
               "verdict": "values", "mismatched_drop": "mapping"}


# ----------------------------------------------------------------------------- results

@dataclass
class CaseResult:
    """One case of a check: passed or not, and one line of feedback (``mistake``: the id of a known mistake)."""

    case: str
    passed: bool
    message: str = ""
    mistake: str | None = None


@dataclass
class CheckResult:
    """What a check found: the cases, or ``error`` when none could run (not implemented, not defined)."""

    check: str
    cases: list[CaseResult] = field(default_factory=list)
    total: int = 0
    error: str | None = None

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def ok(self) -> bool:
        return self.error is None and self.passed == self.total

    def lines(self) -> list[str]:
        if self.error is not None:
            return [f"✘ {self.check}: {self.error} (0 of {self.total} cases pass)"]
        if self.ok:
            return [f"✔ {self.check}: all {self.total} cases pass"]
        head = f"✘ {self.check}: {self.passed} of {self.total} cases pass"
        return [head] + [f"  {'✔' if c.passed else '✘'} {c.case}" + ("" if c.passed else f": {c.message}")
                         for c in self.cases]

    def text(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "passed": self.passed, "total": self.total, "error": self.error,
                "cases": [vars(c) for c in self.cases]}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": self.text(), RESULT_MIME: self.to_dict()}

    def __repr__(self) -> str:
        return self.text()


def show(result: CheckResult) -> None:
    """Print the result; in a Jupyter kernel also as the bundle the grader reads (JupyterLab shows the text)."""
    shell = None
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import display

        display(result._repr_mimebundle_(), raw=True)
    else:
        print(result.text())


# ----------------------------------------------------------------------------- the stored cases

@dataclass
class _Case:
    name: str
    inputs: list[Any]
    expected: np.ndarray
    mistakes: dict[str, np.ndarray]
    atol: float


def _as_list(array: np.ndarray) -> list[Any]:
    return [torch.from_numpy(a.copy()) for a in array] if array.ndim > 1 else array.tolist()


def _value(array: np.ndarray) -> Any:
    """A stored scalar, string or interval as Python: 0-d -> float / str, 1-d -> tuple, empty -> None."""
    if array.ndim == 0:
        return array.item()
    return tuple(array.tolist()) if array.size else None


def _arguments(check: str, inputs: list[np.ndarray]) -> list[Any]:
    kind = INPUT_KINDS.get(check, "tensors")
    if kind == "lists":  # lists of [H,W] tensors (and of class ids), or of scores
        return [_as_list(a) for a in inputs]
    if kind == "values":
        return [_value(a) for a in inputs]
    if kind == "mapping":  # one dict, stored as its keys and its values
        return [dict(zip(inputs[0].tolist(), inputs[1].tolist()))]
    return [torch.from_numpy(a.copy()) for a in inputs]


@cache
def _stored(check: str) -> tuple[_Case, ...]:
    """The cases of ``check`` as references.py stored them (inputs as the student's function takes them); none
    for a check that only has live cases (``LIVE``)."""
    found = []
    with np.load(DATA_FILE, allow_pickle=False) as data:
        if f"{check}/cases" not in data.files:
            return ()
        for k in range(int(data[f"{check}/cases"])):
            key = f"{check}/{k}"
            inputs = _arguments(check, [data[f"{key}/in{i}"] for i in range(int(data[f"{key}/inputs"]))])
            mistakes = {m.rsplit("/", 1)[1]: data[m] for m in data.files if m.startswith(f"{key}/mistake/")}
            found.append(_Case(str(data[f"{key}/name"]), inputs, data[f"{key}/expected"], mistakes,
                               float(data[f"{key}/atol"])))
    return tuple(found)


def _fresh(value: Any) -> Any:
    """A copy, so that an answer that writes into its inputs cannot change the next case."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


# ----------------------------------------------------------------------------- comparing

def _compare_tensor(got: Any, expected: np.ndarray, mistakes: dict[str, np.ndarray], atol: float,
                    shape_hint: str) -> tuple[str | None, str | None]:
    """(None, None) when ``got`` matches; else (the feedback, the id of the mistake it matches or None)."""
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor, got {type(got).__name__}", None
    want = torch.from_numpy(expected).float()
    if tuple(got.shape) != tuple(want.shape):
        extra = " (same number of elements: a reshape/squeeze is missing?)" if got.numel() == want.numel() else ""
        return f"wrong shape {tuple(got.shape)}, expected {tuple(want.shape)} = {shape_hint}{extra}", None
    got = got.detach().float().cpu()
    if not torch.isfinite(got).all():
        bad = int((~torch.isfinite(got)).sum())
        return (f"{bad} value(s) are NaN or infinite — a division by zero? (hint: an epsilon in the denominator "
                "keeps empty masks finite)"), None
    if torch.allclose(got, want, atol=atol, rtol=1e-4):
        return None, None
    for mistake, wrong in mistakes.items():
        wrong_t = torch.from_numpy(wrong).float()
        if wrong_t.shape == got.shape and torch.allclose(got, wrong_t, atol=atol, rtol=1e-4):
            return f"matches a known mistake. Hint: {HINTS[mistake]}", mistake
    diff = (got - want).abs()
    where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    return (f"values differ: max |error| {float(diff.max()):.4g} at index {where} "
            f"(got {float(got[where]):.5g}, expected {float(want[where]):.5g})"), None


def _compare_float(got: Any, expected: np.ndarray, mistakes: dict[str, np.ndarray], atol: float,
                   shape_hint: str = "") -> tuple[str | None, str | None]:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = float(got)
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"expected a Python float, got {type(got).__name__}", None
    want = float(expected)
    if math.isnan(got):
        return "got NaN — a class or episode with an empty union? (see the instructions)", None
    if abs(got - want) <= atol:
        return None, None
    for mistake, wrong in mistakes.items():
        if abs(got - float(wrong)) <= atol:
            return f"got {got:.4f}, expected {want:.4f}. Hint: {HINTS[mistake]}", mistake
    return f"got {got:.4f}, expected {want:.4f} (difference {got - want:+.4f})", None


def _triple(got: Any) -> tuple[float, float, float] | None:
    """``got`` as (difference, lo, hi) floats, or None when it is not three numbers."""
    if isinstance(got, (torch.Tensor, np.ndarray)):
        got = got.tolist()
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return None
    if any(isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.number)) for v in got):
        return None
    return float(got[0]), float(got[1]), float(got[2])


def _compare_interval(got: Any, expected: np.ndarray, mistakes: dict[str, np.ndarray], atol: float,
                      shape_hint: str = "") -> tuple[str | None, str | None]:
    """(difference, lo, hi) against the stored triple; an empty stored array stands for None (no interval)."""
    def shown(values: Any) -> str:
        return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"

    if expected.size == 0:
        if got is None:
            return None, None
        return "expected None: with fewer than 2 scores on a side there is no interval", None
    if got is None:
        return f"got None, expected {shown(expected)}: None only when a side has fewer than 2 scores", None
    values = _triple(got)
    if values is None:
        return f"expected a tuple (difference, lo, hi) of 3 floats, got {type(got).__name__}", None
    if any(math.isnan(v) for v in values):
        return ("got NaN — both sides without spread? Then the standard error is 0 and the interval is "
                "(d, d, d)"), None
    if np.allclose(values, expected, atol=atol, rtol=0):
        return None, None
    for mistake, wrong in mistakes.items():
        if np.allclose(values, wrong, atol=atol, rtol=0):
            return f"got {shown(values)}, expected {shown(expected)}. Hint: {HINTS[mistake]}", mistake
    return f"got {shown(values)}, expected {shown(expected)}", None


def _compare_text(got: Any, expected: np.ndarray, mistakes: dict[str, np.ndarray], atol: float = 0.0,
                  shape_hint: str = "") -> tuple[str | None, str | None]:
    want = str(expected)
    if not isinstance(got, str):
        return f"expected a str, got {type(got).__name__}", None
    if got == want:
        return None, None
    for mistake, wrong in mistakes.items():
        if got == str(wrong):
            return f"got {got!r}, expected {want!r}. Hint: {HINTS[mistake]}", mistake
    if got.strip().lower() == want.lower():
        return f"got {got!r}, expected {want!r}: write it exactly as fsslab does", None
    return f"got {got!r}, expected {want!r}", None


COMPARE = {"welch_difference": _compare_interval, "verdict": _compare_text}


def _where(exc: BaseException) -> tuple[str, int] | None:
    """The function and line of the student's code where ``exc`` was raised (frames of fsslab and torch skipped)."""
    package_dirs = (str(Path(__file__).resolve().parents[1]), str(Path(torch.__file__).resolve().parent))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(package_dirs) and not f.filename.startswith("<frozen")]
    return (frames[-1].name, frames[-1].lineno or 0) if frames else None


def _raised(exc: BaseException, who: str = "your function") -> str:
    """One line for an exception of the student's code: its type, message and where (the cell's line)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(message) > 120:
        message = message[:117] + "..."
    where = _where(exc)
    return (f"{who} raised {type(exc).__name__}" + (f": {message}" if message else "")
            + (f" (in {where[0]}, line {where[1]} of its cell)" if where else ""))


def _refusal(fn: Any) -> str | None:
    """Why ``fn`` cannot be checked (None: it can)."""
    if not callable(fn):
        return f"expected a function, got {type(fn).__name__}"
    module = getattr(fn, "__module__", None) or ""
    if module == "fsslab" or module.startswith("fsslab."):  # e.g. fsslab.lab.ablation.verdict imported as is
        return f"that is fsslab's own {module}.{getattr(fn, '__name__', '?')}: write your own function"
    return None


def run_check(check: str, fn: Callable[..., Any] | None, *inputs: Any) -> CheckResult:
    """Run ``fn`` on every stored case of ``check``, then on its live case when it has one (``LIVE``: e.g. the
    student's own runs, passed as ``inputs``); nothing is printed and nothing raised (see ``show``)."""
    if check not in CHECKS:  # a typo must not pass as "all 0 cases pass"
        return CheckResult(check, error=f"unknown check {check!r} (the checks: {', '.join(CHECKS)})")
    stored = _stored(check)
    live = LIVE.get(check)
    result = CheckResult(check, total=len(stored) + (live is not None))
    if fn is None:
        result.error = f"no function named {check} (did the cell that defines it run without an error?)"
        return result
    refusal = _refusal(fn)
    if refusal is not None:
        result.error = refusal
        return result
    default = _compare_float if stored and stored[0].expected.ndim == 0 else _compare_tensor
    compare = COMPARE.get(check, default)
    try:
        for case in stored:
            try:
                got = fn(*_fresh(case.inputs))
            except NotImplementedError:
                raise
            except Exception as exc:  # noqa: BLE001 - the student's code failed: one line, the other cases run
                result.cases.append(CaseResult(case.name, False, _raised(exc)))
                continue
            try:
                message, mistake = compare(got, case.expected, case.mistakes, case.atol, SHAPES.get(check, ""))
            except Exception as exc:  # noqa: BLE001 - e.g. a tensor on an odd device or of an odd dtype
                message, mistake = f"could not compare the answer: {type(exc).__name__}: {exc}", None
            result.cases.append(CaseResult(case.name, message is None, message or "", mistake))
        if live is not None:
            try:
                result.cases.append(live(fn, *inputs))
            except NotImplementedError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. inputs the live case does not take: one line
                result.cases.append(CaseResult("live case", False, f"could not run: {type(exc).__name__}: {exc}"))
    except NotImplementedError:
        result.cases = []
        result.error = "not implemented yet: replace `raise NotImplementedError()` with your code"
    return result


# ----------------------------------------------------------------------------- live cases (nothing stored)

def _prediction_case(fn: Callable[[], str]) -> CaseResult:
    """The prediction names an ablation of the AMFormer or IPMT table (the guess itself is not graded)."""
    from fsslab.lab.ablation import TABLES

    case = "a variant of the AMFormer or IPMT ablation table"
    try:
        got = fn()
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line
        return CaseResult(case, False, _raised(exc))
    ablations = [v.name for t in TABLES.values() for v in t.variants if v.name != t.full]
    if not isinstance(got, str):
        return CaseResult(case, False, f"expected a variant name (a str), got {type(got).__name__}")
    if got in ablations:
        return CaseResult(case, True)
    if got in {t.full for t in TABLES.values()}:
        return CaseResult(case, False, f"{got!r} is the full model, the reference of every row: name an ablation")
    close = [a for a in ablations if a.lower() == got.strip().lower()] or difflib.get_close_matches(got, ablations, 1)
    return CaseResult(case, False, f"{got!r} is not a variant of either table"
                      + (f": did you mean {close[0]!r}?" if close else f" ({', '.join(map(repr, ablations))})"))


def _own_runs_case(fn: Callable[[dict[str, Any]], float], runs: Any = None) -> CaseResult:
    """``fn`` on each of the student's own evaluations ``runs`` ({variant: {seed: result}}) against its
    matched - mismatched mIoU (the definition of fsslab.engine.ControlReport.drop)."""
    case = "your own runs"
    if not runs:
        return CaseResult(case, False, "no runs of yours to check: run the cell that trains and evaluates them")
    try:
        evaluations = [(variant, seed, run) for variant, by_seed in runs.items() for seed, run in by_seed.items()]
        wanted = [run["miou"] - run["mismatched_miou"] for _, _, run in evaluations]
    except (AttributeError, KeyError, TypeError):
        return CaseResult(case, False, "runs is not {variant: {seed: {'miou': ..., 'mismatched_miou': ...}}} "
                                       "as the training cell makes it")
    for (variant, seed, run), want in zip(evaluations, wanted):
        try:
            got = fn(dict(run))
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line
            return CaseResult(case, False, f"{variant}, seed {seed}: {_raised(exc)}")
        message, _ = _compare_float(got, np.asarray(want), {}, 1e-6)
        if message is not None:
            return CaseResult(case, False, f"{variant}, seed {seed}: {message}")
    return CaseResult(f"{case} ({len(evaluations)} evaluations)", True)


# the checks whose last case is computed from the student's own notebook, not stored
LIVE: dict[str, Callable[..., CaseResult]] = {"predicted_ablation": _prediction_case,
                                              "mismatched_drop": _own_runs_case}


# ----------------------------------------------------------------------------- the checks of the notebooks

def check_masked_average_pool(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """fn(feat [N,C,h,w], mask [N,1,h,w] 0/1 float) -> [N,C]: mean of the features under the mask."""
    show(run_check("masked_average_pool", fn))


def check_prior_mask(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """fn(query_feat [N,C,h,w], support_feat [N,C,h,w], support_mask [N,1,h,w]) -> prior [N,1,h,w] in [0,1]."""
    show(run_check("prior_mask", fn))


def check_classwise_miou(fn: Callable[..., float]) -> None:
    """fn(preds, targets, class_ids) -> class-wise mIoU (sum I and U per class over its episodes, IoU_c =
    I_c / U_c, mean over the classes; 255 ignored; a class whose union is empty counts as IoU 1)."""
    show(run_check("classwise_miou", fn))


def check_episode_iou(fn: Callable[..., float]) -> None:
    """fn(preds, targets) -> mean over episodes of the foreground IoU (255 ignored; empty union -> 1)."""
    show(run_check("episode_iou", fn))


def check_prototype_update(fn: Callable[..., torch.Tensor]) -> None:
    """fn(prototype [B,1,C], query_feat [B,N,C], query_mask [B,N] bool, w_q, w_k, w_v [C,C]) -> [B,1,C]:
    prototype + softmax((P w_q)(F w_k)^T / sqrt(C) + bias) (F w_v), bias = 0 inside the mask, -1e4 outside."""
    show(run_check("prototype_update", fn))


def check_predicted_ablation(fn: Callable[[], str]) -> None:
    """fn() -> the name of the ablation you expect to hurt most, as in the AMFormer or IPMT table of
    fsslab.lab.ablation.TABLES (only the name is checked, not the guess)."""
    show(run_check("predicted_ablation", fn))


def check_welch_difference(fn: Callable[..., tuple[float, float, float] | None]) -> None:
    """fn(full_scores, ablated_scores) -> (mean(full) - mean(ablated), lo, hi): the 95% Welch t-interval of the
    difference of means; None when a side has fewer than 2 scores; (d, d, d) when neither side varies."""
    show(run_check("welch_difference", fn))


def check_verdict(fn: Callable[..., str]) -> None:
    """fn(interval, claim="full_better", margin=5.0) -> the verdict fsslab's ablation tables print for it."""
    show(run_check("verdict", fn))


def check_mismatched_drop(fn: Callable[[dict[str, Any]], float], runs: Any = None) -> None:
    """fn(result) -> matched - mismatched mIoU of one evaluation; checked on stored results and on every
    evaluation of ``runs`` ({variant: {seed: result}}, your own)."""
    show(run_check("mismatched_drop", fn, runs))


CHECKS = ("masked_average_pool", "prior_mask", "classwise_miou", "episode_iou", "prototype_update",
          "predicted_ablation", "welch_difference", "verdict", "mismatched_drop")


@contextlib.contextmanager
def report_errors() -> Iterator[None]:
    """``with report_errors():`` around a cell that uses your functions: an exception becomes one line and
    "Run All" goes on with the next cells."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported in one line: Run All goes on
        where = _where(exc)
        if isinstance(exc, NotImplementedError) and where is not None:
            print(f"✘ this cell stopped: {where[0]} is not implemented yet (the next cells still run)")
        else:
            print(f"✘ this cell stopped: {_raised(exc, 'the code')} (the next cells still run)")


# ----------------------------------------------------------------------------- exercise 2's episodes

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
