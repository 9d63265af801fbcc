"""The shared harness of the exercise checks: a result that is true when passed and
shows "Correct" or what is wrong, a safe call of the learner's function, and shape
checks."""

from __future__ import annotations

import sys
import textwrap
from typing import Callable

import torch

PASS = "✅ Correct"
FAIL = "❌ Not yet"


class CheckResult:
    """The outcome of an exercise check: true when passed; shows its message in a
    notebook."""

    def __init__(self, passed: bool, message: str) -> None:
        self.passed = passed
        self.message = f"{PASS}: {message}" if passed else f"{FAIL}: {message}"

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        # in a notebook: wrapped to the book's code width, so the result fits the column
        # on any screen
        printer.text("\n".join(textwrap.fill(line, width=88, subsequent_indent="  ", break_long_words=False,
                                              break_on_hyphens=False) for line in self.message.splitlines()))


def _report(ok: bool, message: str) -> CheckResult:
    return CheckResult(ok, message)


def _call(fn: Callable, *args, name: str) -> tuple[object, str | None]:
    """Call the learner's function; on an exception return a message instead of raising.
    """
    if not callable(fn):
        return None, f"expected a function, got {type(fn).__name__}"
    try:
        return fn(*args), None
    except NotImplementedError as exc:
        if str(exc):  # torch's own (an operation a device lacks), not the stub's
            return None, f"{name} raised NotImplementedError: {exc}"
        return None, f"{name} still raises NotImplementedError: replace the `raise` with your code"
    except Exception as exc:  # the learner's bug, reported rather than raised
        return None, f"{name} raised {type(exc).__name__}: {exc}"


def _watched(fn: Callable, targets: tuple[Callable, ...]) -> tuple[Callable, list[str]]:
    """`fn` wrapped so that every call of it runs under a tripwire on `targets` (Python
    functions), and the list of the targets' names it reached, filled as it runs.

    For the exercises whose answer a later chapter exports to `course_utils` (issue 28):
    the check runs every call of the learner's function through the wrapper and names a
    call of the course's code instead of passing it, however the function reached that
    code by an ordinary call (import, alias, attribute, partial, an instance's method).
    A deliberate evasion (another thread, a recompiled copy, code that looks for the
    profiler) is not caught. A non-callable `fn` comes back unwrapped: `_call` reports
    it."""
    if not callable(fn):
        return fn, []
    codes = {target.__code__ for target in targets}
    reached: list[str] = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            reached.append(frame.f_code.co_name)

    def watched(*args, **kwargs):
        previous = sys.getprofile()
        sys.setprofile(watch)
        try:
            return fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)

    return watched, reached


def _as_tensor(result: object, shape: tuple[int, ...], name: str) -> tuple[torch.Tensor | None, str | None]:
    if not isinstance(result, torch.Tensor):
        return None, f"{name} should return a torch.Tensor, it returned {type(result).__name__}"
    if tuple(result.shape) != shape:
        return None, f"{name} should return shape {shape}, it returned {tuple(result.shape)}"
    return result.double(), None


def _changed(names: tuple[str, ...], given: tuple[torch.Tensor, ...],
             kept: tuple[torch.Tensor, ...]) -> list[str]:
    """The names of the inputs that the learner's function changed in place: `given`
    are the copies it received, `kept` the originals."""
    return [name for name, a, b in zip(names, given, kept) if not torch.equal(a, b)]


def _tensor_result(fn: Callable, *args, shape: tuple[int, ...], name: str
                   ) -> tuple[torch.Tensor | None, str | None]:
    """Call the learner's function and check it returned a tensor of `shape`: (result as
    float64, None), or (None, a message saying what went wrong)."""
    result, err = _call(fn, *args, name=name)
    if err:
        return None, err
    return _as_tensor(result, shape, name)


def _linear_betas(n: int = 1000) -> torch.Tensor:
    return torch.linspace(1e-4, 0.02, n, dtype=torch.float64)


def _coefficients(
    result: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the least-squares c_a, c_b with result ≈ c_a a + c_b b, and how far it
    is off.

    `result`, `a` and `b` have shape (B, ...): returns c_a and c_b of shape (B,) and the
    largest absolute residual of each image, (B,), all float64. The checks read a
    learner's answer through these coefficients, so they need no formula of the answer:
    they compare the coefficients with the properties the exercise asks for."""
    if not (result.shape == a.shape == b.shape):
        raise ValueError(
            f"result, a and b must have one shape, got {tuple(result.shape)}, "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    basis = torch.stack(
        [a.double().flatten(1), b.double().flatten(1)], dim=2
    )  # (B, N, 2)
    target = result.double().flatten(1).unsqueeze(2)  # (B, N, 1)
    coef = torch.linalg.lstsq(basis, target).solution  # (B, 2, 1)
    residual = (basis @ coef - target).abs().amax(dim=(1, 2))
    return coef[:, 0, 0], coef[:, 1, 0], residual


def _near(a: torch.Tensor, b: torch.Tensor | float, rtol: float = 1e-4) -> torch.Tensor:
    """Elementwise |a − b| ≤ rtol · max(|b|, 1e-3), as a bool tensor (float64)."""
    b = torch.as_tensor(b, dtype=torch.float64)
    return (a - b).abs() <= rtol * b.abs().clamp(min=1e-3)
