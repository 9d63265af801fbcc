"""Expected values some checks compare with, stored as numbers rather than computed.

A check whose right answer can only be computed by the exercise's own solution (SDEdit,
for one) compares with values stored here. They were computed once, outside this
package, by the reference answers in `tests/reference_answers.py`
(`scripts/make_check_values.py` writes this file; a test recomputes them). Each is a
float32 array, little-endian, base64-encoded."""

from __future__ import annotations

import base64

import numpy as np
import torch

from ._expected_data import VALUES


def stored_values(key: str) -> torch.Tensor:
    """The stored array `key` as a float64 tensor; KeyError names the keys there are."""
    if key not in VALUES:
        raise KeyError(f"no stored values {key!r}; there are {sorted(VALUES)}")
    shape, data = VALUES[key]
    array = np.frombuffer(base64.b64decode(data), dtype="<f4").reshape(shape)
    return torch.from_numpy(array.astype(np.float64))
