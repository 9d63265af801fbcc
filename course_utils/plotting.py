"""Figures for the course: image grids, noise schedules, noising grids, loss curves. All return figures."""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from .data import pil_to_tensor


MAX_FIGURE_WIDTH = 7.0  # inches: the book's text column; wider figures are shrunk and their text becomes unreadable


def fit_to_page(figsize: tuple[float, float], max_width: float = MAX_FIGURE_WIDTH) -> tuple[float, float]:
    """Scale (width, height) in inches down, keeping the aspect ratio, so the width is at most `max_width`."""
    width, height = (float(v) for v in figsize)
    if width <= 0 or height <= 0:
        raise ValueError(f"figsize must be two positive sizes in inches, got {figsize!r}")
    factor = min(1.0, max_width / width)
    return width * factor, height * factor


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4)) -> tuple[Figure, np.ndarray]:
    """A new Figure, at most 7 inches wide, and its (nrows, ncols) axes; closed in pyplot so a notebook shows it
    once, when returned."""
    fig = plt.figure(figsize=fit_to_page(figsize))
    plt.close(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def as_image_batch(images: Any) -> torch.Tensor:
    """Turn a (B,C,H,W) or (C,H,W) tensor/array, or a list of PIL images, into a (B,C,H,W) float tensor."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("expected at least one image, got an empty list")
        if all(isinstance(im, Image.Image) for im in images):
            tensors = [pil_to_tensor(im.convert("RGB") if im.mode not in ("L", "RGB") else im) for im in images]
            if len({t.shape for t in tensors}) != 1:
                raise ValueError(f"all images must have the same size, got {sorted({tuple(t.shape) for t in tensors})}")
            return torch.stack(tensors)
        if all(isinstance(im, torch.Tensor) for im in images):
            return as_image_batch(torch.stack([im if im.ndim == 3 else im.squeeze(0) for im in images]))
        raise TypeError(f"a list must hold only PIL images or only tensors, got {sorted({type(i).__name__ for i in images})}")
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a tensor, an array or a list of PIL images, got {type(images).__name__}")
    images = images.detach().cpu()
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"expected shape (B, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("expected at least one image, got a batch of size 0")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 (grey) or 3 (RGB) channels in dim 1, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"expected a float tensor in [-1, 1] or [0, 1], got dtype {images.dtype}")
    return images.float()


def to_unit_range(images: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Map images from `value_range` ((-1, 1), (0, 1) or None to guess) into [0, 1], clipping overshoot."""
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinity; check the model or the sampling loop")
    lo, hi = images.min().item(), images.max().item()
    if hi > 10 or lo < -10:
        raise ValueError(
            f"images should lie in [-1, 1] or [0, 1], got values from {lo:.3g} to {hi:.3g}; "
            "pixel values in 0..255 must be divided by 255 first"
        )
    if value_range is None:
        value_range = (-1.0, 1.0) if lo < 0 else (0.0, 1.0)
    if tuple(value_range) not in ((-1.0, 1.0), (0.0, 1.0), (-1, 1), (0, 1)):
        raise ValueError(f"value_range must be (-1, 1), (0, 1) or None, got {value_range!r}")
    low, high = value_range
    return ((images - low) / (high - low)).clamp(0, 1)


def image_grid(images: Any, nrow: int | None = None, padding: int = 2,
               value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Tile images into one (H, W, 3) array in [0, 1], `nrow` images per row."""
    batch = to_unit_range(as_image_batch(images), value_range)
    b, c, h, w = batch.shape
    nrow = nrow or min(b, 8)
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ncol_rows = math.ceil(b / nrow)
    grid = torch.ones(3, ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i, image in enumerate(batch):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = image.expand(3, h, w)
    return grid.permute(1, 2, 0).numpy()


def show_images(images: Any, nrow: int | None = None, title: str | None = None, ax: Axes | None = None,
                value_range: tuple[float, float] | None = None, scale: float = 0.9) -> Figure:
    """Show images as one grid and return the Figure (never calls plt.show())."""
    grid = image_grid(images, nrow=nrow, value_range=value_range)
    if ax is None:
        height, width = grid.shape[:2]
        fig, axes = new_figure(figsize=(scale * width / 32 + 0.5, scale * height / 32 + 0.6))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _coefficients(schedule: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise coefficients per timestep of a schedule (x_t = signal * x_0 + noise * eps)."""
    if hasattr(schedule, "signal_coef") and hasattr(schedule, "noise_coef"):
        signal, noise = torch.as_tensor(schedule.signal_coef), torch.as_tensor(schedule.noise_coef)
    else:
        alphas_cumprod = schedule if isinstance(schedule, torch.Tensor) else getattr(schedule, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise TypeError(
                "expected a diffusers scheduler, an alphas_cumprod tensor, or an object with "
                f"signal_coef and noise_coef tensors; got {type(schedule).__name__}"
            )
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if alphas_cumprod.ndim != 1 or len(alphas_cumprod) < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with >= 2 steps, got shape {tuple(alphas_cumprod.shape)}")
        if (alphas_cumprod < 0).any() or (alphas_cumprod > 1).any():
            raise ValueError("alphas_cumprod must lie in [0, 1]")
        signal, noise = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    if signal.shape != noise.shape or signal.ndim != 1:
        raise ValueError(f"signal and noise coefficients must be 1-D of equal length, got {tuple(signal.shape)} and {tuple(noise.shape)}")
    return signal.double(), noise.double()


def plot_scheduler(*schedules: Any, labels: Sequence[str] | None = None, log_snr: bool = False,
                   title: str = "Noise schedule") -> Figure:
    """Plot signal √ᾱ_t (solid) and noise √(1-ᾱ_t) (dashed) against t, and optionally log-SNR."""
    if not schedules:
        raise ValueError("pass at least one scheduler or alphas_cumprod tensor")
    if labels is None:
        labels = [type(s).__name__ if not isinstance(s, torch.Tensor) else f"schedule {i}" for i, s in enumerate(schedules)]
    if len(labels) != len(schedules):
        raise ValueError(f"got {len(schedules)} schedules but {len(labels)} labels")
    nrows = 2 if log_snr else 1  # stacked, so each panel keeps the page's full width
    fig, axes = new_figure(nrows, 1, figsize=(7, 4.2 * nrows))
    ax = axes[0, 0]
    for i, (schedule, label) in enumerate(zip(schedules, labels)):
        signal, noise = _coefficients(schedule)
        colour = f"C{i}"
        t = np.arange(len(signal))
        ax.plot(t, signal, color=colour, label=f"{label}: signal")
        ax.plot(t, noise, color=colour, linestyle="--", label=f"{label}: noise")
        if log_snr:
            snr = (signal**2 / (noise**2).clamp_min(1e-20)).clamp_min(1e-20)
            axes[1, 0].plot(t, snr.log(), color=colour, label=label)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("coefficient")
    ax.set_title(f"{title}: signal (solid) and noise (dashed)")
    # one entry per schedule (the title says which line is which), below the panel:
    # a legend inside the axes would cover the curves
    _legend_below(ax, labels)
    if log_snr:
        axes[1, 0].set_xlabel("timestep t")
        axes[1, 0].set_ylabel("log SNR = log(signal² / noise²)")
        axes[1, 0].set_title(f"{title}: log signal-to-noise ratio")
        _legend_below(axes[1, 0], labels)
    fig.tight_layout()
    return fig


def _legend_below(ax: Axes, labels: Sequence[str]) -> None:
    """The schedules' colours, in 9-pt text, under the axes: outside the data."""
    handles = [Line2D([], [], color=f"C{i}") for i in range(len(labels))]
    ncol = len(labels) if sum(len(label) for label in labels) <= 60 else 2
    ax.legend(handles, list(labels), loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=min(ncol, len(labels)), fontsize=9, frameon=False)


def plot_noising(images: torch.Tensor, scheduler: Any, timesteps: Sequence[int], noise: torch.Tensor | None = None,
                 seed: int = 0, title: str = "The same images at growing noise levels") -> Figure:
    """Grid of `images` (rows) noised by `scheduler.add_noise` at each of `timesteps` (columns)."""
    images = as_image_batch(images)
    if not hasattr(scheduler, "add_noise"):
        raise TypeError(f"scheduler must have an add_noise(images, noise, timesteps) method, got {type(scheduler).__name__}")
    timesteps = [int(t) for t in timesteps]
    if not timesteps:
        raise ValueError("timesteps must not be empty")
    if noise is None:
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    if noise.shape != images.shape:
        raise ValueError(f"noise must have the images' shape {tuple(images.shape)}, got {tuple(noise.shape)}")
    columns = []
    for t in timesteps:
        t_batch = torch.full((images.shape[0],), t, dtype=torch.long)
        columns.append(scheduler.add_noise(images, noise, t_batch))
    # Arrange as rows = images, columns = timesteps.
    tiles = torch.stack(columns, dim=1).reshape(-1, *images.shape[1:])
    fig = show_images(tiles.clamp(-1, 1), nrow=len(timesteps), title=title, value_range=(-1, 1), scale=1.3)
    ax = fig.axes[0]
    h = images.shape[-1] + 2
    ax.set_xticks([2 + h * i + images.shape[-1] / 2 for i in range(len(timesteps))])
    ax.set_xticklabels([str(t) for t in timesteps])
    ax.set_xlabel("timestep t")
    ax.set_ylabel("image")
    fig.tight_layout()
    return fig


def plot_losses(losses: Sequence[float], smooth: int = 50, title: str = "Training loss",
                ylabel: str = "MSE loss", ax: Axes | None = None, log: bool = True) -> Figure:
    """Per-step loss (faint) and its moving average over `smooth` steps; returns the Figure."""
    losses = np.asarray([float(x) for x in losses], dtype=np.float64)
    if losses.ndim != 1 or len(losses) == 0:
        raise ValueError("losses must be a non-empty list of numbers")
    if not np.isfinite(losses).all():
        raise ValueError("losses contain NaN or infinity: training diverged")
    if ax is None:
        fig, axes = new_figure(figsize=(7, 4))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, alpha=0.3, label="per step")
    window = max(1, min(smooth, len(losses)))
    if window > 1:
        kernel = np.ones(window) / window
        smoothed = np.convolve(losses, kernel, mode="valid")
        ax.plot(steps[window - 1:], smoothed, label=f"mean of last {window} steps")
    if log and (losses > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
