import random

import numpy as np
import pytest
import torch

from course_utils import budget, get_device, is_quick, set_seed


def test_budget_follows_course_quick(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert is_quick()
    assert budget(full=3000, quick=20) == 20
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert budget(full=3000, quick=20) == 3000
    monkeypatch.delenv("COURSE_QUICK")
    assert budget(full=3000, quick=20) == 3000


def test_budget_rejects_unclear_settings(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="COURSE_QUICK"):
        budget(full=1, quick=0)
    monkeypatch.setenv("COURSE_QUICK", "1")
    with pytest.raises(TypeError, match="same type"):
        budget(full=3000, quick="20")


def test_get_device_is_a_usable_device():
    device = get_device()
    assert isinstance(device, torch.device)
    assert torch.zeros(2, device=device).sum().item() == 0
    if not torch.cuda.is_available():
        assert device.type in ("cpu", "mps")


def test_set_seed_makes_all_generators_repeat():
    set_seed(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_seed(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises((TypeError, ValueError)):
        set_seed(bad)
