"""Exercise checks of Chapter 3: training a UNet2DModel on the butterflies (emoji
offline)."""

from __future__ import annotations

from typing import Callable

import torch

from ._expected import stored_values
from ._harness import CheckResult, _as_tensor, _call, _report, _watched


def _check_images(images: object, name: str, n: int, shape: tuple[int, ...], shape_hint: str = "") -> str | None:
    """What is wrong with a list of image tensors, or None; `shape_hint` follows a wrong
    shape only."""
    if not isinstance(images, (list, tuple)) or len(images) != n:
        return f"{name} should be a list with one tensor per input image ({n}), got {type(images).__name__}"
    for image in images:
        if not isinstance(image, torch.Tensor):
            return f"each image should be a tensor of shape {shape} (channels first), got {type(image).__name__}"
        if tuple(image.shape) != shape:
            return (f"each image should be a tensor of shape {shape} (channels first), got {tuple(image.shape)}"
                    + shape_hint)
        if not image.is_floating_point():
            return f"images should be float tensors, got {image.dtype}. Hint: divide by 255 after converting"
    return None


def check_transform(transform: Callable, image_size: int = 32) -> CheckResult:
    """Check a `set_transform` function: {"image": PIL images} -> {"images": (3, size,
    size) tensors in [-1, 1]}."""
    from PIL import Image

    red = Image.new("RGB", (64, 48), (255, 0, 0))
    grey = Image.new("L", (20, 20), 128)  # some butterfly photos are not RGB
    corner = Image.new("RGBA", (40, 40), (0, 0, 0, 255))
    # a white strip along the top, 5/8 of the width: not symmetric about the diagonal,
    # so a transposed image (C, W, H) shows as a strip down the left side
    corner.paste((255, 255, 255, 255), (0, 0, 25, 10))
    batch = {"image": [red, grey, corner]}
    from ..data import ImageTransform, pil_to_tensor  # the course's own loader

    transform, reached = _watched(
        transform, (ImageTransform.__call__, ImageTransform.one, pil_to_tensor))
    delegated = _report(False, "the transform runs course_utils' ImageTransform or "
                               "pil_to_tensor, the course's loader: the exercise is to "
                               "write it yourself with PIL, numpy and torch")
    result, err = _call(transform, batch, name="transform")
    if reached:
        return delegated
    if err:
        return _report(False, err)
    if not isinstance(result, dict) or "images" not in result:
        return _report(False, "the transform should return a dict with the key 'images'")
    err = _check_images(result["images"], "result['images']", 3, (3, image_size, image_size),
                        shape_hint=". Hint: convert('RGB'), then resize to (image_size, image_size)")
    if err:
        return _report(False, err)
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
    # below the strip's rows every side band is black, unless the image came out
    # transposed
    side = max(corner_t[:, q + 1:3 * q, :q].mean().item(), corner_t[:, q + 1:3 * q, -q:].mean().item())
    if side > -0.5:
        return _report(False, "an image with a white strip along its top came out with it down one side: the "
                              "image is transposed. Tensors are (channels, height, width): "
                              "np.asarray(image) is (height, width, channels), so use .permute(2, 0, 1)")
    if bottom > -0.9 or not ((top_left > 0.9 and top_right < -0.9) or (top_left < -0.9 and top_right > 0.9)):
        return _report(False, "an image with a white strip at the top left came out wrong: flip left-right "
                              "only (the last axis), never up-down")
    # the flip must be random: about half of many copies of the corner image come out
    # mirrored
    n = 200
    result, err = _call(transform, {"image": [corner] * n}, name="transform")
    if reached:
        return delegated
    if err:
        return _report(False, err)
    # a random up-down flip may have left the single image above alone: look again here
    if any(float(im[:, -q:, :].max()) > 0.9 for im in result["images"]):
        return _report(False, "some copies of an image with a white strip at its top "
                              "came out with the strip at the bottom: flip left-right "
                              "only (the last axis), never up-down")
    flipped = sum(float(im[:, :q, -q:].mean()) > 0.9 for im in result["images"])
    if not 0.35 * n <= flipped <= 0.65 * n:
        return _report(False, f"{flipped} of {n} copies of one image came out flipped; a random "
                              "flip with probability 0.5 mirrors about half of them")
    return _report(True, "PIL images become (3, size, size) tensors in [-1, 1], any mode, "
                         "half of them flipped left-right")


_SLIPS = ("start_from_noise", "noise_to_schedule_start", "no_input_scaling")


def _sdedit_slip(
    model,
    scheduler,
    images: torch.Tensor,
    noise: torch.Tensor,
    strength: float,
    slip: str,
) -> torch.Tensor:
    """What an SDEdit with one usual mistake returns, for the hints (never the right
    edit).

    `slip` is one of `_SLIPS`; anything else raises ValueError. A strength that keeps no
    step has no slip to show and raises ValueError too."""
    if slip not in _SLIPS:
        raise ValueError(f"slip must be one of {_SLIPS}, got {slip!r}")
    n = len(scheduler.timesteps)
    n_kept = round(strength * n)
    if n_kept == 0:
        raise ValueError("at strength 0 there is no step, so no slip to show")
    timesteps = scheduler.timesteps[n - n_kept:]
    if slip == "start_from_noise":
        x = noise * scheduler.init_noise_sigma
    else:
        noise_at = (
            scheduler.timesteps[:1]
            if slip == "noise_to_schedule_start"
            else timesteps[:1]
        )
        x = scheduler.add_noise(images, noise, noise_at)
    for t in timesteps:
        model_input = (
            x if slip == "no_input_scaling" else scheduler.scale_model_input(x, t)
        )
        x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
    return x


def _sdedit_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The images and noise check_sdedit gives the learner's function."""
    g = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    return images, torch.randn(2, 3, 8, 8, generator=g)


SDEDIT_STRENGTHS = (0.0, 0.23, 0.27, 0.6, 1.0)
SDEDIT_STEPS = 10


def _sdedit_schedulers() -> tuple:
    """DDIM and Euler (1,000 training steps): both deterministic, so any right answer
    agrees."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    return DDIMScheduler(num_train_timesteps=1000), EulerDiscreteScheduler(
        num_train_timesteps=1000
    )


def _not_1d(timesteps: object) -> str | None:
    """How a timesteps argument to add_noise falls short of a 1-D tensor, or None."""
    if isinstance(timesteps, torch.Tensor):
        return "a 0-d tensor (a scalar)" if timesteps.ndim == 0 else None
    return f"a Python {type(timesteps).__name__}"


def _call_with_spy(sdedit: Callable, model, scheduler, *rest
                   ) -> tuple[object, str | None, list]:
    """Call sdedit(model, scheduler, *rest); record the (timesteps, noise) it gives
    add_noise."""
    seen: list = []
    add_noise = scheduler.add_noise

    def spy(*a, **kw):
        seen.append((kw.get("timesteps", a[2] if len(a) > 2 else None),
                     kw.get("noise", a[1] if len(a) > 1 else None)))
        return add_noise(*a, **kw)

    scheduler.add_noise = spy  # an instance attribute over the class's method
    try:
        result, err = _call(sdedit, model, scheduler, *rest, name="sdedit")
    finally:
        del scheduler.add_noise
    return result, err, seen


def _toy_model(calls: list | None = None) -> Callable:
    """A model whose "noise" is 0.1 x + 1e-5 t; it takes t as a number, a 0-d tensor or
    a 1-D tensor of one timestep per image (as UNet2DModel does), and records each
    call's timestep in `calls`."""
    from types import SimpleNamespace

    def model(x: torch.Tensor, t) -> SimpleNamespace:
        t = torch.as_tensor(t)
        if t.ndim > 1 or (t.ndim == 1 and len(t) not in (1, len(x))):
            raise ValueError(f"the model takes t as a number or a 1-D tensor with one timestep per image, "
                             f"got shape {tuple(t.shape)}")
        if calls is not None:
            values = [float(v) for v in t.flatten()]
            # one timestep for all images is recorded as it; different ones per image as
            # all of them
            calls.append(int(values[0]) if len(set(values)) == 1 else tuple(values))
        t_x = t.to(x.dtype).reshape(-1, 1, 1, 1) if t.ndim == 1 else float(t)
        return SimpleNamespace(sample=0.1 * x + 0.01 * t_x / 1000)

    return model


def _same_values(a: object, b: torch.Tensor) -> bool:
    return (isinstance(a, torch.Tensor) and tuple(a.shape) == tuple(b.shape)
            and torch.allclose(a.detach().cpu().double(), b.double()))


def check_sdedit(sdedit: Callable) -> CheckResult:
    """Check `sdedit(model, scheduler, images, noise, strength)` for DDIM and Euler at
    several strengths."""
    import math

    calls: list = []
    toy_model, uncounted = _toy_model(calls), _toy_model()
    images, noise = _sdedit_inputs()
    n = SDEDIT_STEPS
    # Euler works in sigma units, not unit variance. 0.23 × 10 and 0.27 × 10 are not
    # whole: round() keeps 2 and 3, int() 2 and 2, math.ceil 3 and 3. The right edits
    # are stored values (computed once, outside this package), so no right edit is
    # written here.
    for scheduler in _sdedit_schedulers():
        name = type(scheduler).__name__
        for strength in SDEDIT_STRENGTHS:
            scheduler.set_timesteps(n)
            expected = (
                images
                if strength == 0
                else stored_values(f"sdedit/{name}/{strength:g}")
            )
            n_kept = round(strength * n)
            kept = [int(t) for t in scheduler.timesteps[n - n_kept:]] if n_kept else []
            calls.clear()
            scheduler.set_timesteps(n)  # some schedulers keep a step index: start afresh
            images_given, noise_given = images.clone(), noise.clone()
            result, err, seen = _call_with_spy(sdedit, toy_model, scheduler,
                                               images_given, noise_given, strength)
            scalar = next((_not_1d(t) for t, _ in seen if _not_1d(t)), None)
            if err and scalar:
                return _report(False, f"with {name}, strength {strength}: {err}. "
                                      f"add_noise got its timestep as {scalar}: it "
                                      "takes a 1-D tensor, one timestep per image or "
                                      "one for all (Euler-type schedulers loop over "
                                      "it). timesteps[0] is 0-d; timesteps[:1], a "
                                      "slice, is the 1-element tensor it needs")
            if err and not seen and strength > 0:
                # it never called add_noise: noising by hand with ᾱ does not fit
                # Euler-type schedulers, whose timesteps index σ, not ᾱ
                return _report(False, f"with {name}, strength {strength}: {err}. Noise "
                                      "the images with the scheduler you are given, "
                                      "scheduler.add_noise(images, noise, timesteps): "
                                      "Euler-type schedulers work in σ units, so ᾱ "
                                      "by hand does not fit them")
            if err:
                return _report(False, f"with {name}, strength {strength}: {err}")
            for given, original, what in ((images_given, images, "images"), (noise_given, noise, "noise")):
                if not torch.equal(given, original):
                    return _report(False, f"with {name}, strength {strength}: sdedit changed the `{what}` tensor "
                                          "it was given, in place; the caller's tensors must stay as they were. "
                                          f"Use out-of-place operations (x = x * a, not x *= a or "
                                          f"{what}.mul_(a)), or work on a copy")
            if calls != kept:
                if strength == 0:
                    return _report(False, "at strength 0 nothing is noised and no step is run: return the "
                                          "images as they are, without calling the model")
                if calls == [int(t) for t in scheduler.timesteps]:
                    return _report(False, f"at strength {strength} run only the last round(strength × n) "
                                          f"timesteps ({kept[:3]}...), not all {len(calls)}")
                n_called = len(calls)
                if (n_called in (math.floor(strength * n), math.ceil(strength * n)) and n_called
                        and calls == [int(t) for t in scheduler.timesteps[n - n_called:]]):
                    return _report(False, f"at strength {strength} keep round({strength} × {n}) = {n_kept} "
                                          f"timesteps; this answer kept {n_called}. Round to the nearest "
                                          "whole number: int() rounds down, math.ceil up; and "
                                          "check the slice: timesteps[n - k:] keeps k")
                return _report(False, f"at strength {strength} the model should be called at {kept}, in that "
                                      f"order; it was called at {calls}")
            result, err = _as_tensor(result, tuple(images.shape), "sdedit")
            if err:
                return _report(False, err + ". Hint: return the final x (prev_sample of the last step)")
            if torch.allclose(result, expected.double(), rtol=1e-4, atol=1e-4):
                continue
            for hint, slip in [
                (
                    (
                        "start from the images noised to the first timestep you keep"
                        " (scheduler.add_noise), not from pure noise"
                    ),
                    "start_from_noise",
                ),
                (
                    (
                        "noise the images to the first timestep you keep, not to the"
                        " schedule's first"
                    ),
                    "noise_to_schedule_start",
                ),
                (
                    (
                        "feed the model scheduler.scale_model_input(x, t), not x"
                        f" ({name} needs it)"
                    ),
                    "no_input_scaling",
                ),
            ]:
                if strength == 0:
                    break
                scheduler.set_timesteps(n)
                wrong = _sdedit_slip(
                    uncounted, scheduler, images, noise, strength, slip
                )
                if torch.allclose(result, wrong.double(), rtol=1e-4, atol=1e-4):
                    return _report(False, f"with {name}, strength {strength}: {hint}")
            if not seen:
                return _report(False, f"with {name}, strength {strength}: noise the images with the scheduler "
                                      "and the noise you are given, scheduler.add_noise(images, noise, ...): "
                                      "another scheduler (a global one from the notebook) has its own "
                                      "schedule, and Euler's works in σ units")
            if not any(_same_values(given_noise, noise) for _, given_noise in seen):
                return _report(False, f"with {name}, strength {strength}: use the noise you are given, "
                                      "scheduler.add_noise(images, noise, ...), not fresh noise such as "
                                      "torch.randn_like(images): the caller chooses the noise, so that an "
                                      "edit can be repeated")
            return _report(False, f"with {name}, strength {strength}, the timesteps are right but the result "
                                  "is not; feed each step's prev_sample into the next")
    return _report(True, "images noised to the first kept timestep with add_noise, then the last "
                         "round(strength × n) steps, for DDIM and Euler")


def check_ema_update(ema_update: Callable) -> CheckResult:
    """Check `ema_update(ema_params, params, decay)` updates each EMA tensor in place,
    at two decays and on tensors of several shapes."""
    g = torch.Generator().manual_seed(5)
    for decay, shapes in [(0.9, [(3, 3), (4,)]), (0.75, [(2, 3, 5)])]:
        params = [torch.randn(shape, generator=g) for shape in shapes]
        ema_params = [torch.randn(shape, generator=g) for shape in shapes]
        before = [e.clone() for e in ema_params]
        params_before = [p.clone() for p in params]
        # pass fresh lists: an answer that rebinds list items (ema_params[i] = ...)
        # changes the list, not the tensors, and so would leave a real model's EMA
        # weights as they were
        _, err = _call(ema_update, list(ema_params), list(params), decay, name="ema_update")
        if err:
            return _report(False, err)
        if not all(torch.equal(p, b) for p, b in zip(params, params_before)):
            return _report(False, "the current weights `params` changed: they belong to the model being "
                                  "trained, so leave them as they are and update only the EMA tensors "
                                  "(in `for e, p in zip(ema_params, params)`, e.mul_(...), never p)")
        # the gap to the current weights shrinks by the factor decay (no formula for e
        # itself)
        gaps = [(e - p, b - p) for e, b, p in zip(ema_params, before, params)]
        if all(torch.allclose(gap, decay * old, atol=1e-6) for gap, old in gaps):
            continue
        if all(torch.equal(e, b) for e, b in zip(ema_params, before)):
            return _report(False, "the EMA tensors did not change: update them in "
                                  "place (e.mul_(...).add_(...) or e.copy_(...)); "
                                  "ema_params[i] = ... only rebinds a list item and "
                                  "leaves the tensor as it was")
        if all(torch.allclose(gap, (1 - decay) * old, atol=1e-6) for gap, old in gaps):
            return _report(False, "decay weighs the old average, not the new weights: "
                                  "with decay 0.999 the average moves slowly")
        return _report(
            False,
            f"with decay {decay} the EMA tensors did not move "
            "(1 − decay) of the way to the current weights; use the "
            "decay you are given, for each pair of tensors",
        )
    return _report(True, "each EMA weight moves (1 − decay) of the way to the current "
                         "weight")
