"""Run chapters top to bottom at full budget and stamp the run into each notebook's metadata.

Usage: python -m course_utils.execute notebooks/01_noise_and_schedules.ipynb [more.ipynb ...]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .budget import QUICK_ENV, get_device, is_quick
from .data import DATA_DIR_ENV

STAMP_KEY = "course_run"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PACKAGES = ("torch", "diffusers", "datasets", "accelerate", "numpy", "matplotlib", "course_utils")
# Metadata that editors add and that only adds noise to diffs and the book.
NOISY_NOTEBOOK_KEYS = ("widgets", "colab", "accelerator", "gpuClass", "toc-showcode", "varInspector")
NOISY_CELL_KEYS = ("execution", "colab", "outputId", "collapsed", "scrolled")


def versions() -> dict[str, str]:
    """Installed versions of the packages the chapters depend on."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_description() -> str:
    """The device the chapters train on, in words (GPU name or CPU and its core count)."""
    device = get_device()
    if device.type == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"{device.type}: {platform.machine()}, {os.cpu_count()} cores"


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop editor metadata and widget views (they need a live kernel; the book shows static figures)."""
    for key in NOISY_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in NOISY_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    return nb


def slowest_cells(nb: nbformat.NotebookNode, k: int = 5) -> list[tuple[int, float]]:
    """The k slowest code cells of an executed notebook as (index, seconds), slowest first.

    Reads the timestamps nbclient records (record_timing=True) in each cell's `execution` metadata; cells without
    them (not run, or run by another tool) are skipped.
    """
    durations = []
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        began, ended = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if cell.cell_type == "code" and began and ended:
            seconds = (_dt.datetime.fromisoformat(ended.replace("Z", "+00:00"))
                       - _dt.datetime.fromisoformat(began.replace("Z", "+00:00"))).total_seconds()
            durations.append((index, seconds))
    return sorted(durations, key=lambda pair: -pair[1])[:k]


def execute_notebook(path: Path, timeout: int | None = None) -> dict:
    """Execute one notebook in place, from a fresh kernel, and stamp it; return the stamp."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    for index, seconds in slowest_cells(nb):  # where a budget would shrink the run
        print(f"  cell {index}: {seconds:.0f} s", flush=True)
    stamp = {
        "budget": "quick" if is_quick() else "full",
        "executed_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(wall, 1),
        "device": device_description(),
        "data": "offline mirror (COURSE_DATA_DIR)" if os.environ.get(DATA_DIR_ENV) else "Hugging Face Hub",
        "versions": versions(),
    }
    nb.metadata[STAMP_KEY] = stamp
    nbformat.write(clean(nb), path)
    return stamp


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: execute and stamp each notebook given."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: no limit)")
    parser.add_argument("--allow-quick", action="store_true",
                        help=f"run even with {QUICK_ENV}=1 (the stamp then says 'quick'; never commit that)")
    args = parser.parse_args(argv)
    if is_quick() and not args.allow_quick:
        parser.error(f"{QUICK_ENV}=1 is set: stored outputs must come from the full budget. Unset it.")
    for path in args.notebooks:
        if path.suffix != ".ipynb" or not path.is_file():
            parser.error(f"not a notebook file: {path}")
    if os.environ.pop("MPLBACKEND", None):  # Agg in the kernel would store "<Figure ...>" text, not the figure
        print("note: MPLBACKEND unset for the kernels, so that figures are stored as images", flush=True)
    for path in args.notebooks:
        print(f"executing {path} ...", flush=True)
        stamp = execute_notebook(path, timeout=args.timeout)
        print(f"  done in {stamp['wall_time_s']} s on {stamp['device']} ({stamp['budget']} budget)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
