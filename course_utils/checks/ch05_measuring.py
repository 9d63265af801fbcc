"""Exercise checks of Chapter 5: measuring and improving samples."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ._harness import CheckResult, _as_tensor, _call, _changed, _report


def check_frechet_diagonal(frechet_diagonal: Callable) -> CheckResult:
    """Check `frechet_diagonal(mu_a, var_a, mu_b, var_b)`: FD between two diagonal
    Gaussians.

    Compared with the general formula, tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½) through scipy's
    sqrtm on the full matrices, so the check holds no diagonal shortcut of its own."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    for dim in (1, 5):
        mu_a, mu_b = rng.normal(size=dim), rng.normal(size=dim)
        var_a, var_b = rng.uniform(0.5, 4, size=dim), rng.uniform(0.5, 4, size=dim)
        cov_a, cov_b = np.diag(var_a), np.diag(var_b)
        expected = float(
            np.sum((mu_a - mu_b) ** 2)
            + np.trace(cov_a + cov_b - 2 * np.real(sqrtm(cov_a @ cov_b)))
        )
        result, err = _call(frechet_diagonal, mu_a, var_a, mu_b, var_b, name="frechet_diagonal")
        if err:
            return _report(False, err)
        try:
            value = float(result)
        except (TypeError, ValueError):
            return _report(False, f"frechet_diagonal should return a number, it returned {type(result).__name__}")
        if abs(value - expected) < 1e-7 * max(1.0, expected):
            continue
        mean_term = float(np.sum((mu_a - mu_b) ** 2))
        if abs(value - (mean_term + np.sum((var_a - var_b) ** 2))) < 1e-7:
            return _report(False, "the trace term compares standard deviations: (√var_a − √var_b)², not variances")
        if abs(value - (expected - mean_term)) < 1e-7:
            return _report(False, "add the mean term |mu_a − mu_b|²: two Gaussians can differ in where they sit")
        if abs(value - np.sqrt(expected)) < 1e-7:
            return _report(False, "FD is the squared 2-Wasserstein distance: no square root over the sum")
        trace_term = expected - mean_term
        if abs(value - (np.sqrt(mean_term) + trace_term)) < 1e-7:
            return _report(False, "square the distance between the means: the mean "
                                  "term is ‖mu_a − mu_b‖², not ‖mu_a − mu_b‖")
        if dim > 1 and abs(value - expected / dim) < 1e-7:
            return _report(False, "sum over the dimensions, not the mean: FD adds up "
                                  "every dimension's part")
        return _report(False, "expand tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½) for diagonal Σ entry by entry")
    # a zero distance from a Gaussian to itself
    result, err = _call(frechet_diagonal, np.ones(3), np.full(3, 2.0), np.ones(3), np.full(3, 2.0),
                        name="frechet_diagonal")
    if err or abs(float(result)) > 1e-12:
        return _report(False, err or "a Gaussian's distance to itself must be 0")
    return _report(
        True, "your FD for diagonal Gaussians equals the general formula with sqrtm"
    )


def check_eps_from_v(eps_from_v: Callable) -> CheckResult:
    """Check `eps_from_v(x_t, v, alpha_bar)`: the noise ε that x_t and v imply."""
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(3, 1, 8, 8, generator=g)
    alpha_bar = torch.tensor([0.99, 0.5, 0.01]).view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    v = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    inputs = [x_t.clone(), v.clone(), alpha_bar.clone()]  # the learner's copies
    raw, err = _call(eps_from_v, *inputs, name="eps_from_v")
    if err:
        return _report(False, err)
    if isinstance(raw, torch.Tensor) and raw.dtype in (torch.float16, torch.bfloat16):
        return _report(False, f"return float32 (like the inputs), got {raw.dtype}: it "
                              "loses the precision the check needs")
    result, err = _as_tensor(raw, tuple(x_t.shape), "eps_from_v")
    if err:
        return _report(False, err)
    changed = _changed(("x_t", "v", "alpha_bar"), tuple(inputs), (x_t, v, alpha_bar))
    if changed:
        return _report(False, f"eps_from_v changed {', '.join(changed)} in place (an "
                              "operation ending in _ such as mul_): compute a new "
                              "tensor instead")
    if torch.allclose(result, eps.double(), atol=1e-4):
        return _report(True, "your ε recovers the noise at every noise level")
    if torch.allclose(result, (alpha_bar.sqrt() * v - (1 - alpha_bar).sqrt() * x_t).double(), atol=1e-4):
        return _report(False, "check the sign of the x_t term")
    if torch.allclose(result, (alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v).double(), atol=1e-4):
        return _report(False, "that is x̂0 = √ᾱ x_t − √(1−ᾱ) v; ε takes the other combination")
    return _report(False, "substitute x0 = √ᾱ x_t − √(1−ᾱ) v into x_t = √ᾱ x0 + √(1−ᾱ) ε and solve for ε")


def _nfe_mistake(
    table: dict, sampler: str, target: float, result: object
) -> str | None:
    """What is wrong with `result` as the fewest NFE of `sampler` meeting `target`, or
    None.

    Verified against the table rather than computed: a right answer meets the target,
    and no smaller NFE does; None is right only when no budget meets it."""
    rows = table[sampler]
    meets = {nfe for nfe, ratio, *_ in rows if ratio <= target}
    if result is None:
        return (
            None
            if not meets
            else (
                f"{sampler!r} meets FD over the floor {target:g} at some "
                "measured budget, so the answer is not None"
            )
        )
    if isinstance(result, bool) or not isinstance(result, (int, float, np.number)):
        return (
            "return an NFE from the table (an int) or None, got"
            f" {type(result).__name__}"
        )
    if not meets:
        return (
            f"{sampler} meets FD over the floor {target:g} at none of its measured"
            f" budgets: return None, got {result!r}"
        )
    if result not in {nfe for nfe, *_ in rows}:
        return (
            f"{result} is not an NFE measured for {sampler!r}: take one from its rows"
        )
    if result not in meets:
        return (
            f"for {sampler!r} at NFE {result} FD over the floor is above the target"
            f" {target:g}"
        )
    if any(nfe < result for nfe in meets):
        return (
            f"for {sampler!r} and target {target:g} a smaller NFE than {result} meets"
            " it too: take the smallest"
        )
    return None


def check_fewest_nfe(fewest_nfe: Callable, sweep: dict) -> CheckResult:
    """Check `fewest_nfe(sweep, sampler, target)` on the chapter's measured sweep and on
    made-up ones."""
    if not isinstance(sweep, dict) or not sweep:
        return _report(False, "pass the chapter's measured `sweep` dict as the second argument")
    made_up = {"A": [(5, 9.0, 0.1), (10, 3.0, 0.2), (20, 1.5, 0.4), (50, 1.6, 1.0)],
               "B": [(5, 20.0, 0.1), (10, 12.0, 0.2)],
               # rows in no particular order: the smallest NFE, not the first row
               "C": [(20, 1.5, 0.4), (5, 9.0, 0.1), (10, 1.4, 0.2)]}
    cases = [(made_up, "A", 2.0), (made_up, "A", 3.0), (made_up, "A", 1.55), (made_up, "B", 5.0),
             (made_up, "A", 100.0), (made_up, "C", 2.0)]
    for sampler, rows in sweep.items():
        ratios = sorted(ratio for _, ratio, *_ in rows)
        cases += [(sweep, sampler, ratios[len(ratios) // 2]), (sweep, sampler, ratios[0] / 2)]
    for table, sampler, target in cases:
        result, err = _call(fewest_nfe, table, sampler, target, name="fewest_nfe")
        if err:
            return _report(False, err)
        mistake = _nfe_mistake(table, sampler, target, result)
        if mistake is None:
            continue
        if table is made_up and sampler == "A" and target == 1.55:
            return _report(False, "measured FD is not monotonic in NFE: take the smallest NFE that meets the "
                                  "target, not the first one after which it stays met")
        return _report(False, mistake)
    return _report(True, "right on the chapter's own measurements and on made-up tables (None when unmet)")
