"""The committed notebooks hold one clean, full-budget run made by `python -m course_utils.execute`."""

import base64
import io
import json
import re
from pathlib import Path

import nbformat
import pytest

from course_utils.execute import NOISY_NOTEBOOK_KEYS, STAMP_KEY, WIDGET_MIME, clean

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STAMP_FIELDS = {"budget", "executed_at", "wall_time_s", "device", "data", "versions"}


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/NN_topic.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_run_is_clean_and_in_order(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts} are not 1..n"
    for cell in code:
        for output in cell.outputs:
            assert output.output_type != "error", f"{path.name}: stored error {output.get('ename')}"
            assert WIDGET_MIME not in output.get("data", {}), f"{path.name}: a widget view was committed"
            if output.output_type == "stream":
                assert "Traceback" not in output.text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_run_is_stamped_full_budget(path):
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get(STAMP_KEY)
    assert stamp, f"{path.name}: no run stamp; execute it with `python -m course_utils.execute {path.name}`"
    assert STAMP_FIELDS <= set(stamp), f"{path.name}: stamp lacks {STAMP_FIELDS - set(stamp)}"
    assert stamp["budget"] == "full", f"{path.name}: stored outputs come from a {stamp['budget']} run"
    assert stamp["wall_time_s"] > 0 and {"torch", "diffusers", "python"} <= set(stamp["versions"])
    for key in NOISY_NOTEBOOK_KEYS:
        assert key not in nb.metadata, f"{path.name}: editor metadata {key!r} committed"


# Issues 23-25: a full-budget chapter runs in half an hour on the developers' 2-core CPU
# (alone on it: a run that shared the CPU with other work is not a fair stamp).
MAX_RUN_SECONDS = 30 * 60
# Known to be over, with the reason; once a chapter passes it must leave this list.
OVER_HALF_AN_HOUR: dict[str, str] = {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_run_took_at_most_half_an_hour(path):
    stamp = nbformat.read(path, as_version=4).metadata.get(STAMP_KEY, {})
    seconds = stamp.get("wall_time_s", 0)
    if path.name in OVER_HALF_AN_HOUR:
        assert seconds > MAX_RUN_SECONDS, f"{path.name} now passes: remove it from the list"
        pytest.xfail(OVER_HALF_AN_HOUR[path.name])
    assert seconds <= MAX_RUN_SECONDS, (
        f"{path.name}: the stored full-budget run took {seconds / 60:.1f} min "
        f"(at most {MAX_RUN_SECONDS // 60}): shrink its budget() values and re-run it")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_has_colab_setup_and_checked_cells(path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("google.colab" in s and "%pip install" in s for s in code[:3]), "no Colab install cell near the top"
    checked = [c for c in nb.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    assert checked, "no cell is tagged nbval-check-output"
    for cell in checked:  # nbval reads the tag; the reader should not see test machinery
        assert "NBVAL_CHECK_OUTPUT" not in cell.source, "a checked cell shows a NBVAL_CHECK_OUTPUT comment"
        if any(word in cell.source for word in ("randn", "rand(", "randint", "random")):
            assert "seed" in cell.source, "a checked cell that draws random numbers must seed them"


def test_clean_drops_widgets_and_editor_metadata():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    nb.metadata["colab"] = {"provenance": []}
    cell = nbformat.v4.new_code_cell("1")
    cell.metadata["execution"] = {"iopub.status.busy": "x"}
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={WIDGET_MIME: {"model_id": "1"}, "text/plain": "w"}),
        nbformat.v4.new_output("stream", text="kept"),
    ]
    nb.cells.append(cell)
    cleaned = clean(json.loads(json.dumps(nb), object_hook=nbformat.NotebookNode))
    assert "widgets" not in cleaned.metadata and "colab" not in cleaned.metadata
    assert "execution" not in cleaned.cells[0].metadata
    assert [o.output_type for o in cleaned.cells[0].outputs] == ["stream"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_code_lines_fit_the_page(path):
    nb = nbformat.read(path, as_version=4)
    long_lines = [line for cell in nb.cells if cell.cell_type == "code"
                  for line in cell.source.splitlines() if len(line) > 88]
    assert not long_lines, f"{path.name}: {len(long_lines)} code lines longer than 88 characters: {long_lines[:3]}"


# Known to be too wide, with the reason; each must still fail as listed, and leave the
# list when its chapter is re-run.
WIDER_THAN_THE_PAGE: dict[str, tuple[list[str], str]] = {
    "07_latent_diffusion_and_text.ipynb": (
        ["7.51 in"],
        "the img2img figure (its y label adds 0.01 in), to be narrowed when the chapter is "
        "next re-run at full budget (a stored output is not redrawn by hand)"),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_figures_fit_the_page(path):
    """About 7 inches wide at the figure's own dpi, so that its text shows at the size it was set in."""
    from PIL import Image

    nb = nbformat.read(path, as_version=4)
    too_wide = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png is None:
                continue
            image = Image.open(io.BytesIO(base64.b64decode(png)))
            dpi = image.info.get("dpi", (100, 100))[0]
            if image.width / dpi > 7.5:
                too_wide.append(f"cell {index}: {image.width / dpi:.2f} in")
    known = WIDER_THAN_THE_PAGE.get(path.name)
    if known:
        widths = [entry.split(": ")[1] for entry in too_wide]  # cell numbers move
        assert widths == known[0], f"{path.name}: {too_wide}; update WIDER_THAN_THE_PAGE"
        pytest.xfail(known[1])
    assert not too_wide, f"{path.name}: figures wider than the page: {too_wide}"


def _printed(notebook: str) -> str:
    """Everything a chapter's stored run printed."""
    nb = nbformat.read(NOTEBOOKS[0].parent / notebook, as_version=4)
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "".join(texts)


def test_chapter_4_quotes_chapter_2s_stored_run():
    # Chapter 4 compares its model with chapter 2's at equal training time, from figures
    # copied out of chapter 2's stored run: both scored with score_mnist_samples.
    nb = nbformat.read(NOTEBOOKS[0].parent / "04_ddpm_from_scratch.ipynb", as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    quoted = re.search(r'chapter_2 = \{"n": (\d+), "steps": (\d+), '
                       r'"minutes": ([\d.]+),\s*'
                       r'"confident_percent": \(([\d.]+), ([\d.]+)\), '
                       r'"fd_over_floor": \(([\d.]+), ([\d.]+)\)\}', source)
    assert quoted, "chapter 4 no longer quotes chapter 2's figures in the form this test reads"
    printed = _printed("02_basic_unet_mnist.ipynb")
    run = re.search(r"(\d+) steps in ([\d.]+) min", printed)
    scores = re.search(r"(\d+) samples; classifier features.*?"
                       r"confident \(top class p >= 0.9\): ([\d.]+) ± ([\d.]+) %.*?"
                       r"FD over the test-vs-test floor: ([\d.]+) ± ([\d.]+)",
                       printed, re.DOTALL)
    assert run and scores, ("chapter 2's stored run does not print score_mnist_samples'"
                            " figures (re-run it) or its training line")
    from_chapter_2 = (scores.group(1), run.group(1), run.group(2)) + scores.groups()[1:]
    assert from_chapter_2 == quoted.groups(), (
        f"chapter 2 printed {from_chapter_2}, chapter 4 quotes {quoted.groups()}: copy "
        "chapter 2's figures (N, steps, minutes, confident %, FD over the floor) into "
        "chapter 4's comparison table")


def test_chapter_4_quotes_the_parameter_count_chapter_2_printed():
    printed = re.search(r"DDPM model parameters: ([\d,]+)", _printed("02_basic_unet_mnist.ipynb"))
    assert printed, "chapter 2 no longer prints 'DDPM model parameters: N'"
    nb = nbformat.read(NOTEBOOKS[0].parent / "04_ddpm_from_scratch.ipynb", as_version=4)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    quoted = set(re.findall(r"chapter 2's `UNet2DModel` \(([\d,]+)", prose))
    quoted |= set(re.findall(r"`UNet2DModel` \(([\d,]+) parameters", prose))
    assert quoted == {printed.group(1)}, f"chapter 4 quotes {quoted}, chapter 2 printed {printed.group(1)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_figures_are_images_not_their_text(path):
    """A run whose kernel had a non-inline backend (MPLBACKEND=Agg) stores "<Figure size ...>" and no picture."""
    nb = nbformat.read(path, as_version=4)
    textual = [index for index, cell in enumerate(nb.cells) for output in cell.get("outputs", [])
               if output.get("data", {}).get("text/plain", "").startswith("<Figure size")
               and "image/png" not in output.get("data", {})]
    assert not textual, f"{path.name}: cells {textual} stored a figure's text without its image"


def test_slowest_cells_reads_nbclient_timings_slowest_first():
    from course_utils.execute import slowest_cells

    def timed(began: str, ended: str) -> nbformat.NotebookNode:
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["execution"] = {"iopub.execute_input": began, "shell.execute_reply": ended}
        return cell

    nb = nbformat.v4.new_notebook(cells=[
        timed("2026-11-30T10:00:00.000Z", "2026-11-30T10:00:02.500Z"),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("never run"),
        timed("2026-11-30T10:00:03Z", "2026-11-30T10:01:03Z"),
    ])
    assert slowest_cells(nb) == [(3, 60.0), (0, 2.5)]
    assert slowest_cells(nb, k=1) == [(3, 60.0)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_opening_says_what_a_gpu_changes_and_how_long_the_cpu_run_took(path):
    nb = nbformat.read(path, as_version=4)
    opening = " ".join(nb.cells[0].source.split())
    if path.name.startswith("01_"):
        assert "Nothing here needs a GPU" in opening
        return
    assert "**On a GPU.**" in opening, "the opening should say what a GPU changes (issue 27)"
    assert "choose a GPU runtime" in opening and "Runtime → Change runtime type → GPU" in opening
    # the CPU time the opening states is the stored run's, to the minute
    stated = re.search(r"(\d+) minutes (?:at full budget )?on a 2-core CPU", opening)
    assert stated, "the opening should say how long the stored run took on the 2-core CPU"
    minutes = nb.metadata[STAMP_KEY]["wall_time_s"] / 60
    assert abs(int(stated.group(1)) - minutes) <= 1, (stated.group(0), f"{minutes:.1f} min stamped")
