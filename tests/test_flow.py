"""Chapter 6's maths: flow matching's Euler step is DDIM's update, the conversions between ε, v, x̂0 and the score,
the grids, and the sampler, each checked against diffusers where diffusers has it (course_utils/flow.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from torch import nn

from course_utils import flow
from course_utils.flow import (OnTheLerp, alpha_bar_at, ddim_times, ddpm_conversions, denoise_guided,
                               distance_to_chord, flow_times, lerp_conversions, lerp_sample, lerp_scale,
                               lerp_time, snap_to_ddpm)
from test_models import _definition, _notebook_definition

SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)  # chapter 4's, float32


def _random_grid(g: torch.Generator, n: int) -> list[float]:
    """n + 1 decreasing lerp times from somewhere in (0.5, 1] to 0."""
    inner = torch.rand(n - 1, generator=g, dtype=torch.float64).sort(descending=True).values
    start = 0.5 + 0.5 * torch.rand(1, generator=g, dtype=torch.float64).item()
    return [start] + (start * inner).tolist() + [0.0]


def test_flow_euler_step_is_the_ddim_update_on_random_predictions_and_grids():
    # x + (t' − t) v̂ with v̂ = ε̂ − x̂0 at x = (1 − t) x̂0 + t ε̂ is (1 − t') x̂0 + t' ε̂: DDIM's update on the lerp,
    # and an Euler step of dy/dσ = ε̂ in y = x / (1 − t), σ = t / (1 − t) (DDIM as an ODE solver, Song et al. §4.3)
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 7):
        times = _random_grid(g, n)
        for t, t_next in zip(times[:-1], times[1:]):
            x0_hat = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
            eps_hat = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
            x = (1 - t) * x0_hat + t * eps_hat
            euler = x + (t_next - t) * (eps_hat - x0_hat)
            ddim = (1 - t_next) * x0_hat + t_next * eps_hat
            torch.testing.assert_close(euler, ddim, rtol=0, atol=1e-12)
            y, sigma, sigma_next = x / (1 - t), t / (1 - t), t_next / (1 - t_next)
            y_next = y + (sigma_next - sigma) * eps_hat
            torch.testing.assert_close(y_next * (1 - t_next), ddim, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_diffusers_ddim_step_is_the_lerp_step(spacing, beta_schedule):
    # DDIMScheduler.step (η = 0, no clipping) on DDPM's x_t, mapped to the lerp, is (1 − t') x̂0 + t' ε̂
    g = torch.Generator().manual_seed(1)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, clip_sample=False,
                              timestep_spacing=spacing, set_alpha_to_one=True)
    alphas = scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()  # exact to float64
    for n in (1, 3, 10):
        scheduler.set_timesteps(n)
        timesteps = scheduler.timesteps.tolist()
        for i, timestep in enumerate(timesteps):
            previous = timestep - 1000 // n  # what DDIMScheduler.step steps to
            alpha_bar = alphas[timestep]
            alpha_bar_next = alphas[previous] if previous >= 0 else torch.tensor(1.0, dtype=torch.float64)
            t, t_next = lerp_time(alpha_bar).item(), lerp_time(alpha_bar_next).item()
            x0_hat = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
            eps_hat = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
            x_ddpm = alpha_bar.sqrt() * x0_hat + (1 - alpha_bar).sqrt() * eps_hat
            torch.testing.assert_close(lerp_scale(t) * x_ddpm, (1 - t) * x0_hat + t * eps_hat)  # same point
            theirs = scheduler.step(eps_hat, timestep, x_ddpm).prev_sample
            ours = (1 - t_next) * x0_hat + t_next * eps_hat
            torch.testing.assert_close(lerp_scale(t_next) * theirs, ours, rtol=0, atol=1e-9)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_diffusers_flow_match_euler_step_is_the_lerp_step(shift):
    g = torch.Generator().manual_seed(2)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(5)
    for i, timestep in enumerate(scheduler.timesteps):
        t, t_next = scheduler.sigmas[i].item(), scheduler.sigmas[i + 1].item()
        x0_hat, eps_hat = torch.randn(2, 2, 1, 4, 4, generator=g)
        x = (1 - t) * x0_hat + t * eps_hat
        theirs = scheduler.step(eps_hat - x0_hat, timestep, x).prev_sample
        torch.testing.assert_close(theirs, (1 - t_next) * x0_hat + t_next * eps_hat, rtol=0, atol=1e-5)


def test_noise_levels_convert_both_ways():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha_bar = torch.tensor([alpha_bar_at(v) for v in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(lerp_time(alpha_bar), t)
    # the same noise-to-signal ratio: t / (1 − t) = sqrt((1 − ᾱ) / ᾱ)
    inner = slice(1, -1)
    torch.testing.assert_close(t[inner] / (1 - t[inner]), ((1 - alpha_bar[inner]) / alpha_bar[inner]).sqrt())
    # the same point, scaled: (1 − t) x0 + t ε = lerp_scale(t) (√ᾱ x0 + √(1 − ᾱ) ε)
    x0, eps = torch.randn(2, 3, dtype=torch.float64)
    for v, a in zip(t.tolist(), alpha_bar.tolist()):
        torch.testing.assert_close((1 - v) * x0 + v * eps,
                                   lerp_scale(v) * (a ** 0.5 * x0 + (1 - a) ** 0.5 * eps))


def test_the_lerp_is_diffusers_flow_matching_path():
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(4)
    x0, eps = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    for timestep, sigma in zip(scheduler.timesteps, scheduler.sigmas):
        noised = scheduler.scale_noise(x0, timestep.view(1), eps)
        torch.testing.assert_close(noised, (1 - sigma) * x0 + sigma * eps)


def test_ddim_times_are_diffusers_trailing_timesteps():
    scheduler = DDIMScheduler(**SCHEDULE, timestep_spacing="trailing")
    for n in (1, 2, 4, 8, 25, 64):
        scheduler.set_timesteps(n)
        expected = lerp_time(ALPHAS_CUMPROD[scheduler.timesteps].double()).tolist() + [0.0]
        assert ddim_times(n, ALPHAS_CUMPROD) == pytest.approx(expected, abs=1e-12)
    # the figures: σ = 157, 17.2, 3.42, 0.953 at 4 steps
    sigmas = [t / (1 - t) for t in ddim_times(4, ALPHAS_CUMPROD)[:-1]]
    assert [f"{s:.3g}" for s in sigmas] == ["157", "17.2", "3.42", "0.953"]


def test_ddpm_timesteps_at_flow_matchings_noise_levels():
    levels = lerp_time(ALPHAS_CUMPROD.double())

    def timesteps(times):
        return [int((levels - t).abs().argmin()) for t in snap_to_ddpm(times, ALPHAS_CUMPROD)[:-1]]

    assert timesteps(flow_times(4)) == [999, 475, 258, 97]
    assert timesteps(flow_times(2)) == [999, 258]
    snapped = snap_to_ddpm(flow_times(64), ALPHAS_CUMPROD)
    assert snapped[-1] == 0.0 and all(a > b for a, b in zip(snapped, snapped[1:]))
    # every time lands on a level the network was trained on, the nearest one (t = 1 → the last, ᾱ = 4e-5)
    for t, s in zip(flow_times(64)[:-1], snapped[:-1]):
        assert s in levels.tolist()
        assert abs(s - t) == pytest.approx((levels - t).abs().min().item())
    assert snapped[0] == pytest.approx(levels[-1].item())


def test_conversions_against_diffusers():
    g = torch.Generator().manual_seed(4)
    x0, eps = torch.randn(2, 3, 1, 4, 4, generator=g, dtype=torch.float64)
    timesteps = torch.tensor([10, 300, 999])
    alpha_bar = ALPHAS_CUMPROD.double()[timesteps].view(-1, 1, 1, 1)
    x_ddpm = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    ddpm = ddpm_conversions(x_ddpm, alpha_bar, eps)
    torch.testing.assert_close(ddpm["x0"], x0)
    # Salimans & Ho's v, as diffusers computes it for v-prediction training
    scheduler = DDPMScheduler(**SCHEDULE)
    scheduler.alphas_cumprod = ALPHAS_CUMPROD.double()
    torch.testing.assert_close(ddpm["v (Salimans & Ho)"], scheduler.get_velocity(x0, eps, timesteps))
    # diffusers' x̂0 from each prediction type is ours
    for prediction_type, output in [("epsilon", eps), ("v_prediction", ddpm["v (Salimans & Ho)"]),
                                    ("sample", x0)]:
        ddim = DDIMScheduler(**SCHEDULE, prediction_type=prediction_type, clip_sample=False)
        ddim.set_timesteps(1000)
        for i, timestep in enumerate(timesteps.tolist()):
            step = ddim.step(output[i:i + 1].float(), timestep, x_ddpm[i:i + 1].float())
            torch.testing.assert_close(step.pred_original_sample.double(), x0[i:i + 1], rtol=0, atol=2e-4)
    # the lerp at the same noise levels: the same x̂0 and ε̂; v = ε − x0 (SD3, diffusers), u = x0 − ε (Lipman,
    # Liu, with data at their t = 1); the score scales with the point: ∇ log p_lerp = ∇ log p_ddpm / scale
    t = lerp_time(alpha_bar)
    scale = ((1 - t) ** 2 + t ** 2).sqrt()
    lerp = lerp_conversions(scale * x_ddpm, t, eps)
    torch.testing.assert_close(lerp["x0"], x0)
    torch.testing.assert_close(lerp["v (SD3, diffusers)"], eps - x0)
    torch.testing.assert_close(lerp["u (Lipman, Liu)"], x0 - eps)
    torch.testing.assert_close(lerp["score"], ddpm["score"] / scale)


@pytest.mark.parametrize("t", [0.05, 0.5, 0.97])
def test_conversions_give_the_exact_score_and_posterior_means_of_gaussian_data(t):
    # x0 ~ N(μ, s²) per pixel: on the lerp, x_t ~ N((1 − t) μ, V), V = (1 − t)² s² + t², everything exact
    mu, s = 0.3, 0.5
    x = torch.randn(5, 1, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    V = (1 - t) ** 2 * s ** 2 + t ** 2
    eps_mean = t / V * (x - (1 - t) * mu)  # E[ε | x_t]
    x0_mean = mu + (1 - t) * s ** 2 / V * (x - (1 - t) * mu)  # E[x0 | x_t]
    lerp = lerp_conversions(x, t, eps_mean)
    torch.testing.assert_close(lerp["x0"], x0_mean)
    torch.testing.assert_close(lerp["v (SD3, diffusers)"], eps_mean - x0_mean)
    x_grad = x.clone().requires_grad_(True)
    log_p = (-(x_grad - (1 - t) * mu) ** 2 / (2 * V)).sum()
    score, = torch.autograd.grad(log_p, x_grad)
    torch.testing.assert_close(lerp["score"], score)
    # the same data on DDPM's path at the same noise level: x_ddpm = x / scale
    alpha_bar = torch.tensor(alpha_bar_at(t), dtype=torch.float64)
    x_ddpm = x / lerp_scale(t)
    ddpm = ddpm_conversions(x_ddpm, alpha_bar, eps_mean)
    torch.testing.assert_close(ddpm["x0"], x0_mean)
    x_grad = x_ddpm.clone().requires_grad_(True)
    V_ddpm = alpha_bar * s ** 2 + 1 - alpha_bar
    log_p = (-(x_grad - alpha_bar.sqrt() * mu) ** 2 / (2 * V_ddpm)).sum()
    score, = torch.autograd.grad(log_p, x_grad)
    torch.testing.assert_close(ddpm["score"], score)


def test_guidance_is_the_same_mix_in_every_parametrisation():
    # the conversions are affine in ε̂ with one offset for both predictions: mixing ε, v, x̂0 or the score with
    # the same w gives the same guided sample
    g = torch.Generator().manual_seed(6)
    x, eps_c, eps_u = torch.randn(3, 2, 1, 4, 4, generator=g, dtype=torch.float64)
    t, w = 0.6, 3.0
    c, u = lerp_conversions(x, t, eps_c), lerp_conversions(x, t, eps_u)
    guided = lerp_conversions(x, t, eps_u + w * (eps_c - eps_u))
    for name in guided:
        torch.testing.assert_close(u[name] + w * (c[name] - u[name]), guided[name])


class _TinyConditional(nn.Module):
    """A small deterministic network with the chapter's interface: (x, timesteps, labels)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.embedding = nn.Embedding(11, 1)
        self.no_label = 10

    def forward(self, x, t, labels):
        shift = self.embedding(labels).view(-1, 1, 1, 1) + torch.sin(t.float() / 300).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x)) + 0.5 * shift


def _diffusers_loop(network, scheduler, noise, labels, w, **step_options):
    """The guided DDIM loop written against diffusers, in [0, 1]."""
    x = noise.clone()
    for timestep in scheduler.timesteps:
        steps = timestep.expand(len(x))
        eps_c = network(x, steps, labels)
        eps_u = network(x, steps, torch.full_like(labels, 10))
        eps = eps_u + w * (eps_c - eps_u)
        x = scheduler.step(eps, timestep, x, **step_options).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("n", [1, 4, 10])
def test_lerp_sample_with_the_ddpm_network_is_diffusers_ddim(n, w):
    network, labels = _TinyConditional(), torch.arange(6) % 10
    noise = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    denoiser = OnTheLerp(network, "epsilon", ALPHAS_CUMPROD)
    scheduler = DDIMScheduler(**SCHEDULE, timestep_spacing="trailing", clip_sample=False)
    scheduler.set_timesteps(n)
    ours = lerp_sample(denoiser, ddim_times(n, ALPHAS_CUMPROD), labels, w=w, noise=noise)
    torch.testing.assert_close(ours, _diffusers_loop(network, scheduler, noise, labels, w), rtol=0, atol=3e-4)
    # clip x̂0 and recompute ε̂ from it: diffusers' clip_sample=True with use_clipped_model_output=True
    scheduler = DDIMScheduler(**SCHEDULE, timestep_spacing="trailing", clip_sample=True)
    scheduler.set_timesteps(n)
    ours = lerp_sample(denoiser, ddim_times(n, ALPHAS_CUMPROD), labels, w=w, noise=noise, clip=True)
    theirs = _diffusers_loop(network, scheduler, noise, labels, w, use_clipped_model_output=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=3e-4)


@pytest.mark.parametrize("n", [1, 4, 10])
def test_lerp_sample_with_the_flow_network_is_diffusers_flow_match_euler(n):
    network, labels = _TinyConditional(1), torch.arange(5) % 10
    noise = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    ours = lerp_sample(OnTheLerp(network, "velocity"), flow_times(n), labels, noise=noise)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(sigmas=flow_times(n)[:-1])
    x = noise.clone()
    for timestep in scheduler.timesteps:
        x = scheduler.step(network(x, timestep.expand(len(x)), labels), timestep, x).prev_sample
    torch.testing.assert_close(ours, ((x + 1) / 2).clamp(0, 1), rtol=0, atol=1e-5)


def test_lerp_sample_reads_the_seed_or_the_noise_and_records_the_path():
    network, labels = _TinyConditional(), torch.arange(7) % 10
    denoiser = OnTheLerp(network, "velocity")
    first = lerp_sample(denoiser, flow_times(3), labels, seed=3, batch_size=4)
    again = lerp_sample(denoiser, flow_times(3), labels, seed=3, batch_size=7)  # batching changes nothing
    torch.testing.assert_close(first, again)
    noise = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    path = []
    given = lerp_sample(denoiser, flow_times(3), labels, noise=noise, path=path, batch_size=4)
    torch.testing.assert_close(given, first)
    path = torch.cat(path)
    assert path.shape == (7, 4, 1, 28, 28)
    torch.testing.assert_close(path[:, 0], noise)  # starts at t = 1: pure noise
    torch.testing.assert_close(((path[:, -1] + 1) / 2).clamp(0, 1), given)


def test_on_the_lerp_predictions_agree_with_x():
    # whatever the network predicts, (1 − t) x̂0 + t ε̂ must give back x
    labels = torch.arange(3)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    for denoiser, t in [(OnTheLerp(_TinyConditional(), "velocity"), 0.3),
                        (OnTheLerp(_TinyConditional(), "epsilon", ALPHAS_CUMPROD),
                         lerp_time(ALPHAS_CUMPROD[500].double()).item())]:
        x0_hat, eps_hat = denoiser(x, t, labels)
        torch.testing.assert_close((1 - t) * x0_hat + t * eps_hat, x, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="velocity"):
        OnTheLerp(_TinyConditional(), "x0")


def test_guided_denoising_uses_one_batch_and_the_no_label_index():
    network = _TinyConditional()
    denoiser = OnTheLerp(network, "velocity")
    x, labels = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 4])
    c, u = denoiser(x, 0.5, labels), denoiser(x, 0.5, torch.full_like(labels, 10))
    for w in (0.0, 1.0, 2.5):
        guided = denoise_guided(denoiser, x, 0.5, labels, w)
        for i in range(2):
            torch.testing.assert_close(guided[i], u[i] + w * (c[i] - u[i]), rtol=0, atol=1e-6)


def test_distance_to_chord():
    times = flow_times(4)
    start, end = torch.randn(2, 3, 1, 2, 2, generator=torch.Generator().manual_seed(10))
    fraction = torch.tensor(times).view(1, -1, 1, 1, 1)
    straight = end[:, None] + fraction * (start - end)[:, None]
    torch.testing.assert_close(distance_to_chord(straight, times), torch.zeros(3, 5))
    # move the middle point off the line by half the chord's length: 0.5 there, 0 elsewhere
    bent = straight.clone()
    length = (start - end).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    bent[:, 2] += 0.5 * length * torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    expected = torch.zeros(3, 5)
    expected[:, 2] = 0.5
    torch.testing.assert_close(distance_to_chord(bent, times), expected)
    # a path that starts late (t0 < 1, a DDPM network's first level) is measured against its own chord
    late = [0.8 * t for t in times]
    torch.testing.assert_close(distance_to_chord(straight, late), torch.zeros(3, 5))


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_guidance_and_flow_matching.ipynb"


@pytest.mark.parametrize("name", flow.__all__)
def test_flow_module_is_identical_to_chapter_6(name):
    in_module = _definition(Path(flow.__file__).read_text(), name)
    assert in_module is not None, f"course_utils.flow defines no {name}"
    assert in_module.strip() == _notebook_definition(NOTEBOOK.name, name).strip(), (
        f"course_utils.flow.{name} differs from its cell in {NOTEBOOK.name}: copy the cell into the module")
