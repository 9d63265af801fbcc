"""Chapter 7's stored run says what a learner relies on (issue 29).

The chapter's own cells assert some of these at run time; these tests read the stored
full-budget run, so that a re-run that breaks one cannot be committed unnoticed: the
scaling factor gives the diffusion model latents of standard deviation 1, the
hand-written cross-attention equals diffusers', the pipeline built from the chapter's
parts draws the pictures the hand-written loop draws, and the text encoder ranks a
caption with the same meaning first.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

NOTEBOOK = (Path(__file__).resolve().parents[1] / "notebooks"
            / "07_latent_diffusion_and_text.ipynb")


def _printed() -> str:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return "".join(output.get("text", "") for cell in nb.cells
                   if cell.cell_type == "code" for output in cell.get("outputs", []))


def test_the_scaling_factor_gives_latents_of_unit_standard_deviation():
    printed = _printed()
    found = re.search(r"std ([\d.]+) → scaling factor ([\d.]+)\s*\n"
                      r"scaled latents: std ([\d.]+)", printed)
    assert found, "the scaling-factor cell's output is missing"
    std, factor, scaled = (float(v) for v in found.groups())
    assert abs(factor - 1 / std) < 2e-3 * factor, (std, factor)
    assert scaled == 1.0


def test_hand_written_cross_attention_equals_diffusers():
    assert "same as diffusers' Attention: True" in _printed()


def test_the_pipeline_draws_what_the_hand_written_loop_draws():
    found = re.search(r"between the pipeline's pictures and ours: ([\d.e+-]+)", _printed())
    assert found, "the pipeline comparison's output is missing"
    assert float(found.group(1)) < 1e-4  # rounding only: pictures lie in [-1, 1]


def test_the_text_encoder_puts_each_wording_nearest_its_meaning():
    lines = _printed().split("cosine similarity")[1].splitlines()[1:5]
    for row, line in enumerate(lines):
        values = [float(v) for v in re.findall(r"-?\d+\.\d+", line)]
        assert len(values) == 5, line
        assert max(range(5), key=values.__getitem__) == row, line
