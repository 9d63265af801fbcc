import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from course_utils.training import (PRESETS, TrainConfig, diffusion_loss, load_checkpoint, make_model,
                                   make_noise_scheduler, save_checkpoint, train)


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
    assert 15e6 < sum(p.numel() for p in make_model(gpu).parameters()) < 20e6
    tiny = make_model(PRESETS["tiny"])
    assert tiny(torch.randn(2, 3, 16, 16), torch.tensor([1, 500])).sample.shape == (2, 3, 16, 16)


class _Out:
    def __init__(self, sample):
        self.sample = sample


def test_diffusion_loss_is_mse_to_the_true_noise():
    scheduler = make_noise_scheduler(PRESETS["tiny"].replace(prediction_type="epsilon"))

    class Oracle(torch.nn.Module):  # knows the noise the loss draws, so its loss must be zero
        def forward(self, noisy, timesteps):
            noise = torch.randn(noisy.shape, generator=torch.Generator().manual_seed(7))
            return _Out(noise)

    clean = torch.rand(4, 3, 16, 16) * 2 - 1
    assert diffusion_loss(Oracle(), scheduler, clean, torch.Generator().manual_seed(7)).item() == 0.0

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return _Out(torch.zeros_like(x))

    loss = diffusion_loss(Zero(), scheduler, clean, torch.Generator().manual_seed(7))
    assert 0.7 < loss.item() < 1.3  # predicting zero costs the noise's variance, about 1


def test_diffusion_loss_v_target_is_diffusers_velocity():
    scheduler = make_noise_scheduler(PRESETS["tiny"])  # v-prediction
    assert scheduler.config.prediction_type == "v_prediction"
    clean = torch.rand(4, 3, 16, 16) * 2 - 1

    class Oracle(torch.nn.Module):  # v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0, from the same draws as the loss
        def forward(self, noisy, timesteps):
            g = torch.Generator().manual_seed(3)
            noise = torch.randn(clean.shape, generator=g)
            t = torch.randint(0, 1000, (4,), generator=g)
            ab = scheduler.alphas_cumprod[t][:, None, None, None]
            return _Out(ab.sqrt() * noise - (1 - ab).sqrt() * clean)

    assert diffusion_loss(Oracle(), scheduler, clean, torch.Generator().manual_seed(3)).item() < 1e-10
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_loss(Oracle(), make_noise_scheduler(PRESETS["tiny"].replace(prediction_type="sample")), clean)


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


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    # max_steps counts optimizer steps: with 2 micro-batches each, 6 steps read 12 batches,
    # and the schedule, the EMA and Adam all see exactly 6 updates
    config = PRESETS["tiny"].replace(max_steps=6, gradient_accumulation_steps=2)
    result = train(config, _tiny_dataset(40), checkpoint_dir=tmp_path, progress=False)
    assert len(result.losses) == 6
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6
    assert state["lr_scheduler"]["last_epoch"] == 6  # the cosine reached its end ...
    assert state["lr_scheduler"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)  # ... at lr 0
    assert state["ema"]["optimization_step"] == 6
    assert all(int(s["step"]) == 6 for s in state["optimizer"]["state"].values())


def test_resume_mid_epoch_with_accumulation_is_exact(tmp_path):
    # 20 images, batch 4, 2 micro-batches per step: epochs of 3 optimizer steps (2, 2 and 1 batches)
    config = PRESETS["tiny"].replace(batch_size=4, max_steps=7, gradient_accumulation_steps=2)
    uninterrupted = train(config, _tiny_dataset(20), progress=False)
    train(config, _tiny_dataset(20), checkpoint_dir=tmp_path, stop_at_step=4, progress=False)
    resumed = train(config, _tiny_dataset(20), checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.losses == pytest.approx(uninterrupted.losses, rel=1e-5)
    for a, b in zip(resumed.ema_model.parameters(), uninterrupted.ema_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_checkpoint_keeps_the_grad_scaler(tmp_path):
    # fp16 needs a GPU; the contract is checked with a CPU GradScaler in an accelerator's place
    from types import SimpleNamespace

    from diffusers.training_utils import EMAModel

    config = PRESETS["tiny"]
    model = make_model(config)
    ema = EMAModel(model.parameters())
    optimizer = torch.optim.AdamW(model.parameters())
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1234.0)
    fake = SimpleNamespace(process_index=0, num_processes=1, is_main_process=True, scaler=scaler,
                           unwrap_model=lambda m: m, wait_for_everyone=lambda: None)
    save_checkpoint(tmp_path, fake, 3, model, ema, optimizer, lr_scheduler, torch.Generator(), [1.0], config)
    fake.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    step, losses = load_checkpoint(tmp_path, fake, model, ema, optimizer, lr_scheduler, torch.Generator())
    assert (step, losses) == (3, [1.0])
    assert fake.scaler.get_scale() == 1234.0
    fake.num_processes = 2
    with pytest.raises(ValueError, match="processes"):
        load_checkpoint(tmp_path, fake, model, ema, optimizer, lr_scheduler, torch.Generator())
