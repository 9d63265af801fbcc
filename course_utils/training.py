"""Unconditional DDPM training shared by chapter 3 and scripts/train_unconditional.py: config, loop, EMA, checkpoints.

The loop follows diffusers' train_unconditional example: ε-prediction, AdamW, cosine learning rate with warm-up,
gradient clipping, an EMA of the weights, and accelerate for devices, mixed precision and gradient accumulation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .data import ImageTransform

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that defines a training run; the presets below are two filled-in copies."""

    image_size: int = 32  # images are resized to image_size x image_size
    in_channels: int = 3  # RGB
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels at each resolution of the UNet
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1  # ResNet layers per resolution
    beta_schedule: str = "squaredcos_cap_v2"  # the cosine schedule, better than linear for small images
    num_train_timesteps: int = 1000
    batch_size: int = 64
    learning_rate: float = 4e-4
    warmup_steps: int = 50  # learning rate ramps up linearly, then follows a cosine down to 0
    max_steps: int = 600  # optimizer steps in the whole run (about 14 min at 1.35 s/step on 2 CPU cores)
    grad_clip: float = 1.0  # clip the gradient norm: a few bad batches cannot derail training
    ema_decay: float = 0.999  # weight of the old average in the EMA of the weights
    flip_prob: float = 0.5  # random horizontal flips (data augmentation)
    checkpoint_every: int = 200  # steps between checkpoints (0: never)
    seed: int = 0
    mixed_precision: str = "no"  # "fp16" or "bf16" on a GPU
    gradient_accumulation_steps: int = 1

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        if len(self.block_out_channels) != len(self.down_block_types) or len(self.down_block_types) != len(self.up_block_types):
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length, got "
                             f"{len(self.block_out_channels)}, {len(self.down_block_types)}, {len(self.up_block_types)}")
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels - 1) = "
                             f"{2 ** (len(self.block_out_channels) - 1)}")
        for name in ("batch_size", "max_steps", "image_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")


PRESETS: dict[str, TrainConfig] = {
    # Minutes on a 2-core CPU: 32 px, about 1.1 M parameters, attention only at 8x8.
    "cpu": TrainConfig(),
    # The Hugging Face diffusion course recipe: about 18 M parameters, 30 epochs of 1000 images at batch 64.
    "gpu": TrainConfig(
        block_out_channels=(64, 128, 128, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        batch_size=64, learning_rate=4e-4, warmup_steps=100, max_steps=30 * math.ceil(1000 / 64),
        checkpoint_every=100, mixed_precision="fp16",
    ),
    # For tests and smoke runs: 16 px, two levels, no attention.
    "tiny": TrainConfig(image_size=16, block_out_channels=(32, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "UpBlock2D"), batch_size=8, warmup_steps=2, max_steps=10,
                        checkpoint_every=0),
}


def make_model(config: TrainConfig) -> UNet2DModel:
    """The UNet2DModel a config describes."""
    return UNet2DModel(
        sample_size=config.image_size, in_channels=config.in_channels, out_channels=config.in_channels,
        layers_per_block=config.layers_per_block, block_out_channels=config.block_out_channels,
        down_block_types=config.down_block_types, up_block_types=config.up_block_types,
    )


def make_noise_scheduler(config: TrainConfig) -> DDPMScheduler:
    """The DDPMScheduler a config describes."""
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)


def make_transform(config: TrainConfig) -> ImageTransform:
    """Resize, random flip, tensor in [-1, 1]: the set_transform function for training."""
    mode = "RGB" if config.in_channels == 3 else "L"
    return ImageTransform(size=config.image_size, mode=mode, flip_prob=config.flip_prob, seed=config.seed)


def diffusion_loss(model: UNet2DModel, noise_scheduler: DDPMScheduler, clean_images: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """ε-prediction loss: noise each image at its own random timestep, predict the noise, mean squared error."""
    batch_size = clean_images.shape[0]
    noise = torch.randn(clean_images.shape, generator=generator).to(clean_images.device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
    timesteps = timesteps.to(clean_images.device)
    noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
    noise_pred = model(noisy_images, timesteps).sample
    return F.mse_loss(noise_pred.float(), noise.float())


@dataclass
class TrainResult:
    """What a run returns: the model, its EMA, the per-step losses and the speed."""

    model: UNet2DModel
    ema_model: UNet2DModel
    losses: list[float] = field(default_factory=list)
    seconds_per_step: float = float("nan")
    resumed_from_step: int = 0


def ema_copy(config: TrainConfig, ema: EMAModel) -> UNet2DModel:
    """A UNet2DModel holding the EMA weights."""
    ema_model = make_model(config)
    ema.copy_to(ema_model.parameters())
    return ema_model


def save_checkpoint(directory: Path, step: int, model, ema: EMAModel, optimizer, lr_scheduler,
                    generator: torch.Generator, losses: list[float], config: TrainConfig) -> Path:
    """Save everything a run needs to continue exactly where it stopped."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    state = {
        "step": step, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(), "generator": generator.get_state(), "losses": list(losses),
        "config": dataclasses.asdict(config),
    }
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # never leave a half-written checkpoint behind
    return path


def train(config: TrainConfig, dataset, transform: ImageTransform | None = None, checkpoint_dir: Path | None = None,
          resume: bool = False, stop_at_step: int | None = None, accelerator=None, progress: bool = True) -> TrainResult:
    """Train an unconditional DDPM on `dataset` (a datasets.Dataset with an "image" column) for config.max_steps.

    `stop_at_step` ends the run early without changing its learning-rate schedule, as a disconnect would;
    `resume=True` continues from the checkpoint in `checkpoint_dir`.
    """
    from accelerate import Accelerator

    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    accelerator = accelerator or Accelerator(mixed_precision=config.mixed_precision,
                                             gradient_accumulation_steps=config.gradient_accumulation_steps)
    transform = transform or make_transform(config)
    dataset.set_transform(transform)
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than one batch of {config.batch_size}")

    torch.manual_seed(config.seed)  # the initial weights
    model = make_model(config)
    ema = EMAModel(model.parameters(), decay=config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    noise_scheduler = make_noise_scheduler(config)
    generator = torch.Generator().manual_seed(config.seed)  # noise and timesteps, saved in checkpoints
    losses: list[float] = []
    step = 0
    if resume:
        state = torch.load(Path(checkpoint_dir) / CHECKPOINT_FILE, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        generator.set_state(state["generator"])
        losses, step = state["losses"], state["step"]
    resumed_from = step
    last_step = min(config.max_steps, stop_at_step or config.max_steps)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema.to(accelerator.device)

    bar = tqdm(total=config.max_steps, initial=step, desc="training", disable=not (progress and accelerator.is_main_process))
    start = time.perf_counter()
    while step < last_step:
        epoch, skip = divmod(step, steps_per_epoch)
        transform.reseed(config.seed + epoch)  # same flips, in the same order, as an uninterrupted run
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed + epoch))
        dataloader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True)
        if accelerator.num_processes > 1:
            dataloader = accelerator.prepare_data_loader(dataloader)
        for i, batch in enumerate(dataloader):
            if i < skip:  # resuming mid-epoch: replay the batches already trained on, without training
                continue
            model.train()
            with accelerator.accumulate(model):
                loss = diffusion_loss(model, noise_scheduler, batch["images"].to(accelerator.device), generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            ema.step(accelerator.unwrap_model(model).parameters())
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.1e}")
            if checkpoint_dir and config.checkpoint_every and step % config.checkpoint_every == 0 \
                    and accelerator.is_main_process:
                save_checkpoint(checkpoint_dir, step, accelerator.unwrap_model(model), ema, optimizer, lr_scheduler,
                                generator, losses, config)
            if step >= last_step:
                break
    bar.close()
    if checkpoint_dir and accelerator.is_main_process:
        save_checkpoint(checkpoint_dir, step, accelerator.unwrap_model(model), ema, optimizer, lr_scheduler,
                        generator, losses, config)
    elapsed = time.perf_counter() - start
    model = accelerator.unwrap_model(model)
    return TrainResult(model=model, ema_model=ema_copy(config, ema), losses=losses,
                       seconds_per_step=elapsed / max(1, step - resumed_from), resumed_from_step=resumed_from)
