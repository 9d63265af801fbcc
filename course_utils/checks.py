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
    result, err = _call(corrupt, x, noise, amount, name="corrupt")
    if err:
        return _report(False, err)
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


def check_alpha_bar(alpha_bar: Callable) -> CheckResult:
    """Check `alpha_bar(betas)` returns ᾱ_t, the running product of α_s = 1 − β_s."""
    betas = _linear_betas()
    result, err = _call(alpha_bar, betas.clone(), name="alpha_bar")
    if err:
        return _report(False, err)
    result, err = _as_tensor(result, tuple(betas.shape), "alpha_bar")
    if err:
        return _report(False, err + " (one value per timestep)")
    expected = torch.cumprod(1 - betas, dim=0)
    if torch.allclose(result, expected, rtol=1e-5, atol=1e-7):
        return _report(True, "ᾱ_t matches the product of (1 − β_s) for s ≤ t")
    if torch.allclose(result, torch.cumprod(betas, dim=0), rtol=1e-4):
        return _report(False, "you multiplied the β's; ᾱ multiplies α_s, the fraction of the signal kept at each step")
    if torch.allclose(result, 1 - torch.cumsum(betas, dim=0), rtol=1e-4, atol=1e-6):
        return _report(False, "that is 1 − Σβ, a first-order approximation; the exact ᾱ_t is a product, not a sum")
    if torch.allclose(result, 1 - betas, rtol=1e-5):
        return _report(False, "that is α_t for each step alone; ᾱ_t accumulates every step up to t")
    if not (result[1:] <= result[:-1] + 1e-12).all():
        return _report(False, "ᾱ_t should decrease with t: each step keeps a little less of the signal")
    return _report(False, "the values are off; compare the first few with 1 − β_0, (1 − β_0)(1 − β_1), ...")


def check_add_noise(add_noise: Callable) -> CheckResult:
    """Check `add_noise(x0, noise, t, alphas_cumprod)` samples q(x_t | x_0) in closed form."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(3, 1, 8, 8, generator=g)
    t = torch.tensor([0, 400, 999])
    alphas_cumprod = torch.cumprod(1 - _linear_betas(), dim=0).float()
    result, err = _call(add_noise, x0, noise, t, alphas_cumprod, name="add_noise")
    if err:
        return _report(False, err)
    result, err = _as_tensor(result, tuple(x0.shape), "add_noise")
    if err:
        return _report(False, err + ". Hint: index alphas_cumprod with t, then reshape to (B, 1, 1, 1)")
    ab = alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    expected = ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()
    if torch.allclose(result, expected, atol=1e-5):
        return _report(True, "x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, with each image at its own timestep")
    if torch.allclose(result, ab * x0.double() + (1 - ab) * noise.double(), atol=1e-5):
        return _report(False, "close: the coefficients are standard deviations, so they need square roots")
    if torch.allclose(result, ab.sqrt() * noise.double() + (1 - ab).sqrt() * x0.double(), atol=1e-5):
        return _report(False, "signal and noise are swapped: at t = 0 almost all of x_t should be x_0")
    ab0 = alphas_cumprod.double()[t[0]]
    if torch.allclose(result, ab0.sqrt() * x0.double() + (1 - ab0).sqrt() * noise.double(), atol=1e-5):
        return _report(False, "every image got the first image's timestep; each image has its own t")
    return _report(False, "the values are off; at t = 999 x_t should be almost pure noise, at t = 0 almost x_0")


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
    """Check `mix_factors(n_steps)`: fractions that move 1/n of the way first and land on the prediction last."""
    for n in (1, 5, 10):
        result, err = _call(mix_factors, n, name="mix_factors")
        if err:
            return _report(False, err)
        try:
            factors = [float(f) for f in result]
        except TypeError:
            return _report(False, f"mix_factors should return a list of numbers, got {type(result).__name__}")
        if len(factors) != n:
            return _report(False, f"mix_factors({n}) should give one factor per step ({n}), got {len(factors)}")
        if any(not 0 < f <= 1 for f in factors):
            return _report(False, "each factor is a fraction of the way to the prediction: it must lie in (0, 1]")
        if abs(factors[-1] - 1) > 1e-9:
            return _report(False, "the last step should land exactly on the prediction (factor 1)")
        if abs(factors[0] - 1 / n) > 1e-9:
            return _report(False, f"the first step should move 1/n of the way (1/{n}), got {factors[0]:.3g}")
        # Equal shares: step i moves 1/(n-i) of what remains, so each step covers 1/n of the original distance.
        remaining = 1.0
        for f in factors:
            moved = remaining * f
            if abs(moved - 1 / n) > 1e-9:
                return _report(False, "each step should cover an equal share (1/n) of the original distance to the "
                                      "prediction; what is left shrinks, so the fraction must grow")
            remaining -= moved
    return _report(True, "step i moves 1/(n − i) of the remaining way, an equal share each step")


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
    corner.paste((255, 255, 255, 255), (0, 0, 20, 20))  # white top-left quarter
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
    if bottom > -0.9 or not ((top_left > 0.9 and top_right < -0.9) or (top_left < -0.9 and top_right > 0.9)):
        return _report(False, "an image with a white top-left corner came out wrong: flip left-right only "
                              "(the last axis), never up-down")
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


def _reference_loop(model, scheduler, x: torch.Tensor, scale_input: bool = True,
                    init_sigma: bool = True) -> torch.Tensor:
    """The sampling loop for any diffusers scheduler (the flags leave out a step, for hints)."""
    if init_sigma:
        x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t) if scale_input else x
        x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
    return x


def check_sampling_loop(sampling_loop: Callable) -> CheckResult:
    """Check `sampling_loop(model, scheduler, x)` for DDIM and for Euler (which scales x and the input)."""
    from types import SimpleNamespace

    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    calls: list[int] = []

    def toy_model(x: torch.Tensor, t: torch.Tensor | int) -> SimpleNamespace:  # "noise" = 0.1 x
        calls.append(int(t))
        return SimpleNamespace(sample=0.1 * x + 0.01 * float(t) / 1000)

    def uncounted(x, t):
        return SimpleNamespace(sample=0.1 * x + 0.01 * float(t) / 1000)

    # both deterministic, so any correct loop agrees; Euler's x has sigma_max ≈ 14.6, not 1
    for scheduler in (DDIMScheduler(num_train_timesteps=1000),
                      EulerDiscreteScheduler(num_train_timesteps=1000)):
        name = type(scheduler).__name__
        scheduler.set_timesteps(10)
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
        expected = _reference_loop(uncounted, scheduler, x.clone())
        calls.clear()
        scheduler.set_timesteps(10)  # some schedulers keep a step index: start afresh
        result, err = _call(sampling_loop, toy_model, scheduler, x.clone(), name="sampling_loop")
        if err:
            return _report(False, f"with {name}: {err}")
        if not calls:
            return _report(False, "the model was never called: call model(x, t).sample at every timestep")
        if calls != [int(t) for t in scheduler.timesteps]:
            return _report(False, f"call the model once per timestep, in the order of scheduler.timesteps; "
                                  f"it was called at {calls[:4]}{'...' if len(calls) > 4 else ''}")
        result, err = _as_tensor(result, tuple(x.shape), "sampling_loop")
        if err:
            return _report(False, err + ". Hint: return the final x (prev_sample of the last step)")
        if torch.allclose(result, expected.double(), atol=1e-4):
            continue
        for hint, kwargs in [
            ("scale the starting noise by scheduler.init_noise_sigma", {"init_sigma": False}),
            ("feed the model scheduler.scale_model_input(x, t), not x", {"scale_input": False}),
            ("scale the starting noise by scheduler.init_noise_sigma and feed the model "
             "scheduler.scale_model_input(x, t)", {"init_sigma": False, "scale_input": False}),
        ]:
            scheduler.set_timesteps(10)
            if torch.allclose(result, _reference_loop(uncounted, scheduler, x.clone(), **kwargs).double(),
                              atol=1e-4):
                return _report(False, f"right for DDIM-like schedulers, wrong for {name}: {hint}")
        return _report(False, f"with {name} the timesteps are right but the result is not; feed each "
                              "step's prev_sample into the next")
    return _report(True, "the loop works for DDIM and Euler: init_noise_sigma, scale_model_input, "
                         "the model at every timestep, scheduler.step to x_{t-1}")


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
