"""Grade a folder of Otter submissions without Docker: `otter run` on each, one CSV.

Usage: python scripts/otter_grade_local.py AUTOGRADER_ZIP SUBMISSIONS_DIR
       --csv grades.csv [--timeout 600]

Otter's own `otter grade` runs each submission in a Docker container. Where Docker is
absent, this runs `otter run` (Otter's non-containerised grading) on each notebook, each
in a fresh temporary folder holding a copy of that notebook only, in a session of its
own, with a wall-clock limit; the CSV gets each learner's rows (one per question, and a
total) as soon as they are graded. LOCAL MODE RUNS STUDENT CODE UNSANDBOXED, as the user
who runs this script: see book/instructors.md for what that means and for containerised
grading."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils.grade import run_in_session  # noqa: E402

HEADER = ["learner", "question", "score", "max_score", "message"]


def otter_executable() -> str:
    """The `otter` command next to this Python (its virtual environment), else on PATH.
    """
    beside = Path(sys.executable).with_name("otter")
    found = str(beside) if beside.exists() else shutil.which("otter")
    if found is None:
        raise FileNotFoundError(
            "no `otter` command: pip install otter-grader "
            "(requirements-test.txt pins it)"
        )
    return found


def grade_one(autograder: Path, notebook: Path, timeout: float) -> list[list]:
    """`otter run` on one notebook: rows of learner, question, score, max_score,
    message."""
    learner = notebook.stem
    with tempfile.TemporaryDirectory(prefix="otter-local-") as folder:
        work = Path(folder)
        shutil.copyfile(notebook, work / notebook.name)
        (work / "out").mkdir()
        env = dict(
            os.environ,
            PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        )
        code = run_in_session(
            [otter_executable(), "run", "-a", str(autograder.resolve()), "-o", "out",
             "--no-logo", notebook.name], work, env, timeout)
        problem = (f"ran past {timeout:g} s" if code is None else None if code == 0
                   else f"otter run ended with status {code}")
        results = work / "out" / "results.json"
        try:
            tests = json.loads(results.read_text())["tests"]
        except (OSError, ValueError, KeyError, TypeError):
            return [[learner, "(notebook)", 0, 0, problem or "no results written"]]
    rows = [
        [
            learner,
            t.get("name"),
            t.get("score", 0),
            t.get("max_score", 0),
            str(t.get("output", ""))[:300],
        ]
        for t in tests
        if isinstance(t, dict)
    ]
    if problem:
        rows.append([learner, "(notebook)", 0, 0, problem])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "autograder", type=Path, help="the autograder zip otter assign wrote"
    )
    parser.add_argument(
        "submissions", type=Path, help="a folder of submitted notebooks"
    )
    parser.add_argument("--csv", type=Path, required=True, help="where the grades go")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per notebook"
    )
    args = parser.parse_args(argv)
    if not args.autograder.is_file():
        parser.error(f"{args.autograder} is not a file (expected otter assign's zip)")
    notebooks = (
        sorted(args.submissions.glob("*.ipynb")) if args.submissions.is_dir() else []
    )
    if not notebooks:
        parser.error(f"no .ipynb files in {args.submissions}")
    with open(args.csv, "w", newline="") as f:
        csv.writer(f).writerow(HEADER)
    for notebook in notebooks:
        print(f"grading {notebook.name} ...", flush=True)
        rows = grade_one(args.autograder, notebook, args.timeout)
        scored = [r for r in rows if r[1] != "(notebook)"]
        rows.append([
            notebook.stem,
            "(total)",
            sum(float(r[2]) for r in scored),
            sum(float(r[3]) for r in scored),
            "",
        ])
        with open(args.csv, "a", newline="") as f:
            csv.writer(f).writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        print(f"  {rows[-1][2]:g}/{rows[-1][3]:g}", flush=True)
    print(f"grades written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
