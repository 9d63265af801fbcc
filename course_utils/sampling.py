"""The DDPM sampling loop written in chapter 2, reused by chapter 3 (kept identical to the chapter's cell)."""

import numpy as np
import torch
from tqdm.auto import tqdm


@torch.no_grad()
def ddpm_sample(model, scheduler, n_images: int, n_inference_steps: int, seed: int,
                n_snapshots: int = 8):
    """Run the scheduler's step loop; return the images and snapshots of x_t and x̂0."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(n_inference_steps)
    device = next(model.parameters()).device
    size, channels = model.config.sample_size, model.config.in_channels
    x = torch.randn(n_images, channels, size, size, generator=generator).to(device)
    x = x * scheduler.init_noise_sigma  # 1 for DDPM and DDIM
    snapshot_at = np.linspace(0, n_inference_steps - 1, n_snapshots).round().astype(int)
    snapshot_at = set(snapshot_at.tolist())
    xs, x0s, labels = [], [], []
    model.eval()
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="sampling")):
        # float(): under bf16 autocast, do the scheduler's arithmetic in float32
        model_output = model(x, t).sample.float()
        output = scheduler.step(model_output, t, x, generator=generator)
        if i in snapshot_at:
            xs.append(x.cpu())
            x0s.append(output.pred_original_sample.cpu())
            labels.append(f"t = {int(t)}")
        x = output.prev_sample
    return x.cpu(), xs, x0s, labels
