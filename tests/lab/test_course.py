"""fsslab.lab.course and ``fsslab course``: release strips the solutions of the instructor sources (and only
writes notebooks), the committed student notebooks are that release, the grader runs a submission and gives full
points to the solutions, 0 with one-line feedback to an unsolved notebook and partial points with the named
mistake to a planted one; Run All of a student notebook whose checks fail reaches the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fsslab.cli import main
from fsslab.lab import course as C

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENTS = ROOT / "notebooks" / "assignments"
SOURCE = ASSIGNMENTS / "source"
NAMES = sorted(p.name for p in SOURCE.glob("*.ipynb"))
# a line of each solution that must not reach the student
SOLUTION_LINES = {
    "01_masked_pooling_prior.ipynb": ["return (feat * mask).sum(dim=(2, 3)) / (area + eps)",
                                      "s = (support_feat * support_mask).flatten(2)",
                                      "the mean blurs all parts"],
    "02_miou_vs_episode_iou.ipynb": ["valid = target != 255", "ious.append(i / u if u else 1.0)",
                                     "Class-wise mIoU pools pixels inside a class"],
    "03_prototype_update.ipynb": ["attention = (logits + bias[:, None, :]).softmax(dim=-1)",
                                  "the softmax is uniform again"],
    "04_paper_claims.ipynb": ['return "w/o ensemble"', "half = t_quantile(0.975, df) * se",
                              'return "holds" if lo > 0 else', 'return result["miou"] - result["mismatched_miou"]',
                              "Every synthetic image holds objects of several", "With 2 seeds the Welch interval"],
}


def _cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        cell["source"] = "".join(cell["source"])
    return cells


def _source_text(cells: list[dict]) -> str:
    return "\n".join(c["source"] for c in cells)


# ------------------------------------------------------------------ release

def test_there_are_four_assignments_each_with_a_rubric():
    assert NAMES == ["01_masked_pooling_prior.ipynb", "02_miou_vs_episode_iou.ipynb", "03_prototype_update.ipynb",
                     "04_paper_claims.ipynb"]
    for name in NAMES:
        rubric = C.load_rubric(SOURCE / name.replace(".ipynb", ".yaml"))
        assert rubric.exercises and rubric.questions and all(e.points > 0 and e.rubric for e in rubric.exercises)


def test_release_strips_the_solutions(tmp_path, capsys):
    assert main(["course", "release", str(SOURCE), str(tmp_path / "release")]) == 0
    out = capsys.readouterr().out
    assert out.count("released ") == 4 and "rubrics, references and other files of SRC_DIR were not copied" in out
    assert sorted(p.name for p in (tmp_path / "release").iterdir()) == NAMES  # no rubric, no references.py
    for name in NAMES:
        source = _source_text(_cells(SOURCE / name))
        cells = _cells(tmp_path / "release" / name)
        text = _source_text(cells)
        for line in SOLUTION_LINES[name]:
            assert line in source and line not in text, line
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert "raise NotImplementedError()" in text and C.ANSWER_STUB in text
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells
                   if c["cell_type"] == "code")
        meta = json.loads((tmp_path / "release" / name).read_text())["metadata"]["fsslab"]
        assert meta["released"] and meta["rubric"]["exercises"]


def test_the_committed_student_notebooks_are_the_release(tmp_path):
    C.release(SOURCE, tmp_path)
    for name in NAMES:
        assert (ASSIGNMENTS / name).read_text() == (tmp_path / name).read_text(), (
            f"{name}: release again: fsslab course release notebooks/assignments/source notebooks/assignments")


def test_a_stub_keeps_the_indentation_of_its_region():
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 3, "source":
                     "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\ny = 1"}]}
    rubric = C.parse_rubric({"exercises": [{"id": "a", "check": "episode_iou", "function": "f", "points": 1}]},
                            "t", "test")
    student, regions = C.student_version(nb, rubric)
    assert regions == 1
    assert student["cells"][0]["source"] == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ny = 1"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "without '### END SOLUTION'"),
    ("x = 1\n### END SOLUTION", "without '### BEGIN SOLUTION'"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside a solution region"),
    ("s = '### BEGIN SOLUTION'", "a solution marker is left"),
])
def test_release_refuses_broken_markers(source, message):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": source}]}
    rubric = C.parse_rubric({"exercises": [{"id": "a", "check": "episode_iou", "function": "f", "points": 1}]},
                            "t", "test")
    with pytest.raises(C.CourseError, match=message):
        C.student_version(nb, rubric)


def test_release_refuses_to_overwrite_sources_or_foreign_files(tmp_path):
    with pytest.raises(C.CourseError, match="OUT_DIR is SRC_DIR"):
        C.release(SOURCE, SOURCE)
    (tmp_path / NAMES[0]).write_text(json.dumps({"cells": [], "metadata": {}}))
    with pytest.raises(C.CourseError, match="not a released notebook"):
        C.release(SOURCE, tmp_path)
    C.release(SOURCE, tmp_path, force=True)
    C.release(SOURCE, tmp_path)  # an earlier release is replaced
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SOURCE / NAMES[0], src)
    with pytest.raises(C.CourseError, match="rubric .* is missing"):
        C.release(src, tmp_path / "out")
    rubric = (SOURCE / NAMES[0].replace(".ipynb", ".yaml")).read_text()
    (src / NAMES[0].replace(".ipynb", ".yaml")).write_text(rubric.replace("function: prior_mask", "function: prior"))
    with pytest.raises(C.CourseError, match="the notebook defines no prior "):
        C.release(src, tmp_path / "out")


def test_a_check_that_takes_the_notebooks_variables_gets_them_from_the_grader():
    rubric = C.load_rubric(SOURCE / "04_paper_claims.yaml")
    (drop,) = [e for e in rubric.exercises if e.check == "mismatched_drop"]
    assert drop.inputs == ["runs"] and "inputs" in drop.to_dict()
    assert all("inputs" not in e.to_dict() for e in rubric.exercises if e is not drop)  # as before inputs existed
    cells = [c["source"] for c in C._grader_cells(rubric)]
    assert ("_fsslab_checks.show(_fsslab_checks.run_check('mismatched_drop', globals().get('mismatched_drop'), "
            "globals().get('runs')))") in cells
    assert "_fsslab_checks.run_check('verdict', globals().get('verdict')))" in "\n".join(cells)


@pytest.mark.parametrize("data, message", [
    ({"exercises": [{"id": "a", "check": "nope", "function": "f", "points": 1}]}, "unknown check 'nope'"),
    ({"exercises": [{"id": "a", "check": "verdict", "function": "f", "points": 1, "inputs": "runs"}]},
     "inputs must be a list of variable names"),
    ({"exercises": [{"id": "a", "function": "f"}]}, "lacks check, points"),
    ({"exercises": []}, "no exercises"),
    ({"exercises": [{"id": "a", "check": "episode_iou", "function": "f", "points": 1}],
      "questions": [{"id": "a", "points": 1}]}, "unique"),
])
def test_rubric_errors_are_one_message(data, message):
    with pytest.raises(C.CourseError, match=message):
        C.parse_rubric(data, "x", "x.yaml")


# ------------------------------------------------------------------ grade (each runs a kernel)

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_grading_the_solutions_gives_full_points(name, monkeypatch):
    monkeypatch.setenv("FSSLAB_QUICK", "1")  # the kernel's: 04 trains its runs the quick way (seconds)
    grade = C.grade(SOURCE / name)
    assert grade.rubric_from.endswith(name.replace(".ipynb", ".yaml"))
    assert grade.points == grade.max_points > 0 and grade.errors == [], grade.text()
    assert all(q.answered for q in grade.questions)


@pytest.mark.slow
def test_grading_an_unsolved_notebook_gives_zero_and_one_line_per_check(tmp_path, capsys):
    shutil.copy(ASSIGNMENTS / NAMES[0], tmp_path)  # as a student hands it in: nothing beside it
    assert main(["course", "grade", str(tmp_path / NAMES[0])]) == 0
    out = capsys.readouterr().out
    assert "rubric: embedded in the notebook at release" in out
    assert "automatic total: 0 / 8" in out and "Q1   question, graded by hand (2 points): NOT ANSWERED" in out
    assert out.count("✘ masked_average_pool: not implemented yet") == 1
    assert out.count("✘ prior_mask: not implemented yet") == 1
    assert "Traceback" not in out and "cells that raised" not in out


@pytest.mark.slow
def test_grading_the_unsolved_paper_claims_notebook_trains_nothing_and_gives_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FSSLAB_QUICK", "1")
    shutil.copy(ASSIGNMENTS / NAMES[3], tmp_path)
    assert main(["course", "grade", str(tmp_path / NAMES[3]), "--json"]) == 0
    grade = json.loads(capsys.readouterr().out)
    assert (grade["points"], grade["max_points"], grade["manual_points"], grade["cell_errors"]) == (0, 9, 5, [])
    feedback = {e["id"]: e["feedback"][0] for e in grade["exercises"]}
    assert all("not implemented yet" in line for line in feedback.values()), feedback
    assert not (tmp_path / "runs").exists()  # no prediction, no training


def _plant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    nb = json.loads((SOURCE / name).read_text())
    text = json.dumps(nb)
    assert json.dumps(old)[1:-1] in text
    nb = json.loads(text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]))
    for cell in nb["cells"]:  # the student also "fixed" the check cells: the grader runs its own
        if "".join(cell["source"]).startswith("check_"):
            cell["source"] = "print('✔ all cases pass')"
    path = tmp_path / name
    path.write_text(json.dumps(nb))
    return path


@pytest.mark.slow
def test_a_planted_mistake_gets_its_hint_and_partial_points(tmp_path, capsys):
    path = _plant(tmp_path, NAMES[2], " / math.sqrt(c)  # [B,1,N]", "  # [B,1,N]")
    assert main(["course", "grade", str(path), "--source", str(SOURCE), "--json"]) == 0
    grade = json.loads(capsys.readouterr().out)
    (exercise,) = grade["exercises"]
    assert (exercise["points"], exercise["max_points"], grade["points"]) == (3.0, 6.0, 3.0)
    assert exercise["feedback"][0] == "✘ prototype_update: 1 of 2 cases pass"
    assert any("Hint: divide the attention logits by sqrt(C)" in line for line in exercise["feedback"])
    assert grade["cell_errors"] == []

    path = _plant(tmp_path, NAMES[0], "(area + eps)", "(feat.shape[2] * feat.shape[3])")
    grade = C.grade(path, source_dir=SOURCE)
    pool, prior = grade.exercises
    assert (pool.points, prior.points, grade.points) == (2.0, 4.0, 6.0)
    assert "Hint: divide by the mask area (sum of the mask), not by h*w" in "\n".join(pool.feedback)


@pytest.mark.slow
def test_a_cell_that_raises_is_reported_in_one_line_and_the_rest_is_graded(tmp_path):
    path = _plant(tmp_path, NAMES[1], "def intersection_union(pred", "1 / 0\n\n\ndef intersection_union(pred")
    grade = C.grade(path, source_dir=SOURCE)
    assert grade.errors == ["cell 6 (1 / 0): ZeroDivisionError: division by zero"]
    miou, episode = grade.exercises
    assert miou.points == 0 and "no function named classwise_miou" in miou.feedback[0]
    assert episode.points == 0 and "raised NameError: name 'intersection_union' is not defined (in episode_iou, " \
        "line 5 of its cell)" in "\n".join(episode.feedback)
    assert "Traceback" not in grade.text()


@pytest.mark.slow
def test_run_all_of_a_student_notebook_with_failing_checks_reaches_the_end():
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(ASSIGNMENTS / NAMES[1], as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(ASSIGNMENTS)}}).execute()  # raises on any cell error
    texts = ["".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")) for c in nb.cells
             if c.cell_type == "code" for o in c.outputs]
    joined = "\n".join(texts)
    assert "✘ classwise_miou: not implemented yet" in joined and "✘ episode_iou: not implemented yet" in joined
    assert "✘ this cell stopped: intersection_union is not implemented yet" in joined  # the last code cell
    assert "Traceback" not in joined


def test_the_checks_stored_cases_are_package_data_and_the_references_are_not():
    import fnmatch

    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fsslab"]
    assert any(fnmatch.fnmatch("lab/assignment_checks.npz", p) for p in patterns)
    assert (ROOT / "fsslab" / "lab" / "assignment_checks.npz").is_file()
    assert not list((ROOT / "fsslab").rglob("references.py"))  # the references stay in notebooks/assignments/source


@pytest.mark.slow
def test_a_cell_that_never_ends_is_interrupted_and_the_rest_is_graded(tmp_path):
    nb = json.loads((SOURCE / NAMES[2]).read_text())
    for cell in nb["cells"]:
        cell.pop("id", None)  # as nbformat 4.4 writes it: no cell ids
    nb["nbformat_minor"] = 4
    nb["cells"].insert(6, {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                           "source": "import time\nwhile True:\n    time.sleep(0.1)"})
    path = tmp_path / NAMES[2]
    path.write_text(json.dumps(nb))
    grade = C.grade(path, source_dir=SOURCE, timeout=30)
    assert grade.errors == ["cell 6 (import time): KeyboardInterrupt: interrupted after 30 s (--timeout)"]
    assert grade.points == grade.max_points, grade.text()
