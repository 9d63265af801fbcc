"""Serve MathJax from the book itself when scripts/build_book.sh has fetched a copy, so maths renders offline."""

from pathlib import Path

LOCAL_MATHJAX = Path(__file__).resolve().parents[1] / "_static" / "mathjax" / "tex-chtml.js"


def use_local_mathjax(app, config) -> None:
    """Point Sphinx at the local MathJax copy if there is one; otherwise keep the CDN default."""
    if LOCAL_MATHJAX.is_file():
        config.mathjax_path = "mathjax/tex-chtml.js"  # relative to the built _static folder


def setup(app):
    app.connect("config-inited", use_local_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
