#!/usr/bin/env bash
# Run the whole test suite: unit tests of course_utils, the stored-output checks, and nbval over every chapter
# in quick mode (COURSE_QUICK=1), two notebooks at a time. Installs what it needs first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup_env.sh test

export COURSE_QUICK=1
export COURSE_DATA_DIR=${COURSE_DATA_DIR:-$root/../shared/data}
export COURSE_CACHE_DIR=${COURSE_CACHE_DIR:-$(mktemp -d)}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1    # two workers on two cores: no oversubscription
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # tests never reach for the Hub
export MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1

exec .venv/bin/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
    -p no:cacheprovider "$@" tests notebooks
