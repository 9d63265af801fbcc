"""Exercise checks of Chapter 4: DDPM from scratch."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from ._harness import CheckResult, _as_tensor, _call, _tensor_result, _linear_betas, _report


def _cumprod_prev(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ_{t−1} for every t, with ᾱ = 1 before the first step."""
    return torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod[:-1]])


@functools.cache
def _diffusers_posterior_variance(schedule: str) -> torch.Tensor:
    """diffusers' DDPMScheduler variance ('fixed_small') at every t of one schedule."""
    from diffusers import DDPMScheduler

    betas = _check_schedules()[schedule].double()
    scheduler = DDPMScheduler(num_train_timesteps=len(betas),
                              trained_betas=betas.numpy(), variance_type="fixed_small")
    variance = torch.stack([scheduler._get_variance(t) for t in range(len(betas))])
    variance = variance.double()
    variance[0] = 0.0  # diffusers clamps it to 1e-20 (for a log); β̃ is 0 there
    return variance


def _check_schedules() -> dict[str, torch.Tensor]:
    """The betas check_posterior_variance tries: linear (T = 1000), cosine (T = 200)."""
    from ..ddpm import cosine_beta_schedule  # checked against diffusers by the tests

    return {"linear": _linear_betas().float(), "cosine": cosine_beta_schedule(200)}


def check_posterior_variance(posterior_variance: Callable) -> CheckResult:
    """Check `posterior_variance(betas)`: the posterior variance β̃_t at every t.

    Compared with diffusers' DDPMScheduler variance ('fixed_small') on two schedules;
    the hints for common slips compare with variants of the formula.
    """
    for schedule, betas in _check_schedules().items():
        result, err = _call(posterior_variance, betas.clone(), name="posterior_variance")
        if err:
            return _report(False, err)
        result, err = _as_tensor(result, tuple(betas.shape), "posterior_variance")
        if err:
            return _report(False, err + " (one variance per timestep)")
        b = betas.double()
        ab = torch.cumprod(1 - b, dim=0)
        # diffusers keeps ᾱ in float32: near t = 1, float32 and float64 answers
        # differ by about 1e-4 (relative)
        reference = _diffusers_posterior_variance(schedule)
        if torch.allclose(result, reference, rtol=1e-3, atol=1e-9):
            continue
        if not result.isfinite().all():
            if not result[0].isfinite():  # the ratio inverted: 1 − ᾱ_{t−1} = 0 divides
                return _report(
                    False,
                    "β̃ is inf or NaN at the first step, where ᾱ_{t−1} = 1: a division"
                    " by 1 − ᾱ_{t−1} = 0? The ratio is (1 − ᾱ_{t−1}) over (1 − ᾱ_t),"
                    " not the other way round",
                )
            first = int((~result.isfinite()).nonzero()[0])
            return _report(
                False,
                f"β̃ is inf or NaN at t = {first} (the first such step): look for a"
                " division by zero or the square root of a negative number",
            )
        if torch.allclose(result, reference.sqrt(), rtol=1e-3, atol=1e-9):
            return _report(False, "that is σ_t = √β̃_t, a standard deviation: return the "
                                  "variance β̃_t itself")
        if torch.allclose(result, b, rtol=1e-4):
            return _report(False, "that is β_t itself, the paper's other choice of σ_t²; the posterior variance "
                                  "scales it by (1 − ᾱ_{t−1}) / (1 − ᾱ_t)")
        # ᾱ left out (the one-step α in its place): the ratio is then β_{t−1} / β_t;
        # rtol 1e-2: 1 − α rounds in float32 to β within 3e-4 (relative) at β = 1e-4
        if torch.allclose(result[1:], b[:-1], rtol=1e-2):
            return _report(
                False,
                "that is β_{t−1}, the previous step's β: use ᾱ, the cumulative"
                " product of the α's, not the one-step α_t = 1 − β_t",
            )
        if abs(float(result[0])) > 1e-6 and torch.allclose(
            result[1:], reference[1:], rtol=1e-3
        ):
            return _report(False, "right from the second step on; at the first step ᾱ_{t−1} = 1, so β̃ is 0 there")
        shifted = (1 - ab) / (1 - torch.cat([ab[1:], ab[-1:]])) * b
        if torch.allclose(result[:-1], shifted[:-1], rtol=1e-4):
            return _report(False, "off by one step: use ᾱ_{t−1} (the previous step's product) over ᾱ_t")
        if torch.allclose(result, ((1 - _cumprod_prev(ab)) / (1 - ab)).sqrt() * b, rtol=1e-4):
            return _report(False, "no square root: β̃_t is a variance, a plain ratio times β_t")
        return _report(
            False,
            "the variances differ from the posterior's: check ᾱ (a cumulative "
            "product), the step it is taken at, and the first step",
        )
    return _report(True, "β̃_t matches diffusers' DDPMScheduler variance ('fixed_small') on two schedules")


def _two_schedules() -> list[tuple[str, torch.Tensor]]:
    """ᾱ of the linear schedule and of the cosine one (float32): a solution must use the
    one it is given."""
    from ..ddpm import cosine_beta_schedule

    return [("linear", torch.cumprod(1 - _linear_betas().float(), dim=0)),
            ("cosine", torch.cumprod(1 - cosine_beta_schedule(1000).float(), dim=0))]


def _conditioned_mean(
    x_t: torch.Tensor, x0: torch.Tensor, alphas_cumprod: torch.Tensor, t: int
) -> torch.Tensor:
    """E[x_{t−1} | x_t, x_0] by conditioning the joint Gaussian of (x_{t−1}, x_t) given
    x_0.

    An independent route to the exercise's closed form: E[x_{t−1} | x_0] plus
    Cov(x_{t−1}, x_t) / Var(x_t) times the surprise x_t − E[x_t | x_0], in float64."""
    ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
    step = ab / ab_prev  # the one-step α_t
    x_t, x0 = x_t.double(), x0.double()
    gain = step.sqrt() * (1 - ab_prev) / (1 - ab)  # Cov(x_{t−1}, x_t) / Var(x_t)
    return ab_prev.sqrt() * x0 + gain * (x_t - ab.sqrt() * x0)


# β_t = 1 − ᾱ_t/ᾱ_{t−1} is small at t = 1 and 2 (5e-5 to 1.4e-4), so rounding α_t in
# float32 moves the mean: the chapter's answer misses the float64 mean by 7.9e-5,
# β_t = 1 − (√α_t)² by 1.6e-4. An index off by one misses by 4e-3 or more at t = 1,
# √ᾱ_t for √α_t by 8e-4 at t = 10 and by 0.3 or more at t = 400
_MEAN_ATOL = 5e-4


def check_posterior_mean(posterior_mean: Callable) -> CheckResult:
    """Check `posterior_mean(x_t, x0, t, alphas_cumprod)`: the mean μ̃_t of q(x_{t−1} |
    x_t, x_0).

    On two schedules (so an answer must use the `alphas_cumprod` it is given) and at t =
    1, 2, 10, 400, 999 (at small t an off-by-one in the index moves the mean by far more
    than the tolerance)."""
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(2, 1, 8, 8, generator=g)
    for schedule, alphas_cumprod in _two_schedules():
        for t in (1, 2, 10, 400, 999):
            ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
            expected = _conditioned_mean(x_t, x0, alphas_cumprod.double(), t)
            result, err = _tensor_result(posterior_mean, x_t.clone(), x0.clone(), t, alphas_cumprod.clone(),
                                         shape=tuple(x_t.shape), name="posterior_mean")
            if err:
                return _report(False, err)
            if torch.allclose(result, expected, atol=_MEAN_ATOL):
                continue
            # the usual slips, built from the right coefficients (the mean is linear in
            # x_t and x0)
            ones, zeros = torch.ones_like(x0), torch.zeros_like(x0)
            c_x0 = _conditioned_mean(zeros, ones, alphas_cumprod.double(), t)[
                0, 0, 0, 0
            ]
            c_xt = _conditioned_mean(ones, zeros, alphas_cumprod.double(), t)[
                0, 0, 0, 0
            ]
            ab, ab_prev = ab.double(), ab_prev.double()
            swapped = (
                (ab / ab_prev).sqrt() * c_x0 * x0
                + (1 - ab) / (1 - ab_prev) * c_xt * x_t
            ).double()
            if torch.allclose(result, swapped, atol=1e-4):
                return _report(False, "use ᾱ_{t−1} (alphas_cumprod[t − 1]) in the numerators, ᾱ_t in the "
                                      "denominators")
            no_roots = (
                ab_prev.sqrt() * c_x0 * x0 + (ab / ab_prev).sqrt() * c_xt * x_t
            ).double()
            if torch.allclose(result, no_roots, atol=1e-4):
                return _report(False, "the coefficients have square roots: √ᾱ_{t−1} and √α_t")
            return _report(
                False,
                f"with the {schedule} schedule at t = {t} your mean differs from μ̃_t"
                f" by up to {(result - expected).abs().max():.3g}; β_t = 1 −"
                " ᾱ_t/ᾱ_{t−1} and α_t = 1 − β_t, all from the alphas_cumprod"
                " passed in",
            )
    return _report(
        True,
        "your mean is E[x_{t−1} | x_t, x_0] of the forward process, on the "
        "linear and the cosine schedule",
    )


def check_q_sample_from(q_sample_from: Callable) -> CheckResult:
    """Check `q_sample_from(x_s, s, t, noise, alphas_cumprod)`: a sample of q(x_t |
    x_s).

    On two schedules, so an answer must use the `alphas_cumprod` it is given."""
    g = torch.Generator().manual_seed(6)
    x_s = torch.randn(3, 1, 8, 8, generator=g)
    noise = torch.randn(3, 1, 8, 8, generator=g)
    for schedule, alphas_cumprod in _two_schedules():
        for s, t in ((0, 10), (100, 600), (998, 999)):
            # the signal's share after the one-step factors α_{s+1} … α_t, one by one
            steps = (alphas_cumprod[s + 1 : t + 1] / alphas_cumprod[s:t]).double()
            keep = steps.prod()
            expected = keep.sqrt() * x_s.double() + (1 - keep).sqrt() * noise.double()
            ratio = keep
            result, err = _tensor_result(q_sample_from, x_s.clone(), s, t, noise.clone(), alphas_cumprod.clone(),
                                         shape=tuple(x_s.shape), name="q_sample_from")
            if err:
                return _report(False, err)
            if torch.allclose(result, expected, atol=1e-4):
                continue
            if result.isnan().any():  # a ratio above 1 under a square root
                return _report(
                    False,
                    f"for s = {s}, t = {t} the result has NaN, the square root of a"
                    " negative number: the ratio of the two products must lie in"
                    " (0, 1], so the later one goes over the earlier one, ᾱ_t over ᾱ_s,"
                    " both read at the code's indices t and s",
                )
            ab_t = alphas_cumprod[t].double()
            if torch.allclose(result, ab_t.sqrt() * x_s.double() + (1 - ab_t).sqrt() * noise.double(), atol=1e-4):
                return _report(False, "that jumps as if x_s were the clean x_0; from step s only the α's of steps "
                                      "s+1..t still apply: their product is ᾱ_t / ᾱ_s")
            if torch.allclose(result, ratio * x_s.double() + (1 - ratio) * noise.double(), atol=1e-4):
                return _report(False, "the coefficients are standard deviations: take square roots")
            return _report(
                False,
                f"with the {schedule} schedule, for s = {s}, t = {t}, the result is"
                " off: only the steps after s act on x_s, and x_t keeps unit variance;"
                " use the alphas_cumprod passed in",
            )
    return _report(
        True, "forward jumps from any step, on the linear and the cosine schedule"
    )
