import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from course_utils.training import PRESETS, TrainConfig, diffusion_loss, make_model, make_noise_scheduler, train


def _tiny_dataset(n: int = 32) -> Dataset:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):  # smooth random colour gradients: learnable, unlike pure noise
        base = rng.uniform(0, 255, size=3)
        ramp = np.linspace(0, 1, 20)[None, :, None] * rng.uniform(-120, 120, size=3)
        images.append(Image.fromarray(np.clip(base + ramp + np.zeros((20, 20, 3)), 0, 255).astype(np.uint8)))
    return Dataset.from_dict({"image": images})


def test_config_rejects_inconsistent_architectures():
    with pytest.raises(ValueError, match="same length"):
        TrainConfig(block_out_channels=(32, 64))
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(image_size=30)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_presets_build_models_of_the_stated_size():
    assert 0.5e6 < sum(p.numel() for p in make_model(PRESETS["cpu"]).parameters()) < 2e6
    gpu = PRESETS["gpu"]
    assert gpu.block_out_channels == (64, 128, 128, 256) and gpu.learning_rate == 4e-4 and gpu.batch_size == 64
    tiny = make_model(PRESETS["tiny"])
    assert tiny(torch.randn(2, 3, 16, 16), torch.tensor([1, 500])).sample.shape == (2, 3, 16, 16)


def test_diffusion_loss_is_mse_to_the_true_noise():
    config = PRESETS["tiny"]
    scheduler = make_noise_scheduler(config)

    class Oracle(torch.nn.Module):  # knows the noise the loss draws, so its loss must be zero
        def forward(self, noisy, timesteps):
            g = torch.Generator().manual_seed(7)
            noise = torch.randn(noisy.shape, generator=g)
            return type("Out", (), {"sample": noise})()

    clean = torch.rand(4, 3, 16, 16) * 2 - 1
    assert diffusion_loss(Oracle(), scheduler, clean, torch.Generator().manual_seed(7)).item() == 0.0
    zero = type("Zero", (torch.nn.Module,), {"forward": lambda self, x, t: type("O", (), {"sample": torch.zeros_like(x)})()})()
    loss = diffusion_loss(zero, scheduler, clean, torch.Generator().manual_seed(7))
    assert 0.7 < loss.item() < 1.3  # predicting zero costs the noise's variance, about 1


def test_training_lowers_the_loss():
    result = train(PRESETS["tiny"].replace(max_steps=40, learning_rate=1e-3), _tiny_dataset(), progress=False)
    assert len(result.losses) == 40
    assert np.mean(result.losses[-8:]) < np.mean(result.losses[:8])
    assert result.seconds_per_step > 0
    # the EMA model is a separate copy whose weights differ from the raw ones
    raw, ema = next(result.model.parameters()), next(result.ema_model.parameters())
    assert raw.shape == ema.shape and not torch.equal(raw, ema)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    config = PRESETS["tiny"].replace(max_steps=8, checkpoint_every=5)
    uninterrupted = train(config, _tiny_dataset(20), progress=False)  # 20 images, batch 8: epochs of 2 steps
    train(config, _tiny_dataset(20), checkpoint_dir=tmp_path, stop_at_step=5, progress=False)
    resumed = train(config, _tiny_dataset(20), checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.resumed_from_step == 5
    assert len(resumed.losses) == 8
    assert resumed.losses[:5] == uninterrupted.losses[:5]
    assert resumed.losses[5] == pytest.approx(uninterrupted.losses[5], rel=1e-6)  # the next step, identical
    assert resumed.losses[5:] == pytest.approx(uninterrupted.losses[5:], rel=1e-5)


def test_resume_needs_a_checkpoint_dir():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(PRESETS["tiny"], _tiny_dataset(), resume=True)
