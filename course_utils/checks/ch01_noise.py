"""Exercise checks of Chapter 1: corruption and noise schedules."""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch

from ._harness import (
    CheckResult,
    _as_tensor,
    _call,
    _coefficients,
    _linear_betas,
    _near,
    _report,
)

_BROADCAST_ERROR = "must match the size of tensor"  # torch's message when (B,) meets (B, C, H, W)


def _depends_on_noise(fn: Callable, result: torch.Tensor, *args: torch.Tensor, noise_at: int) -> bool:
    """True when `fn` gives `result` again for the same inputs and changes when only the
    noise changes: it builds its output from the noise it was given (not from
    torch.randn_like, nor without noise)."""
    again, err = _call(fn, *(a.clone() for a in args), name="")
    if err or not isinstance(again, torch.Tensor) or again.shape != result.shape:
        return True  # nothing to say about the noise
    if not torch.allclose(again.double(), result, atol=1e-6):
        return False  # different outputs for the same inputs: it draws noise of its own
    other = [a.clone() for a in args]
    other[noise_at] = torch.randn(args[noise_at].shape, generator=torch.Generator().manual_seed(99))
    moved, err = _call(fn, *other, name="")
    if err or not isinstance(moved, torch.Tensor) or moved.shape != result.shape:
        return True
    return not torch.allclose(moved.double(), result, atol=1e-6)


def check_corrupt(corrupt: Callable) -> CheckResult:
    """Check `corrupt(x, noise, amount)`: a per-image lerp from x (amount 0) to noise
    (amount 1)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    noise = torch.randn(4, 1, 8, 8, generator=g)
    amount = torch.tensor([0.5, 0.0, 1.0, 0.25])  # the first is neither end: giving every image amount[0] shows
    inputs = (x.clone(), noise.clone(), amount.clone())  # the learner's copies: in-place edits show
    result, err = _call(corrupt, *inputs, name="corrupt")
    if err:
        hint = (". Hint: amount has shape (B,); reshape it to (B, 1, 1, 1), e.g. amount.view(-1, 1, 1, 1), so it "
                "broadcasts per image") if _BROADCAST_ERROR in err else ""
        return _report(False, err + hint)
    if not all(torch.equal(a, b) for a, b in zip(inputs, (x, noise, amount))):
        return _report(False, "corrupt changed its inputs in place: do not modify x (or noise, or amount); "
                              "build a new tensor, e.g. x * (1 - a) + noise * a")
    result, err = _as_tensor(result, tuple(x.shape), "corrupt")
    if err:
        if "shape" in err:  # a tensor of the wrong shape, not some other type
            err += ". Hint: amount has shape (B,); reshape it to (B, 1, 1, 1) so it broadcasts per image"
        return _report(False, err)
    x, noise, a = x.double(), noise.double(), amount.view(-1, 1, 1, 1).double()
    if torch.allclose(result, x * (1 - a) + noise * a, atol=1e-6):
        return _report(True, "corrupt mixes each image with its noise by its own amount")
    if torch.allclose(result, noise * (1 - a) + x * a, atol=1e-6):
        return _report(False, "image and noise are swapped: amount 0 should keep the image and amount 1 give pure "
                              "noise, so the amount multiplies the noise and 1 − amount the image")
    if torch.allclose(result, x * (1 - a[0]) + noise * a[0], atol=1e-6):
        return _report(False, "every image got the first image's amount (amount[0]); each image has its own: "
                              "reshape amount to (B, 1, 1, 1) instead of picking one value")
    if not _depends_on_noise(corrupt, result, *inputs, noise_at=1):
        return _report(False, "use the noise you were given: build the result from the `noise` argument (not "
                              "from torch.randn_like or new noise), so the same inputs give the same result")
    if not torch.allclose(result[1], x[1], atol=1e-6):
        return _report(False, "amount = 0 should give back the clean image unchanged")
    if not torch.allclose(result[2], noise[2], atol=1e-6):
        return _report(False, "amount = 1 should give pure noise. Hint: which term should the amount multiply?")
    return _report(False, "the ends are right but amount = 0.25 and 0.5 are not a straight-line mix of image and "
                          "noise")


def _alpha_bar_end(beta_start: float, beta_end: float, n_steps: int) -> float:
    """ᾱ at the last step of a linear schedule, in float64."""
    return float(torch.prod(1 - torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)))


def check_beta_end(beta_end_for: Callable) -> CheckResult:
    """Check `beta_end_for(target, beta_start, n_steps)`: the linear schedule's β_end
    that leaves ᾱ_T = target."""
    cases = [(_alpha_bar_end(1e-4, 0.02, 1000), 1e-4, 1000), (1e-3, 1e-4, 1000), (0.05, 1e-4, 1000),
             (1e-6, 1e-4, 1000), (1e-3, 1e-3, 50)]
    for target, beta_start, n_steps in cases:
        result, err = _call(beta_end_for, target, beta_start, n_steps, name="beta_end_for")
        if err:
            return _report(False, err)
        if isinstance(result, torch.Tensor) and result.numel() == 1:
            result = result.item()
        if isinstance(result, bool) or not isinstance(result, (int, float, np.floating)):
            return _report(False, f"beta_end_for should return one number, it returned {type(result).__name__}")
        beta_end = float(result)
        if not beta_start <= beta_end < 1:
            return _report(False, f"β_end = {beta_end:g} for ᾱ_T = {target:g}: it must lie in [β_start, 1)")
        reached = _alpha_bar_end(beta_start, beta_end, n_steps)
        with np.errstate(divide="ignore"):  # ᾱ_T = 0 (β_end near 1, a bisection the wrong way): log is -inf
            off = abs(np.log(reached) - np.log(target))
        if off < 1e-3:  # ᾱ_T within 0.1 %
            continue
        first_order = 2 * (1 - target) / n_steps - beta_start  # from 1 − Σβ = target
        log_sum = 2 * -np.log(target) / n_steps - beta_start  # from −Σβ = log target
        if abs(beta_end - first_order) < 1e-6:
            return _report(False, "1 − Σβ is ᾱ_T only when Σβ is small; ᾱ_T is a product: compute it exactly "
                                  "for a trial β_end and search (bisection works, ᾱ_T falls as β_end grows)")
        if abs(beta_end - log_sum) < 1e-6:
            return _report(False, "log ᾱ_T = Σ log(1 − β) is close to −Σβ but not equal: the β² terms shift ᾱ_T "
                                  f"by {abs(reached / target - 1):.0%} here; compute the product and search")
        return _report(False, f"for ᾱ_T = {target:g} (β_start {beta_start:g}, {n_steps} steps) your β_end "
                              f"{beta_end:.5g} gives ᾱ_T = {reached:.3g}")
    return _report(True, f"DDPM's ᾱ_T = {cases[0][0]:.2e} needs β_end = 0.02, and every other target is met "
                         "to 0.1 %")


def _ratio_is(
    top: torch.Tensor, bottom: torch.Tensor, ratio: torch.Tensor
) -> torch.Tensor:
    """Elementwise top ≈ ratio · bottom, to 1e-5 · (1 + ratio): float32 answers pass."""
    return (top - ratio * bottom).abs() <= 1e-5 * (1 + ratio)


def check_noise_to_snr(noise_to_snr: Callable) -> CheckResult:
    """Check `noise_to_snr(x0, noise, snr)`: the VP x_t whose SNR is snr, one per image.

    Two batches of different sizes and shapes (a reshape to a fixed batch fails the
    second), compared by value, so any right way of writing ᾱ passes; the usual slips
    get a hint.
    """
    g = torch.Generator().manual_seed(1)
    cases = []  # (x0, noise, snr): SNRs on both sides of 1; the batch sizes differ
    for shape, snr in [((3, 1, 8, 8), [100.0, 1.0, 0.01]),
                       ((4, 3, 5, 7), [0.2, 30.0, 3.0, 0.05])]:
        x0 = torch.rand(shape, generator=g) * 2 - 1
        cases.append((x0, torch.randn(shape, generator=g), torch.tensor(snr)))
    for x0, noise, snr in cases:
        inputs = (x0.clone(), noise.clone(), snr.clone())  # the learner's copies
        result, err = _call(noise_to_snr, *inputs, name="noise_to_snr")
        if err:
            hint = (". Hint: snr has shape (B,); reshape it (or ᾱ) to (B, 1, 1, 1) "
                    "with .view(-1, 1, 1, 1), not to a fixed batch size, so it "
                    "broadcasts per image"
                    ) if "shape" in err or _BROADCAST_ERROR in err else ""
            return _report(False, f"with a batch of {len(snr)} images: {err}{hint}")
        if not all(torch.equal(a, b) for a, b in zip(inputs, (x0, noise, snr))):
            return _report(False, "noise_to_snr changed its inputs in place: do not "
                                  "modify x0 (or noise, or snr); build a new tensor")
        result, err = _as_tensor(result, tuple(x0.shape), "noise_to_snr")
        if err:
            return _report(False, f"with a batch of {len(snr)} images: {err}. Hint: "
                                  "reshape the (B,) SNRs to (B, 1, 1, 1) with "
                                  ".view(-1, 1, 1, 1), not a fixed batch size")
        c_x, c_n, off = _coefficients(result, x0, noise)
        s = snr.double()
        if off.max() < 1e-5:  # a mix of x0 and the noise: read its coefficients
            unit = (c_x**2 + c_n**2 - 1).abs() < 1e-4  # variance 1 (VP)
            if bool((unit & _ratio_is(c_x**2, c_n**2, s)).all()):
                continue
            wrong = [
                (
                    _near(c_x, 1) & _near(c_n, 1 / s.sqrt()),
                    (
                        "that x_t has the right SNR but is the VE form (x_0 + σε): its"
                        " variance grows as the SNR falls. Keep the variance at 1"
                        " (variance preserving)"
                    ),
                ),
                (
                    unit & _ratio_is(c_n**2, c_x**2, s),
                    (
                        "signal and noise are swapped: the share you gave the signal is"
                        " the noise's share of the variance; with a large SNR x_t"
                        " should be almost x_0"
                    ),
                ),
                (
                    unit & _ratio_is(c_x, c_n, s),
                    (
                        "the SNR is a ratio of powers (variances), ᾱ / (1 − ᾱ), not of"
                        " the coefficients √ᾱ / √(1 − ᾱ)"
                    ),
                ),
                (
                    unit & _near(c_x**2, s.clamp(max=1)),
                    "the SNR is not ᾱ: SNR = ᾱ / (1 − ᾱ); solve it for ᾱ first",
                ),
                (
                    _near(c_x + c_n, 1) & _ratio_is(c_x, c_n, s),
                    (
                        "close: the coefficients are standard deviations, so they need"
                        " square roots"
                    ),
                ),
                (
                    unit & _ratio_is(c_x**2, c_n**2, s[:1].expand(len(s))),
                    "every image got the first image's SNR; each image has its own",
                ),
            ]
            for is_wrong, hint in wrong:
                if bool(is_wrong.all()):
                    return _report(False, hint)
        if not _depends_on_noise(noise_to_snr, result, *inputs, noise_at=1):
            return _report(False, "use the noise you were given: x_t is built from the `noise` "
                                  "argument (not from torch.randn_like or new noise), so the "
                                  "same inputs give the same x_t")
        snrs = [round(v, 3) for v in snr.tolist()]
        return _report(False, f"for SNRs {snrs} the values are off: with a large "
                              "SNR x_t should be almost x_0, with a small one almost "
                              "noise, and ᾱ / (1 − ᾱ) should equal snr")
    return _report(
        True,
        "variance preserved and the SNR asked for, image by image, for "
        "two batch shapes: the VP point with that SNR",
    )


# sha256 of "course snr_crossing <t>" for the answer: the check knows the answer without
# stating it
_SNR_CROSSING_SHA256 = (
    "e7175553a7dc9abf49fd0e44a7ebff8c5c68631d4bc28c2f4c2fbb9d9ce6cf62"
)


def _is_crossing(t: int) -> bool:
    return (
        hashlib.sha256(f"course snr_crossing {t}".encode()).hexdigest()
        == _SNR_CROSSING_SHA256
    )


def check_snr_crossing(t_cross: object) -> CheckResult:
    """Check the first timestep at which the linear schedule's SNR = ᾱ/(1−ᾱ) drops below
    1.

    The answer is stored as a hash; a wrong answer gets a hint about its kind of mistake
    (an off-by-one, a value outside the schedule), never which way the answer lies."""
    if isinstance(t_cross, torch.Tensor) and t_cross.numel() == 1:
        t_cross = int(t_cross.item())
    if isinstance(t_cross, np.integer):  # what np.argmax returns
        t_cross = int(t_cross)
    if isinstance(t_cross, bool) or not isinstance(t_cross, int):
        return _report(False, f"expected one integer timestep, got {type(t_cross).__name__}")
    if _is_crossing(t_cross):
        return _report(
            True, f"from t = {t_cross} on, the noise carries more power than the signal"
        )
    if not 0 <= t_cross < len(_linear_betas()):
        return _report(
            False,
            f"t = {t_cross} is not a timestep of the schedule: diffusers' timesteps "
            "run from 0 to 999",
        )
    if _is_crossing(t_cross - 1):
        return _report(
            False,
            "off by one: diffusers' timesteps are 0-based (its t = 0 is the paper's "
            "t = 1), so count from 0: the first index whose SNR is below 1",
        )
    if _is_crossing(t_cross + 1):
        return _report(False, "off by one: you want the first t whose SNR is already below 1")
    return _report(
        False,
        f"t = {t_cross} is not where the SNR first drops below 1. Hint: SNR = "
        "ᾱ_t / (1 − ᾱ_t), from alphas_cumprod; look for the first t where it is < 1",
    )
