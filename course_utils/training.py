"""The training loop written in chapter 3, reused by scripts/train_unconditional.py.

Every definition below is kept identical to the chapter's cell that writes it
(tests/test_models.py checks it): edit the chapter, then copy the cell here.
The loop follows diffusers' train_unconditional example: AdamW, warm-up then cosine
learning rate, gradient clipping, an EMA of the weights, and accelerate for devices,
mixed precision, gradient accumulation and many processes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .data import ImageTransform
from .losses import diffusion_loss

__all__ = ["TrainConfig", "PRESETS", "make_model", "make_noise_scheduler", "TrainResult",
           "save_checkpoint", "load_checkpoint", "train", "diffusion_loss"]


@dataclass
class TrainConfig:
    """Every choice of a training run, in one place."""

    image_size: int = 32  # images are resized to image_size x image_size
    in_channels: int = 3  # RGB
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels at 32, 16 and 8 px
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1  # ResNet layers per resolution
    beta_schedule: str = "squaredcos_cap_v2"  # the cosine schedule of chapter 1
    prediction_type: str = "v_prediction"  # what the model predicts (chapter 2)
    batch_size: int = 64  # images per optimizer step (per process)
    learning_rate: float = 2e-3
    warmup_steps: int = 100  # linear warm-up, then a cosine down to 0
    max_steps: int = 1800  # optimizer steps in the whole run
    grad_clip: float = 1.0  # largest gradient norm
    ema_power: float = 0.75  # the EMA remembers about (1 + step) ** ema_power steps ...
    ema_decay: float = 0.9999  # ... until its decay reaches this cap
    flip_prob: float = 0.5  # random left-right flips
    checkpoint_every: int = 300  # optimizer steps between checkpoints (0: never)
    seed: int = 0
    mixed_precision: str = "no"  # "no", "fp16" (GPU) or "bf16"
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        levels = {len(self.block_out_channels), len(self.down_block_types),
                  len(self.up_block_types)}
        if len(levels) != 1:
            raise ValueError("block_out_channels, down_block_types and up_block_types "
                             "must have the same length")
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by "
                             f"{2 ** (len(self.block_out_channels) - 1)}")
        for name in ("batch_size", "max_steps", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 < self.ema_power <= 1:
            raise ValueError(f"ema_power must lie in (0, 1], got {self.ema_power}")


PRESETS = {
    # Chosen with benchmarks/train_unconditional.py on a 2-core CPU (see its README).
    "cpu": TrainConfig(),
    # The Hugging Face course's model (about 18 M parameters), for a GPU.
    "gpu": TrainConfig(
        block_out_channels=(64, 128, 128, 256),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                          "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2, learning_rate=4e-4, max_steps=2000, checkpoint_every=500,
        mixed_precision="fp16",
    ),
    # For tests and smoke runs: 16 px, two levels.
    "tiny": TrainConfig(
        image_size=16, block_out_channels=(32, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        batch_size=8, warmup_steps=2, max_steps=10, checkpoint_every=0,
    ),
}


def make_model(config: TrainConfig) -> UNet2DModel:
    """The UNet2DModel a config describes."""
    return UNet2DModel(
        sample_size=config.image_size,  # the size it is trained at
        in_channels=config.in_channels,
        out_channels=config.in_channels,  # one prediction per input value
        layers_per_block=config.layers_per_block,
        block_out_channels=config.block_out_channels,
        down_block_types=config.down_block_types,
        up_block_types=config.up_block_types,
    )


def make_noise_scheduler(config: TrainConfig) -> DDPMScheduler:
    """The DDPMScheduler a config describes."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type)


@dataclass
class TrainResult:
    """What a run returns: the model, its EMA copy, the losses and the speed."""

    model: UNet2DModel
    ema_model: UNet2DModel
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    seconds_per_step: float = float("nan")
    resumed_from_step: int = 0


def save_checkpoint(directory: Path, accelerator: Accelerator, step: int, model, ema,
                    optimizer, lr_scheduler, generator: torch.Generator,
                    losses: list[float], config: TrainConfig) -> None:
    """Save everything a run needs to continue exactly where it stopped."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # each process draws its own noise: each saves its own generator
    rank = accelerator.process_index
    torch.save(generator.get_state(), directory / f"generator_{rank}.pt")
    if accelerator.is_main_process:
        scaler = accelerator.scaler  # fp16 loss scaling; None without fp16
        state = {
            "step": step, "losses": list(losses), "config": dataclasses.asdict(config),
            "num_processes": accelerator.num_processes,
            "model": accelerator.unwrap_model(model).state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "grad_scaler": scaler.state_dict() if scaler is not None else None,
        }
        torch.save(state, directory / "checkpoint.tmp")
        # replace in one move: a stop while saving never leaves half a checkpoint
        (directory / "checkpoint.tmp").replace(directory / "checkpoint.pt")
    accelerator.wait_for_everyone()


def load_checkpoint(directory: Path, accelerator: Accelerator, model, ema, optimizer,
                    lr_scheduler, generator: torch.Generator
                    ) -> tuple[int, list[float]]:
    """Restore a checkpoint saved by save_checkpoint; return the step and the losses."""
    directory = Path(directory)
    state = torch.load(directory / "checkpoint.pt", map_location="cpu",
                       weights_only=False)
    if state["num_processes"] != accelerator.num_processes:
        raise ValueError(f"the checkpoint was saved by {state['num_processes']} "
                         f"processes; resume with as many, not "
                         f"{accelerator.num_processes}")
    accelerator.unwrap_model(model).load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if state["grad_scaler"] is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    rank = accelerator.process_index
    generator.set_state(torch.load(directory / f"generator_{rank}.pt"))
    return state["step"], state["losses"]


def train(config: TrainConfig, dataset, checkpoint_dir: Path | None = None,
          resume: bool = False, stop_at_step: int | None = None,
          accelerator: Accelerator | None = None, progress: bool = True) -> TrainResult:
    """Train an unconditional diffusion model on a dataset with an "image" column."""
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    accumulation = config.gradient_accumulation_steps
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=config.mixed_precision,
                                  gradient_accumulation_steps=accumulation)
    mode = "RGB" if config.in_channels == 3 else "L"
    dataset.set_transform(ImageTransform(size=config.image_size, mode=mode))

    def epoch_dataloader(epoch: int):
        """The batches of one epoch, in an order fixed by the seed and the epoch."""
        order = torch.Generator().manual_seed(config.seed + epoch)
        dataloader = torch.utils.data.DataLoader(
            dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
            generator=order)
        return accelerator.prepare_data_loader(dataloader)  # a share per process

    torch.manual_seed(config.seed)  # the initial weights, the same in every process
    model = make_model(config)
    # decay 1 - (1 + step) ** -ema_power: the average's memory grows with the run
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True,
                   inv_gamma=1.0, power=config.ema_power)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    # stepped by hand once per optimizer step, however many processes there are
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps)
    noise_scheduler = make_noise_scheduler(config)
    # flips, noise and timesteps: a generator per process, saved in checkpoints
    generator = torch.Generator().manual_seed(config.seed + accelerator.process_index)
    model, optimizer = accelerator.prepare(model, optimizer)
    step, losses = 0, []
    if resume:
        step, losses = load_checkpoint(checkpoint_dir, accelerator, model, ema,
                                       optimizer, lr_scheduler, generator)
    ema.to(accelerator.device)
    resumed_from = step
    last_step = min(config.max_steps, stop_at_step or config.max_steps)
    # optimizer steps per epoch: from this process's share of the batches
    batches_per_epoch = len(epoch_dataloader(0))
    if batches_per_epoch == 0:
        raise ValueError(f"{len(dataset)} images make no batch of {config.batch_size} "
                         f"for each of {accelerator.num_processes} processes")
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation)

    bar = tqdm(total=config.max_steps, initial=step, desc="training",
               disable=not (progress and accelerator.is_main_process))
    micro_losses = []
    start = time.perf_counter()
    model.train()
    while step < last_step:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        dataloader = epoch_dataloader(epoch)
        if step_in_epoch:  # resuming mid-epoch: skip used batches without loading them
            dataloader = accelerator.skip_first_batches(
                dataloader, step_in_epoch * accumulation)
        for batch in dataloader:
            clean_images = batch["images"]
            flip = torch.rand(len(clean_images), generator=generator) < config.flip_prob
            flip = flip.to(clean_images.device)[:, None, None, None]
            clean_images = torch.where(flip, clean_images.flip(-1), clean_images)
            with accelerator.accumulate(model):
                loss = diffusion_loss(model, noise_scheduler, clean_images, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()  # accelerate skips it until the last micro-batch
                optimizer.zero_grad()
            micro_losses.append(loss.item())
            if not accelerator.sync_gradients:
                continue  # more micro-batches to accumulate first
            # once per optimizer step: the schedule, the EMA, the log, the checkpoint
            lr_scheduler.step()
            ema.step(accelerator.unwrap_model(model).parameters())
            losses.append(float(np.mean(micro_losses)))
            micro_losses = []
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}",
                            lr=f"{lr_scheduler.get_last_lr()[0]:.1e}")
            if checkpoint_dir and config.checkpoint_every \
                    and step % config.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir, accelerator, step, model, ema,
                                optimizer, lr_scheduler, generator, losses, config)
            if step >= last_step:
                break
    bar.close()
    seconds = time.perf_counter() - start
    if checkpoint_dir:
        save_checkpoint(checkpoint_dir, accelerator, step, model, ema, optimizer,
                        lr_scheduler, generator, losses, config)
    # keep_fp32_wrapper=False: sample in full precision, without the training autocast
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False).eval()
    ema_model = make_model(config).to(accelerator.device).eval()
    ema.copy_to(ema_model.parameters())
    return TrainResult(model=model, ema_model=ema_model, losses=losses,
                       seconds_per_step=seconds / max(1, step - resumed_from),
                       resumed_from_step=resumed_from)
