"""The student edition (solutions removed, stubs the checks reject); the grader is in test_grade.py."""

import ast
import re
from pathlib import Path

import nbformat
import pytest
from diffusers import DDPMScheduler

import course_utils.checks as checks
from course_utils.grade import check_call
from course_utils.student_edition import (exercise_cells, main as student_main, remove_solutions,
                                          solution_blocks)

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
# Chapter objects that some checks take besides the learner's function: small stand-ins of the same shape.
CHAPTER_OBJECTS = {
    "sweep": {"DDIM": [(5, 4.0, 0.1), (10, 2.0, 0.2), (20, 1.5, 0.4)]},
    "guidance_table": {0: (0.2, 1.5), 1: (0.8, 1.1), 4: (0.97, 2.0)},
}


def _solutions(nb: nbformat.NotebookNode) -> list[str]:
    """The Python code of every solution block in the notebook."""
    blocks = [b for c in nb.cells if c.cell_type == "markdown" for b in solution_blocks(c.source)]
    return [code.strip() for block in blocks for code in PYTHON_BLOCK.findall(block)]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_edition_has_no_solutions_and_keeps_every_exercise(path, tmp_path):
    original = nbformat.read(path, as_version=4)
    assert student_main([str(tmp_path), str(path)]) == 0
    student = nbformat.read(tmp_path / path.name, as_version=4)
    text = "\n".join(cell.source for cell in student.cells)
    assert "{solution}" not in text
    solutions = _solutions(original)
    assert solutions, f"{path.name}: no solution code found to remove"
    for code in solutions:
        assert code not in text, f"{path.name}: solution code survives:\n{code[:200]}"
    assert len(exercise_cells(student)) == len(exercise_cells(original)) >= 3
    assert "{exercise}" in text  # the questions stay
    assert "folded away" not in text  # nor a sentence about the solutions it no longer has
    assert student.metadata["course_edition"] == "student"


def _imports(nb: nbformat.NotebookNode) -> str:
    """The chapter's import cell (the first code cell that imports torch)."""
    return next(c.source for c in nb.cells if c.cell_type == "code" and "import torch" in c.source)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_check_rejects_the_student_stubs(path):
    nb = nbformat.read(path, as_version=4)
    remove_solutions(nb)
    for cell in exercise_cells(nb):
        call = check_call(cell.source)
        namespace = dict(CHAPTER_OBJECTS)
        exec(_imports(nb), namespace)
        stub = [node for node in ast.parse(cell.source).body  # all but the check call
                if ast.unparse(node) != ast.unparse(call)]
        exec(compile(ast.Module(body=stub, type_ignores=[]), path.name, "exec"), namespace)
        arguments = [eval(compile(ast.Expression(arg), "<arg>", "eval"), namespace) for arg in call.args]
        result = getattr(checks, call.func.id)(*arguments)
        assert not result, f"{path.name}: {call.func.id} accepts the stub: {result}"
        assert "Not yet" in repr(result)


def test_student_edition_refuses_to_overwrite_the_chapters():
    with pytest.raises(SystemExit):
        student_main([str(ROOT / "notebooks")])


def test_remove_solutions_keeps_text_around_a_solution():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "Before.\n\n````{solution} ex-a\n:class: dropdown\n\n```python\nx = 1\n```\n````\n\nAfter.")])
    assert remove_solutions(nb) == 1
    assert nb.cells[0].source == "Before.\n\n\nAfter."


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_published_solution_passes_its_check(path):
    """The folded solution after each exercise cell is right: its check accepts it."""
    nb = nbformat.read(path, as_version=4)
    exercises = exercise_cells(nb)
    tested = 0
    for cell in exercises:
        index = nb.cells.index(cell)
        # the solution block is in the markdown that follows the exercise cell, before the next code cell
        following = []
        for later in nb.cells[index + 1:]:
            if later.cell_type == "code":
                break
            following += [code for block in solution_blocks(later.source) for code in PYTHON_BLOCK.findall(block)]
        if not following:
            continue  # a solution in words (e.g. reading a measured table)
        call = check_call(cell.source)
        namespace = dict(CHAPTER_OBJECTS)
        exec(_imports(nb), namespace)
        stub = [node for node in ast.parse(cell.source).body if ast.unparse(node) != ast.unparse(call)]
        exec(compile(ast.Module(body=stub, type_ignores=[]), path.name, "exec"), namespace)
        namespace["ddpm_scheduler"] = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")  # chapter 1's
        for code in following:  # the solution replaces the stub's definitions
            try:
                exec(compile(code, f"{path.name} solution", "exec"), namespace)
            except NameError:  # a demo line that needs the chapter's objects: keep the definitions only
                definitions = [node for node in ast.parse(code).body
                               if isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom))]
                exec(compile(ast.Module(body=definitions, type_ignores=[]), f"{path.name} solution", "exec"),
                     namespace)
        arguments = [eval(compile(ast.Expression(arg), "<arg>", "eval"), namespace) for arg in call.args]
        result = getattr(checks, call.func.id)(*arguments)
        assert result, f"{path.name}: the published solution fails {call.func.id}: {result}"
        tested += 1
    assert tested >= 2, f"{path.name}: only {tested} solutions with code were checked"
