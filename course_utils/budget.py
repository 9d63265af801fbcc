"""Budgets, devices and seeds: the switches every chapter starts with."""

from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

QUICK_ENV = "COURSE_QUICK"


def is_quick() -> bool:
    """True when `COURSE_QUICK=1` asks for tiny budgets (tests and CI)."""
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{QUICK_ENV} must be 1 or 0, got {value!r}")


def budget(full: T, quick: T) -> T:
    """Return `quick` when `COURSE_QUICK=1`, otherwise `full`."""
    if type(full) is not type(quick):
        raise TypeError(
            f"budget(full, quick) expects two values of the same type, "
            f"got {type(full).__name__} and {type(quick).__name__}"
        )
    return quick if is_quick() else full


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random number generators."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
