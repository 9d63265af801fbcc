"""Exercise checks of Chapter 2: training a denoiser on MNIST."""

from __future__ import annotations

from typing import Callable

import torch

from ._harness import CheckResult, _as_tensor, _call, _tensor_result, _report


def _ddpm_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


def reference_ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, scheduler, noise: torch.Tensor) -> torch.Tensor:
    """Ho et al. (2020), Algorithm 2: x_{t-1} = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t + σ_t z, σ_t² = β̃_t (diffusers' fixed_small)."""
    beta, alpha, ab = scheduler.betas[t], scheduler.alphas[t], scheduler.alphas_cumprod[t]
    ab_prev = scheduler.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()
    variance = (1 - ab_prev) / (1 - ab) * beta
    return mean + variance.sqrt() * noise


def check_x0_from_eps(x0_from_eps: Callable) -> CheckResult:
    """Check `x0_from_eps(x_t, eps, t, alphas_cumprod)` inverts x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for x_0."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(3, 1, 8, 8, generator=g)
    t = torch.tensor([10, 500, 900])
    alphas_cumprod = _ddpm_scheduler().alphas_cumprod
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    result, err = _call(x0_from_eps, x_t, eps, t, alphas_cumprod, name="x0_from_eps")
    if err:
        return _report(False, err)
    result, err = _as_tensor(result, tuple(x0.shape), "x0_from_eps")
    if err:
        return _report(False, err + ". Hint: index alphas_cumprod with t and reshape to (B, 1, 1, 1)")
    if torch.allclose(result, x0.double(), atol=1e-3):
        return _report(True, "x̂0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t recovers the clean images")
    if torch.allclose(result, (x_t - (1 - ab) * eps).double() / ab.double(), atol=1e-3):
        return _report(False, "the coefficients are standard deviations: they need square roots")
    if torch.allclose(result, (x_t - (1 - ab).sqrt() * eps).double(), atol=1e-3):
        return _report(False, "you removed the noise but did not undo the scaling of the signal")
    return _report(False, "solve x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for x_0, with each image's own t")


def check_ddpm_step(ddpm_step: Callable) -> CheckResult:
    """Check `ddpm_step(x_t, eps, t, scheduler, noise)` returns x_{t−1} as in Ho et al. (2020), Algorithm 2."""
    scheduler = _ddpm_scheduler()  # clip_sample=False: step() is then exactly Algorithm 2
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 1, 8, 8, generator=g)
    eps = torch.randn(2, 1, 8, 8, generator=g)
    for t in (600, 20, 0):
        # diffusers draws the step's noise z from the generator it is given: draw the same z for the learner
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(10 + t))
        expected = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(10 + t)).prev_sample.double()
        result, err = _tensor_result(ddpm_step, x_t, eps, t, scheduler, noise, shape=tuple(x_t.shape),
                                     name="ddpm_step")
        if err:
            return _report(False, err)
        if torch.allclose(result, expected, atol=1e-4):
            continue
        beta, alpha, ab = scheduler.betas[t], scheduler.alphas[t], scheduler.alphas_cumprod[t]
        mean = ((x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()).double()
        if t == 0:
            return _report(False, "at t = 0 the last step adds no noise: σ_0 = 0, since ᾱ_{t−1} is 1 there")
        if torch.allclose(result, mean, atol=1e-4):
            return _report(False, "the mean is right, but each step except the last adds σ_t z of fresh noise")
        if torch.allclose(result, mean + beta.sqrt() * noise.double(), atol=1e-4):
            return _report(False, "close: σ_t² = β_t is the paper's other choice; use β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t "
                                  "as diffusers' default 'fixed_small' does")
        return _report(False, "compare with μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t, then add σ_t z")
    return _report(True, "your step matches diffusers' DDPMScheduler.step (Algorithm 2), noise and last step included")


def check_mix_factors(mix_factors: Callable) -> CheckResult:
    """Check `mix_factors(n_steps, power)`: fractions that leave (1 − (i+1)/n) ** power of the way after step i."""
    for n, power in ((1, 1.0), (5, 1.0), (10, 1.0), (5, 2.0), (8, 0.5), (10, 3.0)):
        result, err = _call(mix_factors, n, power, name="mix_factors")
        if err:
            return _report(False, err)
        try:
            factors = [float(f) for f in result]
        except TypeError:
            return _report(False, f"mix_factors should return a list of numbers, got {type(result).__name__}")
        if len(factors) != n:
            return _report(False, f"mix_factors({n}, {power}) should give one factor per step ({n}), "
                                  f"got {len(factors)}")
        left = [(1 - i / n) ** power for i in range(n + 1)]  # share of the start left before step i
        expected = [1 - left[i + 1] / left[i] for i in range(n)]
        close = 1e-6  # float32 arithmetic is right to about 1e-7
        if all(abs(f - e) < close for f, e in zip(factors, expected)):
            continue
        if all(abs(f - e) < close for f, e in zip(factors, left[1:])):
            return _report(False, "these are the shares of the distance left after each step; the factor is "
                                  "the fraction of the remaining way that the step moves")
        if all(abs(f - (left[i] - left[i + 1])) < close for i, f in enumerate(factors)):
            return _report(False, "these are the shares of the starting distance each step covers; the "
                                  "factor is a fraction of what is left before the step: divide by that share")
        if power != 1 and all(abs(f - 1 / (n - i)) < close for i, f in enumerate(factors)):
            return _report(False, f"right for power 1, but power {power} should change the factors: after "
                                  f"step i, (1 - (i + 1) / n) ** power of the distance is left")
        if any(not 0 < f <= 1 for f in factors):
            return _report(False, f"mix_factors({n}, {power}) gave {[round(f, 3) for f in factors]}: each factor "
                                  "is a fraction of the remaining way to the prediction, so it must lie in (0, 1]")
        if abs(factors[-1] - 1) > close:
            return _report(False, "the last step should land exactly on the prediction (factor 1)")
        worst = max(range(n), key=lambda i: abs(factors[i] - expected[i]))
        return _report(False, f"mix_factors({n}, {power}) gave {[round(f, 3) for f in factors]}; expected "
                              f"{[round(e, 3) for e in expected]} (step {worst}: {factors[worst]:.7g} against "
                              f"{expected[worst]:.7g}). Hint: the fraction moved is 1 minus (share left after "
                              "the step) / (share left before it)")
    return _report(True, "f_i = 1 − ((n − i − 1) / (n − i)) ** power; power 1 gives back 1 / (n − i)")
