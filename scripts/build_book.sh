#!/usr/bin/env bash
# Build the book into _build/html from the notebooks' stored outputs (nothing is executed), warnings as errors.
# Installs what it needs first. If npm is available, MathJax is served from the book itself, so pages show
# their maths offline too; otherwise the pages load MathJax from its CDN.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup_env.sh book

mathjax=book/_static/mathjax
if [ ! -f "$mathjax/tex-chtml.js" ] && command -v npm >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    if npm install --silent --no-audit --no-fund --prefix "$tmp" mathjax@3 >/dev/null 2>&1; then
        mkdir -p "$mathjax"
        cp -r "$tmp/node_modules/mathjax/es5/." "$mathjax/"
    else
        echo "build: npm could not fetch mathjax; the book will load MathJax from its CDN"
    fi
    rm -rf "$tmp"
fi

.venv/bin/jupyter-book build . --builder html -W -n --keep-going
echo "build: open _build/html/index.html"
