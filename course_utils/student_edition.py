"""Write the student edition: the chapters with every `{solution}` block removed.

Usage: python -m course_utils.student_edition OUT_DIR [notebooks/01_noise_and_schedules.ipynb ...]

The exercise cells are already stubs (`raise NotImplementedError`) that the checks reject, so removing the
solutions is all it takes. Figures and the rest of each chapter stay as they are.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

# A MyST solution block: an opening fence of 3+ backticks or colons with {solution}, up to the same fence.
SOLUTION_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{solution\}[^\n]*\n.*?^(?P=fence)[ \t]*$\n?", re.MULTILINE | re.DOTALL)
# Sentences about the folded solutions, which the student edition no longer has.
SOLUTION_SENTENCE = re.compile(r"[ \t]*[^.!?\n]*\bsolutions? (?:are|is) folded[^.!?]*[.!?]")
EXERCISE_CHECK = re.compile(r"^check_\w+\(", re.MULTILINE)
STUB_MARK = re.compile(r"# your (code|answer) here")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def solution_blocks(text: str) -> list[str]:
    """The `{solution}` blocks in a markdown cell, each with its fences."""
    return [match.group(0) for match in SOLUTION_BLOCK.finditer(text)]


def remove_solutions(nb: nbformat.NotebookNode) -> int:
    """Remove every `{solution}` block from the notebook's markdown cells; return how many went."""
    removed = 0
    kept_cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            removed += len(solution_blocks(cell.source))
            cell.source = SOLUTION_BLOCK.sub("", cell.source).strip("\n")
            cell.source = SOLUTION_SENTENCE.sub("", cell.source)
            if not cell.source.strip():
                continue  # the cell held nothing but a solution
        kept_cells.append(cell)
    nb.cells = kept_cells
    if "{solution}" in "".join(c.source for c in nb.cells if c.cell_type == "markdown"):
        raise ValueError("a {solution} block is left after removal: is its closing fence missing?")
    return removed


def exercise_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The exercises: code cells with a stub to fill in that call a `check_...` at the top level."""
    return [c for c in nb.cells if c.cell_type == "code" and EXERCISE_CHECK.search(c.source)
            and STUB_MARK.search(c.source)]


def write_student_edition(out_dir: Path, notebooks: list[Path]) -> dict[str, int]:
    """Write each notebook, solutions removed, to out_dir; return the number removed per notebook."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        report[path.name] = remove_solutions(nb)
        nb.metadata["course_edition"] = "student"
        nbformat.write(nb, out_dir / path.name)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the student notebooks")
    parser.add_argument("notebooks", type=Path, nargs="*", help="default: every chapter")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.out_dir.resolve() == NOTEBOOKS:
        parser.error("write the student edition to another folder, not over the chapters")
    for name, removed in write_student_edition(args.out_dir, notebooks).items():
        print(f"{name}: {removed} solutions removed")
    print(f"student edition written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
