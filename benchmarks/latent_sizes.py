"""Why latents (chapter 7): a UNet step on pixels vs latents; VAE PSNR per CPU minute.

Two measurements on the emoji (64x64 RGB; offline, the butterflies' stand-in):

1. **UNet step**: one training step (forward, MSE on the noise, backward, AdamW) of
   the same text-conditioned `UNet2DConditionModel` (cross_attention_dim 384, as
   chapter 7 plans) on 64x64x3 pixels and on 16x16x4 latents, with random text tokens
   (batch, 8, 384). The two sizes alternate step by step, so a busy CPU slows both
   alike; the median of the timed steps is reported, wall and process-CPU seconds.
2. **VAE**: a small `AutoencoderKL` (64x64x3 -> 16x16x4) trained on the emoji
   (reconstruction MSE + `--kl-weight` x KL) for a fixed wall time; the PSNR of the
   reconstructions of held-out emoji (dB, on the 0-1 scale, mean ± sd over images) is
   measured at a quarter, half, three quarters and all of the budget, against the
   process-CPU minutes spent (evaluation not counted). The standard deviation of the
   held-out latents (posterior means) gives the scaling factor, 1 / std, as Stable
   Diffusion's 0.18215 was found.

Each run prints its figures and appends one JSON record to
benchmarks/results/latent_sizes.jsonl; `--table` prints the Markdown table of all
records for benchmarks/README.md. `--smoke` runs tiny sizes for a few steps (seconds)
and logs nothing unless `--results` names a file: it checks that the script works,
its figures mean nothing.

    COURSE_DATA_DIR=../shared/data python benchmarks/latent_sizes.py --name base \\
        --vae-minutes 5
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
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from course_utils import ImageTransform, data_source, load_course_dataset, set_seed

RESULTS = Path(__file__).resolve().parent / "results" / "latent_sizes.jsonl"
DATASET = "huggan/smithsonian_butterflies_subset"  # offline: the Noto emoji
TEXT_DIM, TEXT_TOKENS = 384, 8  # all-MiniLM-L6-v2's width; a short caption
PIXELS, LATENTS = (3, 64), (4, 16)  # (channels, side)
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)  # shares of the VAE budget where PSNR is measured


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
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--unet-channels", type=channels, default=(32, 64, 64),
                   help="UNet block_out_channels (cross-attention in all but the last)")
    p.add_argument("--unet-heads", type=int, default=8, help="attention heads a block")
    p.add_argument("--unet-steps", type=int, default=10, help="timed steps per size")
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="untimed UNet steps per size before the timed ones")
    p.add_argument("--vae-channels", type=channels, default=(32, 64, 64),
                   help="AutoencoderKL block_out_channels: 3 blocks take 64 px to 16")
    p.add_argument("--kl-weight", type=float, default=1e-6,
                   help="weight of the KL term (summed over a sample's latents) "
                        "against the MSE (a mean over pixels)")
    p.add_argument("--vae-lr", type=float, default=5e-4)
    p.add_argument("--vae-minutes", type=float, default=5.0,
                   help="VAE training wall time (evaluation not counted)")
    p.add_argument("--vae-steps", type=int, default=0,
                   help="train the VAE exactly this many steps instead (0: by time)")
    p.add_argument("--held-out", type=float, default=0.1,
                   help="share of the emoji kept out of VAE training for its PSNR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, a few steps: checks the script, measures nothing")
    p.add_argument("--results", type=Path,
                   help=f"the JSON-lines log (default {RESULTS}; none with --smoke)")
    p.add_argument("--table", action="store_true", help="print the logged runs' table")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch_size, args.unet_steps, args.unet_heads = 1, 1, 1
        args.warmup_steps, args.vae_steps = 0, 2
        args.unet_channels, args.vae_channels = (8, 16, 16), (8, 16, 16)
    elif args.results is None:
        args.results = RESULTS
    if (min(args.batch_size, args.unet_steps, args.unet_heads) < 1
            or min(args.warmup_steps, args.vae_steps) < 0):
        p.error(f"expected --batch-size, --unet-steps, --unet-heads >= 1 and "
                f"--warmup-steps, --vae-steps >= 0, got {args.batch_size}, "
                f"{args.unet_steps}, {args.unet_heads}, {args.warmup_steps}, "
                f"{args.vae_steps}")
    if not args.vae_steps and not args.vae_minutes > 0:
        p.error(f"--vae-minutes: expected > 0 (or --vae-steps), got {args.vae_minutes}")
    if len(args.vae_channels) != 3:
        p.error(f"--vae-channels: expected 3 blocks (64 px -> 16), "
                f"got {args.vae_channels}")
    if not 0 < args.held_out < 1:
        p.error(f"--held-out: expected a share in (0, 1), got {args.held_out}")
    return args


def emoji_images(smoke: bool) -> torch.Tensor:
    """The emoji as one float tensor (N, 3, 64, 64) in [-1, 1] (16 of them in smoke)."""
    dataset = load_course_dataset(DATASET, split="train")
    if smoke:
        dataset = dataset.select(range(16))
    to_tensor = ImageTransform(size=64, mode="RGB")
    return torch.stack([to_tensor.one(image) for image in dataset["image"]])


def norm_groups(widths: tuple[int, ...]) -> int:
    """The most GroupNorm groups (up to 32) that divide every block's width."""
    return max(g for g in range(1, 33) if all(w % g == 0 for w in widths))


def make_unet(in_channels: int, side: int, widths: tuple[int, ...], heads: int
              ) -> UNet2DConditionModel:
    """The same text-conditioned UNet for pixels or latents; only its input differs."""
    n = len(widths)
    return UNet2DConditionModel(
        sample_size=side, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=widths, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=heads,  # diffusers reads it as the number of heads here
        norm_num_groups=norm_groups(widths))


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
        unet = make_unet(chans, side, args.unet_channels, args.unet_heads).train()
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


def train_vae(args: argparse.Namespace, images: torch.Tensor) -> dict:
    """Train the VAE for its budget; PSNR at each checkpoint (evaluation not timed)."""
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
        pick = torch.randint(len(train), (args.batch_size,), generator=generator)
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
    return {"params": sum(p.numel() for p in vae.parameters()), "steps": steps,
            "held_out": n_held, "curve": curve}


def table(path: Path) -> str:
    """The Markdown table of the runs logged in `path`."""
    if not path.is_file():
        raise SystemExit(f"no runs logged yet: expected a JSON-lines file at {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| run | UNet ch | s/step 64²×3 | s/step 16²×4 | ratio | VAE ch, KL w "
             "| VAE steps | CPU min | PSNR dB (¼, ½, ¾, 1 of budget) | latent std |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        px, lat, vae = r["unet"]["pixels"], r["unet"]["latents"], r["vae"]
        curve = ", ".join(f"{c['psnr_db']:.1f}" for c in vae["curve"])
        end = vae["curve"][-1]
        lines.append(
            f"| {r['name']} | {r['unet_channels']} | {px['wall_s']:.3f} | "
            f"{lat['wall_s']:.3f} | {px['wall_s'] / lat['wall_s']:.1f} | "
            f"{r['vae_channels']}, {r['kl_weight']:g} | {vae['steps']} | "
            f"{end['cpu_min']:.1f} | {curve} (± {end['psnr_sd_db']:.1f}) | "
            f"{end['latent_std']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print, log; or print the table."""
    args = parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    set_seed(args.seed)
    unet = time_unet_steps(args)
    vae = train_vae(args, emoji_images(args.smoke))
    record = {
        "name": args.name, "smoke": args.smoke, "batch_size": args.batch_size,
        "unet_channels": ",".join(map(str, args.unet_channels)),
        "unet_heads": args.unet_heads,
        "unet": {label: vars(cost) for label, cost in unet.items()},
        "vae_channels": ",".join(map(str, args.vae_channels)),
        "kl_weight": args.kl_weight, "vae_lr": args.vae_lr,
        "vae_minutes": args.vae_minutes, "vae_steps": args.vae_steps, "vae": vae,
        "data": data_source(DATASET),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }
    px, lat, end = unet["pixels"], unet["latents"], vae["curve"][-1]
    print(f"{args.name}: UNet step {px.wall_s:.3f} s on 64x64x3 pixels, "
          f"{lat.wall_s:.3f} s on 16x16x4 latents ({px.wall_s / lat.wall_s:.1f}x); "
          f"VAE {vae['steps']} steps, PSNR {end['psnr_db']:.1f} ± "
          f"{end['psnr_sd_db']:.1f} dB, latent std {end['latent_std']:.3f} "
          f"(scaling factor {1 / end['latent_std']:.3f})")
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
