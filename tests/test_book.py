"""The book's configuration and extension: chapters in the table of contents, run notes from the stamps."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _extension():
    spec = importlib.util.spec_from_file_location("course_book", ROOT / "book" / "_ext" / "course_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert chapters and all(f"notebooks/{c}" in toc for c in chapters)


def test_config_builds_from_stored_outputs_with_colab_launch():
    config = (ROOT / "_config.yml").read_text()
    assert 'execute_notebooks: "off"' in config
    assert "colab_url" in config and "sphinx_exercise" in config


def test_run_note_states_budget_device_data_and_versions():
    text = _extension().run_note_text({
        "budget": "full", "device": "cpu: x86_64, 2 cores", "executed_at": "2026-11-23T14:00:00Z",
        "wall_time_s": 90, "data": "offline mirror (COURSE_DATA_DIR)",
        "versions": {"python": "3.11.7", "torch": "2.13.0", "diffusers": "0.42.1", "datasets": "5.2.0"},
    })
    for part in ("full budget", "cpu: x86_64, 2 cores", "1.5 min", "offline mirror", "torch 2.13.0", "diffusers 0.42.1"):
        assert part in text


def test_instructors_page_reads_run_times_from_the_stamps(tmp_path):
    import json

    stamped = {"metadata": {"course_run": {"wall_time_s": 1872, "budget": "full", "device": "cpu: x86_64, 2 cores",
                                           "executed_at": "2026-11-24T10:00:00Z"}}}
    (tmp_path / "01_a.ipynb").write_text(json.dumps(stamped))
    (tmp_path / "02_b.ipynb").write_text(json.dumps({"metadata": {}}))
    lines = _extension().run_times(tmp_path)
    assert lines == ["Chapter 1 (01_a.ipynb): 31.2 min at full budget on cpu: x86_64, 2 cores (2026-11-24)",
                     "Chapter 2 (02_b.ipynb): not yet run at full budget"]
    assert "```{course-run-times}" in (ROOT / "book" / "instructors.md").read_text()


def test_instructors_page_shows_the_gpu_smoke_results_as_recorded(tmp_path):
    import json

    rows = [{"part": "02_basic_unet_mnist", "ok": True, "s_per_step": 0.010977, "peak_memory_mib": 420.04,
             "device": "NVIDIA H200", "wall_s": 44.2},
            {"part": "train_unconditional --preset gpu", "ok": True, "s_per_step": 0.1581, "precision": "fp16",
             "peak_memory_mib": 1886.0, "device": "NVIDIA H200", "wall_s": 10.5},
            {"part": "03_butterflies_unet2d", "ok": False, "error": "ImportError", "wall_s": 27.2}]
    (tmp_path / "h200.jsonl").write_text("\n".join(map(json.dumps, rows)))
    lines = _extension().gpu_smoke_lines(tmp_path)
    assert lines[0] == "on NVIDIA H200"
    assert lines[2].split() == ["chapter", "2", "44.2", "0.011", "420"]
    assert lines[3].split() == ["ch.", "3", "script,", "fp16", "10.5", "0.158", "1886"]
    assert lines[4].split() == ["chapter", "3", "failed"]
    assert all(len(line) <= 48 for line in lines)  # a phone's column
    assert "```{gpu-smoke-table}" in (ROOT / "book" / "instructors.md").read_text()
    recorded = _extension().gpu_smoke_lines(ROOT / "benchmarks" / "gpu_smoke")
    assert len(recorded) > 7 and all(len(line) <= 48 for line in recorded)


def test_one_repository_url_for_colab_installs_and_links():
    # Publishing the course under another name means changing `repository.url` in _config.yml; every chapter's
    # `%pip install ... git+COURSE_REPO` and the README's Colab links must then follow it (see the README).
    import json

    url = re.search(r"repository:\s*\n\s*url:\s*(\S+)", (ROOT / "_config.yml").read_text()).group(1)
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        setup = "".join(cells[2]["source"]) if len(cells) > 2 else ""
        found = re.findall(r'COURSE_REPO = "([^"]+)"', "".join("".join(c["source"]) for c in cells))
        assert found == [url], f"{notebook.name}: COURSE_REPO {found} differs from _config.yml's {url}"
        assert "git+{COURSE_REPO}" in setup, f"{notebook.name}: the Colab cell does not install from COURSE_REPO"
    readme = (ROOT / "README.md").read_text()
    owner_repo = url.removeprefix("https://github.com/")
    links = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/main/notebooks/(\S+?\.ipynb)", readme)
    assert links, "the README has no Colab links"
    assert {repo for repo, _ in links} == {owner_repo}
    chapters = {p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert {name for _, name in links} == chapters, "every chapter needs exactly its own Colab link in the README"


def test_chapter_names_agree_in_the_intro_the_instructors_guide_and_the_chapters():
    # The sidebar and the page title show a chapter's first heading; the intro's table and the instructors' guide
    # must call each chapter by the same name.
    import json

    intro = (ROOT / "book" / "intro.md").read_text()
    instructors = (ROOT / "book" / "instructors.md").read_text()
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        headings = [line[2:].strip() for cell in cells if cell["cell_type"] == "markdown"
                    for line in "".join(cell["source"]).splitlines() if line.startswith("# ")]
        assert headings, f"{notebook.name} has no title"
        title = headings[0]
        assert f"[{title}](../notebooks/{notebook.name})" in intro, f"the intro's table does not name {title!r}"
        assert f"\n### {title}\n" in instructors, f"the instructors' guide has no section {title!r}"


def test_the_animations_cdn_stylesheet_is_dropped_from_pages():
    # matplotlib's animation player links Font Awesome from a CDN; the book drops the link (the theme's own Font
    # Awesome draws the icons), so no page reaches another host.
    drop = _extension().drop_offsite_font_awesome
    body = ('<div class="output text_html">\n<link rel="stylesheet"\nhref="https://maxcdn.bootstrapcdn.com/'
            'font-awesome/4.4.0/css/font-awesome.min.css">\n<script language="javascript">')
    context = {"body": body}
    drop(None, "notebooks/02", "page.html", context, None)
    assert context["body"] == '<div class="output text_html">\n<script language="javascript">'


def test_the_book_reads_no_virtual_environment_or_build_output():
    """CI makes .venv and .venv-colab (scripts/test.sh --colab) inside the repository;
    Sphinx must not read their packages' READMEs and templates as pages (a diffusers
    model-card template broke the build once .venv-colab existed)."""
    import fnmatch

    import yaml

    patterns = yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    for path in (".venv/lib/x/README.md", ".venv-colab/lib/diffusers/model_card_template.md",
                 "dist/autograder/x.ipynb", "_build/html/x.md"):
        assert any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("*") + "/")
                   or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns), path
