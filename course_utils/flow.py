"""Flow matching and DDIM as one sampler on chapter 1's lerp, as chapter 6 writes it.

Every definition here is a copy of a cell in notebooks/06_guidance_and_flow_matching.ipynb (checked by
tests/test_flow.py, which also checks the maths against diffusers); later code imports it from here.

The lerp is x_t = (1 - t) x0 + t eps, t in [0, 1], noise at t = 1 (the direction of Stable Diffusion 3 and
diffusers' `FlowMatchEulerDiscreteScheduler`; Lipman et al. and Liu et al. put noise at t = 0). DDPM's
x_t = sqrt(abar) x0 + sqrt(1 - abar) eps is the same point scaled: x_lerp = sqrt((1 - t)^2 + t^2) x_ddpm
with t = sqrt(1 - abar) / (sqrt(abar) + sqrt(1 - abar)).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm


def lerp_time(alpha_bar: torch.Tensor) -> torch.Tensor:
    """The lerp time t of DDPM's noise level ᾱ: the same noise-to-signal ratio."""
    signal, noise = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return noise / (signal + noise)  # t / (1 - t) = sqrt((1 - ᾱ) / ᾱ) = σ


def alpha_bar_at(t: float) -> float:
    """DDPM's ᾱ at lerp time t (the inverse of lerp_time)."""
    return (1 - t) ** 2 / ((1 - t) ** 2 + t ** 2)


def lerp_scale(t: float) -> float:
    """x on the lerp = lerp_scale(t) × x on DDPM's path, at the same noise level."""
    return ((1 - t) ** 2 + t ** 2) ** 0.5


def flow_times(n_steps: int) -> list[float]:
    """Flow matching's grid: n equal steps from t = 1 (pure noise) to t = 0."""
    return torch.linspace(1, 0, n_steps + 1, dtype=torch.float64).tolist()


def ddim_times(n_steps: int, alphas_cumprod: torch.Tensor) -> list[float]:
    """DDIM's grid (diffusers' "trailing" timesteps) as lerp times, then 0."""
    T = len(alphas_cumprod)
    timesteps = torch.arange(T, 0, -T / n_steps).round().long() - 1  # 999, ...
    return lerp_time(alphas_cumprod[timesteps].double()).tolist() + [0.0]


def snap_to_ddpm(times: list[float], alphas_cumprod: torch.Tensor) -> list[float]:
    """Each time moved to the nearest level a DDPM network was trained on."""
    levels = lerp_time(alphas_cumprod.double())
    return [levels[(levels - t).abs().argmin()].item() if t > 0 else 0.0
            for t in times]


def lerp_conversions(x_t: torch.Tensor, t, eps: torch.Tensor) -> dict:
    """Every prediction at x_t = (1 − t) x0 + t ε, from the predicted noise ε̂."""
    x0 = (x_t - t * eps) / (1 - t)
    return {"x0": x0, "eps": eps,
            "v (SD3, diffusers)": eps - x0,  # dx_t/dt, noise at t = 1
            "u (Lipman, Liu)": x0 - eps,  # their time runs the other way: 1 − t
            "score": -eps / t}  # ∇ log p_t(x_t): x_t | x0 ~ N((1 − t) x0, t² I)


def ddpm_conversions(x_t: torch.Tensor, alpha_bar, eps: torch.Tensor) -> dict:
    """Every prediction at x_t = √ᾱ x0 + √(1 − ᾱ) ε, from the predicted noise ε̂."""
    signal, noise = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
    x0 = (x_t - noise * eps) / signal
    return {"x0": x0, "eps": eps,
            "v (Salimans & Ho)": signal * eps - noise * x0,  # diffusers' v_prediction
            "score": -eps / noise}


class OnTheLerp(nn.Module):
    """A network read on the lerp: x̂0 and ε̂ at lerp time t, whatever it predicts."""

    def __init__(self, network: nn.Module, prediction: str,
                 alphas_cumprod: torch.Tensor | None = None):
        super().__init__()
        if prediction not in ("velocity", "epsilon"):
            raise ValueError(f"prediction: 'velocity' or 'epsilon', got {prediction!r}")
        self.network, self.prediction = network, prediction
        self.alphas_cumprod = alphas_cumprod  # the DDPM network's schedule

    def forward(self, x: torch.Tensor, t: float,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prediction == "velocity":  # flow matching: v = ε − x0, fed 1000 t
            times = torch.full((len(x),), 1000 * t, device=x.device)
            v = self.network(x, times, labels).float()
            return x - t * v, x + (1 - t) * v
        # DDPM: the nearest timestep it was trained on, x on DDPM's scale, ε → x̂0
        levels = lerp_time(self.alphas_cumprod.double())
        timestep = (levels - t).abs().argmin()
        t = levels[timestep].item()  # exact when t lies on a DDPM grid
        steps = timestep.expand(len(x)).to(x.device)
        eps = self.network(x / lerp_scale(t), steps, labels).float()
        return (x - t * eps) / (1 - t), eps


def denoise_guided(denoiser: OnTheLerp, x: torch.Tensor, t: float,
                   labels: torch.Tensor, w: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂0 and ε̂ with classifier-free guidance scale w (1: the conditional model)."""
    no_label = torch.full_like(labels, denoiser.network.no_label)
    if w == 1:
        return denoiser(x, t, labels)
    if w == 0:
        return denoiser(x, t, no_label)
    x0_hat, eps_hat = denoiser(torch.cat([x, x]), t, torch.cat([labels, no_label]))
    (x0_c, x0_u), (eps_c, eps_u) = x0_hat.chunk(2), eps_hat.chunk(2)
    return x0_u + w * (x0_c - x0_u), eps_u + w * (eps_c - eps_u)


@torch.no_grad()
def lerp_sample(denoiser: OnTheLerp, times: list[float], labels: torch.Tensor,
                w: float = 1.0, clip: bool = False, seed: int = 0,
                noise: torch.Tensor | None = None, use_bf16: bool = False,
                batch_size: int = 500, path: list | None = None) -> torch.Tensor:
    """Deterministic sampling on the lerp from times[0] to 0; images in [0, 1].

    Each step: x̂0 and ε̂ from the network (guided with w), x̂0 clipped to [−1, 1]
    and ε̂ recomputed from it if clip, then x ← (1 − t′) x̂0 + t′ ε̂: flow matching's
    Euler step and DDIM's update at once. `path`, if a list, gets every x (on CPU).
    """
    device = next(denoiser.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    if noise is None:  # DDIM's x_T = ε, on the lerp's scale
        noise = torch.randn(len(labels), 1, 28, 28, generator=generator)
    denoiser.eval()
    batches = []
    for first in tqdm(range(0, len(labels), batch_size), desc="sampling", leave=False):
        c = labels[first:first + batch_size].to(device)
        x = lerp_scale(times[0]) * noise[first:first + batch_size].to(device)
        steps = [x.cpu()] if path is not None else None
        for t, t_next in zip(times[:-1], times[1:]):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                x0_hat, eps_hat = denoise_guided(denoiser, x, t, c, w)
            if clip:  # keep x̂0 in the data's range; make ε̂ agree with it
                x0_hat = x0_hat.clamp(-1, 1)
                eps_hat = (x - (1 - t) * x0_hat) / t
            x = (1 - t_next) * x0_hat + t_next * eps_hat
            if steps is not None:
                steps.append(x.cpu())
        if path is not None:
            path.append(torch.stack(steps, dim=1))  # (batch, steps + 1, 1, 28, 28)
        batches.append(x.cpu())
    return ((torch.cat(batches) + 1) / 2).clamp(0, 1)


def distance_to_chord(path: torch.Tensor, times: list[float]) -> torch.Tensor:
    """(images, times): each point's distance from the straight line between the
    path's ends, at the same time, as a fraction of that line's length."""
    start, end = path[:, :1], path[:, -1:]
    fraction = torch.tensor(times, dtype=path.dtype).view(1, -1, 1, 1, 1) / times[0]
    chord = end + fraction * (start - end)  # the straight line, at the same times
    distance = (path - chord).flatten(2).norm(dim=2)
    return distance / (start - end).flatten(1).norm(dim=1, keepdim=True)


__all__ = ["lerp_time", "alpha_bar_at", "lerp_scale", "flow_times", "ddim_times", "snap_to_ddpm",
           "lerp_conversions", "ddpm_conversions", "OnTheLerp", "denoise_guided", "lerp_sample", "distance_to_chord"]
