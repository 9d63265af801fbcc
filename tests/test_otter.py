"""The instructors' Otter-Grader assignments (issue 28).

The master notebooks are checked without Otter; `otter assign` and local grading only
where otter-grader is installed (`bash scripts/setup_env.sh otter`; the CI's offline
mirror does not hold it, so those tests skip there)."""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def masters(tmp_path_factory) -> dict[int, Path]:
    out = tmp_path_factory.mktemp("otter")
    assert _script("make_otter_assignments").main([str(out), "--seed", "5"]) == 0
    return {int(p.name[:2]): p for p in sorted(out.glob("*/*.ipynb"))}


def _blocks(nb: nbformat.NotebookNode, name: str) -> list[nbformat.NotebookNode]:
    """The cells between raw '# BEGIN name' and '# END name' cells."""
    inside, found = False, []
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith(f"# BEGIN {name}"):
            inside = True
        elif cell.cell_type == "raw" and cell.source.startswith(f"# END {name}"):
            inside = False
        elif inside:
            found.append(cell)
    return found


def test_every_chapter_gets_a_master_notebook(masters):
    assert sorted(masters) == [1, 2, 3, 4, 5, 6, 7]


def test_solutions_are_marked_and_hidden_tests_hold_literal_values(masters):
    for chapter, path in masters.items():
        nb = nbformat.read(path, as_version=4)
        solutions = _blocks(nb, "SOLUTION")
        assert len(solutions) == 3, path.name
        for cell in solutions:
            lines = cell.source.strip().splitlines()
            assert (
                lines[0] == "# BEGIN SOLUTION NO PROMPT"
                and lines[-1] == "# END SOLUTION"
            )
        tests = _blocks(nb, "TESTS")
        hidden = [c.source for c in tests if "hidden: true" in c.source]
        public = [c.source for c in tests if "hidden: true" not in c.source]
        assert len(hidden) >= 3 and len(public) == 3, path.name
        for source in hidden:  # literal expected values, no course code
            # (but for a tripwire on the course's code in 2.2 and 3.1: see below)
            tripwire = re.sub(r"from course_utils\.\w+ import [^\n]*\bas _course\b.*\n",
                              "", source)
            assert "course_utils" not in tripwire and "check_" not in source
            assert re.search(r"(expected = torch\.tensor\(|result == )", source), source
        for source in public:
            assert re.search(r"assert check_\w+\(", source)
        for cell in _blocks(nb, "PROMPT"):  # learners start from the chapter's stubs
            assert (
                "NotImplementedError" in cell.source
                or "# your answer here" in cell.source
            )


def test_the_hidden_inputs_change_with_the_seed(tmp_path):
    make = _script("make_otter_assignments")
    chapter = next((ROOT / "notebooks").glob("04_*.ipynb"))
    first = make.master_notebook(chapter, seed=1)
    second = make.master_notebook(chapter, seed=2)
    hidden = [
        [c.source for c in _blocks(nb, "TESTS") if "hidden: true" in c.source]
        for nb in (first, second)
    ]
    assert hidden[0] != hidden[1]


@pytest.mark.skipif(
    importlib.util.find_spec("otter") is None,
    reason="otter-grader is not installed (bash scripts/setup_env.sh otter)",
)
def test_otter_assign_then_local_grading_scores_each_submission(masters, tmp_path):
    """Chapter 1: otter assign, then honest (3/3), one wrong answer (2/3) and blank
    (0/3)."""
    master = masters[1]
    folder = tmp_path / "assignment"
    shutil.copytree(master.parent, folder)
    otter_cli = Path(sys.executable).with_name("otter")
    env_path = f"{Path(sys.executable).parent}"
    done = subprocess.run(
        [str(otter_cli), "assign", master.name, "dist"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": env_path + ":/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    student = nbformat.read(folder / "dist/student" / master.name, as_version=4)
    solved = nbformat.read(folder / "dist/autograder" / master.name, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "hidden: true" not in text and "torch.nonzero" not in text  # 1.3's solution
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    nbformat.write(solved, submissions / "ada.ipynb")
    wrong = nbformat.read(folder / "dist/autograder" / master.name, as_version=4)
    for cell in wrong.cells:
        if cell.cell_type == "code" and "def noise_to_snr" in cell.source:
            cell.source = (
                "def noise_to_snr(x0, noise, snr):\n"
                "    return x0 + noise / snr.sqrt().view(-1, 1, 1, 1)\n"
            )
    nbformat.write(wrong, submissions / "bob.ipynb")
    nbformat.write(student, submissions / "cy.ipynb")
    grades = tmp_path / "grades.csv"
    [autograder] = (folder / "dist/autograder").glob("*.zip")
    assert (
        _script("otter_grade_local").main([
            str(autograder),
            str(submissions),
            "--csv",
            str(grades),
            "--timeout",
            "300",
        ])
        == 0
    )
    with open(grades) as f:
        totals = {
            r["learner"]: float(r["score"])
            for r in csv.DictReader(f)
            if r["question"] == "(total)"
        }
    assert totals == {"ada": 3.0, "bob": 2.0, "cy": 0.0}


def test_hidden_tests_pass_on_the_published_solutions(masters):
    """Each hidden test, run as Otter runs it (after the setup and the solutions), passes;
    a literal that is not Python (JSON's null, say) would fail here."""
    for chapter, path in masters.items():
        nb = nbformat.read(path, as_version=4)
        namespace: dict = {}
        setup = next(c.source for c in nb.cells if c.cell_type == "code")
        exec(setup, namespace)
        for cell in _blocks(nb, "SOLUTION"):
            exec(cell.source, namespace)
        for cell in _blocks(nb, "TESTS"):
            if "hidden: true" in cell.source:
                exec(cell.source, namespace)  # as Otter does; AssertionError if it fails


def test_hidden_tests_reject_an_answer_that_runs_the_course_s_own_code(masters):
    """2.2 and 3.1 are answered by code that later chapters export to course_utils: a
    submission that calls it, however it reaches it, fails every hidden test."""
    delegating = {
        2: ("def ddpm_step", "import course_utils.ddpm as d\n"
            "def ddpm_step(x_t, eps, t, scheduler, noise):\n"
            "    return getattr(d, 'reverse_step')(x_t, eps, t, t - 1,\n"
            "        scheduler.alphas_cumprod, noise, 'small')\n"),
        3: ("def transform", "from course_utils import ImageTransform\n"
            "transform = ImageTransform(32, flip_prob=0.5)\n"),
    }
    for chapter, (defines, answer) in delegating.items():
        nb = nbformat.read(masters[chapter], as_version=4)
        namespace: dict = {}
        exec(next(c.source for c in nb.cells if c.cell_type == "code"), namespace)
        for cell in _blocks(nb, "SOLUTION"):
            exec(answer if defines in cell.source else cell.source, namespace)
        exercise = [c.source for c in _blocks(nb, "TESTS") if "hidden: true" in
                    c.source and "_course" in c.source]
        assert exercise, f"chapter {chapter}: no hidden test with a tripwire"
        for source in exercise:
            with pytest.raises(AssertionError):
                exec(source, dict(namespace))
