#!/usr/bin/env bash
# Build the book into _build/html from the notebooks' stored outputs (nothing is executed), warnings as errors.
# Installs what it needs first. If npm is available, MathJax is served from the book itself (only the files the
# pages load: tex-chtml.js and its fonts, about 1.6 MB), so pages show their maths offline too; otherwise the pages
# load MathJax from its CDN (and tests/test_browser.py, which allows no other host, fails).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup_env.sh book

mathjax_version=3.2.2
mathjax=book/_static/mathjax
if [ "$(cat "$mathjax/VERSION" 2>/dev/null)" != "$mathjax_version" ] && command -v npm >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    if npm install --silent --no-audit --no-fund --prefix "$tmp" "mathjax@$mathjax_version" >/dev/null 2>&1; then
        rm -rf "$mathjax"
        es5="$tmp/node_modules/mathjax/es5"
        # tex-chtml.js holds the TeX input and HTML output; it fetches only its woff fonts (by URL relative to
        # itself). A page using a TeX extension that tex-chtml.js lacks would fetch input/tex/extensions/NAME.js:
        # tests/test_browser.py reports it as a failed request; copy that file here too if it ever happens.
        mkdir -p "$mathjax/output/chtml/fonts"
        cp "$es5/tex-chtml.js" "$mathjax/"
        cp -r "$es5/output/chtml/fonts/woff-v2" "$mathjax/output/chtml/fonts/"
        cp "$tmp/node_modules/mathjax/LICENSE" "$mathjax/LICENSE"
        echo "$mathjax_version" > "$mathjax/VERSION"
    else
        echo "build: npm could not fetch mathjax; the book will load MathJax from its CDN"
    fi
    rm -rf "$tmp"
fi

rm -rf _build/html/_static/mathjax  # Sphinx adds static files but never removes them: no stale copy
.venv/bin/jupyter-book build . --builder html -W -n --keep-going
echo "build: open _build/html/index.html"
