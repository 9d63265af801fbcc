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
