"""Cut constraints-colab.txt from Colab's published `pip freeze` (../shared/colab/).

Usage: python scripts/cut_colab_constraints.py [FREEZE] [--output constraints-colab.txt]

The constraints pin, to Colab's versions, the packages the chapters install or import
at run time (requirements.txt) and the libraries those pull in that change behaviour
(the Hugging Face stack, matplotlib's and ipywidgets' parts). Left out on purpose:

* torch and the CUDA wheels: Colab's is a +cu128 build; the machine's CPU torch
  (constraints.txt) stands in for it.
* the notebook harness (ipython, ipykernel, jupyter_*, pytest, nbval): the suite's
  own, from constraints.txt. Colab runs chapters in its own kernel.
* psutil (accelerate's): the suite's ipython needs psutil >= 7, Colab's is 5.9.5.
* packages Colab does not have (filetype, loguru): they resolve from constraints.txt.
* lines Colab installs from git or from a file (`@ git+`, `@ file:`).

Run it again after copying a newer freeze; tests/test_requirements.py checks that
constraints-colab.txt is this script's output.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FREEZE = ROOT.parent / "shared" / "colab" / "pip-freeze.gpu.txt"
OUTPUT = ROOT / "constraints-colab.txt"

# What the chapters use, by who pulls it in. Names as pip spells them (any case).
PACKAGES: dict[str, tuple[str, ...]] = {
    "requirements.txt": (
        "numpy", "diffusers", "datasets", "accelerate", "matplotlib", "pillow", "tqdm",
        "ipywidgets", "opencv-python-headless", "scipy", "filetype", "loguru",
        "requests", "transformers",
    ),
    "the Hugging Face stack (diffusers, datasets, accelerate, transformers)": (
        "huggingface-hub", "hf-xet", "safetensors", "tokenizers", "pyarrow", "fsspec",
        "pandas",
        "dill", "multiprocess", "xxhash", "regex", "filelock", "httpx", "httpcore",
        "httpx2", "httpcore2",
        "anyio", "h11", "certifi", "idna", "urllib3", "charset-normalizer",
        "pyyaml", "packaging", "importlib-metadata", "zipp",
    ),
    "matplotlib": (
        "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing",
        "python-dateutil", "six", "pytz", "tzdata",
    ),
    "ipywidgets (the widget parts, not the kernel)": (
        "widgetsnbextension", "jupyterlab-widgets",
    ),
}
LEFT_OUT = ("torch",)  # Colab's +cu128 build; the machine's CPU torch stands in
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def canonical(name: str) -> str:
    """A package name as PEP 503 compares it: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(path: Path) -> dict[str, str]:
    """{canonical name: 'Name==version'} for each plain `Name==version` line."""
    if not path.is_file():
        raise FileNotFoundError(f"expected Colab's pip freeze at {path}; not found")
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:  # skips comments, `@ git+`, `@ file:` and blank lines
            pins[canonical(match.group(1))] = line.strip()
    return pins


def cut(freeze: Path) -> str:
    """The text of constraints-colab.txt for a given freeze."""
    pins = read_freeze(freeze)
    lines = [
        "# Colab's versions of what the chapters install (GPU runtime's pip freeze, "
        "../shared/colab/).",
        "# Made by scripts/cut_colab_constraints.py; used by `bash scripts/test.sh "
        "--colab`. torch is",
        "# not here: the machine's CPU build from constraints.txt stands in for "
        "Colab's +cu128 one.",
    ]
    for group, names in PACKAGES.items():
        found = [pins[canonical(n)] for n in names if canonical(n) in pins]
        missing = [n for n in names if canonical(n) not in pins]
        lines.append(f"# {group}")
        lines.extend(sorted(found, key=str.lower))
        if missing:
            names = ", ".join(missing)
            lines.append(f"# not on Colab (constraints.txt decides): {names}")
    for name in LEFT_OUT:
        if any(canonical(line.split("==")[0]) == name for line in lines):
            raise AssertionError(f"{name} must not be constrained to Colab's build")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("freeze", nargs="?", type=Path, default=FREEZE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    args.output.write_text(cut(args.freeze))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
