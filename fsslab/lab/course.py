"""Gradable assignments, nbgrader-style: release student notebooks from instructor sources, grade submissions.

An instructor *source* notebook holds the solutions between marker lines (the markers nbgrader uses, so the
sources also work with nbgrader's ``generate_assignment``)::

    def masked_average_pool(feat, mask, eps=5e-4):
        ### BEGIN SOLUTION
        return (feat * mask).sum(dim=(2, 3)) / (mask.sum(dim=(2, 3)) + eps)
        ### END SOLUTION

``release`` replaces each region of a code cell by ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (same
indentation), each region of a markdown cell by ``YOUR ANSWER HERE``, drops cells tagged ``instructor-only``,
clears every output and embeds the rubric. Beside each source notebook ``NAME.ipynb`` sits its rubric
``NAME.yaml``: the exercises (which check of fsslab.lab.assignments grades which function, and their points;
``inputs``: the notebook's variables the check also takes, e.g. the student's own runs) and the written
questions (points and what earns them, graded by hand).

``grade`` runs a submission from a fresh kernel (its saved outputs are ignored), then runs the rubric's checks on
the functions the notebook defined (the submission's own check cells do not count, so editing them changes
nothing) and gives each exercise ``points * cases passed / cases``. Every line of feedback is the check's:
one line per case, never a traceback. Nothing here needs nbgrader; ``grade`` needs nbclient and ipykernel
(``pip install 'fsslab[notebooks]'``), ``release`` nothing beyond the standard library and PyYAML.
"""

from __future__ import annotations

import copy
import json
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsslab.errors import FsslabError
from fsslab.lab.assignments import CHECKS, RESULT_MIME

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
ANSWER_STUB = "YOUR ANSWER HERE"
INSTRUCTOR_TAG = "instructor-only"
_GRADER_TAG = "fsslab-grader"


class CourseError(FsslabError):
    """A source, rubric or submission that cannot be released or graded (one message, no traceback)."""


# ----------------------------------------------------------------------------------------------- rubric

@dataclass
class Exercise:
    id: str
    title: str
    check: str  # a check of fsslab.lab.assignments (CHECKS)
    function: str  # the student's function it runs
    points: float
    rubric: str = ""
    inputs: list[str] = field(default_factory=list)  # the notebook's variables the check also takes (own runs)

    def to_dict(self) -> dict[str, Any]:
        # without inputs, as rubrics had it before they existed (the embedded rubrics of earlier releases)
        return {k: v for k, v in vars(self).items() if k != "inputs" or v}


@dataclass
class Question:
    id: str
    points: float
    rubric: str = ""


@dataclass
class Rubric:
    assignment: str
    title: str
    exercises: list[Exercise]
    questions: list[Question] = field(default_factory=list)

    @property
    def auto_points(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def manual_points(self) -> float:
        return sum(q.points for q in self.questions)

    def to_dict(self) -> dict[str, Any]:
        return {"assignment": self.assignment, "title": self.title,
                "exercises": [e.to_dict() for e in self.exercises], "questions": [vars(q) for q in self.questions]}


def parse_rubric(data: Any, assignment: str, where: str) -> Rubric:
    """A rubric from its YAML (or embedded) mapping; every mistake is a CourseError naming ``where``."""
    if not isinstance(data, dict):
        raise CourseError(f"{where}: a rubric is a mapping with 'exercises' (and 'questions')")
    exercises, questions = [], []
    for k, item in enumerate(data.get("exercises") or []):
        missing = [key for key in ("id", "check", "function", "points") if key not in (item or {})]
        if missing:
            raise CourseError(f"{where}: exercise {k + 1} lacks {', '.join(missing)}")
        if item["check"] not in CHECKS:
            raise CourseError(f"{where}: exercise {item['id']}: unknown check {item['check']!r} "
                              f"(fsslab.lab.assignments has {', '.join(CHECKS)})")
        inputs = item.get("inputs") or []
        if not isinstance(inputs, list) or not all(isinstance(n, str) and n.isidentifier() for n in inputs):
            raise CourseError(f"{where}: exercise {item['id']}: inputs must be a list of variable names, got {inputs!r}")
        exercises.append(Exercise(str(item["id"]), str(item.get("title", item["id"])), item["check"],
                                  str(item["function"]), float(item["points"]), str(item.get("rubric", "")),
                                  list(inputs)))
    for k, item in enumerate(data.get("questions") or []):
        if not isinstance(item, dict) or "id" not in item or "points" not in item:
            raise CourseError(f"{where}: question {k + 1} needs an id and points")
        questions.append(Question(str(item["id"]), float(item["points"]), str(item.get("rubric", ""))))
    if not exercises:
        raise CourseError(f"{where}: no exercises")
    ids = [e.id for e in exercises] + [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise CourseError(f"{where}: exercise and question ids must be unique, got {ids}")
    return Rubric(str(data.get("assignment", assignment)), str(data.get("title", assignment)), exercises, questions)


def load_rubric(path: str | Path) -> Rubric:
    path = Path(path)
    try:
        from fsslab.config.safe_yaml import load_yaml

        data = load_yaml(path.read_text(), str(path))  # anchors/aliases bounded, as every config fsslab reads
    except yaml.YAMLError as exc:
        raise CourseError(f"{path}: not valid YAML ({exc})") from None
    return parse_rubric(data, path.stem, str(path))


# ---------------------------------------------------------------------------------------------- release

def _lines(source: str | list[str]) -> list[str]:
    return ("".join(source) if isinstance(source, list) else source).split("\n")


def _strip_regions(lines: list[str], stub: list[str], where: str) -> tuple[list[str], int]:
    """``lines`` with each BEGIN/END SOLUTION region replaced by ``stub`` (indented like the BEGIN line)."""
    out: list[str] = []
    regions = 0
    inside: str | None = None
    for number, line in enumerate(lines, 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside is not None:
                raise CourseError(f"{where}, line {number}: '{BEGIN}' inside a solution region")
            inside = line[: len(line) - len(line.lstrip())]
            out.extend(inside + s for s in stub)
            regions += 1
        elif marker == END:
            if inside is None:
                raise CourseError(f"{where}, line {number}: '{END}' without '{BEGIN}'")
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise CourseError(f"{where}: '{BEGIN}' without '{END}'")
    return out, regions


def student_version(source: dict[str, Any], rubric: Rubric, name: str = "notebook") -> tuple[dict[str, Any], int]:
    """The student notebook of a source notebook (an nbformat dict) and the number of regions stripped."""
    nb = copy.deepcopy(source)
    cells, regions = [], 0
    for index, cell in enumerate(nb["cells"]):
        if INSTRUCTOR_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        where = f"{name}, cell {index}"
        if cell["cell_type"] in ("code", "markdown"):
            stub = CODE_STUB if cell["cell_type"] == "code" else [ANSWER_STUB]
            lines, found = _strip_regions(_lines(cell["source"]), stub, where)
            cell["source"] = "\n".join(lines)
            regions += found
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
        cells.append(cell)
    leftover = [c for c in cells if BEGIN in "".join(c["source"]) or END in "".join(c["source"])]
    if leftover:  # a marker inside a string or with trailing text: refuse rather than leak a solution
        raise CourseError(f"{name}: a solution marker is left after stripping: {leftover[0]['source'][:80]!r}")
    nb["cells"] = cells
    nb.setdefault("metadata", {})["fsslab"] = {"assignment": rubric.assignment, "released": True,
                                               "rubric": rubric.to_dict()}
    return nb, regions


def _read_notebook(path: Path) -> dict[str, Any]:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CourseError(f"{path}: not a readable notebook ({exc})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise CourseError(f"{path}: not a notebook (no cells)")
    return nb


def _write_notebook(nb: dict[str, Any], path: Path) -> None:
    # nbformat's own layout (indent 1, sorted keys, trailing newline): a release diffs cleanly against the last
    for cell in nb["cells"]:
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cell["source"] = text.splitlines(keepends=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def source_notebooks(src_dir: str | Path) -> list[tuple[Path, Path]]:
    """(notebook, rubric) of every assignment in ``src_dir``: each ``NAME.ipynb`` with its ``NAME.yaml``."""
    src = Path(src_dir)
    if not src.is_dir():
        raise CourseError(f"{src}: no such directory")
    pairs = []
    for notebook in sorted(src.glob("*.ipynb")):
        rubric = notebook.with_suffix(".yaml")
        if not rubric.is_file():
            raise CourseError(f"{notebook}: its rubric {rubric.name} is missing (see docs/instructor.md)")
        pairs.append((notebook, rubric))
    if not pairs:
        raise CourseError(f"{src}: no source notebooks (*.ipynb)")
    return pairs


def release(src_dir: str | Path, out_dir: str | Path, force: bool = False) -> list[dict[str, Any]]:
    """Write the student version of every source notebook of ``src_dir`` into ``out_dir`` (notebooks only: the
    rubrics, references and anything else in ``src_dir`` stay behind). A file in ``out_dir`` that is not an
    earlier release is replaced only with ``force``."""
    src, out = Path(src_dir), Path(out_dir)
    pairs = source_notebooks(src)
    if out.resolve() == src.resolve():
        raise CourseError("OUT_DIR is SRC_DIR: the release would overwrite the sources")
    planned = []
    for notebook, rubric_path in pairs:
        rubric = load_rubric(rubric_path)
        source = _read_notebook(notebook)
        code = "\n".join("".join(c["source"]) for c in source["cells"] if c["cell_type"] == "code")
        missing = [e.function for e in rubric.exercises if f"def {e.function}(" not in code]
        if missing:
            raise CourseError(f"{rubric_path}: the notebook defines no {', '.join(missing)} (the rubric's 'function')")
        student, regions = student_version(source, rubric, notebook.name)
        if regions == 0:
            raise CourseError(f"{notebook}: no '{BEGIN}' region: nothing to release")
        target = out / notebook.name
        if target.exists() and not force:
            earlier = _read_notebook(target).get("metadata", {}).get("fsslab", {})
            if not earlier.get("released"):
                raise CourseError(f"{target} exists and is not a released notebook (use --force to replace it)")
        planned.append((target, student, {"notebook": str(target), "source": str(notebook), "regions": regions,
                                          "points": rubric.auto_points + rubric.manual_points}))
    out.mkdir(parents=True, exist_ok=True)
    for target, student, _ in planned:
        _write_notebook(student, target)
    return [info for _, _, info in planned]


# ------------------------------------------------------------------------------------------------ grade

@dataclass
class ExerciseGrade:
    id: str
    title: str
    points: float
    max_points: float
    feedback: list[str]
    result: dict[str, Any] | None


@dataclass
class QuestionGrade:
    id: str
    max_points: float
    answered: bool
    answer: str
    rubric: str


@dataclass
class Grade:
    assignment: str
    title: str
    submission: str
    rubric_from: str
    exercises: list[ExerciseGrade]
    questions: list[QuestionGrade]
    errors: list[str]  # cells of the submission that raised: one line each

    @property
    def points(self) -> float:
        return round(sum(e.points for e in self.exercises), 2)

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)

    def to_dict(self) -> dict[str, Any]:
        return {"assignment": self.assignment, "title": self.title, "submission": self.submission,
                "rubric": self.rubric_from, "points": self.points, "max_points": self.max_points,
                "manual_points": sum(q.max_points for q in self.questions),
                "exercises": [vars(e) for e in self.exercises], "questions": [vars(q) for q in self.questions],
                "cell_errors": self.errors}

    def text(self) -> str:
        def number(x: float) -> str:
            return f"{x:g}"

        lines = [f"{self.assignment}: {self.title}", f"submission: {self.submission}",
                 f"rubric: {self.rubric_from}"]
        for e in self.exercises:
            lines.append(f"  {e.id:<4} {e.title:<40} {number(e.points):>5} / {number(e.max_points)}")
            lines.extend(f"       {line}" for line in e.feedback)
        lines.append(f"automatic total: {number(self.points)} / {number(self.max_points)}")
        for q in self.questions:
            state = "answered" if q.answered else "NOT ANSWERED"
            lines.append(f"  {q.id:<4} question, graded by hand ({number(q.max_points)} points): {state}")
            if q.answered:
                lines.append(f"       answer: {q.answer[:300]}" + ("..." if len(q.answer) > 300 else ""))
            if q.rubric:
                lines.append(f"       rubric: {q.rubric}")
        if self.errors:
            lines.append("cells that raised an error:")
            lines.extend(f"  {e}" for e in self.errors)
        return "\n".join(lines)


def _assignment_of(nb: dict[str, Any], path: Path) -> str:
    meta = nb.get("metadata", {}).get("fsslab", {})
    return str(meta.get("assignment") or path.stem)


def find_rubric(nb: dict[str, Any], path: Path, source_dir: str | Path | None = None) -> tuple[Rubric, str]:
    """The rubric of a submission and where it came from: ``source_dir``/NAME.yaml when given, else NAME.yaml
    beside the submission, else the rubric the release embedded in the notebook."""
    name = _assignment_of(nb, path)
    if source_dir is not None:
        candidate = Path(source_dir) / f"{name}.yaml"
        if not candidate.is_file():
            raise CourseError(f"{candidate}: no rubric for assignment {name!r} in {source_dir}")
        return load_rubric(candidate), str(candidate)
    beside = path.parent / f"{name}.yaml"
    if beside.is_file():
        return load_rubric(beside), str(beside)
    embedded = nb.get("metadata", {}).get("fsslab", {}).get("rubric")
    if embedded is None:
        raise CourseError(f"{path}: no rubric: pass --source SRC_DIR (the folder with {name}.yaml)")
    return parse_rubric(embedded, name, f"{path} (embedded rubric)"), "embedded in the notebook at release"


def _grader_cells(rubric: Rubric) -> list[dict[str, Any]]:
    head = ("import importlib as _fsslab_importlib\n"
            "import fsslab.lab.assignments as _fsslab_checks\n"
            "_fsslab_checks = _fsslab_importlib.reload(_fsslab_checks)  # the shipped checks, however the notebook "
            "changed them")
    cells = [head] + [f"_fsslab_checks.show(_fsslab_checks.run_check({e.check!r}, globals().get({e.function!r})"
                      + "".join(f", globals().get({name!r})" for name in e.inputs) + "))"
                      for e in rubric.exercises]
    return [{"cell_type": "code", "execution_count": None, "id": f"fsslab-grader-{k}",
             "metadata": {"tags": [_GRADER_TAG]}, "outputs": [], "source": source}
            for k, source in enumerate(cells)]


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def grade(submission: str | Path, source_dir: str | Path | None = None, timeout: float = 120,
          kernel_name: str = "python3") -> Grade:
    """Run ``submission`` from a fresh kernel in its own folder and grade it with its rubric."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        raise CourseError(f"grading needs nbclient and nbformat ({exc}): pip install 'fsslab[notebooks]'") from None
    path = Path(submission)
    if not path.is_file():
        raise CourseError(f"{path}: no such notebook")
    raw = _read_notebook(path)
    rubric, rubric_from = find_rubric(raw, path, source_dir)
    with warnings.catch_warnings():  # a notebook older than nbformat 4.5 has no cell ids: added below
        warnings.simplefilter("ignore")
        nb = nbformat.reads(json.dumps(raw), as_version=4)  # sources as strings, whatever the file's layout
    nb.nbformat_minor = max(nb.nbformat_minor, 5)  # cell ids (the grader's cells have some)
    for index, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{index}")
    nb.cells = [c for c in nb.cells if _GRADER_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    student_cells = len(nb.cells)
    nb.cells.extend(nbformat.from_dict(c) for c in _grader_cells(rubric))
    def cell_timeout(cell: Any) -> float:  # the checks get at least a minute, whatever the student cells get
        return max(timeout, 60.0) if _GRADER_TAG in cell.get("metadata", {}).get("tags", []) else timeout

    client = NotebookClient(nb, timeout=timeout, timeout_func=cell_timeout, kernel_name=kernel_name,
                            allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute(stderr=subprocess.DEVNULL)  # the kernel's own log lines are not feedback
    except Exception as exc:  # noqa: BLE001 - a dead kernel or one that did not start: no check result, all points 0
        run_error = f"the notebook could not be run to the end: {type(exc).__name__}: {_one_line(exc)}"
    else:
        run_error = None

    errors = []
    for index, cell in enumerate(nb.cells[:student_cells]):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                first = _one_line(cell.source.strip().splitlines()[0] if cell.source.strip() else "")
                detail = (f"interrupted after {timeout:g} s (--timeout)" if output.get("ename") == "KeyboardInterrupt"
                          else _one_line(output.get("evalue", "")))
                errors.append(f"cell {index} ({first}): {output.get('ename')}: {detail}")
    if run_error:
        errors.append(run_error)
    results = {}
    for cell in nb.cells[student_cells:]:
        for output in cell.get("outputs", []):
            found = output.get("data", {}).get(RESULT_MIME)
            if found:
                results[found["check"]] = (found, output["data"].get("text/plain", ""))
    exercises = []
    for e in rubric.exercises:
        if e.check in results:
            found, text = results[e.check]
            share = found["passed"] / found["total"] if found["total"] and found["error"] is None else 0.0
            exercises.append(ExerciseGrade(e.id, e.title, round(e.points * share, 2), e.points,
                                           str(text).splitlines(), found))
        else:
            exercises.append(ExerciseGrade(e.id, e.title, 0.0, e.points,
                                           [f"✘ {e.check}: the check could not run (see the errors below)"], None))
    answers: dict[str, str] = {}
    for cell in nb.cells[:student_cells]:
        question = cell.get("metadata", {}).get("fsslab", {}).get("question")
        if question is not None:
            answers[str(question)] = answers.get(str(question), "") + _one_line(cell.source, 10_000)
    questions = []
    for q in rubric.questions:
        answer = " ".join(answers.get(q.id, "").replace(ANSWER_STUB, "").replace(BEGIN, "").replace(END, "").split())
        answered = bool(answer)
        questions.append(QuestionGrade(q.id, q.points, answered, answer if answered else "", q.rubric))
    return Grade(rubric.assignment, rubric.title, str(path), rubric_from, exercises, questions, errors)
