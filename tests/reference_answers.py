"""Reference answers of the exercises, for the tests only: they never ship in
`course_utils`.

`tests/test_no_answers.py` greps the learner's package and the student edition for what
these functions contain, and `scripts/make_check_values.py` computes the checks' stored
expected values with them (a test recomputes those values and compares)."""

from __future__ import annotations

import torch


def reference_ddpm_step(
    x_t: torch.Tensor, eps: torch.Tensor, t: int, scheduler, noise: torch.Tensor
) -> torch.Tensor:
    """Ho et al. (2020), Algorithm 2, with σ_t² = β̃_t (diffusers' fixed_small)."""
    beta, alpha, ab = (
        scheduler.betas[t],
        scheduler.alphas[t],
        scheduler.alphas_cumprod[t],
    )
    ab_prev = scheduler.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
    mean = (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()
    variance = (1 - ab_prev) / (1 - ab) * beta
    return mean + variance.sqrt() * noise


def reference_sdedit(
    model, scheduler, images: torch.Tensor, noise: torch.Tensor, strength: float
) -> torch.Tensor:
    """SDEdit with any diffusers scheduler: noise to the first kept timestep, then step.
    """
    n = len(scheduler.timesteps)
    n_kept = round(strength * n)
    if n_kept == 0:
        return images.clone()
    timesteps = scheduler.timesteps[n - n_kept :]
    x = scheduler.add_noise(images, noise, timesteps[:1])
    for t in timesteps:
        x = scheduler.step(
            model(scheduler.scale_model_input(x, t), t).sample, t, x
        ).prev_sample
    return x


def reference_fewest_nfe(sweep: dict, sampler: str, target: float) -> int | None:
    meeting = [nfe for nfe, ratio, *_ in sweep[sampler] if ratio <= target]
    return min(meeting) if meeting else None


def reference_guidance(table: dict, min_share: float):
    meeting = {w: fd for w, (share, fd) in table.items() if share >= min_share}
    return min(meeting, key=meeting.get) if meeting else None


def reference_heun_step(velocity_fn, x_t: torch.Tensor, t: float, t_next: float
                        ) -> torch.Tensor:
    """Heun's step of dx/dt = velocity_fn(x, t) (Karras et al. 2022, Algorithm 1):
    Euler's step to t_next = 0."""
    velocity = velocity_fn(x_t, t)
    x_guess = x_t + (t_next - t) * velocity
    if t_next == 0:
        return x_guess
    velocity_next = velocity_fn(x_guess, t_next)
    return x_t + (t_next - t) * (velocity + velocity_next) / 2


class ReferenceTransform:
    """Exercise 3.1's transform, written from PIL, numpy and torch as a learner would
    (the checks reject course_utils' own ImageTransform): the tests' right answer and
    the base of their wrong ones. Same arguments as ImageTransform."""

    def __init__(self, size: int = 32, mode: str = "RGB", flip_prob: float = 0.5,
                 value_range: tuple = (-1, 1), seed: int | None = None) -> None:
        import random

        self.size, self.mode, self.flip_prob = size, mode, flip_prob
        self.value_range = tuple(value_range)
        self.rng = random.Random(seed)

    def one(self, image) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        image = image.convert(self.mode).resize((self.size, self.size),
                                                Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.flip_prob > 0 and self.rng.random() < self.flip_prob:
            tensor = tensor.flip(-1)
        return tensor * 2 - 1 if self.value_range == (-1, 1) else tensor

    def __call__(self, batch: dict) -> dict:
        return {"images": [self.one(image) for image in batch["image"]]}


def reference_masked_cross_attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Exercise 7.2: softmax(Q Kᵀ / √d) V (Vaswani et al. 2017, eq. 1), padding tokens
    (mask 0 or False) given weight 0. queries (B, N, d), keys and values (B, T, d), mask
    (B, T); returns (B, N, d)."""
    scores = queries @ keys.transpose(-2, -1) / queries.shape[-1] ** 0.5  # (B, N, T)
    scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
    return scores.softmax(dim=-1) @ values


def reference_inpaint_step(
    latents: torch.Tensor, known_latents: torch.Tensor, repaint_mask: torch.Tensor,
    noise: torch.Tensor, alpha_bar_next,
) -> torch.Tensor:
    """Exercise 7.3: the kept region (mask 0) replaced by the known latents noised to
    ᾱ', the repainted region (mask 1) unchanged; a soft mask blends linearly."""
    alpha_bar = torch.as_tensor(alpha_bar_next, dtype=latents.dtype)
    noised = alpha_bar.sqrt() * known_latents + (1 - alpha_bar).sqrt() * noise
    return repaint_mask * latents + (1 - repaint_mask) * noised


def reference_kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Exercise 7.1: KL(N(mean, diag(exp(logvar))) ‖ N(0, I)) per image, summed over its
    C·h·w latent numbers (Kingma & Welling 2014, appendix B; diffusers'
    DiagonalGaussianDistribution.kl()). mean and logvar (B, C, h, w); returns (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))
