"""Every exercise check accepts the right answer and rejects typical wrong ones with a hint."""

import torch

from course_utils import check_add_noise, check_alpha_bar, check_corrupt, check_snr_crossing


def test_check_corrupt():
    def right(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return x * (1 - amount) + noise * amount

    def swapped(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return noise * (1 - amount) + x * amount

    def not_broadcast(x, noise, amount):
        return x * (1 - amount) + noise * amount

    def unfinished(x, noise, amount):
        raise NotImplementedError

    assert check_corrupt(right)
    assert not check_corrupt(swapped)
    result = check_corrupt(not_broadcast)
    assert not result and "raised" in repr(result)
    assert "NotImplementedError" in repr(check_corrupt(unfinished))
    assert "function" in repr(check_corrupt(42))


def test_check_alpha_bar():
    result = check_alpha_bar(lambda betas: torch.cumprod(1 - betas, dim=0))
    assert result and repr(result).startswith("✅")
    assert "multiplied the β" in repr(check_alpha_bar(lambda b: torch.cumprod(b, 0)))
    assert "sum" in repr(check_alpha_bar(lambda b: 1 - torch.cumsum(b, 0)))
    assert "accumulates" in repr(check_alpha_bar(lambda b: 1 - b))
    assert not check_alpha_bar(lambda b: torch.ones(3))


def test_check_add_noise():
    def right(x0, noise, t, ab):
        ab = ab[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def no_sqrt(x0, noise, t, ab):
        ab = ab[t].view(-1, 1, 1, 1)
        return ab * x0 + (1 - ab) * noise

    def one_timestep(x0, noise, t, ab):
        return ab[t[0]].sqrt() * x0 + (1 - ab[t[0]]).sqrt() * noise

    assert check_add_noise(right)
    assert "square roots" in repr(check_add_noise(no_sqrt))
    assert "own t" in repr(check_add_noise(one_timestep))
    # the pass message never shows code
    assert "sqrt()" not in repr(check_add_noise(right))


def test_check_snr_crossing():
    assert check_snr_crossing(259)
    assert check_snr_crossing(torch.tensor(259))
    assert "off by one" in repr(check_snr_crossing(258))
    assert "too late" in repr(check_snr_crossing(600))
    assert not check_snr_crossing(None)
    assert not check_snr_crossing(259.0)
