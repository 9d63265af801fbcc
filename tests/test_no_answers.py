"""Nothing the learner sees answers an exercise (issue 28).

The learner's package (`course_utils`, what `pip install` gives and `help()` shows) and
the student edition (the chapters without their solutions) are searched for each
reference answer's telltale code, for public reference functions with an exercise's
signature, and for messages or docstrings that state an answer. The reference answers
themselves live in `tests/reference_answers.py`, outside the package."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch

from course_utils.student_edition import write_student_edition

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "course_utils"
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _spaced(code: str) -> str:
    """A regex for `code` that allows any whitespace between its tokens."""
    tokens = re.findall(r"\w+|[^\w\s]", code)
    return r"\s*".join(re.escape(token) for token in tokens)


# (exercise, regex): each matches an answer (or a way to call one) and nothing a check
# needs
TELLTALES = [
    ("1.2", _spaced("snr / (1 + snr)")),
    ("1.3", _spaced("torch.nonzero(snr < 1)")),
    ("1.3", r"too \{direction\}"),
    ("2.1", _spaced("(x_t - (1 - ab).sqrt() * eps) / ab.sqrt()")),
    ("2.1", _spaced("def _x0(")),
    ("2.1", r"x̂0 = \(x_t − √\(1−ᾱ_t\) ε\) / √ᾱ_t"),
    ("2.2", r"\breference_ddpm_step\b"),
    ("2.2", _spaced("(x - coef * e) / alpha.sqrt()")),
    ("2.2", _spaced("/ (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt()")),
    ("2.3", _spaced("1 - left[i + 1] / left[i]")),
    ("2.3", _spaced("expected {[round(e, 3)")),
    ("3.2", r"\b_?reference_sdedit\b"),
    ("3.3", _spaced("decay * e + (1 - decay) * p")),
    ("4.1", _spaced("(1 - _cumprod_prev(ab)) / (1 - ab) * b")),
    ("4.2", _spaced("from ..ddpm import reverse_step")),
    ("4.2", r"μ̃_t = √ᾱ_\{t−1\} β_t/\(1−ᾱ_t\) x0"),
    ("4.3", _spaced("(alphas_cumprod[t] / alphas_cumprod[s])")),
    ("4.3", r"√\(ᾱ_t/ᾱ_s\) x_s \+ √\(1 − ᾱ_t/ᾱ_s\) noise"),
    ("5.1", _spaced("np.sqrt(var_a) - np.sqrt(var_b)")),
    ("5.1", r"\|mu_a − mu_b\|² \+ Σ\(σ_a − σ_b\)²"),
    ("5.2", r"ε = √ᾱ v \+ √\(1−ᾱ\) x_t"),
    ("5.3", r"\b_fewest_nfe_reference\b"),
    ("6.1", r"\b_guided_reference\b"),
    ("6.1", r"\b(\w+) \+ w \* \((\w+) - \1\)"),  # ε_u + w (ε_c − ε_u), any names
    ("6.2", r"\(t_next - t\) \* \((\w+) \+ (\w+)\) / 2"),  # Heun's average
    ("6.2", r"\((\w+) \+ (\w+)\) \* \(t_next - t\) / 2"),
    ("6.2", _spaced("(velocity + velocity_next)")),
    ("6.2", r"\(t_next − t\)·\(d \+ d′\)/2"),
    ("3.1", r"class ImageTransform\b"),
    ("6.3", r"\b_guidance_reference\b"),
    ("7.1", _spaced("logvar.exp() - 1 - logvar")),
    ("7.1", _spaced("1 + logvar - mean.pow(2) - logvar.exp()")),
    ("7.1", _spaced("1 + logvar - mean ** 2 - logvar.exp()")),
    ("7.2", r"masked_fill\([^)]*mask"),
    ("7.2", r"attn_mask\s*=\s*mask"),
    ("7.3", _spaced("repaint_mask * latents + (1 - repaint_mask)")),
    ("7.3", _spaced("(1 - alpha_bar_next).sqrt() * noise")),
    ("any", r"expected (NFE|w =) \{"),
]

# Accepted matches in the package, each with its reason; each must still match (so the
# list stays true), and nothing else may.
#  - 2.2 and 3.1, accepted leaks: the chapter code that later chapters reuse (one
#    source, a test keeps each equal to its cell), so its source stays readable in the
#    package. Calling it is rejected by the course's check and by the Otter hidden tests
#    (tests/test_checks.py, tests/test_otter.py); copying it cannot be prevented, as
#    copying the public book's solutions cannot.
#  - 6.1, not a leak: the guided combination, which the exercise states itself; the
#    answer's substance, one scale per image on the predictions' device, is not in
#    denoise_guided (a number w).
KNOWN_IN_PACKAGE = {
    (
        "course_utils/ddpm.py",
        "2.2",
    ): "reverse_step is chapter 4's cell, Algorithm 2's step: checks reject calling it",
    (
        "course_utils/flow.py",
        "6.1",
    ): "denoise_guided is chapter 6's cell: the stated formula, for a number w",
    (
        "course_utils/data.py",
        "3.1",
    ): "ImageTransform is the course's loader: checks reject calling it",
}


def _hits(text: str) -> set[str]:
    return {exercise for exercise, pattern in TELLTALES if re.search(pattern, text)}


def _package_hits() -> set[tuple[str, str]]:
    return {
        (path.relative_to(ROOT).as_posix(), exercise)
        for path in sorted(PACKAGE.rglob("*.py"))
        for exercise in _hits(path.read_text(encoding="utf-8"))
    }


def test_the_learners_package_holds_no_answer():
    hits = _package_hits()
    assert hits - set(KNOWN_IN_PACKAGE) == set(), "an exercise's answer in course_utils"
    assert (
        set(KNOWN_IN_PACKAGE) <= hits
    ), "a known leak is gone: remove it from KNOWN_IN_PACKAGE"


def test_no_public_reference_function():
    import course_utils
    import course_utils.checks as checks

    for module in (course_utils, checks):
        names = [name for name in dir(module) if "reference" in name.lower()]
        assert names == [], f"{module.__name__} exports {names}"


# Accepted matches in the student edition, for the reasons above: chapter 4 teaches
# Algorithm 2, the answer of chapter 2's exercise 2.2 (an accepted leak: a later
# chapter's lesson, readable in the public book as every solution is), and chapter 6's
# sampler uses the guided combination that 6.1 states (not a leak). Each must still
# match; nothing else may.
KNOWN_IN_STUDENT_EDITION = {
    ("04_ddpm_from_scratch", "2.2"): "cell 49, reverse_step: chapter 4's lesson",
    (
        "06_guidance_and_flow_matching",
        "6.1",
    ): "cell 15 guides with ε_u + w (ε_c − ε_u), a number w: the stated formula",
    (
        "07_latent_diffusion_and_text",
        "6.1",
    ): "generate and img2img guide with ε_u + w (ε_c − ε_u), a number w: chapter 6's "
    "stated formula, used as Stable Diffusion's sampler uses it",
}


@pytest.fixture(scope="module")
def student_edition(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("student")
    write_student_edition(out, CHAPTERS)
    return {
        path.stem: "\n".join(
            cell.source
            for cell in nbformat.read(out / path.name, 4).cells
            if cell.cell_type == "code"
        )
        for path in CHAPTERS
    }


def test_the_student_edition_holds_no_answer(student_edition):
    hits = {
        (chapter, exercise)
        for chapter, code in student_edition.items()
        for exercise in _hits(code)
    }
    assert hits - set(KNOWN_IN_STUDENT_EDITION) == set()
    assert (
        set(KNOWN_IN_STUDENT_EDITION) <= hits
    ), "a known leak is gone: update the list"


def test_stored_check_values_equal_the_reference_answers():
    """The values the SDEdit check compares with are what the reference SDEdit computes.
    """
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_check_values import compute

    from course_utils.checks._expected_data import VALUES

    fresh = compute()
    assert set(fresh) == set(VALUES)
    from course_utils.checks._expected import stored_values

    for key in VALUES:
        shape, _ = fresh[key]
        assert tuple(VALUES[key][0]) == tuple(shape)
        import base64

        import numpy as np

        again = np.frombuffer(base64.b64decode(fresh[key][1]), dtype="<f4").reshape(
            shape
        )
        assert torch.allclose(
            stored_values(key), torch.from_numpy(again.astype(np.float64)), atol=1e-6
        )
