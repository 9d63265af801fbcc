"""Exercise checks of Chapter 2: training a denoiser on MNIST."""

from __future__ import annotations

from typing import Callable

import torch

from ._harness import CheckResult, _as_tensor, _call, _report

_BROADCAST_ERROR = "must match the size of tensor"  # torch's message when (B,) meets (B, C, H, W)
_SCHEDULES = ("linear", "squaredcos_cap_v2")  # two, so an answer that reads a global schedule fails on one
_OTHER_SCHEDULE = {"linear": "squaredcos_cap_v2", "squaredcos_cap_v2": "linear"}
_TORCH_HINT = ("Hint: keep to torch operations (tensor.sqrt(), torch.sqrt) rather than numpy, so the result stays "
               "a tensor")


def _ddpm_scheduler(beta_schedule: str = "linear"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False)


def _changed(names: tuple[str, ...], given: tuple[torch.Tensor, ...], kept: tuple[torch.Tensor, ...]) -> list[str]:
    """The names of the inputs that the learner's function changed in place."""
    return [name for name, a, b in zip(names, given, kept) if not torch.equal(a, b)]


def reference_ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, scheduler, noise: torch.Tensor) -> torch.Tensor:
    """Ho et al. (2020), Algorithm 2: x_{t-1} = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t + σ_t z, σ_t² = β̃_t (diffusers' fixed_small)."""
    beta, alpha, ab = scheduler.betas[t], scheduler.alphas[t], scheduler.alphas_cumprod[t]
    ab_prev = scheduler.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()
    variance = (1 - ab_prev) / (1 - ab) * beta
    return mean + variance.sqrt() * noise


def _x0(x_t: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def _per_image(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """table[t] as (B, 1, 1, 1): one value per image, broadcast over its pixels."""
    return table[t].view(-1, 1, 1, 1)


def check_x0_from_eps(x0_from_eps: Callable) -> CheckResult:
    """Check `x0_from_eps(x_t, eps, t, alphas_cumprod)` inverts x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for x_0.

    It runs on a linear and a cosine schedule (an answer that reads the notebook's scheduler instead of
    `alphas_cumprod` fails on one), gives the learner copies (so an in-place edit shows), and names the usual
    slips: no square roots, no division by √ᾱ_t, t ± 1, α_t for ᾱ_t, a flipped sign, swapped coefficients.
    """
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(3, 1, 8, 8, generator=g)
    t = torch.tensor([10, 500, 900])  # batch 3 against width 8: a missing reshape cannot broadcast
    for schedule in _SCHEDULES:
        scheduler = _ddpm_scheduler(schedule)
        alphas_cumprod = scheduler.alphas_cumprod
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        inputs = (x_t.clone(), eps.clone(), t.clone(), alphas_cumprod.clone())  # the learner's copies
        result, err = _call(x0_from_eps, *inputs, name="x0_from_eps")
        if err:
            if _BROADCAST_ERROR in err:
                err += (". Hint: t has shape (B,), and so has alphas_cumprod[t]; reshape it to (B, 1, 1, 1) with "
                        ".view(-1, 1, 1, 1) so each image's ᾱ_t broadcasts over its pixels")
            return _report(False, err)
        changed = _changed(("x_t", "eps", "t", "alphas_cumprod"), inputs, (x_t, eps, t, alphas_cumprod))
        if changed:
            return _report(False, f"x0_from_eps changed {', '.join(changed)} in place: do not modify x_t in place "
                                  "(nor eps, t or alphas_cumprod); build a new tensor, e.g. (x_t - ...) / ...")
        returned = result
        result, err = _as_tensor(result, tuple(x0.shape), "x0_from_eps")
        if err:
            if isinstance(returned, torch.Tensor):
                return _report(False, err + ". Hint: index alphas_cumprod with t and reshape to (B, 1, 1, 1)")
            return _report(False, f"{err}. {_TORCH_HINT}")
        if torch.allclose(result, x0.double(), atol=1e-3):
            continue
        x, e, table = x_t.double(), eps.double(), alphas_cumprod.double()
        ab = ab.double()
        other_scheduler = _ddpm_scheduler(_OTHER_SCHEDULE[schedule])
        other, other_alpha = other_scheduler.alphas_cumprod.double(), other_scheduler.alphas.double()
        alpha = scheduler.alphas.double()
        wrong = [
            ((x - (1 - ab) * e) / ab, "the coefficients are standard deviations: they need square roots"),
            (x - (1 - ab).sqrt() * e, "you removed the noise but did not undo the scaling of the signal"),
            (_x0(x, e, _per_image(other, t)),
             ("use the alphas_cumprod passed in, not the notebook's scheduler (noise_scheduler) or another global: "
              "the check tries two schedules")),
            (_x0(x, e, _per_image(table, t - 1)),
             "off by one: you used ᾱ_{t−1} = alphas_cumprod[t − 1]; x_t was made with ᾱ_t = alphas_cumprod[t]"),
            (_x0(x, e, _per_image(table, t + 1)),
             "off by one: you used ᾱ_{t+1} = alphas_cumprod[t + 1]; x_t was made with ᾱ_t = alphas_cumprod[t]"),
            (_x0(x, e, _per_image(alpha, t)),
             ("that is α_t (one step's 1 − β_t), not ᾱ_t: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε uses ᾱ_t = alphas_cumprod[t], "
              "the product of the α's up to t")),
            (_x0(x, e, _per_image(other_alpha, t)),
             ("that is α_t (one step's 1 − β_t), and from another schedule: use ᾱ_t from the alphas_cumprod passed "
              "in, not the notebook's scheduler")),
            ((x + (1 - ab).sqrt() * e) / ab.sqrt(),
             "the sign of the noise term is flipped: x_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t subtracts it"),
            ((x - ab.sqrt() * e) / (1 - ab).sqrt(),
             ("the two coefficients are swapped: √ᾱ_t scales the signal and √(1−ᾱ_t) the noise, so subtract "
              "√(1−ᾱ_t) ε and divide by √ᾱ_t")),
            (ab.sqrt() * (x - (1 - ab).sqrt() * e),
             "x_t holds √ᾱ_t x_0: undo that scaling by dividing by √ᾱ_t, not multiplying"),
        ]
        for candidate, hint in wrong:
            if torch.allclose(result, candidate, atol=1e-3):
                return _report(False, hint)
        return _report(False, "solve x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for x_0, with each image's own t")
    return _report(True, "x̂0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t recovers the clean images")


def _step_terms(scheduler, t: int) -> tuple[torch.Tensor, ...]:
    """β_t, α_t, ᾱ_t and ᾱ_{t−1} of `scheduler` in float64 (ᾱ_{t−1} = 1 at t = 0)."""
    abar = scheduler.alphas_cumprod.double()
    ab_prev = abar[t - 1] if t > 0 else abar.new_tensor(1.0)
    return scheduler.betas.double()[t], scheduler.alphas.double()[t], abar[t], ab_prev


def _step_slips(x: torch.Tensor, e: torch.Tensor, z: torch.Tensor, t: int, schedule: str
                ) -> list[tuple[torch.Tensor, str]]:
    """The usual wrong steps at t > 0 (float64), each with its hint; a slip is named only when it matches at
    every t > 0 the check tries, since at any one t some of them lie within the tolerance of each other."""
    scheduler = _ddpm_scheduler(schedule)
    beta, alpha, ab, ab_prev = _step_terms(scheduler, t)
    coef = beta / (1 - ab).sqrt()
    mean = (x - coef * e) / alpha.sqrt()
    sigma = ((1 - ab_prev) / (1 - ab) * beta).sqrt()
    o_beta, o_alpha, o_ab, o_ab_prev = _step_terms(_ddpm_scheduler(_OTHER_SCHEDULE[schedule]), t)
    other_step = ((x - o_beta / (1 - o_ab).sqrt() * e) / o_alpha.sqrt()
                  + ((1 - o_ab_prev) / (1 - o_ab) * o_beta).sqrt() * z)
    ab_next = scheduler.alphas_cumprod.double()[t + 1]
    return [
        (other_step, ("use the scheduler passed in (its betas, alphas and alphas_cumprod), not the notebook's "
                      "noise_scheduler or another global: the check tries two schedules")),
        (mean, ("the mean is right, but each step except the last adds σ_t z of fresh noise: z is the `noise` "
                "argument")),
        (mean + sigma**2 * z, ("σ_t is a standard deviation: multiply z by √β̃_t, the square root of the variance "
                               "β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t, not by β̃_t itself")),
        (mean + beta.sqrt() * z, ("close: σ_t² = β_t is the paper's other choice (or did you index ᾱ_t where "
                                  "ᾱ_{t−1} belongs?); use β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t as diffusers' default "
                                  "'fixed_small' does")),
        (mean + ((1 - ab_next) / (1 - ab) * beta).sqrt() * z,
         "ᾱ_{t−1} is alphas_cumprod[t − 1], the step before t, not alphas_cumprod[t + 1]"),
        ((x - coef * e) / ab.sqrt() + sigma * z,
         ("divide by √α_t (scheduler.alphas[t], one step's 1 − β_t), not by √ᾱ_t (scheduler.alphas_cumprod[t], the "
          "product up to t)")),
        ((x - beta.sqrt() * e) / alpha.sqrt() + sigma * z,
         ("the noise coefficient is β_t/√(1−ᾱ_t) with ᾱ_t = scheduler.alphas_cumprod[t]; with α_t in its place it "
          "becomes √β_t")),
        ((x + coef * e) / alpha.sqrt() + sigma * z,
         "the sign of the noise term is flipped: subtract β_t/√(1−ᾱ_t) ε from x_t"),
        (mean - sigma * z, "the fresh noise enters with a plus: x_{t−1} = μ + σ_t z"),
        (x / alpha.sqrt() - coef * e + sigma * z,
         "1/√α_t multiplies the whole bracket: divide (x_t − β_t/√(1−ᾱ_t) ε) by √α_t, the ε term included"),
        (x - coef * e / alpha.sqrt() + sigma * z,
         "1/√α_t multiplies the whole bracket: divide (x_t − β_t/√(1−ᾱ_t) ε) by √α_t, x_t included"),
        ((x - coef * e) * alpha.sqrt() + sigma * z, "divide the bracket by √α_t, do not multiply by it"),
        ((x - beta / (1 - ab) * e) / alpha.sqrt() + sigma * z,
         "the noise coefficient is β_t/√(1−ᾱ_t): it needs the square root of 1 − ᾱ_t"),
    ]


def _ddpm_step_hint(ddpm_step: Callable, results: dict[int, tuple[torch.Tensor, torch.Tensor, bool]],
                    x_t: torch.Tensor, eps: torch.Tensor, schedule: str) -> str:
    """What a step that does not match diffusers' got wrong, as far as it can be told apart. `results` maps each
    t tried to (the learner's step in float64, the noise z it was given, whether it was right)."""
    x, e = x_t.double(), eps.double()
    scheduler = _ddpm_scheduler(schedule)

    def mean_and_sigma(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        beta, alpha, ab, ab_prev = _step_terms(scheduler, t)
        return (x - beta / (1 - ab).sqrt() * e) / alpha.sqrt(), ((1 - ab_prev) / (1 - ab) * beta).sqrt()

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, atol=1e-4)

    def noise_scale(t: int) -> torch.Tensor:
        """The c in (learner's step) = μ + c z, by least squares; whether it fits at all is for the caller."""
        result, z = results[t][0], results[t][1].double()
        return ((result - mean_and_sigma(t)[0]) * z).sum() / (z * z).sum()

    positive = [t for t in results if t > 0]
    if all(results[t][2] for t in positive):  # only the last step is wrong
        result, z, _ = results[0]
        mean, _ = mean_and_sigma(0)
        beta, _, ab, _ = _step_terms(scheduler, 0)
        wrapped = ((1 - scheduler.alphas_cumprod.double()[-1]) / (1 - ab) * beta).sqrt()
        if close(result, mean + wrapped * z.double()):
            return ("at t = 0, alphas_cumprod[t − 1] is alphas_cumprod[−1], the schedule's last entry: ᾱ_{t−1} is 1 "
                    "there (e.g. `... if t > 0 else torch.tensor(1.0)`), so the last step adds no noise")
        scale = noise_scale(0)
        if scale.abs() > 1e-6 and close(result, mean + scale * z.double()):
            return "at t = 0 the last step adds no noise: σ_0 = 0, since ᾱ_{t−1} is 1 there"
        return "at t = 0 (the last step) expected the mean alone, μ = (x_t − β_0/√(1−ᾱ_0) ε)/√α_0, with no noise"
    slips = {t: _step_slips(x, e, results[t][1].double(), t, schedule) for t in positive}
    for i, (_, hint) in enumerate(slips[positive[0]]):
        if all(close(results[t][0], slips[t][i][0]) for t in positive):
            return hint
    # the noise: the same inputs should give the same step, and another z another step
    t = next(t for t in positive if not results[t][2])
    result, noise, _ = results[t]
    again, err = _call(ddpm_step, x_t.clone(), eps.clone(), t, _ddpm_scheduler(schedule), noise.clone(), name="")
    if (not err and isinstance(again, torch.Tensor) and again.shape == result.shape
            and not torch.allclose(again.double(), result, atol=1e-6)):
        return ("use the given z: the same inputs gave two different steps, so ddpm_step draws noise of its own "
                "(torch.randn_like?); the `noise` argument is z")
    other_noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(99))
    moved, err = _call(ddpm_step, x_t.clone(), eps.clone(), t, _ddpm_scheduler(schedule), other_noise, name="")
    if (not err and isinstance(moved, torch.Tensor) and moved.shape == result.shape
            and torch.allclose(moved.double(), result, atol=1e-6)):
        return "use the given z: the step did not change when the `noise` argument did; add σ_t z with z = noise"
    if all(close(results[s][0], mean_and_sigma(s)[0] + noise_scale(s) * results[s][1].double()) for s in positive):
        return (f"the mean is right but σ_t is not (yours {float(noise_scale(t)):.4g}, expected "
                f"{float(mean_and_sigma(t)[1]):.4g} at t = {t}): σ_t = √β̃_t, β̃_t = (1−ᾱ_{{t−1}})/(1−ᾱ_t) β_t")
    return "compare with μ = (x_t − β_t/√(1−ᾱ_t) ε)/√α_t, then add σ_t z"


def check_ddpm_step(ddpm_step: Callable) -> CheckResult:
    """Check `ddpm_step(x_t, eps, t, scheduler, noise)` returns x_{t−1} as in Ho et al. (2020), Algorithm 2.

    It runs on a linear and a cosine schedule (an answer that reads the notebook's noise_scheduler fails on one),
    gives the learner copies (so an in-place edit shows), and names the usual slips (see `_ddpm_step_hint`).
    """
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 1, 8, 8, generator=g)
    eps = torch.randn(2, 1, 8, 8, generator=g)
    for schedule in _SCHEDULES:
        reference = _ddpm_scheduler(schedule)  # clip_sample=False: step() is then exactly Algorithm 2
        scheduler = _ddpm_scheduler(schedule)  # the learner's
        tables = tuple(getattr(scheduler, name).clone() for name in ("betas", "alphas", "alphas_cumprod"))
        results = {}
        for t in (600, 20, 0):
            # diffusers draws the step's noise z from the generator it is given: draw the same z for the learner
            noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(10 + t))
            expected = reference.step(eps, t, x_t, generator=torch.Generator().manual_seed(10 + t)).prev_sample
            inputs = (x_t.clone(), eps.clone(), t, scheduler, noise.clone())  # the learner's copies
            result, err = _call(ddpm_step, *inputs, name="ddpm_step")
            if err:
                return _report(False, err)
            changed = _changed(("x_t", "eps", "noise"), inputs[:2] + inputs[4:], (x_t, eps, noise))
            changed += _changed(("scheduler.betas", "scheduler.alphas", "scheduler.alphas_cumprod"),
                                (scheduler.betas, scheduler.alphas, scheduler.alphas_cumprod), tables)
            if changed:
                return _report(False, f"ddpm_step changed {', '.join(changed)} in place: do not modify x_t in place "
                                      "(nor eps, noise or the scheduler's tables); build a new tensor, e.g. "
                                      "mean + sigma * noise")
            returned = result
            result, err = _as_tensor(result, tuple(x_t.shape), "ddpm_step")
            if err:
                return _report(False, err if isinstance(returned, torch.Tensor) else f"{err}. {_TORCH_HINT}")
            results[t] = (result, noise, torch.allclose(result, expected.double(), atol=1e-4))
        if not all(right for _, _, right in results.values()):
            return _report(False, _ddpm_step_hint(ddpm_step, results, x_t, eps, schedule))
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
