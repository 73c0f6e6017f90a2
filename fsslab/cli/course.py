"""``fsslab course release|grade``: gradable assignments from the command line (logic in fsslab.lab.course)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _cmd_release(args: argparse.Namespace) -> int:
    from fsslab.lab.course import release

    for info in release(args.src_dir, args.out_dir, force=args.force):
        print(f"released {info['notebook']} ({info['regions']} solution region(s) stripped, "
              f"{info['points']:g} points) from {info['source']}")
    print("rubrics, references and other files of SRC_DIR were not copied")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    from fsslab.lab.course import grade

    grades = [grade(path, source_dir=args.source, timeout=args.timeout) for path in args.submissions]
    if args.json:
        found = [g.to_dict() for g in grades]
        print(json.dumps(found[0] if len(found) == 1 else found, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(g.text() for g in grades))
    return 0


def add_course_parser(commands: Any) -> None:
    course = commands.add_parser(
        "course",
        help="gradable assignments: release student notebooks, grade submissions",
        description="Instructor tools for notebooks/assignments (docs/instructor.md): `release` strips the "
        "solution regions of the source notebooks, `grade` runs a submission and prints points per exercise "
        "with the checks' feedback.",
    )
    what = course.add_subparsers(dest="course_command", metavar="WHAT", required=True)
    rel = what.add_parser(
        "release", help="write the student versions of the source notebooks",
        description="For every NAME.ipynb in SRC_DIR (with its rubric NAME.yaml): replace each ### BEGIN SOLUTION"
        " / ### END SOLUTION region by a stub (code) or YOUR ANSWER HERE (markdown), drop cells tagged "
        "instructor-only, clear outputs, embed the rubric, write OUT_DIR/NAME.ipynb. Only notebooks are written.")
    rel.add_argument("src_dir", metavar="SRC_DIR", help="instructor sources, e.g. notebooks/assignments/source")
    rel.add_argument("out_dir", metavar="OUT_DIR", help="where the student notebooks go")
    rel.add_argument("--force", action="store_true",
                     help="replace files in OUT_DIR that are not earlier releases")
    rel.set_defaults(func=_cmd_release)
    grd = what.add_parser(
        "grade", help="run submissions and print points per exercise with the feedback",
        description="Run each SUBMISSION.ipynb from a fresh kernel in its folder (saved outputs are ignored), then "
        "run the rubric's checks on the functions it defined: points * cases passed / cases per exercise, one "
        "line of feedback per case, the questions listed for grading by hand. Needs nbclient "
        "(pip install 'fsslab[notebooks]').")
    grd.add_argument("submissions", nargs="+", metavar="SUBMISSION.ipynb")
    grd.add_argument("--source", default=None, metavar="SRC_DIR",
                     help="take the rubric NAME.yaml from SRC_DIR (default: beside the submission, else the one "
                     "embedded at release)")
    grd.add_argument("--json", action="store_true", help="print the grades as JSON")
    grd.add_argument("--timeout", type=float, default=120, help="seconds per cell (default 120)")
    grd.set_defaults(func=_cmd_grade)
