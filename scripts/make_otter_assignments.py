"""Write an Otter-Grader assignment per chapter: a master notebook for `otter assign`.

Usage: python scripts/make_otter_assignments.py OUT_DIR [--chapters 1 4 ...] [--seed N]

For each chapter, OUT_DIR/NN_topic/NN_topic.ipynb is an Otter Assign (v1 format) master
notebook holding the chapter's exercises only: each exercise's question, its stub, the
chapter's published solution (Otter removes it from the student version), a public test
(the course's own check, what learners see) and hidden tests with literal expected
values (what grades: only in the autograder zip). The hidden inputs are drawn from
--seed (default: a fresh one per run), and their expected values are computed here, from
the chapter's solutions, so they are literals in the autograder. Learners read the
chapter (its student edition, figures included) beside the Otter notebook they submit.

Then, per chapter: `otter assign OUT_DIR/NN_topic/NN_topic.ipynb OUT_DIR/NN_topic/dist`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course_utils.grade import CHAPTER_EXERCISES, STAND_INS, check_call  # noqa: E402
from course_utils.student_edition import exercise_cells, solution_blocks  # noqa: E402

PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXERCISE_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{exercise\}(?P<title>[^\n]*)\n(?P<body>.*?)^(?P=fence)["
    r" \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class Hidden:
    """A hidden test: `inputs` (code, may use SEED), `result` (an expression) and how to
    compare it with the literal expected value: "close" (tensors or numbers, to `atol`)
    or "equal" (exactly)."""

    inputs: str
    result: str
    compare: str = "close"
    atol: float = 1e-4


TENSORS = "g = torch.Generator().manual_seed(SEED)\n"
HIDDEN: dict[str, list[Hidden]] = {
    "check_beta_end": [
        Hidden(
            "",
            "[beta_end_for(0.01, 2e-4, 500), beta_end_for(0.3, 1e-4, 100)]",
            atol=1e-6,
        )
    ],
    "check_noise_to_snr": [
        Hidden(
            TENSORS
            + "x0 = torch.rand(2, 1, 3, 3, generator=g) * 2 - 1\n"
            "noise = torch.randn(2, 1, 3, 3, generator=g)\n"
            "snr = torch.rand(2, generator=g) * 4 + 0.1\n",
            "noise_to_snr(x0, noise, snr)",
        )
    ],
    "check_snr_crossing": [Hidden("", "int(t_cross)", compare="equal")],
    "check_x0_from_eps": [
        Hidden(
            TENSORS
            + "ac = DDPMScheduler(num_train_timesteps=1000, "
            "beta_schedule='squaredcos_cap_v2').alphas_cumprod\n"
            "x_t = torch.randn(2, 1, 3, 3, generator=g)\n"
            "eps = torch.randn(2, 1, 3, 3, generator=g)\n"
            "t = torch.randint(0, 900, (2,), generator=g)\n",
            "x0_from_eps(x_t, eps, t, ac)",
        )
    ],
    "check_ddpm_step": [
        Hidden(
            TENSORS
            + "s = DDPMScheduler(num_train_timesteps=1000, "
            "beta_schedule='squaredcos_cap_v2', clip_sample=False)\n"
            "x_t = torch.randn(2, 1, 3, 3, generator=g)\n"
            "eps = torch.randn(2, 1, 3, 3, generator=g)\n"
            "z = torch.randn(2, 1, 3, 3, generator=g)\n"
            "t = int(torch.randint(1, 999, (1,), generator=g))\n",
            "torch.stack([ddpm_step(x_t, eps, t, s, z), ddpm_step(x_t, eps, 0, s, z)])",
        )
    ],
    "check_mix_factors": [
        Hidden(
            "n = random.Random(SEED).randint(3, 9)\n",
            "[list(mix_factors(n, 1.5)), list(mix_factors(n, 0.7))]",
            atol=1e-6,
        )
    ],
    "check_transform": [
        Hidden(
            "from PIL import Image\n"
            "rng = np.random.default_rng(SEED)\n"
            "img = Image.fromarray(rng.integers(0, 256, (50, 30, 3),"
            " dtype=np.uint8))\n",
            "torch.stack([im.double().mean(dim=(1, 2)) "
            "for im in transform({'image': [img, img.convert('L')]})['images']])",
            atol=2e-2,
        )
    ],
    "check_sdedit": [
        Hidden(
            TENSORS
            + "from types import SimpleNamespace\n"
            "from diffusers import DDIMScheduler\n"
            "images = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1\n"
            "noise = torch.randn(2, 3, 4, 4, generator=g)\n"
            "def model(x, t):\n"
            "    return SimpleNamespace(sample=0.05 * x)\n"
            "scheduler = DDIMScheduler(num_train_timesteps=1000)\n"
            "scheduler.set_timesteps(8)\n",
            "sdedit(model, scheduler, images, noise, 0.5)",
        )
    ],
    "check_ema_update": [
        Hidden(
            TENSORS
            + "ema = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g)]\n"
            "params = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g)]\n"
            "ema_update(ema, params, 0.8)\n",
            "torch.cat([e.flatten() for e in ema])",
        )
    ],
    "check_posterior_variance": [
        Hidden(
            "betas = torch.linspace(2e-4, 0.03, 300, dtype=torch.float64)\n",
            "posterior_variance(betas)[[0, 1, 2, 50, 299]]",
            atol=1e-7,
        )
    ],
    "check_posterior_mean": [
        Hidden(
            TENSORS
            + "ac = torch.cumprod(1 - torch.linspace(2e-4, 0.03, 300), dim=0)\n"
            "x0 = torch.rand(2, 1, 3, 3, generator=g) * 2 - 1\n"
            "x_t = torch.randn(2, 1, 3, 3, generator=g)\n"
            "t = int(torch.randint(1, 299, (1,), generator=g))\n",
            "posterior_mean(x_t, x0, t, ac)",
        )
    ],
    "check_q_sample_from": [
        Hidden(
            TENSORS
            + "ac = torch.cumprod(1 - torch.linspace(2e-4, 0.03, 300), dim=0)\n"
            "x_s = torch.randn(2, 1, 3, 3, generator=g)\n"
            "noise = torch.randn(2, 1, 3, 3, generator=g)\n",
            "q_sample_from(x_s, 20, 180, noise, ac)",
        )
    ],
    "check_frechet_diagonal": [
        Hidden(
            "rng = np.random.default_rng(SEED)\n"
            "mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)\n"
            "var_a, var_b = rng.uniform(0.2, 3, size=6), rng.uniform(0.2, 3, size=6)\n",
            "float(frechet_diagonal(mu_a, var_a, mu_b, var_b))",
            atol=1e-8,
        )
    ],
    "check_eps_from_v": [
        Hidden(
            TENSORS
            + "ab = (torch.rand(2, generator=g) * 0.9 + 0.05).view(-1, 1, 1, 1)\n"
            "x_t = torch.randn(2, 1, 3, 3, generator=g)\n"
            "v = torch.randn(2, 1, 3, 3, generator=g)\n",
            "eps_from_v(x_t, v, ab)",
        )
    ],
    "check_fewest_nfe": [
        Hidden(
            "table = {'X': [(4, 6.0, 0.1), (8, 2.5, 0.2), (16, 1.4, 0.4), (32, 1.45,"
            " 0.8)]}\n",
            "[fewest_nfe(table, 'X', target) for target in (3.0, 1.42, 1.0, 50.0)]",
            compare="equal",
        )
    ],
    "check_guided_eps": [
        Hidden(
            TENSORS
            + "c = torch.randn(2, 1, 3, 3, generator=g)\n"
            "u = torch.randn(2, 1, 3, 3, generator=g)\n",
            "torch.stack([guided_eps(c, u, 2.5), guided_eps(c, u, torch.tensor([0.0,"
            " 4.0]))])",
        )
    ],
    "check_heun_step": [
        Hidden(
            TENSORS
            + "x = torch.randn(2, 1, 3, 3, generator=g)\n"
            "u = torch.randn(2, 1, 3, 3, generator=g)\n"
            "k = float(torch.rand(1, generator=g)) + 0.5\n"
            "calls = []\n"
            "def velocity_fn(x, t):  # depends on x and on t; counts the calls\n"
            "    t = float(torch.as_tensor(t).flatten()[0])  # a number or one per image\n"
            "    calls.append(t)\n"
            "    return k * x + (1 + t * t) * u\n",
            "torch.cat([heun_step(velocity_fn, x, 0.8, 0.55).flatten(), "
            "heun_step(velocity_fn, x, 0.3, 0.0).flatten(), "
            "torch.tensor([float(len(calls))])])  # the values, then 2 + 1 calls",
        )
    ],
    "check_guidance_choice": [
        Hidden(
            "table = {0: (0.3, 1.4), 1: (0.9, 1.2), 3: (0.96, 1.5), 6: (0.99, 2.4)}\n",
            "[choose_guidance(table, m) for m in (0.5, 0.95, 0.96, 0.995)]",
            compare="equal",
        )
    ],
    "check_kl_divergence": [
        Hidden(
            TENSORS
            + "mean = torch.randn(3, 4, 2, 2, generator=g)\n"
            "logvar = 2 * torch.randn(3, 4, 2, 2, generator=g)\n",
            "kl_divergence(mean, logvar)",
        )
    ],
    "check_masked_cross_attention": [
        Hidden(
            TENSORS
            + "q = torch.randn(2, 3, 5, generator=g)\n"
            "k = torch.randn(2, 4, 5, generator=g)\n"
            "v = torch.randn(2, 4, 5, generator=g)\n"
            "mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])\n",
            "torch.stack([masked_cross_attention(q, k, v, mask), "
            "masked_cross_attention(q, k, v, mask.bool())])",
        )
    ],
    "check_inpaint_step": [
        Hidden(
            TENSORS
            + "x = torch.randn(2, 4, 3, 3, generator=g)\n"
            "known = torch.randn(2, 4, 3, 3, generator=g)\n"
            "noise = torch.randn(2, 4, 3, 3, generator=g)\n"
            "mask = torch.rand(2, 1, 3, 3, generator=g)  # soft\n"
            "ab = float(torch.rand(1, generator=g)) * 0.8 + 0.1\n",
            "torch.stack([inpaint_step(x, known, mask, noise, ab), "
            "inpaint_step(x, known, (mask > 0.5).float(), noise, 1.0)])",
        )
    ],
}


# Exercises whose answer a later chapter exports to course_utils (issue 28): their
# hidden tests run the learner's function with a tripwire on the course's own code, and
# a result reached through it is no result.
COURSE_CODE = {
    "check_ddpm_step": "from course_utils.ddpm import reverse_step as _course\n"
    "_codes = {_course.__code__}\n",
    "check_transform": "from course_utils.data import ImageTransform as _course, "
    "pil_to_tensor\n"
    "_codes = {_course.__call__.__code__, _course.one.__code__, "
    "pil_to_tensor.__code__}\n",
}


def guarded(hidden: Hidden, codes: str) -> Hidden:
    """`hidden` with its result computed under a tripwire on the code objects `codes`
    defines: the test fails when the learner's function ran them."""
    tripwire = (
        "import sys\n"
        + codes
        + "reached = []\n"
        "def _watch(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code in _codes:\n"
        "        reached.append(frame.f_code.co_name)\n"
        "_previous = sys.getprofile()\n"
        "sys.setprofile(_watch)\n"
        "try:\n"
        f"    value = {hidden.result}\n"
        "finally:\n"
        "    sys.setprofile(_previous)\n"
        'assert not reached, "the answer runs the course\'s own code: write it"\n'
    )
    return Hidden(hidden.inputs + tripwire, "value", hidden.compare, hidden.atol)


for _check, _codes in COURSE_CODE.items():
    HIDDEN[_check] = [guarded(hidden, _codes) for hidden in HIDDEN[_check]]


def _exercise_text(markdown: str) -> str:
    """The exercise's question as plain markdown: its title as a heading, then its body.
    """
    match = EXERCISE_BLOCK.search(markdown)
    if match is None:
        return markdown
    body = re.sub(r"^:label:.*\n", "", match.group("body"), flags=re.MULTILINE)
    return f"### {match.group('title').strip()}\n\n{body.strip()}"


def _exercises(nb: nbformat.NotebookNode) -> list[dict]:
    """Each exercise: its check, question, stub and published solution code."""
    found = []
    for cell in exercise_cells(nb):
        index = nb.cells.index(cell)
        question = next(
            (
                c.source
                for c in reversed(nb.cells[:index])
                if c.cell_type == "markdown" and "{exercise}" in c.source
            ),
            "",
        )
        solution = []
        for later in nb.cells[index + 1 :]:
            if later.cell_type == "code":
                break
            solution += [
                code
                for block in solution_blocks(later.source)
                for code in PYTHON_BLOCK.findall(block)
            ]
        call = check_call(cell.source)
        # the blocks that write the checked function; others (trying it on the
        # chapter's models) need the whole chapter and are left to the book
        defined = [f"def {arg.id}(" for arg in call.args if hasattr(arg, "id")]
        writing = [code for code in solution if any(d in code for d in defined)]
        solution = writing or solution
        found.append({
            "check": call.func.id,
            "call": cell.source.strip().splitlines()[-1],
            "question": _exercise_text(question),
            "stub": cell.source,
            "solution": "\n".join(solution),
        })
    return found


def _setup(nb: nbformat.NotebookNode, chapter: int) -> str:
    """The assignment's first code cell: the chapter's imports and the objects the
    exercises use (stand-ins for the measured tables, chapter 1's scheduler)."""
    imports = [
        "import random",
        "",
        "import numpy as np",
        "import torch",
        "from diffusers import DDPMScheduler",
        "from PIL import Image",
        f"from course_utils.checks import {', '.join(CHAPTER_EXERCISES[chapter])}",
    ]
    objects = []
    if chapter == 1:
        objects.append(
            "ddpm_scheduler = DDPMScheduler(num_train_timesteps=1000, "
            "beta_schedule='linear')"
        )
    stand_in = {5: "sweep", 6: "guidance_table"}.get(chapter)
    if stand_in:
        objects.append(
            f"{stand_in} = {STAND_INS[stand_in]}  # stands in for the chapter's "
            "measurements"
        )
    return "\n".join(imports + [""] + objects)


def _plain(value: object) -> object:
    """`value` with tensors, arrays and numpy scalars as Python lists and numbers."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().double().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.astype(float).round(9).tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _literal(value: object) -> str:
    """`value` as a Python literal (None stays None): lists of numbers, numbers, None."""
    return repr(_plain(value))


def _runnable(setup: str, solution: str) -> str:
    """The solution as the master notebook runs it: whole, or, when a demo line needs
    the chapter's objects, its definitions and imports only."""
    try:
        exec(setup + "\n" + solution, {})
        return solution
    except NameError:
        import ast

        tree = ast.parse(solution)
        kept = [
            node
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom))
        ]
        return ast.unparse(ast.Module(body=kept, type_ignores=[]))


def _expected(setup: str, solution: str, hidden: Hidden, seed: int) -> object:
    """The chapter's solution's result on the hidden inputs (run here, at assign time).
    """
    namespace: dict = {}
    exec(setup, namespace)
    exec(solution, namespace)
    exec(hidden.inputs.replace("SEED", str(seed)), namespace)
    return eval(hidden.result, namespace)


def _hidden_test(hidden: Hidden, expected: object, seed: int, points: float) -> str:
    config = (
        f'""" # BEGIN TEST CONFIG\npoints: {points:g}\nhidden: true\n""" # END TEST'
        " CONFIG\n"
    )
    body = hidden.inputs.replace("SEED", str(seed)) + f"result = {hidden.result}\n"
    literal = _literal(expected)
    if hidden.compare == "equal":
        check = f"assert result == {literal}, 'not the expected value'\n"
    else:
        check = (
            "expected = torch.tensor("
            + literal
            + ", dtype=torch.float64)\n"
            "got = torch.as_tensor(result if not isinstance(result, list) else "
            "[[float(v) for v in r] if isinstance(r, (list, tuple)) else float(r) "
            "for r in result], dtype=torch.float64)\n"
            "assert got.shape == expected.shape, 'the result has the wrong shape'\n"
            f"assert torch.allclose(got, expected, atol={hidden.atol:g}, rtol=1e-4), "
            "'not the expected values'\n"
        )
    return config + body + check


def master_notebook(chapter_path: Path, seed: int) -> nbformat.NotebookNode:
    """The Otter Assign master notebook of one chapter."""
    nb = nbformat.read(chapter_path, as_version=4)
    chapter = int(chapter_path.name[:2])
    exercises = _exercises(nb)
    if [e["check"] for e in exercises] != list(CHAPTER_EXERCISES[chapter]):
        raise ValueError(
            f"{chapter_path.name}: exercises {[e['check'] for e in exercises]}, "
            f"expected {list(CHAPTER_EXERCISES[chapter])}"
        )
    title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
    config = {
        "name": chapter_path.stem,
        "init_cell": True,
        "check_all_cell": False,
        "export_cell": False,
        "run_tests": True,
        "generate": {"pdf": False, "filtering": False, "show_hidden": True},
        "requirements": "requirements.txt",
    }
    setup = _setup(nb, chapter)
    cells = [
        nbformat.v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + _yaml(config)),
        nbformat.v4.new_markdown_cell(
            f"# Exercises of chapter {chapter}: {title}\n\nRead the chapter (its"
            " student edition, with the figures) beside this notebook. Replace each"
            " `raise NotImplementedError` (or `None`) with your answer, run the"
            " `grader.check` cell below it for the course's check, and submit this"
            " notebook. Grading runs hidden tests on other inputs."
        ),
        nbformat.v4.new_code_cell(setup),
    ]
    for number, exercise in enumerate(exercises, start=1):
        exercise["solution"] = _runnable(setup, exercise["solution"])
        hidden = HIDDEN[exercise["check"]]
        points = 1 / len(hidden)
        cells.append(
            nbformat.v4.new_raw_cell(
                f"# BEGIN QUESTION\nname: ex{chapter}_{number}\nmanual: false"
            )
        )
        cells.append(
            nbformat.v4.new_markdown_cell(
                exercise["question"].replace(
                    "### ", f"### Exercise {chapter}.{number}: ", 1
                )
            )
        )
        stub = exercise["stub"].strip()
        stub = stub[: stub.rfind(exercise["call"])].rstrip()  # the check runs as a test
        cells += [
            nbformat.v4.new_raw_cell("# BEGIN PROMPT"),
            nbformat.v4.new_code_cell(stub),
            nbformat.v4.new_raw_cell("# END PROMPT"),
            nbformat.v4.new_raw_cell("# BEGIN SOLUTION"),
            nbformat.v4.new_code_cell(
                "# BEGIN SOLUTION NO PROMPT\n"
                + exercise["solution"]
                + "\n# END SOLUTION"
            ),
            nbformat.v4.new_raw_cell("# END SOLUTION"),
        ]
        cells.append(nbformat.v4.new_raw_cell("# BEGIN TESTS"))
        cells.append(
            nbformat.v4.new_code_cell(
                '""" # BEGIN TEST CONFIG\npoints: 0\n""" # END TEST CONFIG\n'
                f"assert {exercise['call']}, 'the course check says: not yet'"
            )
        )
        for test in hidden:
            expected = _expected(setup, exercise["solution"], test, seed)
            cells.append(
                nbformat.v4.new_code_cell(_hidden_test(test, expected, seed, points))
            )
        cells.append(nbformat.v4.new_raw_cell("# END TESTS"))
        cells.append(nbformat.v4.new_raw_cell("# END QUESTION"))
    master = nbformat.v4.new_notebook(cells=cells)
    master.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return master


def _yaml(config: dict, indent: int = 0) -> str:
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(_yaml(value, indent + 2))
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            lines.append(" " * indent + f"{key}: {text}")
    return "\n".join(lines)


REQUIREMENTS = """\
# What the autograder's environment installs (Gradescope, or `otter grade` in Docker).
torch
diffusers
numpy
scipy
pillow
course_utils @ git+{repo}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--chapters", type=int, nargs="*", default=sorted(CHAPTER_EXERCISES)
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the hidden inputs (default: a fresh one)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.chapters) - set(CHAPTER_EXERCISES)
    if unknown:
        parser.error(
            f"--chapters: no chapter {sorted(unknown)}; there are "
            f"{sorted(CHAPTER_EXERCISES)}"
        )
    seed = (
        args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    )
    repo = _repository_url()
    for chapter in args.chapters:
        path = next((ROOT / "notebooks").glob(f"{chapter:02d}_*.ipynb"))
        folder = args.out_dir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(master_notebook(path, seed), folder / path.name)
        (folder / "requirements.txt").write_text(REQUIREMENTS.format(repo=repo))
        print(
            f"{folder / path.name}: then  otter assign {folder / path.name}"
            f" {folder / 'dist'}"
        )
    return 0


def _repository_url() -> str:
    config = (ROOT / "_config.yml").read_text()
    match = re.search(
        r"^\s*url:\s*(\S+)", config.split("repository:", 1)[-1], re.MULTILINE
    )
    return (
        match.group(1)
        if match
        else "https://github.com/diffusion-course/diffusion-models-course"
    )


if __name__ == "__main__":
    sys.exit(main())
