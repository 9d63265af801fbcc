"""Exercise checks of Chapter 6: guidance and flow matching."""

from __future__ import annotations

import itertools
import numbers
from typing import Callable

import torch

from ..budget import get_device
from ._harness import (
    CheckResult,
    _as_tensor,
    _call,
    _changed,
    _coefficients,
    _report,
    _tensor_result,
)

# The chapter's w is diffusers' `guidance_scale` (also Imagen's and GLIDE's s): ε_u + w
# (ε_c − ε_u), w = 1 the conditional model. Ho & Salimans (2021) write ε̃ = (1 + w) ε_c
# − w ε_u, where their w = 0 is the conditional model.
CONVENTION_HINT = ("that is Ho & Salimans' convention, (1 + w) ε_cond − w ε_uncond, in which w = 0 is the "
                   "conditional model. This chapter's w is diffusers' guidance_scale: ε_uncond + w (ε_cond − "
                   "ε_uncond), w = 1 the conditional model (the paper's w is this w − 1)")
# Swapped predictions also give ε_cond at w = 0, like Ho & Salimans' form
SWAP_HINT = ("you swapped the two predictions: w = 0 must give ε_uncond and w = 1"
             " ε_cond")
# For per-image scales that do not broadcast (an error) or broadcast wrongly (a shape)
BROADCAST_HINT = (" (a (B,) tensor of scales needs .view(-1, 1, 1, 1) to broadcast"
                  " over C, H and W: one scale per image)")


def _guided_cases(g: torch.Generator) -> list:
    """(eps_cond, eps_uncond, w) cases: numbers on both sides of 1, then one scale per
    image."""
    eps_cond, eps_uncond = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    return [(eps_cond, eps_uncond, w) for w in (0.0, 1.0, 3.0, 0.5, torch.tensor([0.0, 2.0, 7.5]))]


def _guided_weights(
    result: torch.Tensor, eps_cond: torch.Tensor, eps_uncond: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the weights (on ε_cond, on ε_uncond) of the learner's result, and the
    residual."""
    return _coefficients(result, eps_cond, eps_uncond)


def _is_guided(
    result: torch.Tensor, eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w
) -> bool:
    """True when the result weighs ε_cond by w and ε_uncond by 1 − w, image by image."""
    on_c, on_u, off = _guided_weights(result, eps_cond, eps_uncond)
    scale = torch.as_tensor(w, dtype=torch.float64).expand(len(on_c))
    return bool(
        off.max() < 1e-5
        and torch.allclose(on_c, scale, atol=1e-5)
        and torch.allclose(on_u, 1 - scale, atol=1e-5)
    )


def _gives_at_w2(
    guided_eps: Callable, c: torch.Tensor, u: torch.Tensor, expected: torch.Tensor
) -> bool:
    """True when guided_eps returns `expected` at w = 2. At w = 0 three mistakes give
    ε_cond (ignoring w, Ho & Salimans' form, swapped predictions), so one w cannot tell
    them apart."""
    result, err = _call(guided_eps, c.float().clone(), u.float().clone(), 2.0,
                        name="guided_eps")
    return not err and isinstance(result, torch.Tensor) and torch.allclose(
        result.double(), expected, atol=1e-5)


def check_guided_eps(
    guided_eps: Callable, device: torch.device | str | None = None
) -> CheckResult:
    """Check `guided_eps(eps_cond, eps_uncond, w)`: ε_u + w (ε_c − ε_u), w a number or
    one scale per image.

    Each call gets fresh copies, and the inputs must come back unchanged (a sampler
    reuses ε_uncond). The per-image case runs again on `device` (default: the learner's,
    CUDA or MPS when there is one) with the scales as a CPU tensor, as a learner builds
    them, so a function that forgets to move them is caught there ("meta" runs that part
    on shapes only: how the tests try it without an accelerator)."""
    g = torch.Generator().manual_seed(8)
    for eps_cond, eps_uncond, w in _guided_cases(g):
        per_image = isinstance(w, torch.Tensor)
        inputs = (eps_cond.clone(), eps_uncond.clone(), w.clone() if per_image else w)
        result, err = _call(guided_eps, *inputs, name="guided_eps")
        if err:
            return _report(False, err + (BROADCAST_HINT if per_image else ""))
        changed = [name for name, given, kept in
                   zip(("eps_cond", "eps_uncond", "w"), inputs, (eps_cond, eps_uncond, w))
                   if isinstance(kept, torch.Tensor) and not torch.equal(given, kept)]
        if changed:
            return _report(
                False,
                f"guided_eps changed {', '.join(changed)} in place (an in-place"
                " operation such as add_ or +=): the sampler still needs the"
                " predictions, so build a new tensor",
            )
        result, err = _as_tensor(result, tuple(eps_cond.shape), "guided_eps")
        if err:  # per image, e.g. .view(-1, 1, 1) broadcasts over the wrong axes
            return _report(False, err + (BROADCAST_HINT if per_image else ""))
        if _is_guided(result, eps_cond, eps_uncond, w):
            continue
        label = "per-image scales" if per_image else f"w = {w:g}"
        c, u = eps_cond.double(), eps_uncond.double()
        scale = w.double().view(-1, 1, 1, 1) if per_image else w
        if torch.allclose(result, c, atol=1e-5) and _gives_at_w2(guided_eps, c, u, c):
            return _report(False, f"with {label} you return ε_cond unchanged, whatever"
                                  " w is: the scale must move the result between the"
                                  " two predictions")
        if torch.allclose(result, c + scale * (c - u), atol=1e-5):
            if not per_image and w == 0 and _gives_at_w2(guided_eps, c, u, 2 * u - c):
                return _report(False, SWAP_HINT)  # ε_cond + w (ε_uncond − ε_cond)
            return _report(False, f"with {label} you return (1 + w) ε_cond − w ε_uncond: " + CONVENTION_HINT)
        if torch.allclose(result, c + scale * (u - c), atol=1e-5):
            return _report(False, SWAP_HINT)
        if torch.allclose(result, u + scale * (u - c), atol=1e-5):
            return _report(
                False,
                "the difference points the wrong way: guidance moves from ε_uncond"
                " towards (and past) ε_cond",
            )
        if not per_image and w == 0:
            return _report(False, "with w = 0 the result must be ε_uncond (the label is ignored)")
        return _report(
            False,
            f"wrong for {label}: the result is not the chapter's guided "
            "combination of the two predictions",
        )
    device = torch.device(device) if device is not None else get_device()
    if device.type != "cpu":
        eps_cond, eps_uncond, w = _guided_cases(g)[-1]
        result, err = _call(guided_eps, eps_cond.to(device), eps_uncond.to(device), w.clone(),
                            name="guided_eps")
        if err:
            return _report(False, f"on {device.type} with the scales as a CPU tensor: {err}. Put them where the "
                                  "predictions are: torch.as_tensor(w, dtype=eps_cond.dtype, "
                                  "device=eps_cond.device)")
        if not isinstance(result, torch.Tensor) or result.device.type != device.type:
            return _report(False, f"on {device.type}, return a tensor on the predictions' device")
        if device.type == "meta":  # shapes only (the tests' stand-in for an accelerator)
            return _report(True, "guidance for a single scale and for one scale per image, and it runs "
                                 "where the predictions are")
        result, err = _as_tensor(result.cpu(), tuple(eps_cond.shape), "guided_eps")
        if err or not _is_guided(result, eps_cond, eps_uncond, w):
            return _report(False, err or f"on {device.type} the result differs from the CPU one")
        where = f", on the CPU and on {device.type}"
    else:
        where = ""
    return _report(True, f"guidance for a single scale and for one scale per image{where} (w is diffusers' "
                         "guidance_scale: 1 is the conditional model)")


class _Recorded:
    """A velocity field that records the times it is called at."""

    def __init__(self, field: Callable) -> None:
        self.field, self.times = field, []

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            if not bool((t == t.flatten()[0]).all()):
                raise ValueError(f"velocity_fn(x, t) takes one time t, a number; it got"
                                 f" a tensor of shape {tuple(t.shape)} with different"
                                 " times (are x and t swapped?)")
            t = t.flatten()[0]  # one time per image, all equal: accepted
        if not isinstance(t, (numbers.Real, torch.Tensor)) or isinstance(t, bool):
            raise TypeError(f"velocity_fn(x, t) takes the time t as a number, got"
                            f" {type(t).__name__} (are x and t swapped?)")
        self.times.append(float(t))
        return self.field(x, float(t))


# Two fields whose Heun step has a closed form (h = t_next − t), so the check holds no
# Heun step of its own. Each entry: the field and, for (x, u, t, t_next), Heun's step and
# Euler's.
def _time_field(u: torch.Tensor) -> Callable:
    return lambda x, t: (1 + 3 * t**2) * u  # v = c(t): Heun is the trapezoid rule


def _heun_time(x, u, t, t_next):
    h = t_next - t
    return {"heun": x + h * u * ((1 + 3 * t**2) + (1 + 3 * t_next**2)) / 2,
            "euler": x + h * u * (1 + 3 * t**2)}


_K = 0.8  # v = k x: Heun is x (1 + hk + (hk)²/2)


def _linear_field(u: torch.Tensor) -> Callable:
    return lambda x, t: _K * x


def _heun_linear(x, u, t, t_next):
    hk = (t_next - t) * _K
    return {"heun": x * (1 + hk + hk**2 / 2), "euler": x * (1 + hk)}


_FIELDS = {"v = (1 + 3t²) u, a field of t alone": (_time_field, _heun_time),
           "v = 0.8 x, a linear field": (_linear_field, _heun_linear)}
_STEPS = [(1.0, 0.75), (0.5, 0.2), (0.25, 0.0)]


def _heun_mistake(result: torch.Tensor, x: torch.Tensor, forms: dict, times: list,
                  t: float, t_next: float) -> str:
    """What a wrong Heun step did, in words (the velocity's times are known)."""
    heun, euler = forms["heun"].double(), forms["euler"].double()
    expected = euler if t_next == 0 else heun  # the last step is Euler's
    if torch.allclose(result, 2 * x.double() - expected, atol=1e-5):
        return ("wrong direction: t_next < t, so the step is (t_next − t) times the"
                " velocity, against the velocity ε − x0, towards the data")
    if any(time > 1 + 1e-9 for time in times):
        return ("velocity_fn takes the time t itself, a number in [0, 1]: the network's"
                " 1000 · t belongs inside the velocity function, not in the step")
    if t_next == 0 and torch.allclose(result, heun, atol=1e-5):
        return ("the last step, to t_next = 0, is Euler's step, as the exercise says:"
                " Karras et al. and diffusers skip the correction there (the solution"
                " says why)")
    if len(times) > 1 and all(abs(time - t) < 1e-9 for time in times):
        return ("the second velocity is evaluated at time t: Heun's evaluates it at"
                " t_next, at Euler's guess of the point there")
    if torch.allclose(result, euler, atol=1e-5) and len(times) == 2:
        return ("you evaluate the second velocity at x_t (or leave it out of the"
                " step): evaluate it at Euler's guess of the point at t_next, and step"
                " with the average of the two velocities")
    if torch.allclose(result, euler, atol=1e-5):
        return ("that is Euler's step, x + (t_next − t)·v(x, t): Heun's takes it only"
                " as a guess, evaluates the velocity again there at t_next, and steps"
                " with the average of the two velocities")
    if len(times) == 2 and any(abs(time - (t + t_next) / 2) < 1e-6 for time in times):
        return ("you evaluate the velocity half way, at (t + t_next) / 2: that is the"
                " midpoint method. Heun's evaluates it at t and at t_next, at Euler's"
                " guess, and averages the two")
    return ("the step differs from Heun's: check the three parts the exercise names,"
            " Euler's guess at t_next, the velocity there at t_next, and a step from"
            " x_t (not from the guess) with the average of the two velocities")


def check_heun_step(heun_step: Callable, device: torch.device | str | None = None
                    ) -> CheckResult:
    """Check `heun_step(velocity_fn, x_t, t, t_next)`: one step of Heun's method for
    dx/dt = velocity_fn(x, t) from t to t_next < t (Karras et al. 2022, Algorithm 1):
    two velocities averaged, except on the last step, to t_next = 0, which is Euler's
    (as in Karras et al. and diffusers' Heun schedulers: n steps, 2n − 1 calls).

    Checked on two fields whose Heun step has a closed form (a field of t alone, where
    Heun's step is the trapezoid rule, and v = 0.8 x), at three (t, t_next) pairs, the
    last to 0, with copies of x_t that must come back unchanged; the velocity must be
    evaluated twice (once on the last step). Names Euler's step, the second velocity at
    x_t or at time t, the midpoint method, a corrected last step, a step the wrong way
    and the network's 1000 · t. The linear field runs again on `device` (default: the
    learner's; "meta" checks shapes and devices only)."""
    g = torch.Generator().manual_seed(9)
    x_t, u = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    # step by step, both fields at each: a slip of every step shows before the last's
    for (t, t_next), (field_name, (make_field, closed_forms)) in itertools.product(
            _STEPS, _FIELDS.items()):
        velocity_fn = _Recorded(make_field(u))
        given = x_t.clone()
        result, err = _tensor_result(heun_step, velocity_fn, given, t, t_next,
                                     shape=tuple(x_t.shape), name="heun_step")
        where = f"with {field_name}, from t = {t:g} to {t_next:g}"
        if err:  # where it failed, unless the function is still the stub
            stub = "NotImplementedError" in err and "still raises" in err
            return _report(False, err if stub else f"{where}: {err}")
        if _changed(("x_t",), (given,), (x_t,)):
            return _report(False, "heun_step changed x_t in place (add_ or +=):"
                                  " the second velocity and the step both need"
                                  " x_t, so build new tensors")
        forms = closed_forms(x_t.double(), u.double(), t, t_next)
        last = t_next == 0
        if torch.allclose(result, forms["euler" if last else "heun"], atol=1e-5):
            calls = len(velocity_fn.times)
            if calls != (1 if last else 2):
                need = ("the last step needs one velocity, at t: another call"
                        " costs a network evaluation for nothing" if last else
                        "Heun's step needs it twice, at t and at t_next: two"
                        " network calls per step")
                return _report(False, f"{where}: you evaluate the velocity"
                                      f" {calls} times: {need}")
            continue
        return _report(False, f"{where}: " + _heun_mistake(
            result, x_t, forms, velocity_fn.times, t, t_next))
    device = torch.device(device) if device is not None else get_device()
    if device.type != "cpu":
        field = _linear_field(u)
        result, err = _call(heun_step, field, x_t.to(device), 0.5, 0.2, name="heun_step")
        if err:
            return _report(False, f"on {device.type}: {err}")
        if not isinstance(result, torch.Tensor) or result.device.type != device.type:
            return _report(False, f"on {device.type}, return a tensor on x_t's device")
        if device.type != "meta":
            forms = _heun_linear(x_t.double(), u.double(), 0.5, 0.2)
            if not torch.allclose(result.cpu().double(), forms["heun"], atol=1e-4):
                return _report(False, f"on {device.type} the result differs from the"
                                      " CPU one")
    return _report(True, "Heun's step: two velocities, at t and at Euler's guess at"
                         " t_next, averaged, and Euler's step to t = 0; checked on two"
                         " fields where its result is known exactly")


def _guidance_mistake(table: dict, min_share: float, result: object) -> str | None:
    """What is wrong with `result` as the chosen w, or None: verified against the table.

    A right w meets min_share and no w that meets it has a lower FD over the floor; None
    is right only when no w meets it."""
    meeting = {w: fd for w, (share, fd) in table.items() if share >= min_share}
    if result is None:
        return (
            None
            if not meeting
            else f"some w reaches an intended share of {min_share:.4g}"
        )
    if not meeting:
        return (
            f"no w reaches an intended share of {min_share:.4g}: return None, got"
            f" {result!r}"
        )
    if result not in table:
        return f"{result!r} is not a w of the table"
    if result not in meeting:
        return f"w = {result} does not reach an intended share of {min_share:.4g}"
    if any(fd < meeting[result] for fd in meeting.values()):
        return (
            f"another w that meets min_share {min_share:.4g} has a lower FD over the"
            " floor"
        )
    return None


def _guidance_mistakes(table: dict, min_share: float) -> list[tuple[object, str]]:
    """(what a plausible wrong answer returns, its hint), most specific first."""
    meeting = [w for w, (share, _) in table.items() if share >= min_share]
    strict = {w: fd for w, (share, fd) in table.items() if share > min_share}
    mistakes = []
    if meeting:
        mistakes.append((max(meeting, key=lambda w: table[w][1]),
                         "that w has the highest FD over the floor among those meeting min_share: take "
                         "the lowest (min, not max)"))
    mistakes.append((min(strict, key=strict.get) if strict else None,
                     f"a share equal to min_share ({min_share:.4g}) meets it: keep share >= min_share"))
    if meeting:
        mistakes.append((max(meeting, key=lambda w: table[w][0]),
                         "that w has the highest share, which is not the goal: among the w whose share is "
                         "at least min_share, take the one with the lowest FD over the floor"))
    mistakes.append((min(table, key=lambda w: table[w][1]),
                     "that is the lowest FD over the floor of all w, but its share is below min_share: "
                     "consider only the w that meet it"))
    return mistakes


def check_guidance_choice(choose_guidance: Callable, table: dict) -> CheckResult:
    """Check `choose_guidance(table, min_share)` on the chapter's measured table and on
    made-up ones.

    `table` maps w to (share of the intended digit, FD over the test-vs-test floor). The
    made-up tables separate the plausible mistakes (max for min, highest share, > for
    >=, min_share ignored) so each gets its own hint."""
    if not isinstance(table, dict) or not table:
        return _report(False, "pass the chapter's measured `guidance_table` as the second argument")
    made_up = {0: (0.12, 1.9), 1: (0.93, 1.1), 2: (1.0, 1.2), 4: (0.995, 2.6), 8: (0.98, 3.9)}
    shares = sorted(share for share, _ in table.values())
    cases = [(made_up, 0.5), (made_up, 0.93), (made_up, 0.95), (made_up, 0.999), (made_up, 0.0),
             (made_up, 1.01)]
    cases += [(table, shares[0]), (table, shares[len(shares) // 2]), (table, shares[-1]), (table, 1.01)]
    for candidate, min_share in cases:
        result, err = _call(choose_guidance, candidate, min_share, name="choose_guidance")
        if err:
            if all(share < min_share for share, _ in candidate.values()):
                err += (f" (no w reaches min_share {min_share:.4g}: return None in that"
                        " case)")
            return _report(False, err)
        mistake = _guidance_mistake(candidate, min_share, result)
        if mistake is None:
            continue
        if all(share < min_share for share, _ in candidate.values()):
            return _report(False, mistake)  # none meets it: the answer is None
        for wrong, hint in _guidance_mistakes(candidate, min_share):
            if (
                wrong is not None
                and result == wrong
                and _guidance_mistake(candidate, min_share, wrong) is not None
            ):
                return _report(False, hint)
        return _report(False, f"for min_share {min_share:.4g}: {mistake}")
    return _report(True, "right on the chapter's measured table and on made-up ones (None when unmet)")
