import pytest
import torch
from diffusers import DDIMScheduler

from course_utils.sampling import sample_in_batches
from course_utils.training import PRESETS, make_model


def test_sample_in_batches_gives_n_images_in_the_unit_range_seeded_per_batch():
    torch.manual_seed(0)
    model = make_model(PRESETS["tiny"])
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    images = sample_in_batches(model, scheduler, 5, 2, seed=3, batch_size=2)
    assert images.shape == (5, 3, 16, 16)
    assert images.min() >= 0 and images.max() <= 1
    # batch i uses seed + i: the first two images are those of one batch of 2 with seed 3
    assert torch.equal(images[:2], sample_in_batches(model, scheduler, 2, 2, seed=3, batch_size=2))
    with pytest.raises(ValueError, match="n_images"):
        sample_in_batches(model, scheduler, 0, 2)


# --- every scheduler, every step count: an exact model must lead the loop to its one training image -------------

import types  # noqa: E402

import numpy as np  # noqa: E402
from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, LMSDiscreteScheduler)

from course_utils.sampling import ddpm_sample  # noqa: E402


class ExactModel(torch.nn.Module):
    """The ideal epsilon-model of a data set of one image x*: at every t it returns the true noise of x_t.

    It reads x_t as the scaled model input, sqrt(alpha_bar) x* + sqrt(1 - alpha_bar) eps, and alpha_bar at a
    fractional t as the schedulers of the Euler family interpolate it (linearly in sigma = sqrt(1/alpha_bar - 1)),
    so every scheduler that calls it correctly must end on x*.
    """

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.target = target
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().double().numpy()
        self.weight = torch.nn.Parameter(torch.zeros(()))  # a parameter, for the loop's device lookup
        self.config = types.SimpleNamespace(sample_size=target.shape[-1], in_channels=target.shape[1])

    def forward(self, x, t):
        sigma = float(np.interp(float(t), np.arange(len(self.sigmas)), self.sigmas))
        alpha_bar = 1 / (1 + sigma ** 2)
        eps = (x - alpha_bar ** 0.5 * self.target) / (1 - alpha_bar) ** 0.5
        return types.SimpleNamespace(sample=eps)


def exact_setup():
    config = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    # an asymmetric image in [-1, 1]: a transposed or flipped answer would show
    target = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    alphas_cumprod = DDPMScheduler(**config).alphas_cumprod
    return config, target, ExactModel(target, alphas_cumprod)


SCHEDULERS = {
    "DDPM": (DDPMScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "DPM-Solver++": (DPMSolverMultistepScheduler, {}),
    "SDE-DPM-Solver++": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler ancestral": (EulerAncestralDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
}


@pytest.mark.parametrize("n_steps", [50, 30, 7])  # 30 and 7 do not divide 1000
@pytest.mark.parametrize("name", SCHEDULERS)
def test_ddpm_sample_with_an_exact_model_ends_on_the_training_image(name, n_steps):
    config, target, model = exact_setup()
    scheduler_class, options = SCHEDULERS[name]
    scheduler = scheduler_class(**config, **options)
    images, xs, x0s, labels = ddpm_sample(model, scheduler, 2, n_steps, seed=0, n_snapshots=3)
    assert images.shape == (2, 1, 6, 6)
    # DDPM clips x̂0 to [-1, 1] and works in float32 through 1000-step schedules: about 1e-4
    assert (images - target).abs().max() < 2e-3, f"{name}, {n_steps} steps: ends away from x*"
    assert len(xs) == len(x0s) == len(labels) == 3


def test_ddpm_sample_seeds_stochastic_schedulers_and_skips_the_generator_for_others():
    config, _, model = exact_setup()
    for scheduler in (DDPMScheduler(**config), EulerAncestralDiscreteScheduler(**config)):
        a = ddpm_sample(model, scheduler, 2, 5, seed=1, n_snapshots=0)[0]
        b = ddpm_sample(model, scheduler, 2, 5, seed=1, n_snapshots=0)[0]
        assert torch.equal(a, b), type(scheduler).__name__
    # Heun's step takes no generator: passing one raised TypeError in the old loop
    ddpm_sample(model, HeunDiscreteScheduler(**config), 1, 3, seed=0, n_snapshots=2)
