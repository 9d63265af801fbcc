#!/usr/bin/env bash
# Run the whole test suite: unit tests of course_utils, the stored-output checks, and nbval over every chapter
# in quick mode (COURSE_QUICK=1), two notebooks at a time. Installs what it needs first.
# `bash scripts/test.sh --colab [pytest args]`: the same suite in a second environment, .venv-colab, with Colab's
# versions of the chapters' libraries (constraints-colab.txt; the machine's CPU torch stands in for Colab's).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ "${1:-}" = "--colab" ]; then
    shift
    export COURSE_COLAB=1
fi
if [ "${COURSE_COLAB:-0}" = 1 ]; then
    venv=${COURSE_VENV:-.venv-colab}
    echo "test: Colab's library versions (constraints-colab.txt) in $venv"
else
    venv=${COURSE_VENV:-.venv}
fi
bash scripts/setup_env.sh test

export COURSE_QUICK=1
export COURSE_DATA_DIR=${COURSE_DATA_DIR:-$root/../shared/data}
export COURSE_CACHE_DIR=${COURSE_CACHE_DIR:-$(mktemp -d)}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1    # two workers on two cores: no oversubscription
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # tests never reach for the Hub
export MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1
# In a kernel, tqdm.auto draws progress bars as widgets, which the stored notebooks do not keep
# (course_utils.execute drops widget views). The test kernels use plain tqdm, switched off, so the quick run's
# outputs line up with the stored ones in the cells nbval compares.
export IPYTHONDIR=$(mktemp -d)
mkdir -p "$IPYTHONDIR/profile_default/startup"
cat > "$IPYTHONDIR/profile_default/startup/00-plain-progress-bars.py" <<'PY'
import tqdm.auto, tqdm.std


class QuietTqdm(tqdm.std.tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


tqdm.auto.tqdm = QuietTqdm
tqdm.auto.trange = lambda *args, **kwargs: QuietTqdm(range(*args), **kwargs)
PY

exec "$venv/bin/python" -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
    -p no:cacheprovider "$@" tests notebooks
