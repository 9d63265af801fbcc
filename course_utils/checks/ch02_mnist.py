"""Exercise checks of Chapter 2: training a denoiser on MNIST."""

from __future__ import annotations

from typing import Callable

import torch

from ._harness import (CheckResult, _as_tensor, _call, _changed, _coefficients, _near,
                       _report, _watched)

_BROADCAST_ERROR = "must match the size of tensor"  # torch's message when (B,) meets (B, C, H, W)
_SCHEDULES = ("linear", "squaredcos_cap_v2")  # two, so an answer that reads a global schedule fails on one
_OTHER_SCHEDULE = {"linear": "squaredcos_cap_v2", "squaredcos_cap_v2": "linear"}
_TORCH_HINT = ("Hint: keep to torch operations (tensor.sqrt(), torch.sqrt) rather than numpy, so the result stays "
               "a tensor")


def _ddpm_scheduler(beta_schedule: str = "linear", clip_sample: bool = False):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=clip_sample
    )


def _solved_with(
    c1: torch.Tensor, c2: torch.Tensor, alpha_bar: torch.Tensor
) -> torch.Tensor:
    """Per image, whether c1 x_t + c2 ε solves x_t = √a x_0 + √(1 − a) ε for x_0 with a
    = `alpha_bar` (c1 = a^−½, c1² − c2² = 1, c2 < 0): an inversion, right or with a
    wrong a."""
    unit = (
        c1**2 - c2**2 - 1
    ).abs() <= 1e-4 * c1**2  # to float32's precision on c1², c2²
    return _near(c1**-2, alpha_bar) & unit & (c2 < 0)


def _per_image(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """table[t] as (B, 1, 1, 1): one value per image, broadcast over its pixels."""
    return table[t].view(-1, 1, 1, 1)


def check_x0_from_eps(x0_from_eps: Callable) -> CheckResult:
    """Check `x0_from_eps(x_t, eps, t, alphas_cumprod)` inverts x_t = √ᾱ_t x_0 +
    √(1−ᾱ_t) ε for x_0.

    It runs on a linear and a cosine schedule (an answer that reads the notebook's
    scheduler instead of `alphas_cumprod` fails on one), gives the learner copies (so an
    in-place edit shows), and names the usual slips: no square roots, no division by
    √ᾱ_t, t ± 1, α_t for ᾱ_t, a flipped sign, swapped coefficients, the v-prediction
    form, missing brackets, ᾱ_t for √ᾱ_t."""
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
        # read the answer as c1 x_t + c2 ε, image by image, and name the slip from c1
        # and c2
        c1, c2, off = _coefficients(result, x_t, eps)
        if off.max() < 1e-3:
            table, ab = alphas_cumprod.double(), alphas_cumprod.double()[t]
            other_scheduler = _ddpm_scheduler(_OTHER_SCHEDULE[schedule])
            other, other_alpha = (
                other_scheduler.alphas_cumprod.double(),
                other_scheduler.alphas.double(),
            )
            alpha = scheduler.alphas.double()
            wrong = [
                (
                    _near(c1, 1 / ab) & _near(c1 + c2, 1),
                    "the coefficients are standard deviations: they need square roots",
                ),
                (
                    _near(c1, 1) & _near(c2**2, 1 - ab),
                    "you removed the noise but did not undo the scaling of the signal",
                ),
                (
                    _solved_with(c1, c2, other[t]),
                    (
                        "use the alphas_cumprod passed in, not the notebook's scheduler"
                        " (noise_scheduler) or another global: the check tries two"
                        " schedules"
                    ),
                ),
                (
                    _solved_with(c1, c2, table[t - 1]),
                    (
                        "off by one: you used ᾱ_{t−1} = alphas_cumprod[t − 1]; x_t was"
                        " made with ᾱ_t = alphas_cumprod[t]"
                    ),
                ),
                (
                    _solved_with(c1, c2, table[t + 1]),
                    (
                        "off by one: you used ᾱ_{t+1} = alphas_cumprod[t + 1]; x_t was"
                        " made with ᾱ_t = alphas_cumprod[t]"
                    ),
                ),
                (
                    _solved_with(c1, c2, alpha[t]),
                    (
                        "that is α_t (one step's 1 − β_t), not ᾱ_t: x_t = √ᾱ_t x_0 +"
                        " √(1−ᾱ_t) ε uses ᾱ_t = alphas_cumprod[t], the product of the"
                        " α's up to t"
                    ),
                ),
                (
                    _solved_with(c1, c2, other_alpha[t]),
                    (
                        "that is α_t (one step's 1 − β_t), and from another schedule:"
                        " use ᾱ_t from the alphas_cumprod passed in, not the notebook's"
                        " scheduler"
                    ),
                ),
                (
                    _solved_with(c1, -c2, ab),
                    (
                        "the sign of the noise term is flipped: x_t holds the noise"
                        " with a plus sign"
                    ),
                ),
                (
                    _solved_with(c1, c2, 1 - ab),
                    (
                        "the two coefficients are swapped: √ᾱ_t scales the signal and"
                        " √(1−ᾱ_t) the noise in x_t"
                    ),
                ),
                (
                    _near(c1, ab.sqrt()) & _near(c2, -(ab * (1 - ab)).sqrt()),
                    (
                        "x_t holds √ᾱ_t x_0: undo that scaling by dividing by √ᾱ_t, not"
                        " multiplying"
                    ),
                ),
                (
                    _near(c1, ab.sqrt()) & _near(c2, -(1 - ab).sqrt()),
                    (
                        "you multiplied x_t by √ᾱ_t, as x̂0 from a v-prediction does;"
                        " from ε, x_t holds √ᾱ_t x_0: undo that scaling by dividing by"
                        " √ᾱ_t (the noise term too)"
                    ),
                ),
                (
                    _near(c1, 1) & _near(c2, -((1 - ab) / ab).sqrt()),
                    (
                        "you divided only the noise term by √ᾱ_t: x_t holds √ᾱ_t x_0,"
                        " so divide the whole difference by √ᾱ_t, x_t included (mind"
                        " the brackets)"
                    ),
                ),
                (
                    _near(c1, 1 / ab) & _near(c2, -(1 - ab).sqrt() / ab),
                    (
                        "you divided by ᾱ_t: x_t holds √ᾱ_t x_0, so divide by the"
                        " square root of ᾱ_t instead"
                    ),
                ),
            ]
            for is_wrong, hint in wrong:
                if bool(is_wrong.all()):
                    return _report(False, hint)
        return _report(
            False,
            "solve x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε for x_0, with each image's own t "
            "and the alphas_cumprod passed in",
        )
    return _report(True, "your x̂0 recovers the clean images on two schedules")


def _step_terms(scheduler, t: int) -> tuple[torch.Tensor, ...]:
    """β_t, α_t, ᾱ_t and ᾱ_{t−1} of `scheduler` in float64 (ᾱ_{t−1} = 1 at t = 0)."""
    abar = scheduler.alphas_cumprod.double()
    ab_prev = abar[t - 1] if t > 0 else abar.new_tensor(1.0)
    return scheduler.betas.double()[t], scheduler.alphas.double()[t], abar[t], ab_prev


def _step_coefficients(
    step: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, z: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """(a, b, c) with step ≈ a x_t + b ε + c z over every pixel (least squares,
    float64), and the largest residual: a DDPM step, right or wrong, is usually linear
    in its three inputs."""
    basis = torch.stack([v.double().flatten() for v in (x_t, eps, z)], dim=1)
    target = step.double().flatten().unsqueeze(1)
    coef = torch.linalg.lstsq(basis, target).solution
    return coef[:, 0], float((basis @ coef - target).abs().max())


def _diffusers_coefficients(
    schedule: str, t: int, x_t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """(a, b, c) of diffusers' DDPMScheduler.step at t: the right step, read off the
    library."""
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(10 + t))
    step = _ddpm_scheduler(schedule).step(
        eps, t, x_t, generator=torch.Generator().manual_seed(10 + t)
    )
    return _step_coefficients(step.prev_sample, x_t, eps, z)[0]


def _clipped_step(
    schedule: str, t: int, x_t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """diffusers' step at t with clip_sample=True (x̂0 clipped to [−1, 1] before the
    mean), in float64, with the z the learner was given."""
    scheduler = _ddpm_scheduler(schedule, clip_sample=True)
    generator = torch.Generator().manual_seed(10 + t)
    return scheduler.step(eps, t, x_t, generator=generator).prev_sample.double()


def _step_slips(
    right: torch.Tensor, other: torch.Tensor, t: int, schedule: str
) -> list[tuple[torch.Tensor, str]]:
    """The usual wrong steps at t > 0 as (a, b, c) coefficients on (x_t, ε, z), each
    with its hint, built from the right coefficients `right` (and `other`, the other
    schedule's) rather than from a formula of the step; a slip is named only when it
    matches at every t > 0 the check tries."""
    scheduler = _ddpm_scheduler(schedule)
    beta, alpha, ab, ab_prev = _step_terms(scheduler, t)
    a, b, c = right
    ab_next = scheduler.alphas_cumprod.double()[t + 1]

    def coefs(a_: torch.Tensor, b_: torch.Tensor, c_: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [torch.as_tensor(v, dtype=torch.float64) for v in (a_, b_, c_)]
        )

    return [
        (
            other,
            (
                "use the scheduler passed in (its betas, alphas and alphas_cumprod),"
                " not the notebook's noise_scheduler or another global: the check tries"
                " two schedules"
            ),
        ),
        (
            coefs(a, b, 0),
            (
                "the mean is right, but each step except the last adds σ_t z of fresh"
                " noise: z is the `noise` argument"
            ),
        ),
        (
            coefs(a, b, c**2),
            (
                "σ_t is a standard deviation: multiply z by √β̃_t, the square root of"
                " the variance β̃_t, not by β̃_t itself"
            ),
        ),
        (
            coefs(a, b, beta.sqrt()),
            (
                "close: σ_t² = β_t is the paper's other choice (or did you index ᾱ_t"
                " where ᾱ_{t−1} belongs?); use β̃_t, the posterior variance, as"
                " diffusers' default 'fixed_small' does"
            ),
        ),
        (
            coefs(a, b, c * ((1 - ab_next) / (1 - ab_prev)).sqrt()),
            (
                "ᾱ_{t−1} is alphas_cumprod[t − 1], the step before t, not"
                " alphas_cumprod[t + 1]"
            ),
        ),
        (
            coefs(a * (alpha / ab).sqrt(), b * (alpha / ab).sqrt(), c),
            (
                "divide by √α_t (scheduler.alphas[t], one step's 1 − β_t), not by √ᾱ_t"
                " (scheduler.alphas_cumprod[t], the product up to t)"
            ),
        ),
        (
            coefs(a, b * ((1 - ab) / beta).sqrt(), c),
            (
                "the noise coefficient is β_t/√(1−ᾱ_t) with ᾱ_t ="
                " scheduler.alphas_cumprod[t]; with α_t in its place it becomes √β_t"
            ),
        ),
        (
            coefs(a, -b, c),
            "the sign of the noise term is flipped: subtract β_t/√(1−ᾱ_t) ε from x_t",
        ),
        (coefs(a, b, -c), "the fresh noise enters with a plus: x_{t−1} = μ + σ_t z"),
        (
            coefs(a, b * alpha.sqrt(), c),
            (
                "1/√α_t multiplies the whole bracket: divide (x_t − β_t/√(1−ᾱ_t) ε) by"
                " √α_t, the ε term included"
            ),
        ),
        (
            coefs(1, b, c),
            (
                "1/√α_t multiplies the whole bracket: divide (x_t − β_t/√(1−ᾱ_t) ε) by"
                " √α_t, x_t included"
            ),
        ),
        (
            coefs(a * alpha, b * alpha, c),
            "divide the bracket by √α_t, do not multiply by it",
        ),
        (
            coefs(a, b / (1 - ab).sqrt(), c),
            (
                "the noise coefficient is β_t/√(1−ᾱ_t): it needs the square root of 1"
                " − ᾱ_t"
            ),
        ),
    ]


def _ddpm_step_hint(ddpm_step: Callable, results: dict[int, tuple[torch.Tensor, torch.Tensor, bool]],
                    x_t: torch.Tensor, eps: torch.Tensor, schedule: str) -> str:
    """What a step that does not match diffusers' got wrong, as far as it can be told
    apart. `results` maps each t tried to (the learner's step in float64, the noise z it
    was given, whether it was right)."""
    # diffusers' default clip_sample=True clips x̂0 to [−1, 1]: not Algorithm 2
    clipped = {t: _clipped_step(schedule, t, x_t, eps) for t in results}
    if all(torch.allclose(results[t][0], clipped[t], atol=1e-4) for t in results):
        return (
            "you clipped x̂0 to [−1, 1] before forming the mean, as diffusers' default"
            " clip_sample=True does; Algorithm 2 does not clip (the check compares"
            " with clip_sample=False): leave the clamp out"
        )
    right = {t: _diffusers_coefficients(schedule, t, x_t, eps) for t in results}
    mine = {
        t: _step_coefficients(results[t][0], x_t, eps, results[t][1]) for t in results
    }
    linear = {t: off < 1e-4 for t, (_, off) in mine.items()}

    def close(coefs: torch.Tensor, want: torch.Tensor) -> bool:
        return bool(((coefs - want).abs() <= 1e-4 * want.abs().clamp(min=1)).all())

    positive = [t for t in results if t > 0]
    if all(results[t][2] for t in positive):  # only the last step is wrong
        coefs, _ = mine[0]
        if linear[0] and close(coefs[:2], right[0][:2]):
            scheduler = _ddpm_scheduler(schedule)
            wrapped = (1 - scheduler.alphas_cumprod.double()[-1]).sqrt()
            if abs(coefs[2] - wrapped) < 1e-4:
                return (
                    "at t = 0, alphas_cumprod[t − 1] is alphas_cumprod[−1], the"
                    " schedule's last entry: ᾱ_{t−1} is 1 there (e.g. `... if t > 0"
                    " else torch.tensor(1.0)`), so the last step adds no noise"
                )
            return "at t = 0 the last step adds no noise: σ_0 = 0, since ᾱ_{t−1} is 1 there"
        return (
            "at t = 0 (the last step) the result should be the step's mean alone, with"
            " no noise added"
        )
    if all(linear[t] for t in positive):
        other = {
            t: _diffusers_coefficients(_OTHER_SCHEDULE[schedule], t, x_t, eps)
            for t in positive
        }
        slips = {t: _step_slips(right[t], other[t], t, schedule) for t in positive}
        for i, (_, hint) in enumerate(slips[positive[0]]):
            if all(close(mine[t][0], slips[t][i][0]) for t in positive):
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
    if all(linear[s] and close(mine[s][0][:2], right[s][:2]) for s in positive):
        return (
            f"the mean is right but σ_t is not (yours {float(mine[t][0][2]):.4g} at t ="
            f" {t}): σ_t is the square root of the posterior variance β̃_t (diffusers'"
            " 'fixed_small')"
        )
    return (
        "the step differs from Algorithm 2 in a way the check cannot name: compare your"
        " mean and σ_t term by term"
    )


def check_ddpm_step(ddpm_step: Callable) -> CheckResult:
    """Check `ddpm_step(x_t, eps, t, scheduler, noise)` returns x_{t−1} as in Ho et al.
    (2020), Algorithm 2.

    It runs on a linear and a cosine schedule (an answer that reads the notebook's
    noise_scheduler fails on one), gives the learner copies (so an in-place edit shows),
    and names the usual slips (see `_ddpm_step_hint`)."""
    from .. import ddpm  # chapter 4's step, never run here: a tripwire for the learner's

    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 1, 8, 8, generator=g)
    eps = torch.randn(2, 1, 8, 8, generator=g)
    ddpm_step, reached = _watched(ddpm_step, (ddpm.reverse_step,))
    delegated = _report(False, "ddpm_step calls course_utils.ddpm.reverse_step, chapter "
                               "4's step: the exercise is to write Algorithm 2 yourself, "
                               "from scheduler.betas, scheduler.alphas and "
                               "scheduler.alphas_cumprod")
    for schedule in _SCHEDULES:
        reference = _ddpm_scheduler(schedule)  # clip_sample=False: step() is then exactly Algorithm 2
        scheduler = _ddpm_scheduler(schedule)  # the learner's
        tables = tuple(getattr(scheduler, name).clone() for name in ("betas", "alphas", "alphas_cumprod"))
        results = {}
        for t in (600, 20, 0):
            # diffusers draws the step's noise z from the generator it is given: draw
            # the same z for the learner
            noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(10 + t))
            expected = reference.step(eps, t, x_t, generator=torch.Generator().manual_seed(10 + t)).prev_sample
            inputs = (x_t.clone(), eps.clone(), t, scheduler, noise.clone())  # the learner's copies
            result, err = _call(ddpm_step, *inputs, name="ddpm_step")
            if reached:
                return delegated
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
            # at t = 0 the posterior-mean form meets float32's 1.7e-4 gap between
            # betas[0] and 1 - alphas_cumprod[0]: a right answer off by ~4e-4 there
            rtol = 1e-3 if t == 0 else 0.0
            results[t] = (result, noise, torch.allclose(result, expected.double(),
                                                        atol=1e-4, rtol=rtol))
        if not all(right for _, _, right in results.values()):
            return _report(False, _ddpm_step_hint(ddpm_step, results, x_t, eps, schedule))
    return _report(True, "your step matches diffusers' DDPMScheduler.step (Algorithm 2), noise and last step included")


def _floats(result: object) -> list[float] | None:
    """The learner's factors as floats, or None where they are not numbers (a string, a
    2-D tensor, ...): never raises on what the learner returned."""
    if isinstance(result, (str, bytes)):
        return None
    try:
        items = list(result)
        if any(isinstance(f, (str, bytes)) for f in items):
            return None  # float("0.5") would pass a string for a number
        return [float(f) for f in items]
    except Exception:  # TypeError, ValueError, RuntimeError: the learner's result
        return None


def _described(result: object) -> str:
    """What the learner's function returned, in a few words: its type and, for an array,
    its shape, or for a list, its items' types."""
    kind = type(result).__name__
    try:
        if isinstance(result, (list, tuple)):
            items = sorted({type(f).__name__ for f in result})
            return f"a {kind} of {', '.join(items)}" if items else f"an empty {kind}"
        shape = getattr(result, "shape", None)
        if isinstance(shape, tuple):  # torch.Size is a tuple
            return f"a {len(shape)}-D {kind} of shape {tuple(shape)}"
    except Exception:  # an odd object: its type is enough
        return kind
    return kind


def check_mix_factors(mix_factors: Callable) -> CheckResult:
    """Check `mix_factors(n_steps, power)`: fractions that leave (1 − (i+1)/n) ** power
    of the way after step i."""
    for n, power in ((1, 1.0), (5, 1.0), (10, 1.0), (5, 2.0), (8, 0.5), (10, 3.0)):
        result, err = _call(mix_factors, n, power, name="mix_factors")
        if err:
            return _report(False, err)
        factors = _floats(result)
        if factors is None:
            return _report(
                False,
                f"mix_factors({n}, {power}) should return a list of n_steps floats"
                f" (here {n}), one per step; it returned {_described(result)}",
            )
        if len(factors) != n:
            return _report(False, f"mix_factors({n}, {power}) should give one factor per step ({n}), "
                                  f"got {len(factors)}")
        left = [(1 - i / n) ** power for i in range(n + 1)]  # share of the start left before step i
        close = 1e-6  # float32 arithmetic is right to about 1e-7
        # what the factors leave of the way after each step: a product of (1 − f), step
        # by step
        reached, share = [], 1.0
        for f in factors:
            share *= 1 - f
            reached.append(share)
        if all(abs(r - want) < close for r, want in zip(reached, left[1:])):
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
        worst = next(i for i in range(n) if abs(reached[i] - left[i + 1]) >= close)
        return _report(
            False,
            f"mix_factors({n}, {power}): after step {worst} your factors leave "
            f"{reached[worst]:.4g} of the way, not (1 − {worst + 1}/{n}) ** {power:g} "
            f"= {left[worst + 1]:.4g}. Hint: each factor is the fraction of what is "
            "left before the step that the step moves",
        )
    return _report(
        True,
        "your factors leave (1 − (i + 1)/n) ** power of the way after each step; "
        "power 1 gives back 1 / (n − i)",
    )
