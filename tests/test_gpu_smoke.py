"""scripts/gpu_smoke.sh: its arguments, one tiny chapter and two tiny steps on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_smoke.sh"


def smoke(*args: str, env: dict[str, str] | None = None,
          timeout: int = 120) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=ROOT)


def test_help_names_every_option():
    done = smoke("--help")
    assert done.returncode == 0
    for option in ("--device", "--chapters", "--steps", "--preset", "--precision",
                   "--cell-timeout", "--out"):
        assert option in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device must be cuda or cpu, got 'tpu'"),
    (["--device"], "--device needs a value"),
    (["--steps", "1"], "--steps must be a whole number >= 2"),
    (["--steps", "ten"], "got 'ten'"),
    (["--device", "cpu", "--precision", "fp16"], "fp16 needs --device cuda"),
    (["--precision", "fp8"], "must be no, fp16 or bf16, got 'fp8'"),
    (["--chapters", "09"], "no chapter numbered '09'; expected one of: 01"),
    (["--chapters", "one"], "got 'one'"),
    (["--cell-timeout", "0"], "got '0'"),
    (["--verbose"], "unknown argument '--verbose'; expected one of --device"),
])
def test_bad_arguments_are_refused_with_what_was_expected(args, message):
    done = smoke(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr


def test_cuda_without_a_gpu_says_to_use_the_cpu_dry_run():
    done = smoke("--chapters", "none", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert "expected a GPU that torch can see" in done.stderr
    assert "--device cpu" in done.stderr


def test_unknown_preset_is_refused():
    done = smoke("--device", "cpu", "--chapters", "none", "--preset", "huge")
    assert done.returncode == 2
    assert "--preset must be one of: cpu gpu tiny" in done.stderr


TINY_CHAPTER = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "import torch\n"
                   "model = torch.nn.Linear(4, 1)\n"
                   "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                   "for _ in range(5):\n"
                   "    model(torch.randn(8, 4)).pow(2).mean().backward()\n"
                   "    optimizer.step()\n"
                   "    optimizer.zero_grad()\n"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def test_a_chapter_is_run_from_a_copy_with_its_steps_and_memory(tmp_path):
    chapters = tmp_path / "notebooks"
    chapters.mkdir()
    chapter = chapters / "01_tiny.ipynb"
    chapter.write_text(json.dumps(TINY_CHAPTER))
    before = chapter.read_text()
    out = tmp_path / "smoke"
    done = smoke("--device", "cpu", "--notebooks", str(chapters), "--chapters", "1",
                 "--preset", "tiny", "--steps", "2", "--out", str(out),
                 env={"COURSE_CACHE_DIR": str(tmp_path / "cache"),
                      "OMP_NUM_THREADS": "1"}, timeout=600)
    rows = json.loads((out / "results.json").read_text())
    assert rows[0]["part"] == "01_tiny" and rows[0]["ok"], rows[0]
    assert rows[0]["optimizer_steps"] == 5 and rows[0]["s_per_step"] > 0
    assert rows[0]["device"] == "cpu" and rows[0]["peak_memory_mib"] > 0
    assert chapter.read_text() == before  # executed as a copy under --out
    assert (out / "01_tiny.ipynb").is_file()
    assert "01_tiny" in done.stdout


def test_cpu_dry_run_trains_stops_resumes_and_reports(data_dir, tmp_path):
    out = tmp_path / "smoke"
    done = smoke("--device", "cpu", "--chapters", "none", "--preset", "tiny",
                 "--steps", "2", "--out", str(out),
                 env={"COURSE_CACHE_DIR": str(tmp_path / "cache"),
                      "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and rows[0]["ok"], rows
    row = rows[0]
    assert row["steps"] == 2 and row["resumed_at"] == 1 and row["precision"] == "no"
    assert row["s_per_step"] > 0 and row["peak_memory_mib"] > 0
    assert "s/step" in done.stdout
    assert "train_unconditional --preset tiny" in done.stdout
