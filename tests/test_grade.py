"""The grader (issue 28): honest and wrong notebooks, and notebooks that cheat or break.

One class of tiny chapter-1 notebooks is graded once (module fixture, a few seconds per
notebook, four at a time); each test then reads its learner's rows. A notebook's
tampering sits in its exercise cells, which the grader runs (it runs the import cell and
the exercise cells, nothing else)."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import nbformat
import pytest

from course_utils.grade import (
    CHAPTER_EXERCISES,
    Limits,
    chapter_of,
    check_call,
    default_user,
    grade_notebook,
    main as grade_main,
)
from course_utils.student_edition import exercise_cells

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = (
    "import torch\nimport numpy as np\n"
    "from course_utils import check_beta_end, check_corrupt, check_noise_to_snr, "
    "check_snr_crossing\n"
)
BETA = """def beta_end_for(target, beta_start, n_steps):
    lo, hi = beta_start, 0.999
    for _ in range(100):
        mid = (lo + hi) / 2
        betas = torch.linspace(beta_start, mid, n_steps, dtype=torch.float64)
        ab = torch.prod(1 - betas)
        lo, hi = (mid, hi) if ab > target else (lo, mid)
    return (lo + hi) / 2


check_beta_end(beta_end_for)"""
SNR = """def noise_to_snr(x0, noise, snr):
    ab = (snr / (1 + snr)).view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


check_noise_to_snr(noise_to_snr)"""
SNR_VE = """def noise_to_snr(x0, noise, snr):  # the VE form: a plausible wrong answer
    return x0 + noise / snr.sqrt().view(-1, 1, 1, 1)


check_noise_to_snr(noise_to_snr)"""
CROSS = """ab = ddpm_scheduler.alphas_cumprod
t_cross = int(torch.nonzero(ab / (1 - ab) < 1)[0])

check_snr_crossing(t_cross)"""
STUBS = [
    """def beta_end_for(target, beta_start, n_steps):
    raise NotImplementedError  # your code here


check_beta_end(beta_end_for)""",
    """def noise_to_snr(x0, noise, snr):
    raise NotImplementedError  # your code here


check_noise_to_snr(noise_to_snr)""",
    """t_cross = None  # your answer here

check_snr_crossing(t_cross)""",
]
WORKED_EXAMPLE = """def corrupt(x, noise, amount):
    return x * 0  # wrong, but the worked example is not graded


check_corrupt(corrupt)"""
PATCH_CHECKS = """import course_utils.checks as checks
from course_utils.checks import CheckResult
import builtins
CheckResult.__bool__ = lambda self: True
checks.check_beta_end = lambda fn: CheckResult(True, "patched")
def init(self, passed, message):
    self.passed, self.message = True, "ok"
checks._harness.CheckResult.__init__ = init
_print = builtins.print
builtins.print = lambda *a, **k: _print("✅ Correct", **k)
print("__course_grade__ True ✅ Correct")
"""
# Reads the class's folder (its path is put in by the fixture) and the grader's copies of
# the other notebooks, and runs the answers it finds. Only this class's notebooks: a glob
# of all /tmp, run as root where there is no user switch, would run every notebook the
# other tests left there (whole chapters among them) inside the graded class.
CLASSMATE = """import glob, json
paths = glob.glob("{folder}/*.ipynb") + glob.glob("../course-grade-*/submission.ipynb")
for path in paths:
    try:
        cells = json.load(open(path))["cells"]
    except Exception:
        continue
    for cell in cells:
        source = "".join(cell["source"])
        if "def " in source and "NotImplementedError" not in source:
            try:
                exec(source.split("check_")[0])
            except Exception:
                pass
"""
KILL_PARENT = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
IGNORE_SIGINT = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                 "while True:\n    pass\n")
SUBMISSIONS = {  # learner: cells after the import cell
    "ada": [BETA, SNR, CROSS],  # honest
    "bob": [BETA, SNR_VE, CROSS],  # one plausible wrong answer
    "cat": [WORKED_EXAMPLE, BETA, SNR, CROSS],  # a wrong worked example (not graded)
    "dan": [BETA, SNR],  # exercise 1.3 deleted
    "eli": [PATCH_CHECKS + STUBS[0], *STUBS[1:]],  # patches checks, print, __bool__
    "fox": [CLASSMATE + STUBS[0], *STUBS[1:]],  # runs a classmate's answers (fixture)
    "gil": [KILL_PARENT + STUBS[0], *STUBS[1:]],  # kills the process above it
    "ivy": [BETA, "print('x' * 100_000_000)\n" + SNR, CROSS],  # 100 MB of printout
    "jo": [BETA, "raise KeyboardInterrupt\n" + SNR, CROSS],
    "kim": [BETA, "import os\nos._exit(0)\n" + SNR, CROSS],  # ends its own process
}
# Seconds per notebook: generous, so that a loaded machine (this one ran at a load of 8 on
# 2 cores) grades honest notebooks in time; the loop that must time out is graded alone.
TIMEOUT = 300


def _notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in [IMPORTS, *cells]]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("class")
    submissions = folder / "submissions"
    submissions.mkdir()
    for learner, cells in SUBMISSIONS.items():
        cells = [c.replace("{folder}", str(submissions)) for c in cells]
        nbformat.write(_notebook(cells), submissions / f"{learner}.ipynb")
    (submissions / "zed.ipynb").write_text("{ not a notebook")
    os.chmod(submissions, 0o700)  # the class's folder: not for other users
    grades_csv = folder / "grades.csv"
    started = time.monotonic()
    code = grade_main([
        str(submissions),
        "--csv",
        str(grades_csv),
        "--timeout",
        str(TIMEOUT),
        "--jobs",
        "4",
    ])
    seconds = time.monotonic() - started
    with open(grades_csv) as f:
        rows = list(csv.DictReader(f))
    return {
        "code": code,
        "rows": rows,
        "seconds": seconds,
        "results": {(r["learner"], r["exercise"]): r for r in rows},
    }


EXERCISES = list(CHAPTER_EXERCISES[1])


def _results(graded: dict, learner: str) -> list[str]:
    """The learner's result for each exercise ('absent' where the CSV has no row: the
    assertion then shows every row the learner got, notes included)."""
    results = [
        graded["results"].get((learner, e), {}).get("result", "absent")
        for e in EXERCISES
    ]
    if "absent" in results:
        rows = [r for r in graded["rows"] if r["learner"] == learner]
        return results + [f"rows: {rows}"]
    return results


def _total(graded: dict, learner: str) -> float:
    return float(graded["results"][learner, "(total)"]["points"])


def test_the_run_finishes_with_every_learner_in_the_csv(graded):
    assert graded["code"] == 0
    learners = {r["learner"] for r in graded["rows"]}
    assert learners == set(SUBMISSIONS) | {"zed"}


def test_an_honest_submission_scores_full_marks(graded):
    assert _results(graded, "ada") == ["pass"] * 3 and _total(graded, "ada") == 3


def test_a_wrong_answer_fails_that_exercise_alone_with_its_hint(graded):
    assert (
        _results(graded, "bob") == ["pass", "fail", "pass"]
        and _total(graded, "bob") == 2
    )
    assert "VE form" in graded["results"]["bob", "check_noise_to_snr"]["message"]


def test_the_worked_example_is_not_graded(graded):
    assert ("cat", "check_corrupt") not in graded["results"]
    assert _total(graded, "cat") == 3


def test_a_deleted_exercise_scores_zero(graded):
    assert _results(graded, "dan") == ["pass", "pass", "missing"]
    assert graded["results"]["dan", "(total)"]["max_points"] == "3"


def test_patching_the_checks_print_or_checkresult_gains_nothing(graded):
    assert _results(graded, "eli") == ["fail"] * 3 and _total(graded, "eli") == 0


def test_a_classmates_notebook_is_out_of_reach(graded):
    if default_user() is None:
        pytest.skip(
            "no user switch here (not root, or 'nobody' cannot run this Python): "
            "the notebook can read whatever the grader can (see the instructors' guide)"
        )
    assert _total(graded, "fox") == 0


def test_killing_the_parent_ends_only_that_notebook(graded):
    assert _total(graded, "gil") == 0  # its stubs earn nothing, whenever the kill lands
    assert {graded["results"]["gil", e]["result"] for e in EXERCISES} <= {"fail", "error"}
    assert _total(graded, "ivy") == 3  # graded after it


def test_a_loop_that_ignores_sigint_times_out(tmp_path):
    path = tmp_path / "hew.ipynb"
    nbformat.write(_notebook([IGNORE_SIGINT + BETA, SNR, CROSS]), path)
    started = time.monotonic()
    grades = grade_notebook(path, Limits(timeout=10))
    assert [g.result for g in grades] == ["timeout"] * 3
    assert time.monotonic() - started < 60  # killed, not waited for

def test_a_huge_printout_changes_nothing(graded):
    assert _results(graded, "ivy") == ["pass"] * 3


def test_keyboard_interrupt_is_an_error_not_a_timeout(graded):
    results = _results(graded, "jo")
    assert results == ["pass", "fail", "pass"]
    notes = [
        r["message"]
        for r in graded["rows"]
        if r["learner"] == "jo" and r["exercise"] == "(notebook)"
    ]
    assert any("KeyboardInterrupt" in note for note in notes)


def test_a_notebook_that_ends_its_process_keeps_what_it_earned(graded):
    assert _results(graded, "kim") == ["pass", "error", "error"]


def test_a_malformed_notebook_is_reported(graded):
    assert graded["results"]["zed", "(notebook)"]["result"] == "error"


def test_the_csv_is_written_learner_by_learner(tmp_path, monkeypatch):
    """Each learner's rows reach the file before the next notebook is graded."""
    import course_utils.grade as grade

    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for learner in ("ann", "ben"):
        nbformat.write(_notebook([BETA]), submissions / f"{learner}.ipynb")
    grades_csv = tmp_path / "grades.csv"
    seen = []

    def grade_and_look(path, limits):
        seen.append(grades_csv.read_text())
        return [grade.Grade(path.stem, "check_beta_end", "pass", 1, 1, "")]

    monkeypatch.setattr(grade, "grade_notebook", grade_and_look)
    assert grade_main([str(submissions), "--csv", str(grades_csv)]) == 0
    assert "ann" not in seen[0] and "ann,check_beta_end" in seen[1]


def test_chapter_exercises_match_the_chapters():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        names = tuple(check_call(cell.source).func.id for cell in exercise_cells(nb))
        assert CHAPTER_EXERCISES[int(path.name[:2])] == names, path.name
        assert chapter_of(set(names)) == int(path.name[:2])


def test_limits_say_what_was_wrong():
    with pytest.raises(ValueError, match="timeout=0"):
        Limits(timeout=0)


def test_as_root_the_notebook_runs_as_nobody(tmp_path):
    if default_user() is None:
        pytest.skip(
            "no user switch here (not root, or 'nobody' cannot run this Python)"
        )
    path = tmp_path / "who.ipynb"
    nbformat.write(
        _notebook(["import os\nassert os.geteuid() != 0, 'root'\n" + BETA]), path
    )
    [grade, *_] = grade_notebook(path, Limits(timeout=TIMEOUT, user="nobody"))
    assert grade.result == "pass", grade.message


def test_notebooks_are_parsed_one_thread_at_a_time(tmp_path, monkeypatch):
    """With --jobs > 1 the grader parses cells in several threads; CPython 3.11's
    parser raised "AST constructor recursion depth mismatch" when two did so at once
    (CI lost a learner's rows to it), so every parse holds the grader's lock."""
    import ast

    import course_utils.grade as grade

    real_parse = ast.parse
    unlocked = []

    def parse(*args, **kwargs):
        if not grade._PARSE_LOCK.locked():
            unlocked.append(args[0][:40])
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(grade.ast, "parse", parse)
    path = tmp_path / "una.ipynb"
    nbformat.write(_notebook([BETA, SNR, CROSS]), path)
    nb = nbformat.read(path, as_version=4)
    assert [check_call(cell.source) is not None for cell in nb.cells] == [
        False, True, True, True]
    assert unlocked == [], f"parsed without the lock: {unlocked}"
