"""The diffusion training loss written in chapter 2, reused by chapter 3 and the scripts.

Kept identical to the chapter's cell (tests/test_models.py checks it): edit the chapter, then copy here.
"""

import torch
import torch.nn.functional as F


def diffusion_loss(model, noise_scheduler, clean_images: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise each image at its own random timestep; MSE to the scheduler's target."""
    batch_size = clean_images.shape[0]
    # drawn on the CPU so a seeded generator gives the same numbers on every device
    noise = torch.randn(clean_images.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps,
                              (batch_size,), generator=generator)
    noise = noise.to(clean_images.device)
    timesteps = timesteps.to(clean_images.device)
    noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":  # v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0
        target = noise_scheduler.get_velocity(clean_images, noise, timesteps)
    else:
        raise ValueError("prediction_type must be 'epsilon' or 'v_prediction', "
                         f"got {prediction_type!r}")
    prediction = model(noisy_images, timesteps).sample
    return F.mse_loss(prediction.float(), target.float())
