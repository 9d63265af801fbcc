"""Denoising trajectories: the current sample and the predicted clean image at each step, as a figure or an animation."""

from __future__ import annotations

import base64
import re
import io
from typing import Any, Sequence

import torch
from matplotlib.animation import FuncAnimation
from matplotlib.figure import Figure

from .plotting import as_image_batch, image_grid, new_figure, to_unit_range


def _as_steps(steps: Any, name: str) -> list[torch.Tensor]:
    """Validate a trajectory: a non-empty list of same-shaped (B, C, H, W) or (C, H, W) tensors."""
    if isinstance(steps, torch.Tensor):
        raise TypeError(f"{name} must be a list of tensors, one per step, got a single tensor of shape {tuple(steps.shape)}")
    if not isinstance(steps, (list, tuple)) or len(steps) == 0:
        raise ValueError(f"{name} must be a non-empty list of tensors, one per step, got {steps!r:.60}")
    batches = []
    for i, step in enumerate(steps):
        if not isinstance(step, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(step).__name__}")
        if step.ndim not in (3, 4):
            raise ValueError(f"{name}[{i}] must have shape (B, C, H, W) or (C, H, W), got {tuple(step.shape)}")
        batches.append(as_image_batch(step))
    shapes = {tuple(b.shape) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"every step of {name} must have the same shape, got {sorted(shapes)}")
    return batches


def _display_range(batch: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Clip to the data's range (noisy samples overshoot) so every frame shares one colour scale."""
    if tuple(value_range) not in ((-1, 1), (0, 1)):
        raise ValueError(f"value_range must be (-1, 1) or (0, 1), got {value_range!r}")
    return to_unit_range(batch.clamp(*value_range), value_range=value_range)


def plot_trajectory(xs: Sequence[torch.Tensor], x0_preds: Sequence[torch.Tensor] | None = None,
                    step_labels: Sequence[str] | None = None, max_images: int = 4,
                    title: str = "Sampling trajectory", value_range: tuple[float, float] = (-1, 1)) -> Figure:
    """Rows = steps; columns = the current sample x and (if given) the model's predicted clean image x̂0.

    Shows the first `max_images` images of each step (4 by default, so each is large enough to read)."""
    xs = _as_steps(xs, "xs")
    columns = [("current sample x", xs)]
    if x0_preds is not None:
        x0_preds = _as_steps(x0_preds, "x0_preds")
        if len(x0_preds) != len(xs):
            raise ValueError(f"xs has {len(xs)} steps but x0_preds has {len(x0_preds)}")
        columns.append(("predicted clean image x̂0", x0_preds))
    if step_labels is None:
        step_labels = [f"step {i}" for i in range(len(xs))]
    if len(step_labels) != len(xs):
        raise ValueError(f"got {len(step_labels)} step labels for {len(xs)} steps")
    n = min(max_images, xs[0].shape[0])
    h, w = xs[0].shape[-2:]
    inches = 0.85  # per image: large enough to read a 28-pixel digit in a 7-inch column
    fig, axes = new_figure(len(xs), len(columns),
                           figsize=(len(columns) * (n * (w + 2) / 28 * inches + 0.5),
                                    len(xs) * (h + 2) / 28 * inches + 0.8))
    for row in range(len(xs)):
        for col, (name, steps) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(image_grid(_display_range(steps[row][:n], value_range), nrow=n, value_range=(0, 1)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(step_labels[row], rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# matplotlib's player draws its buttons with Font Awesome from a CDN: text symbols work offline
_BUTTON_SYMBOLS = {
    "fa fa-minus": "−", "fa fa-fast-backward": "⏮", "fa fa-step-backward": "◀︎|",
    "fa fa-play fa-flip-horizontal": "◀︎", "fa fa-pause": "⏸︎", "fa fa-play": "▶︎",
    "fa fa-step-forward": "|▶︎", "fa fa-fast-forward": "⏭", "fa fa-plus": "+",
}
_CDN_STYLESHEET = re.compile(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">\s*')
_OPENS_ON_LAST_FRAME = "/* the course: open on the last frame */"
_NEW_ANIMATION = re.compile(r"(anim\w+) = new Animation\(([^;]*)\);")


def offline_animation_html(html: str) -> str:
    """matplotlib's `to_jshtml` output made to work offline and open on its last frame.

    Drops the Font Awesome stylesheet (fetched from a CDN) for text symbols on the buttons, and shows the last
    frame (the finished samples) until the reader presses play, instead of the pure-noise first frame.
    Idempotent: already converted HTML comes back unchanged."""
    html = _CDN_STYLESHEET.sub("", html)
    for icon, symbol in _BUTTON_SYMBOLS.items():
        html = html.replace(f'<i class="{icon}"></i>', symbol)
    if _OPENS_ON_LAST_FRAME not in html:
        html = _NEW_ANIMATION.sub(rf"\1 = new Animation(\2);\n        \1.last_frame();  {_OPENS_ON_LAST_FRAME}",
                                  html)
    return html


class TrajectoryAnimation:
    """A matplotlib animation that plays in notebooks and the book (HTML) and falls back to its last frame (PNG)."""

    def __init__(self, animation: FuncAnimation, last_frame_png: bytes):
        self.animation = animation
        self.last_frame_png = last_frame_png

    def to_html(self) -> str:
        """The animation as self-contained HTML with play controls, opening on its last frame."""
        return offline_animation_html(self.animation.to_jshtml(default_mode="once"))

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        return {
            "text/html": self.to_html(),
            "image/png": base64.b64encode(self.last_frame_png).decode(),
            "text/plain": "<TrajectoryAnimation: the final frame is shown where HTML cannot play>",
        }


def animate_trajectory(xs: Sequence[torch.Tensor], step_labels: Sequence[str] | None = None, max_images: int = 8,
                       interval_ms: int = 300, title: str = "Sampling, step by step",
                       value_range: tuple[float, float] = (-1, 1)) -> TrajectoryAnimation:
    """Animate the samples in `xs` (one tensor per step) as a grid; returns a TrajectoryAnimation."""
    xs = _as_steps(xs, "xs")
    if step_labels is None:
        step_labels = [f"step {i}" for i in range(len(xs))]
    if len(step_labels) != len(xs):
        raise ValueError(f"got {len(step_labels)} step labels for {len(xs)} steps")
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be positive, got {interval_ms}")
    n = min(max_images, xs[0].shape[0])
    frames = [image_grid(_display_range(x[:n], value_range), nrow=n, value_range=(0, 1)) for x in xs]
    height, width = frames[0].shape[:2]
    fig, axes = new_figure(figsize=(width / 28 * 0.6 + 0.3, height / 28 * 0.6 + 0.6))
    ax = axes[0, 0]
    image = ax.imshow(frames[0], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{n} samples")
    heading = ax.set_title(f"{title}: {step_labels[0]}")
    fig.tight_layout()

    def draw(i: int):
        image.set_data(frames[i])
        heading.set_text(f"{title}: {step_labels[i]}")
        return image, heading

    animation = FuncAnimation(fig, draw, frames=len(frames), interval=interval_ms, blit=False)
    draw(len(frames) - 1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    draw(0)
    return TrajectoryAnimation(animation, buffer.getvalue())
