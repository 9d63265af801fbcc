"""DDPM from scratch, as chapter 4 writes it: schedules, q_sample, the time-conditioned UNet, Algorithms 1 and 2.

Every definition here is a copy of a cell in notebooks/04_ddpm_from_scratch.ipynb (checked by
tests/test_models.py); later chapters and scripts import it from here.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from .budget import set_seed
from .data import cache_dir


def linear_beta_schedule(T: int, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020): betas evenly spaced from beta_start to beta_end."""
    return torch.linspace(beta_start, beta_end, T)


def quadratic_beta_schedule(T: int, beta_start: float = 1e-4,
                            beta_end: float = 0.02) -> torch.Tensor:
    """Evenly spaced in sqrt(beta), then squared (diffusers' "scaled_linear")."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, T) ** 2


def cosine_beta_schedule(T: int, s: float = 0.008,
                         max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha_bar follows a squared cosine; betas clipped."""
    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = [min(1 - f(t + 1) / f(t), max_beta) for t in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def sigmoid_beta_schedule(T: int, beta_start: float = 1e-4,
                          beta_end: float = 0.02) -> torch.Tensor:
    """GeoDiff: betas along a logistic curve from beta_start to beta_end."""
    logistic = torch.sigmoid(torch.linspace(-6, 6, T))
    return logistic * (beta_end - beta_start) + beta_start


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, each image at its t."""
    alpha_bar = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def timestep_embedding(t: torch.Tensor, dim: int,
                       max_period: float = 10_000) -> torch.Tensor:
    """Sines and cosines of t at dim // 2 geometrically spaced frequencies: (B, dim)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half) / half)
    angles = t.float()[:, None] * frequencies.to(t.device)[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ResBlock(nn.Module):
    """Two convolutions with GroupNorm and SiLU; the time embedding added in between."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int,
                 groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1)
                     if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(time_emb)[:, :, None, None]  # one shift per channel
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, time added, GroupNorm, widen x2 and narrow with GELU."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int,
                 mult: int = 2):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 7, padding=3,
                                   groups=in_channels)
        self.time_proj = nn.Linear(time_dim, in_channels)
        self.norm = nn.GroupNorm(1, in_channels)
        self.widen = nn.Conv2d(in_channels, out_channels * mult, 3, padding=1)
        self.narrow = nn.Conv2d(out_channels * mult, out_channels, 3, padding=1)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1)
                     if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x) + self.time_proj(time_emb)[:, :, None, None]
        h = self.narrow(F.gelu(self.widen(self.norm(h))))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions, added to the input."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (b, heads, h * w, c / heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class TimeUNet(nn.Module):
    """A UNet that predicts the noise in x_t, given x_t and the timestep t."""

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 64),
                 attention_levels: tuple[int, ...] = (2,), block: type = ResBlock,
                 time_dim: int = 128):
        super().__init__()
        self.embedding_dim, self.time_dim = channels[0], time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(channels[0], time_dim), nn.SiLU(),
            nn.Linear(time_dim, time_dim), nn.SiLU())
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        last = len(channels) - 1

        def attention(level: int, width: int) -> nn.Module:
            return SelfAttention(width) if level in attention_levels else nn.Identity()

        self.down_blocks, self.down_attention = nn.ModuleList(), nn.ModuleList()
        self.downsamples = nn.ModuleList()
        width = channels[0]
        for level, out_width in enumerate(channels):
            self.down_blocks.append(block(width, out_width, time_dim))
            self.down_attention.append(attention(level, out_width))
            self.downsamples.append(
                nn.Conv2d(out_width, out_width, 3, stride=2, padding=1)
                if level < last else nn.Identity())
            width = out_width
        self.mid_block1 = block(width, width, time_dim)
        self.mid_attention = attention(last, width)
        self.mid_block2 = block(width, width, time_dim)
        self.up_blocks, self.up_attention = nn.ModuleList(), nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(channels))):
            skip_width = channels[level]
            self.up_blocks.append(block(width + skip_width, skip_width, time_dim))
            self.up_attention.append(attention(level, skip_width))
            self.upsamples.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                              nn.Conv2d(skip_width, skip_width, 3, padding=1))
                if level > 0 else nn.Identity())
            width = skip_width
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(),
                                 nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError("expected images (B, C, H, W), H and W divisible by 4; "
                             f"got shape {tuple(x.shape)}")
        time_emb = self.time_mlp(timestep_embedding(t, self.embedding_dim))
        if condition is not None:  # (B, time_dim), e.g. a class label's embedding
            time_emb = time_emb + condition
        h = self.stem(x)
        skips = []
        for block, attention, downsample in zip(
                self.down_blocks, self.down_attention, self.downsamples):
            h = attention(block(h, time_emb))
            skips.append(h)
            h = downsample(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, time_emb)), time_emb)
        for block, attention, upsample in zip(
                self.up_blocks, self.up_attention, self.upsamples):
            h = attention(block(torch.cat([h, skips.pop()], dim=1), time_emb))
            h = upsample(h)
        return self.out(h)


def ddpm_loss(model: nn.Module, x0: torch.Tensor, alphas_cumprod: torch.Tensor,
              loss_type: str = "l2") -> torch.Tensor:
    """Algorithm 1: a random t per image, Gaussian noise, predict the noise."""
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    noisy_images = q_sample(x0, t, noise, alphas_cumprod)
    predicted_noise = model(noisy_images, t).float()
    if loss_type == "l2":
        return F.mse_loss(predicted_noise, noise)
    if loss_type == "l1":
        return F.l1_loss(predicted_noise, noise)
    if loss_type == "huber":
        return F.smooth_l1_loss(predicted_noise, noise)
    raise ValueError(f"loss_type must be 'l2', 'l1' or 'huber', got {loss_type!r}")


def forever(dataloader):
    """Batches from dataloader, epoch after epoch."""
    while True:
        yield from dataloader


def ema_copy(model: nn.Module, ema: EMAModel) -> nn.Module:
    """A copy of model, in eval mode, carrying the EMA weights."""
    ema_model = copy.deepcopy(model).eval()
    ema.copy_to(ema_model.parameters())
    return ema_model


def train_ddpm(model: nn.Module, dataloader, alphas_cumprod: torch.Tensor, n_steps: int,
               loss_type: str = "l2", lr: float = 2e-3, ema_decay: float = 0.995,
               use_bf16: bool = False, seed: int = 0,
               loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None,
               on_step: Callable[[int, nn.Module, EMAModel], None] | None = None,
               desc: str | None = None) -> tuple[list[float], nn.Module]:
    """Algorithm 1 with AdamW, warm-up + cosine LR and clipping; returns losses, EMA."""
    if getattr(dataloader, "generator", None) is None:  # it seeds the batches' order
        raise ValueError("train_ddpm seeds the order of the batches through the "
                         "DataLoader's generator: build the DataLoader with "
                         "generator=torch.Generator()")
    if loss_fn is None:  # loss_fn(model, batch) → loss: later chapters bring their own
        loss_fn = lambda model, batch: ddpm_loss(  # noqa: E731
            model, batch["images"], alphas_cumprod, loss_type)
        desc = desc or f"training ({loss_type})"
    set_seed(seed)  # the timesteps and the noise
    dataloader.generator.manual_seed(seed)  # the order of the batches
    device = next(model.parameters()).device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=n_steps // 20, num_training_steps=n_steps)
    ema = EMAModel(model.parameters(), decay=ema_decay)
    losses = []
    batches = forever(dataloader)
    for step in tqdm(range(1, n_steps + 1), desc=desc or "training"):
        batch = {name: value.to(device) if torch.is_tensor(value) else value
                 for name, value in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(model, batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        losses.append(loss.item())
        if on_step is not None:  # on_step(step, model, ema): e.g. measure as you go
            on_step(step, model, ema)
            model.train()
    return losses, ema_copy(model, ema)


def reverse_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
                 alphas_cumprod: torch.Tensor, noise: torch.Tensor,
                 variance: str = "small") -> torch.Tensor:
    """Algorithm 2, from x_t to x_{t_prev} (t_prev = -1 is the end: no noise)."""
    alpha_bar = alphas_cumprod[t]
    alpha_bar_prev = alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    beta = 1 - alpha_bar / alpha_bar_prev  # beta_t when t_prev = t - 1
    mean = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt()
    if t_prev < 0:
        return mean
    if variance == "small":  # the posterior variance, beta tilde
        sigma_squared = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
    elif variance == "large":
        sigma_squared = beta
    else:
        raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
    return mean + sigma_squared.sqrt() * noise


@torch.no_grad()
def p_sample_loop(model: nn.Module, n_images: int, alphas_cumprod: torch.Tensor,
                  image_shape: tuple[int, int, int] = (1, 28, 28),
                  n_steps: int | None = None, variance: str = "small", seed: int = 0,
                  n_snapshots: int = 0) -> tuple[torch.Tensor, list, list[str]]:
    """Algorithm 2 from pure noise; returns images in [-1, 1] and snapshots of x_t."""
    T = len(alphas_cumprod)
    n_steps = T if n_steps is None else n_steps
    if not 1 <= n_steps <= T:
        raise ValueError(f"n_steps must lie between 1 and T = {T}, got {n_steps}")
    # DDPMScheduler.set_timesteps(n_steps) ("leading"): n multiples of T // n_steps
    stride = T // n_steps
    timesteps = [i * stride for i in reversed(range(n_steps))]  # T - 1, ..., 0 if n = T
    snapshot_at = np.linspace(0, len(timesteps) - 1, n_snapshots).round().astype(int)
    snapshot_at = set(snapshot_at.tolist())
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x = torch.randn(n_images, *image_shape, generator=generator).to(device)
    model.eval()
    snapshots, labels = [], []
    for i, t in enumerate(tqdm(timesteps, desc="sampling")):
        if i in snapshot_at:
            snapshots.append(x.cpu())
            labels.append(f"t = {t}")
        eps = model(x, torch.full((n_images,), t, device=device)).float()
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        noise = torch.randn(x.shape, generator=generator).to(device)
        x = reverse_step(x, eps, t, t_prev, alphas_cumprod.to(device), noise, variance)
    return x.clamp(-1, 1).cpu(), snapshots, labels


@torch.no_grad()
def solver_sample(model: nn.Module, scheduler, n_images: int, n_steps: int,
                  image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0,
                  batch_size: int = 500, **step_options) -> torch.Tensor:
    """Samples in [0, 1] from a network with a diffusers scheduler's step loop."""
    generator = torch.Generator().manual_seed(seed)
    # stochastic schedulers draw noise from a generator; deterministic ones take none
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_options["generator"] = generator
    device = next(model.parameters()).device
    model.eval()
    batches = []
    for first in tqdm(range(0, n_images, batch_size), desc="sampling batches"):
        scheduler.set_timesteps(n_steps)
        n = min(batch_size, n_images - first)
        x = torch.randn(n, *image_shape, generator=generator).to(device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            output = model(scheduler.scale_model_input(x, t), t.expand(n).to(device))
            x = scheduler.step(output.float(), t, x, **step_options).prev_sample
            if not x.isfinite().all():  # clamping would hide it in saturated pixels
                config = scheduler.config
                cause = ("; likely cause: zero terminal SNR (rescale_betas_zero_snr) "
                         "with epsilon prediction: x0 from eps divides by "
                         "sqrt(alpha_bar_T) = 0, so train and sample with v-prediction"
                         if config.get("rescale_betas_zero_snr")
                         and config.get("prediction_type") == "epsilon" else "")
                output_was = "finite" if output.isfinite().all() else "not finite"
                raise FloatingPointError(
                    "the sample holds Inf or NaN after the step at timestep "
                    f"{t.item():g} (the model's output was {output_was}){cause}")
        batches.append(x.cpu())
    return ((torch.cat(batches) + 1) / 2).clamp(0, 1)  # [-1, 1] → [0, 1]


def load_or_train_time_unet(dataloader, alphas_cumprod: torch.Tensor, n_steps: int,
                            use_bf16: bool = False, device="cpu") -> nn.Module:
    """This chapter's EMA model from the course cache if it trained for at least
    n_steps; otherwise (absent, shorter, or saved without its length) trained as
    above."""
    model = TimeUNet().to(device)
    path = cache_dir("ch04_time_unet") / "ema_model.pt"
    if path.is_file():
        saved = torch.load(path, map_location=device)
        trained_for = saved.get("n_steps") if "state_dict" in saved else None
        if trained_for is not None and trained_for >= n_steps:
            model.load_state_dict(saved["state_dict"])
            print(f"chapter 4's EMA model ({trained_for} steps), from the course cache")
            return model.eval()
        shown = trained_for or "an unrecorded number of"
        print(f"the cached model trained for {shown} steps, fewer than {n_steps}: "
              "not used")
    print(f"training chapter 4's model ({n_steps} steps)")
    torch.manual_seed(0)  # the initial weights, as in chapter 4
    return train_ddpm(TimeUNet().to(device), dataloader, alphas_cumprod, n_steps,
                      use_bf16=use_bf16, seed=1)[1]


__all__ = ["linear_beta_schedule", "quadratic_beta_schedule", "cosine_beta_schedule", "sigmoid_beta_schedule", "q_sample", "timestep_embedding", "ResBlock", "ConvNeXtBlock", "SelfAttention", "TimeUNet", "ddpm_loss", "forever", "ema_copy", "train_ddpm", "reverse_step", "p_sample_loop", "solver_sample", "load_or_train_time_unet"]
