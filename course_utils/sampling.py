"""The DDPM sampling loop written in chapter 2 (kept identical to the chapter's cell), and a batched wrapper."""

import inspect

import numpy as np
import torch
from tqdm.auto import tqdm


@torch.no_grad()
def ddpm_sample(model, scheduler, n_images: int, n_inference_steps: int, seed: int,
                n_snapshots: int = 8):
    """Run the scheduler's step loop; return the images and snapshots of x_t and x̂0.

    Works with any diffusers scheduler: `scale_model_input` is the identity for DDPM,
    DDIM and DPM-Solver, and divides by sqrt(sigma^2 + 1) for Euler, Heun and LMS;
    the generator goes only to schedulers whose `step` draws noise."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(n_inference_steps)
    step_options = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_options["generator"] = generator
    device = next(model.parameters()).device
    size, channels = model.config.sample_size, model.config.in_channels
    x = torch.randn(n_images, channels, size, size, generator=generator).to(device)
    x = x * scheduler.init_noise_sigma  # 1 for DDPM and DDIM, sigma_max for Euler
    n_calls = len(scheduler.timesteps)  # Heun calls the model twice per step
    snapshot_at = np.linspace(0, n_calls - 1, n_snapshots).round().astype(int)
    snapshot_at = set(snapshot_at.tolist())
    xs, x0s, labels = [], [], []
    model.eval()
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="sampling")):
        model_input = scheduler.scale_model_input(x, t)
        # float(): under bf16 autocast, do the scheduler's arithmetic in float32
        model_output = model(model_input, t).sample.float()
        output = scheduler.step(model_output, t, x, **step_options)
        if i in snapshot_at:
            xs.append(x.cpu())
            # DPM-Solver++ reports no x̂0: its snapshots hold None
            x0 = getattr(output, "pred_original_sample", None)
            x0s.append(None if x0 is None else x0.cpu())
            labels.append(f"t = {float(t):.0f}")
        x = output.prev_sample
    return x.cpu(), xs, x0s, labels


def sample_in_batches(model, scheduler, n_images: int, n_inference_steps: int, seed: int = 0,
                      batch_size: int = 250) -> torch.Tensor:
    """Many samples in [0, 1], drawn with ddpm_sample `batch_size` at a time (seeds seed, seed + 1, ...)."""
    if not isinstance(n_images, int) or isinstance(n_images, bool) or n_images < 1:
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batches = []
    for i, start in enumerate(range(0, n_images, batch_size)):
        images, *_ = ddpm_sample(model, scheduler, min(batch_size, n_images - start), n_inference_steps,
                                 seed=seed + i, n_snapshots=0)
        batches.append(images)
    return ((torch.cat(batches) + 1) / 2).clamp(0, 1)  # [-1, 1] → [0, 1]
