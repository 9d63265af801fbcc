"""Book extras: MathJax served locally when fetched (maths renders offline), no stylesheet from another host in the
animations, per-chapter exercise numbers, and a run note under each chapter."""

import json
import re
from pathlib import Path

LOCAL_MATHJAX = Path(__file__).resolve().parents[1] / "_static" / "mathjax" / "tex-chtml.js"


def use_local_mathjax(app, config) -> None:
    """Point Sphinx at the local MathJax copy if scripts/build_book.sh fetched one; otherwise keep the CDN."""
    if LOCAL_MATHJAX.is_file():
        config.mathjax_path = "mathjax/tex-chtml.js"  # relative to the built _static folder


def run_note_text(stamp: dict) -> str:
    """One sentence about the run that made a chapter's stored outputs."""
    versions = stamp.get("versions", {})
    minutes = stamp.get("wall_time_s", 0) / 60
    return (
        f"The outputs on this page come from one top-to-bottom run at {stamp.get('budget', '?')} budget on "
        f"{stamp.get('device', '?')}, finished {stamp.get('executed_at', '?')} in {minutes:.1f} min, with data from the "
        f"{stamp.get('data', '?')}; Python {versions.get('python', '?')}, torch {versions.get('torch', '?')}, "
        f"diffusers {versions.get('diffusers', '?')}, datasets {versions.get('datasets', '?')}."
    )


def add_run_note(app, doctree) -> None:
    """Append the notebook's `course_run` stamp, written by course_utils.execute, as a note at the page's end."""
    from docutils import nodes  # imported here so the test suite can use run_note_text without Sphinx
    path = Path(app.env.doc2path(app.env.docname))
    if path.suffix != ".ipynb":
        return
    stamp = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("course_run")
    if not stamp:
        return
    note = nodes.admonition(classes=["note", "course-run-note"])
    note += nodes.title(text="About this run")
    note += nodes.paragraph(text=run_note_text(stamp))
    sections = [n for n in doctree.children if isinstance(n, nodes.section)]
    (sections[-1] if sections else doctree).append(note)


def run_times(notebooks_dir: Path) -> list[str]:
    """One line per chapter: its full run's wall time and device, read from the notebooks' stamps."""
    lines = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        stamp, title = metadata.get("course_run"), f"Chapter {int(path.stem[:2])} ({path.name})"
        if not stamp:
            lines.append(f"{title}: not yet run at full budget")
            continue
        lines.append(f"{title}: {stamp.get('wall_time_s', 0) / 60:.1f} min at {stamp.get('budget', '?')} budget "
                     f"on {stamp.get('device', '?')} ({stamp.get('executed_at', '?')[:10]})")
    return lines


def _run_times_directive():
    from docutils import nodes
    from docutils.parsers.rst import Directive

    class RunTimes(Directive):
        """`course-run-times`: a list of each chapter's full-run wall time, from the stamps."""

        def run(self):
            env = self.state.document.settings.env
            notebooks_dir = Path(env.srcdir) / "notebooks"
            items = nodes.bullet_list()
            for line in run_times(notebooks_dir):
                items += nodes.list_item("", nodes.paragraph(text=line))
            return [items]

    return RunTimes


def gpu_smoke_lines(results_dir: Path) -> list[str]:
    """A fixed-width table of every GPU smoke run in results_dir/*.jsonl (lines of scripts/gpu_smoke.sh's
    results.jsonl): part, wall seconds, median seconds per optimizer step, peak GPU memory in MiB. Narrow enough
    for a phone's column; the device goes in the heading (one table per device)."""
    rows = [json.loads(line) for path in sorted(results_dir.glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]
    devices = sorted({row["device"] for row in rows if row.get("device")})
    lines = [f"on {', '.join(devices) or '?'}", f"{'part':<24}{'wall s':>7}{'s/step':>7}{'MiB':>6}"]
    for row in rows:
        part = row["part"]
        if part.startswith("train_unconditional"):
            part = f"ch. 3 script, {row.get('precision', '?')}"
        elif part[:2].isdigit():
            part = f"chapter {int(part[:2])}"
        if not row.get("ok"):
            lines.append(f"{part:<24}{'failed':>7}")
            continue
        step = "-" if row.get("s_per_step") is None else f"{row['s_per_step']:.3f}"
        lines.append(f"{part:<24}{row['wall_s']:>7.1f}{step:>7}{row.get('peak_memory_mib', 0):>6.0f}")
    return lines


def _gpu_smoke_directive():
    from docutils import nodes
    from docutils.parsers.rst import Directive

    class GpuSmokeTable(Directive):
        """`gpu-smoke-table`: benchmarks/gpu_smoke/*.jsonl as a fixed-width table."""

        def run(self):
            env = self.state.document.settings.env
            text = "\n".join(gpu_smoke_lines(Path(env.srcdir) / "benchmarks" / "gpu_smoke"))
            return [nodes.literal_block(text, text)]

    return GpuSmokeTable


def number_exercises_per_chapter(app, env) -> list[str]:
    """Exercise 4.1, 4.2, ... in chapter 4 (Sphinx numbers them 1, 2, ... across the whole book)."""
    for docname, numbers in env.toc_fignumbers.items():
        chapter = re.match(r"notebooks/(\d\d)_", docname)
        if chapter is None or "exercise" not in numbers:
            continue
        in_order = sorted(numbers["exercise"].items(), key=lambda item: item[1])
        numbers["exercise"] = {key: (int(chapter.group(1)), i) for i, (key, _) in enumerate(in_order, 1)}
    return []


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep one copy of each script: under Jupyter Book, sphinx-thebe and sphinx-togglebutton register their inline
    settings twice (file None and file ""), and a page that declares `const THEBE_JS_URL` twice logs a
    SyntaxError in every reader's console."""
    scripts = context.get("script_files")
    if scripts is None:
        return
    kept, seen = [], set()
    for script in scripts:
        filename = getattr(script, "filename", script) or ""  # inline scripts: None or "", the same thing
        key = (str(filename), repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


# matplotlib's animations (to_jshtml) link Font Awesome 4 from a CDN for their buttons' icons: offline that is a
# failed request and a console error. The theme already ships Font Awesome 6 (scripts/fontawesome.js), which draws
# the same `fa fa-play`-style icons (the old names are aliases there), so the link can go.
OFFSITE_FONT_AWESOME = re.compile(r'<link\s+rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*"\s*/?>\s*')


def drop_offsite_font_awesome(app, pagename, templatename, context, doctree) -> None:
    """Remove the animations' Font Awesome stylesheet links to a CDN from the page body."""
    if "body" in context:
        context["body"] = OFFSITE_FONT_AWESOME.sub("", context["body"])


def setup(app):
    app.add_directive("course-run-times", _run_times_directive())
    app.add_directive("gpu-smoke-table", _gpu_smoke_directive())
    app.connect("config-inited", use_local_mathjax)
    app.connect("doctree-read", add_run_note)
    app.connect("env-get-updated", number_exercises_per_chapter, priority=900)  # after Sphinx's numbering
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    app.connect("html-page-context", drop_offsite_font_awesome)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
