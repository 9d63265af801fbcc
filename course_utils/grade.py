"""Grade a folder of learner notebooks with the chapters' own checks.

Usage: python -m course_utils.grade SUBMISSIONS_DIR [--csv grades.csv] [--cell-timeout 600] [--full]

Each notebook runs headless, top to bottom, in quick mode (COURSE_QUICK=1; --full for the chapter's budget).
Right after each exercise cell (a cell whose code calls `check_...(...)` at the top level) the grader calls the
same check from `course_utils.checks` itself, so a learner who redefines a check or edits its printout gains
nothing. A cell that raises is recorded and the run goes on; a cell that runs past the time limit is interrupted;
a notebook that cannot be read or whose kernel dies is reported. The run never stops on a learner's notebook.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .budget import QUICK_ENV

RESULT_MARK = "__course_grade__"


@dataclass
class Grade:
    """One exercise of one learner: pass, fail, error, timeout or not run, with the check's message."""

    learner: str
    exercise: str
    result: str
    message: str


def check_call(source: str) -> ast.Call | None:
    """The last top-level `check_...(...)` call in a code cell, if any."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    calls = [node.value for node in tree.body
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
             and isinstance(node.value.func, ast.Name) and node.value.func.id.startswith("check_")]
    return calls[-1] if calls else None


def grader_source(call: ast.Call) -> str:
    """Code that runs the real check on the learner's objects and prints a marked result line."""
    args = ", ".join(ast.unparse(arg) for arg in call.args + call.keywords)
    return (f"import course_utils.checks as _course_checks\n"
            f"_course_result = _course_checks.{call.func.id}({args})\n"
            f"print({RESULT_MARK!r}, bool(_course_result), repr(_course_result))")


def _printed(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _error(cell: nbformat.NotebookNode) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"[:200]
    return None


def grade_notebook(path: Path, cell_timeout: int = 600, notebook_timeout: int = 3600) -> list[Grade]:
    """Run one learner notebook and grade each of its exercises."""
    learner = path.stem
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # not a notebook: report it, never crash the run
        return [Grade(learner, "(notebook)", "error", f"cannot read the notebook: {exc}"[:200])]
    exercises = {i: call for i, cell in enumerate(nb.cells)
                 if cell.cell_type == "code" and (call := check_call(cell.source)) is not None}
    if not exercises:
        return [Grade(learner, "(notebook)", "error", "no exercise cells (no check_...(...) calls) found")]
    grades: dict[int, Grade] = {i: Grade(learner, call.func.id, "not run", "the run stopped before this cell")
                                for i, call in exercises.items()}
    notes: list[Grade] = []
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                if time.monotonic() - start > notebook_timeout:
                    notes.append(Grade(learner, "(notebook)", "timeout",
                                       f"stopped after {notebook_timeout} s at cell {index}"))
                    break
                try:
                    client.execute_cell(cell, index)
                    error = _error(cell)
                    timed_out = bool(error) and error.startswith("KeyboardInterrupt")  # interrupted
                except CellTimeoutError:
                    error, timed_out = None, True
                if timed_out:
                    message = f"cell {index} ran past {cell_timeout} s and was interrupted"
                    if index in grades:
                        grades[index] = Grade(learner, exercises[index].func.id, "timeout", message)
                    else:
                        notes.append(Grade(learner, "(notebook)", "timeout", message))
                    continue
                if index not in grades:
                    if error:
                        notes.append(Grade(learner, "(notebook)", "error", f"cell {index}: {error}"))
                    continue
                probe = nbformat.v4.new_code_cell(grader_source(exercises[index]))
                try:
                    client.execute_cell(probe, index)
                except CellTimeoutError:
                    grades[index] = Grade(learner, exercises[index].func.id, "timeout",
                                          f"the check ran past {cell_timeout} s")
                    continue
                grades[index] = _read_probe(learner, exercises[index].func.id, probe, error)
    except DeadKernelError as exc:
        notes.append(Grade(learner, "(notebook)", "error", f"the kernel died: {exc}"[:200]))
    except Exception as exc:  # a kernel that will not start, for example
        notes.append(Grade(learner, "(notebook)", "error", f"{type(exc).__name__}: {exc}"[:200]))
    return notes + [grades[i] for i in sorted(grades)]


def _read_probe(learner: str, exercise: str, probe: nbformat.NotebookNode, cell_error: str | None) -> Grade:
    for line in _printed(probe).splitlines():
        if line.startswith(RESULT_MARK):
            _, passed, message = line.split(" ", 2)
            return Grade(learner, exercise, "pass" if passed == "True" else "fail", message)
    reason = _error(probe) or "the check printed nothing"
    if cell_error:
        reason = f"{cell_error} (then the check: {reason})"
    return Grade(learner, exercise, "error", reason)


def print_table(grades: list[Grade]) -> None:
    """Learners down, exercises across; one short word per cell."""
    learners = list(dict.fromkeys(g.learner for g in grades))
    exercises = [e for e in dict.fromkeys(g.exercise for g in grades) if e != "(notebook)"]
    width = max([len(name) for name in learners] + [7])
    print(f"{'learner':<{width}}  " + "  ".join(e.removeprefix("check_") for e in exercises))
    for learner in learners:
        row = {g.exercise: g.result for g in grades if g.learner == learner}
        cells = [row.get(e, "-").ljust(len(e.removeprefix("check_"))) for e in exercises]
        print(f"{learner:<{width}}  " + "  ".join(cells))
    for g in grades:
        if g.exercise == "(notebook)":
            print(f"note: {g.learner}: {g.result}: {g.message}")


def write_csv(grades: list[Grade], path: Path) -> None:
    """One row per learner and exercise: learner, exercise, result, message."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["learner", "exercise", "result", "message"])
        writer.writerows([g.learner, g.exercise, g.result, g.message] for g in grades)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="a folder of learner notebooks (*.ipynb)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the grades here")
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--notebook-timeout", type=int, default=3600, help="seconds per notebook")
    parser.add_argument("--full", action="store_true", help="the chapters' full budgets, not quick mode")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder of notebooks")
    notebooks = sorted(args.submissions.glob("*.ipynb"))
    if not notebooks:
        parser.error(f"no .ipynb files in {args.submissions}")
    if not args.full:
        os.environ[QUICK_ENV] = "1"  # the kernels inherit it
    grades = []
    for path in notebooks:
        print(f"grading {path.name} ...", flush=True)
        grades += grade_notebook(path, args.cell_timeout, args.notebook_timeout)
    print_table(grades)
    if args.csv:
        write_csv(grades, args.csv)
        print(f"grades written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
