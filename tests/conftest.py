"""Shared test setup: quick budgets, the offline data mirror, a non-interactive plotting backend."""

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """COURSE_DATA_DIR pointing at the offline copies beside the repository."""
    path = Path(os.environ.get("COURSE_DATA_DIR", SHARED_DATA))
    if not (path / "mnist" / "train.parquet").is_file():
        pytest.fail(f"the offline data mirror is missing at {path}; set COURSE_DATA_DIR")
    monkeypatch.setenv("COURSE_DATA_DIR", str(path))
    return path
