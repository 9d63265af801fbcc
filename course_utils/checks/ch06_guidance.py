"""Exercise checks of Chapter 6: guidance and flow matching."""

from __future__ import annotations

from typing import Callable

import torch

from ._harness import CheckResult, _as_tensor, _call, _report


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
