"""Exercise auto-checks: each returns a CheckResult that is true when passed and shows "Correct" or what is wrong, with a hint."""

from __future__ import annotations

from typing import Callable

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
    if isinstance(t_cross, bool) or not isinstance(t_cross, int):
        return _report(False, f"expected one integer timestep, got {type(t_cross).__name__}")
    if t_cross == expected:
        return _report(True, f"from t = {expected} on, the noise carries more power than the signal")
    if abs(t_cross - expected) <= 1:
        return _report(False, "off by one: you want the first t whose SNR is already below 1")
    direction = "late" if t_cross > expected else "early"
    return _report(False, f"t = {t_cross} is too {direction}. Hint: SNR = ᾱ_t / (1 − ᾱ_t); look for the first t where it is < 1")
