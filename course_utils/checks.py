"""Exercise auto-checks: each returns a CheckResult that is true when passed and shows "Correct" or what is wrong, with a hint."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

PASS = "✅ Correct"
FAIL = "❌ Not yet"


class CheckResult:
    """The outcome of an exercise check: true when passed; shows its message in a notebook."""

    def __init__(self, passed: bool, message: str) -> None:
        self.passed = passed
        self.message = f"{PASS}: {message}" if passed else f"{FAIL}: {message}"

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def _report(ok: bool, message: str) -> CheckResult:
    return CheckResult(ok, message)


def _call(fn: Callable, *args, name: str) -> tuple[object, str | None]:
    """Call the learner's function; on an exception return a message instead of raising."""
    if not callable(fn):
        return None, f"expected a function, got {type(fn).__name__}"
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, f"{name} still raises NotImplementedError: replace the `raise` with your code"
    except Exception as exc:  # the learner's bug, reported rather than raised
        return None, f"{name} raised {type(exc).__name__}: {exc}"


def _as_tensor(result: object, shape: tuple[int, ...], name: str) -> tuple[torch.Tensor | None, str | None]:
    if not isinstance(result, torch.Tensor):
        return None, f"{name} should return a torch.Tensor, it returned {type(result).__name__}"
    if tuple(result.shape) != shape:
        return None, f"{name} should return shape {shape}, it returned {tuple(result.shape)}"
    return result.double(), None


def _linear_betas(n: int = 1000) -> torch.Tensor:
    return torch.linspace(1e-4, 0.02, n, dtype=torch.float64)


def check_corrupt(corrupt: Callable) -> CheckResult:
    """Check `corrupt(x, noise, amount)`: a per-image lerp from x (amount 0) to noise (amount 1)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    noise = torch.randn(4, 1, 8, 8, generator=g)
    amount = torch.tensor([0.0, 0.25, 0.5, 1.0])
    inputs = (x.clone(), noise.clone(), amount.clone())  # the learner's copies: in-place edits show
    result, err = _call(corrupt, *inputs, name="corrupt")
    if err:
        return _report(False, err)
    if not all(torch.equal(a, b) for a, b in zip(inputs, (x, noise, amount))):
        return _report(False, "corrupt changed its inputs in place: do not modify x (or noise, or amount); "
                              "build a new tensor, e.g. x * (1 - a) + noise * a")
    result, err = _as_tensor(result, tuple(x.shape), "corrupt")
    if err:
        return _report(False, err + ". Hint: amount has shape (B,); reshape it to (B, 1, 1, 1) so it broadcasts per image")
    if not torch.allclose(result[0], x[0].double(), atol=1e-6):
        return _report(False, "amount = 0 should give back the clean image unchanged")
    if not torch.allclose(result[3], noise[3].double(), atol=1e-6):
        return _report(False, "amount = 1 should give pure noise. Hint: which term should the amount multiply?")
    a = amount.view(-1, 1, 1, 1).double()
    if not torch.allclose(result, x.double() * (1 - a) + noise.double() * a, atol=1e-6):
        return _report(False, "the ends are right but amount = 0.25 and 0.5 are not a straight-line mix of image and noise")
    return _report(True, "corrupt mixes each image with its noise by its own amount")


def _alpha_bar_end(beta_start: float, beta_end: float, n_steps: int) -> float:
    """ᾱ at the last step of a linear schedule, in float64."""
    return float(torch.prod(1 - torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)))


def check_beta_end(beta_end_for: Callable) -> CheckResult:
    """Check `beta_end_for(target, beta_start, n_steps)`: the linear schedule's β_end that leaves ᾱ_T = target."""
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
        if abs(np.log(reached) - np.log(target)) < 1e-3:  # ᾱ_T within 0.1 %
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


def check_noise_to_snr(noise_to_snr: Callable) -> CheckResult:
    """Check `noise_to_snr(x0, noise, snr)`: the VP x_t whose SNR is snr, one SNR per image."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(3, 1, 8, 8, generator=g)
    snr = torch.tensor([100.0, 1.0, 0.01])
    result, err = _call(noise_to_snr, x0, noise, snr, name="noise_to_snr")
    if err:
        return _report(False, err)
    result, err = _as_tensor(result, tuple(x0.shape), "noise_to_snr")
    if err:
        return _report(False, err + ". Hint: reshape the (B,) SNRs to (B, 1, 1, 1)")
    x0, noise, snr4 = x0.double(), noise.double(), snr.double().view(-1, 1, 1, 1)
    alpha_bar = snr4 / (1 + snr4)
    if torch.allclose(result, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, atol=1e-5):
        return _report(True, "ᾱ = SNR / (1 + SNR), then x_t = √ᾱ x_0 + √(1 − ᾱ) ε: the VP point with that SNR")
    if torch.allclose(result, x0 + noise / snr4.sqrt(), atol=1e-5):
        return _report(False, "that x_t has the right SNR but is the VE form (x_0 + σε): its variance grows. "
                              "Keep the variance at 1: √ᾱ x_0 + √(1 − ᾱ) ε, with ᾱ from the SNR")
    wrong_alpha = snr4.clamp(max=1)
    if torch.allclose(result, wrong_alpha.sqrt() * x0 + (1 - wrong_alpha).sqrt() * noise, atol=1e-5) or \
            torch.allclose(result, snr4.sqrt() * x0 + (1 - snr4).abs().sqrt() * noise, atol=1e-5):
        return _report(False, "the SNR is not ᾱ: SNR = ᾱ / (1 − ᾱ); solve it for ᾱ first")
    if torch.allclose(result, alpha_bar * x0 + (1 - alpha_bar) * noise, atol=1e-5):
        return _report(False, "close: the coefficients are standard deviations, so they need square roots")
    first = alpha_bar[:1]
    if torch.allclose(result, first.sqrt() * x0 + (1 - first).sqrt() * noise, atol=1e-5):
        return _report(False, "every image got the first image's SNR; each image has its own")
    return _report(False, "the values are off; with SNR 100 x_t should be almost x_0, with SNR 0.01 almost noise")


def check_snr_crossing(t_cross: object) -> CheckResult:
    """Check the first timestep at which the linear schedule's SNR = ᾱ/(1−ᾱ) drops below 1."""
    alphas_cumprod = torch.cumprod(1 - _linear_betas(), dim=0)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    expected = int(torch.nonzero(snr < 1)[0])
    if isinstance(t_cross, torch.Tensor) and t_cross.numel() == 1:
        t_cross = int(t_cross.item())
    if isinstance(t_cross, np.integer):  # what np.argmax returns
        t_cross = int(t_cross)
    if isinstance(t_cross, bool) or not isinstance(t_cross, int):
        return _report(False, f"expected one integer timestep, got {type(t_cross).__name__}")
    if t_cross == expected:
        return _report(True, f"from t = {expected} on, the noise carries more power than the signal")
    if abs(t_cross - expected) <= 1:
        return _report(False, "off by one: you want the first t whose SNR is already below 1")
    direction = "late" if t_cross > expected else "early"
    return _report(False, f"t = {t_cross} is too {direction}. Hint: SNR = ᾱ_t / (1 − ᾱ_t); look for the first t where it is < 1")


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
        result, err = _call(ddpm_step, x_t, eps, t, scheduler, noise, name="ddpm_step")
        if err:
            return _report(False, err)
        result, err = _as_tensor(result, tuple(x_t.shape), "ddpm_step")
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


def _check_images(images: object, name: str, n: int, shape: tuple[int, ...]) -> str | None:
    if not isinstance(images, (list, tuple)) or len(images) != n:
        return f"{name} should be a list with one tensor per input image ({n}), got {type(images).__name__}"
    for image in images:
        if not isinstance(image, torch.Tensor) or tuple(image.shape) != shape:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            return f"each image should be a tensor of shape {shape} (channels first), got {got}"
        if not image.is_floating_point():
            return f"images should be float tensors, got {image.dtype}. Hint: divide by 255 after converting"
    return None


def check_transform(transform: Callable, image_size: int = 32) -> CheckResult:
    """Check a `set_transform` function: {"image": PIL images} -> {"images": (3, size, size) tensors in [-1, 1]}."""
    from PIL import Image

    red = Image.new("RGB", (64, 48), (255, 0, 0))
    grey = Image.new("L", (20, 20), 128)  # some butterfly photos are not RGB
    corner = Image.new("RGBA", (40, 40), (0, 0, 0, 255))
    # a white strip along the top, 5/8 of the width: not symmetric about the diagonal, so a transposed
    # image (C, W, H) shows as a strip down the left side
    corner.paste((255, 255, 255, 255), (0, 0, 25, 10))
    batch = {"image": [red, grey, corner]}
    result, err = _call(transform, batch, name="transform")
    if err:
        return _report(False, err)
    if not isinstance(result, dict) or "images" not in result:
        return _report(False, "the transform should return a dict with the key 'images'")
    err = _check_images(result["images"], "result['images']", 3, (3, image_size, image_size))
    if err:
        return _report(False, err + ". Hint: convert('RGB'), then resize to (image_size, image_size)")
    red_t, grey_t, corner_t = (im.double() for im in result["images"])
    if red_t.min() < -1.001 or red_t.max() > 1.001:
        return _report(False, f"values should lie in [-1, 1], got [{red_t.min():.2f}, {red_t.max():.2f}]. "
                              "Hint: scale [0, 1] with x * 2 - 1")
    if red_t.min() >= 0:
        return _report(False, "values lie in [0, 1]; the model expects [-1, 1], centred like the noise")
    if not (torch.allclose(red_t[0], torch.ones_like(red_t[0]), atol=0.02)
            and torch.allclose(red_t[1:], -torch.ones_like(red_t[1:]), atol=0.02)):
        return _report(False, "a pure red image should give channel 0 at +1 and channels 1 and 2 at −1")
    if not torch.allclose(grey_t, torch.full_like(grey_t, 128 / 255 * 2 - 1), atol=0.02):
        return _report(False, "a grey image should give the same value in all three channels")
    q = image_size // 4
    top_left, top_right = corner_t[:, :q, :q].mean().item(), corner_t[:, :q, -q:].mean().item()
    bottom = corner_t[:, -q:, :].mean().item()
    # below the strip's rows every side band is black, unless the image came out transposed
    side = max(corner_t[:, q + 1:3 * q, :q].mean().item(), corner_t[:, q + 1:3 * q, -q:].mean().item())
    if side > -0.5:
        return _report(False, "an image with a white strip along its top came out with it down one side: the "
                              "image is transposed. Tensors are (channels, height, width): "
                              "np.asarray(image) is (height, width, channels), so use .permute(2, 0, 1)")
    if bottom > -0.9 or not ((top_left > 0.9 and top_right < -0.9) or (top_left < -0.9 and top_right > 0.9)):
        return _report(False, "an image with a white strip at the top left came out wrong: flip left-right "
                              "only (the last axis), never up-down")
    # the flip must be random: about half of many copies of the corner image come out mirrored
    n = 200
    result, err = _call(transform, {"image": [corner] * n}, name="transform")
    if err:
        return _report(False, err)
    flipped = sum(float(im[:, :q, -q:].mean()) > 0.9 for im in result["images"])
    if not 0.35 * n <= flipped <= 0.65 * n:
        return _report(False, f"{flipped} of {n} copies of one image came out flipped; a random "
                              "flip with probability 0.5 mirrors about half of them")
    return _report(True, "PIL images become (3, size, size) tensors in [-1, 1], any mode, "
                         "half of them flipped left-right")


def _reference_sdedit(model, scheduler, images: torch.Tensor, noise: torch.Tensor, strength: float,
                      start: str = "images", first_kept: bool = True, scale_input: bool = True) -> torch.Tensor:
    """SDEdit with any diffusers scheduler (the flags make the usual mistakes, for hints)."""
    n = len(scheduler.timesteps)
    n_kept = round(strength * n)
    if n_kept == 0:
        return images.clone()
    timesteps = scheduler.timesteps[n - n_kept:]
    if start == "noise":
        x = noise * scheduler.init_noise_sigma
    else:
        noise_at = timesteps[:1] if first_kept else scheduler.timesteps[:1]
        x = scheduler.add_noise(images, noise, noise_at)
    for t in timesteps:
        model_input = scheduler.scale_model_input(x, t) if scale_input else x
        x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
    return x


def check_sdedit(sdedit: Callable) -> CheckResult:
    """Check `sdedit(model, scheduler, images, noise, strength)` for DDIM and Euler at several strengths."""
    from types import SimpleNamespace

    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    calls: list[int] = []

    def toy_model(x: torch.Tensor, t: torch.Tensor | int) -> SimpleNamespace:  # "noise" = 0.1 x
        calls.append(int(t))
        return SimpleNamespace(sample=0.1 * x + 0.01 * float(t) / 1000)

    def uncounted(x, t):
        return SimpleNamespace(sample=0.1 * x + 0.01 * float(t) / 1000)

    g = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 8, 8, generator=g)
    # both deterministic, so any correct answer agrees; Euler works in sigma units, not unit variance
    for scheduler in (DDIMScheduler(num_train_timesteps=1000),
                      EulerDiscreteScheduler(num_train_timesteps=1000)):
        name = type(scheduler).__name__
        for strength in (0.0, 0.3, 0.6, 1.0):
            scheduler.set_timesteps(10)
            expected = _reference_sdedit(uncounted, scheduler, images, noise, strength)
            kept = [int(t) for t in scheduler.timesteps[10 - round(strength * 10):]] if strength else []
            calls.clear()
            scheduler.set_timesteps(10)  # some schedulers keep a step index: start afresh
            result, err = _call(sdedit, toy_model, scheduler, images.clone(), noise.clone(), strength,
                                name="sdedit")
            if err:
                return _report(False, f"with {name}, strength {strength}: {err}")
            if calls != kept:
                if strength == 0:
                    return _report(False, "at strength 0 nothing is noised and no step is run: return the "
                                          "images as they are, without calling the model")
                if calls == [int(t) for t in scheduler.timesteps]:
                    return _report(False, f"at strength {strength} run only the last round(strength × n) "
                                          f"timesteps ({kept[:3]}...), not all {len(calls)}")
                return _report(False, f"at strength {strength} the model should be called at {kept}, in that "
                                      f"order; it was called at {calls}")
            result, err = _as_tensor(result, tuple(images.shape), "sdedit")
            if err:
                return _report(False, err + ". Hint: return the final x (prev_sample of the last step)")
            if torch.allclose(result, expected.double(), rtol=1e-4, atol=1e-4):
                continue
            for hint, kwargs in [
                ("start from the images noised to the first timestep you keep (scheduler.add_noise), "
                 "not from pure noise", {"start": "noise"}),
                ("noise the images to the first timestep you keep, not to the schedule's first",
                 {"first_kept": False}),
                (f"feed the model scheduler.scale_model_input(x, t), not x ({name} needs it)",
                 {"scale_input": False}),
            ]:
                scheduler.set_timesteps(10)
                wrong = _reference_sdedit(uncounted, scheduler, images, noise, strength, **kwargs)
                if torch.allclose(result, wrong.double(), rtol=1e-4, atol=1e-4):
                    return _report(False, f"with {name}, strength {strength}: {hint}")
            return _report(False, f"with {name}, strength {strength}, the timesteps are right but the result "
                                  "is not; feed each step's prev_sample into the next")
    return _report(True, "images noised to the first kept timestep with add_noise, then the last "
                         "round(strength × n) steps, for DDIM and Euler")


def check_ema_update(ema_update: Callable) -> CheckResult:
    """Check `ema_update(ema_params, params, decay)` updates each EMA tensor in place: e ← decay·e + (1−decay)·p."""
    g = torch.Generator().manual_seed(5)
    params = [torch.randn(3, 3, generator=g), torch.randn(4, generator=g)]
    ema_params = [torch.randn(3, 3, generator=g), torch.randn(4, generator=g)]
    before = [e.clone() for e in ema_params]
    decay = 0.9
    # pass a fresh list: an answer that rebinds list items (ema_params[i] = ...) changes the
    # list, not the tensors, and so would leave a real model's EMA weights as they were
    _, err = _call(ema_update, list(ema_params), params, decay, name="ema_update")
    if err:
        return _report(False, err)
    expected = [decay * e + (1 - decay) * p for e, p in zip(before, params)]
    if all(torch.allclose(e, x, atol=1e-6) for e, x in zip(ema_params, expected)):
        return _report(True, "each EMA weight moves (1 − decay) of the way to the current weight")
    if all(torch.equal(e, b) for e, b in zip(ema_params, before)):
        return _report(False, "the EMA tensors did not change: update them in place "
                              "(e.mul_(...).add_(...) or e.copy_(...)); ema_params[i] = ... only "
                              "rebinds a list item and leaves the tensor as it was")
    swapped = [(1 - decay) * e + decay * p for e, p in zip(before, params)]
    if all(torch.allclose(e, x, atol=1e-6) for e, x in zip(ema_params, swapped)):
        return _report(False, "decay weighs the old average, not the new weights: with decay 0.999 the average moves slowly")
    return _report(False, "compare with e ← decay · e + (1 − decay) · p for each pair of tensors")


# --- Chapter 4: DDPM from scratch ----------------------------------------------------------------------------------

def _cumprod_prev(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ_{t−1} for every t, with ᾱ = 1 before the first step."""
    return torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod[:-1]])


def check_posterior_variance(posterior_variance: Callable) -> CheckResult:
    """Check `posterior_variance(betas)`: β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t for every t, 0 at the first step."""
    from .ddpm import cosine_beta_schedule  # the chapter's schedules, checked against diffusers by the tests

    for betas in (_linear_betas().float(), cosine_beta_schedule(200)):
        result, err = _call(posterior_variance, betas.clone(), name="posterior_variance")
        if err:
            return _report(False, err)
        result, err = _as_tensor(result, tuple(betas.shape), "posterior_variance")
        if err:
            return _report(False, err + " (one variance per timestep)")
        b = betas.double()
        ab = torch.cumprod(1 - b, dim=0)
        expected = (1 - _cumprod_prev(ab)) / (1 - ab) * b  # equal to diffusers' 'fixed_small' (a test checks)
        if torch.allclose(result, expected, rtol=1e-4, atol=1e-8):
            continue
        if torch.allclose(result, b, rtol=1e-4):
            return _report(False, "that is β_t itself, the paper's other choice of σ_t²; the posterior variance "
                                  "scales it by (1 − ᾱ_{t−1}) / (1 − ᾱ_t)")
        if abs(float(result[0])) > 1e-6 and torch.allclose(result[1:], expected[1:], rtol=1e-4):
            return _report(False, "right from the second step on; at the first step ᾱ_{t−1} = 1, so β̃ is 0 there")
        shifted = (1 - ab) / (1 - torch.cat([ab[1:], ab[-1:]])) * b
        if torch.allclose(result[:-1], shifted[:-1], rtol=1e-4):
            return _report(False, "off by one step: use ᾱ_{t−1} (the previous step's product) over ᾱ_t")
        if torch.allclose(result, ((1 - _cumprod_prev(ab)) / (1 - ab)).sqrt() * b, rtol=1e-4):
            return _report(False, "no square root: β̃_t is a variance, a plain ratio times β_t")
        return _report(False, "compute ᾱ = cumprod(1 − β), shift it by one step with 1 in front, then "
                              "(1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t")
    return _report(True, "β̃_t matches diffusers' DDPMScheduler variance ('fixed_small') on two schedules")


def _two_schedules() -> list[tuple[str, torch.Tensor]]:
    """ᾱ of the linear schedule and of the cosine one (float32): a solution must use the one it is given."""
    from .ddpm import cosine_beta_schedule

    return [("linear", torch.cumprod(1 - _linear_betas().float(), dim=0)),
            ("cosine", torch.cumprod(1 - cosine_beta_schedule(1000).float(), dim=0))]


def check_posterior_mean(posterior_mean: Callable) -> CheckResult:
    """Check `posterior_mean(x_t, x0, t, alphas_cumprod)`: μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t.

    On two schedules (so an answer must use the `alphas_cumprod` it is given) and at t = 1, 2, 10, 400, 999 (at
    small t an off-by-one in the index moves the mean by far more than the tolerance).
    """
    from .ddpm import reverse_step

    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(2, 1, 8, 8, generator=g)
    for schedule, alphas_cumprod in _two_schedules():
        for t in (1, 2, 10, 400, 999):
            ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
            # the ε-form mean of Algorithm 2 (the chapter's reverse_step without noise) is the same Gaussian's mean
            expected = reverse_step(x_t.double(), eps.double(), t, t - 1, alphas_cumprod.double(),
                                    torch.zeros_like(x_t).double())
            result, err = _call(posterior_mean, x_t.clone(), x0.clone(), t, alphas_cumprod.clone(),
                                name="posterior_mean")
            if err:
                return _report(False, err)
            result, err = _as_tensor(result, tuple(x_t.shape), "posterior_mean")
            if err:
                return _report(False, err)
            if torch.allclose(result, expected, atol=1e-4):
                continue
            beta = 1 - ab / ab_prev
            swapped = (ab.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab) / (1 - ab) * x_t).double()
            if torch.allclose(result, swapped, atol=1e-4):
                return _report(False, "use ᾱ_{t−1} (alphas_cumprod[t − 1]) in the numerators, ᾱ_t in the "
                                      "denominators")
            no_roots = (ab_prev * beta / (1 - ab) * x0 + (1 - beta) * (1 - ab_prev) / (1 - ab) * x_t).double()
            if torch.allclose(result, no_roots, atol=1e-4):
                return _report(False, "the coefficients have square roots: √ᾱ_{t−1} and √α_t")
            return _report(False, f"with the {schedule} schedule at t = {t} your mean differs from μ̃_t by up to "
                                  f"{(result - expected).abs().max():.3g}; β_t = 1 − ᾱ_t/ᾱ_{{t−1}} and "
                                  "α_t = 1 − β_t, all from the alphas_cumprod passed in, at indices t and t − 1")
    return _report(True, "your x0-form mean equals Algorithm 2's ε-form mean for the x0 the noise implies, "
                         "on the linear and the cosine schedule")


def check_q_sample_from(q_sample_from: Callable) -> CheckResult:
    """Check `q_sample_from(x_s, s, t, noise, alphas_cumprod)`: √(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) noise.

    On two schedules, so an answer must use the `alphas_cumprod` it is given.
    """
    g = torch.Generator().manual_seed(6)
    x_s = torch.randn(3, 1, 8, 8, generator=g)
    noise = torch.randn(3, 1, 8, 8, generator=g)
    for schedule, alphas_cumprod in _two_schedules():
        for s, t in ((0, 10), (100, 600), (998, 999)):
            ratio = (alphas_cumprod[t] / alphas_cumprod[s]).double()
            expected = ratio.sqrt() * x_s.double() + (1 - ratio).sqrt() * noise.double()
            result, err = _call(q_sample_from, x_s.clone(), s, t, noise.clone(), alphas_cumprod.clone(),
                                name="q_sample_from")
            if err:
                return _report(False, err)
            result, err = _as_tensor(result, tuple(x_s.shape), "q_sample_from")
            if err:
                return _report(False, err)
            if torch.allclose(result, expected, atol=1e-4):
                continue
            ab_t = alphas_cumprod[t].double()
            if torch.allclose(result, ab_t.sqrt() * x_s.double() + (1 - ab_t).sqrt() * noise.double(), atol=1e-4):
                return _report(False, "that jumps as if x_s were the clean x_0; from step s only the α's of steps "
                                      "s+1..t still apply: their product is ᾱ_t / ᾱ_s")
            if torch.allclose(result, ratio * x_s.double() + (1 - ratio) * noise.double(), atol=1e-4):
                return _report(False, "the coefficients are standard deviations: take square roots")
            return _report(False, f"with the {schedule} schedule, for s = {s}, t = {t}, the result is off; the "
                                  "signal keeps √(ᾱ_t/ᾱ_s) and the noise's variance is 1 − ᾱ_t/ᾱ_s, from the "
                                  "alphas_cumprod passed in")
    return _report(True, "q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I): forward jumps from any step, "
                         "on the linear and the cosine schedule")


# --- Chapter 5: measuring and improving samples --------------------------------------------------------------------

def check_frechet_diagonal(frechet_diagonal: Callable) -> CheckResult:
    """Check `frechet_diagonal(mu_a, var_a, mu_b, var_b)`: |mu_a − mu_b|² + Σ(σ_a − σ_b)² for variances var."""
    rng = np.random.default_rng(0)
    for dim in (1, 5):
        mu_a, mu_b = rng.normal(size=dim), rng.normal(size=dim)
        var_a, var_b = rng.uniform(0.5, 4, size=dim), rng.uniform(0.5, 4, size=dim)
        expected = float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))
        result, err = _call(frechet_diagonal, mu_a, var_a, mu_b, var_b, name="frechet_diagonal")
        if err:
            return _report(False, err)
        try:
            value = float(result)
        except (TypeError, ValueError):
            return _report(False, f"frechet_diagonal should return a number, it returned {type(result).__name__}")
        if abs(value - expected) < 1e-8 * max(1.0, expected):
            continue
        mean_term = float(np.sum((mu_a - mu_b) ** 2))
        if abs(value - (mean_term + np.sum((var_a - var_b) ** 2))) < 1e-8:
            return _report(False, "the trace term compares standard deviations: (√var_a − √var_b)², not variances")
        if abs(value - (expected - mean_term)) < 1e-8:
            return _report(False, "add the mean term |mu_a − mu_b|²: two Gaussians can differ in where they sit")
        if abs(value - np.sqrt(expected)) < 1e-8:
            return _report(False, "FD is the squared 2-Wasserstein distance: no square root over the sum")
        return _report(False, "expand tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½) for diagonal Σ entry by entry")
    # a zero distance from a Gaussian to itself
    result, err = _call(frechet_diagonal, np.ones(3), np.full(3, 2.0), np.ones(3), np.full(3, 2.0),
                        name="frechet_diagonal")
    if err or abs(float(result)) > 1e-12:
        return _report(False, err or "a Gaussian's distance to itself must be 0")
    return _report(True, "FD = |μ_a − μ_b|² + Σ(σ_a − σ_b)² for diagonal Gaussians, as sqrtm gives")


def check_eps_from_v(eps_from_v: Callable) -> CheckResult:
    """Check `eps_from_v(x_t, v, alpha_bar)`: ε = √ᾱ v + √(1−ᾱ) x_t."""
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(3, 1, 8, 8, generator=g)
    alpha_bar = torch.tensor([0.99, 0.5, 0.01]).view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    v = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    result, err = _call(eps_from_v, x_t, v, alpha_bar, name="eps_from_v")
    if err:
        return _report(False, err)
    result, err = _as_tensor(result, tuple(x_t.shape), "eps_from_v")
    if err:
        return _report(False, err)
    if torch.allclose(result, eps.double(), atol=1e-4):
        return _report(True, "ε = √ᾱ v + √(1−ᾱ) x_t recovers the noise at every noise level")
    if torch.allclose(result, (alpha_bar.sqrt() * v - (1 - alpha_bar).sqrt() * x_t).double(), atol=1e-4):
        return _report(False, "check the sign of the x_t term: ε = √ᾱ v + √(1−ᾱ) x_t")
    if torch.allclose(result, (alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v).double(), atol=1e-4):
        return _report(False, "that is x̂0 = √ᾱ x_t − √(1−ᾱ) v; ε takes the other combination")
    return _report(False, "substitute x0 = √ᾱ x_t − √(1−ᾱ) v into x_t = √ᾱ x0 + √(1−ᾱ) ε and solve for ε")


def _fewest_nfe_reference(sweep: dict, sampler: str, target: float) -> int | None:
    meeting = [nfe for nfe, ratio, *_ in sweep[sampler] if ratio <= target]
    return min(meeting) if meeting else None


def check_fewest_nfe(fewest_nfe: Callable, sweep: dict) -> CheckResult:
    """Check `fewest_nfe(sweep, sampler, target)` on the chapter's measured sweep and on made-up ones."""
    if not isinstance(sweep, dict) or not sweep:
        return _report(False, "pass the chapter's measured `sweep` dict as the second argument")
    made_up = {"A": [(5, 9.0, 0.1), (10, 3.0, 0.2), (20, 1.5, 0.4), (50, 1.6, 1.0)],
               "B": [(5, 20.0, 0.1), (10, 12.0, 0.2)]}
    cases = [(made_up, "A", 2.0), (made_up, "A", 3.0), (made_up, "A", 1.55), (made_up, "B", 5.0),
             (made_up, "A", 100.0)]
    for sampler, rows in sweep.items():
        ratios = sorted(ratio for _, ratio, *_ in rows)
        cases += [(sweep, sampler, ratios[len(ratios) // 2]), (sweep, sampler, ratios[0] / 2)]
    for table, sampler, target in cases:
        expected = _fewest_nfe_reference(table, sampler, target)
        result, err = _call(fewest_nfe, table, sampler, target, name="fewest_nfe")
        if err:
            return _report(False, err)
        if result == expected and (result is None) == (expected is None):
            continue
        if expected is None:
            return _report(False, f"{sampler} never reaches FD over the floor {target:g}: return None, got {result!r}")
        if table is made_up and sampler == "A" and target == 1.55:
            return _report(False, "measured FD is not monotonic in NFE: take the smallest NFE that meets the "
                                  "target, not the first one after which it stays met")
        return _report(False, f"for {sampler!r} and target {target:g} expected NFE {expected}, got {result!r}")
    return _report(True, "right on the chapter's own measurements and on made-up tables (None when unmet)")


# --- Chapter 6: guidance and flow matching -------------------------------------------------------------------------

def check_guided_eps(guided_eps: Callable) -> CheckResult:
    """Check `guided_eps(eps_cond, eps_uncond, w)`: ε_u + w (ε_c − ε_u), w a number or one scale per image."""
    g = torch.Generator().manual_seed(8)
    eps_cond, eps_uncond = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    for w in (0.0, 1.0, 3.0, torch.tensor([0.0, 2.0, 7.5])):
        expected = eps_uncond + (w.view(-1, 1, 1, 1) if isinstance(w, torch.Tensor) else w) * (eps_cond - eps_uncond)
        result, err = _call(guided_eps, eps_cond, eps_uncond, w, name="guided_eps")
        if err:
            hint = " (a (B,) tensor of scales needs .view(-1, 1, 1, 1) to broadcast)" if isinstance(w, torch.Tensor) else ""
            return _report(False, err + hint)
        result, err = _as_tensor(result, tuple(eps_cond.shape), "guided_eps")
        if err:
            return _report(False, err)
        if torch.allclose(result, expected.double(), atol=1e-5):
            continue
        label = "per-image scales" if isinstance(w, torch.Tensor) else f"w = {w:g}"
        if not isinstance(w, torch.Tensor):
            if torch.allclose(result, (eps_cond + w * (eps_cond - eps_uncond)).double(), atol=1e-5):
                return _report(False, "start from the unconditional prediction: ε_uncond + w (ε_cond − ε_uncond), "
                                      "so that w = 0 ignores the label and w = 1 is the conditional model")
            if w == 0:
                return _report(False, "with w = 0 the result must be ε_uncond (the label is ignored)")
        return _report(False, f"wrong for {label}: expected ε_uncond + w (ε_cond − ε_uncond)")
    return _report(True, "guidance for a single scale and for one scale per image")


def check_flow_euler_step(flow_euler_step: Callable) -> CheckResult:
    """Check `flow_euler_step(x_t, velocity, t, t_next)` against FlowMatchEulerDiscreteScheduler.step."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(9)
    x_t, velocity = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    for shift in (1.0, 3.0):
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        scheduler.set_timesteps(5)
        for i, timestep in enumerate(scheduler.timesteps):
            t, t_next = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
            expected = scheduler.step(velocity, timestep, x_t).prev_sample.double()
            result, err = _call(flow_euler_step, x_t, velocity, t, t_next, name="flow_euler_step")
            if err:
                return _report(False, err)
            result, err = _as_tensor(result, tuple(x_t.shape), "flow_euler_step")
            if err:
                return _report(False, err)
            if torch.allclose(result, expected, atol=1e-5):
                continue
            if torch.allclose(result, (x_t - (t_next - t) * velocity).double(), atol=1e-5):
                return _report(False, "wrong direction: t_next < t, so x moves by (t_next − t)·v, against the "
                                      "velocity ε − x0, towards the data")
            return _report(False, f"from t = {t:.3f} to {t_next:.3f} (shift {shift:g}) the step differs from "
                                  "diffusers': an Euler step is x + (t_next − t)·v")
    return _report(True, "your step equals FlowMatchEulerDiscreteScheduler.step on its grids, shift 1 and 3")


def _guidance_reference(table: dict, min_share: float):
    meeting = {w: ratio for w, (share, ratio) in table.items() if share >= min_share}
    return min(meeting, key=meeting.get) if meeting else None


def check_guidance_choice(choose_guidance: Callable, table: dict) -> CheckResult:
    """Check `choose_guidance(table, min_share)` on the chapter's measured table and on made-up ones."""
    if not isinstance(table, dict) or not table:
        return _report(False, "pass the chapter's measured `guidance_table` as the second argument")
    made_up = {0: (0.10, 1.2), 1: (0.80, 0.9), 2: (0.93, 1.1), 4: (0.97, 1.8), 8: (0.99, 3.5)}
    shares = sorted(share for share, _ in table.values())
    cases = [(made_up, 0.5), (made_up, 0.9), (made_up, 0.95), (made_up, 0.999), (made_up, 0.0)]
    cases += [(table, shares[0]), (table, shares[len(shares) // 2]), (table, shares[-1]), (table, 1.01)]
    for candidate, min_share in cases:
        expected = _guidance_reference(candidate, min_share)
        result, err = _call(choose_guidance, candidate, min_share, name="choose_guidance")
        if err:
            return _report(False, err)
        if result == expected:
            continue
        if expected is None:
            return _report(False, f"no w reaches an intended share of {min_share:.2f}: return None, got {result!r}")
        meeting = [w for w, (share, _) in candidate.items() if share >= min_share]
        if result == max(meeting, key=lambda w: candidate[w][0]):
            return _report(False, "the highest share is not the goal: among the w that meet min_share, "
                                  "take the one with the lowest FD ratio")
        return _report(False, f"for min_share {min_share:.2f} expected w = {expected}, got {result!r}")
    return _report(True, "right on the chapter's measured table and on made-up ones (None when unmet)")
