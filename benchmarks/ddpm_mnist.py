"""Sample quality per CPU minute for chapter 2's DDPM on MNIST: train a recipe for a fixed wall time, sample, score.

One run prints one line (recipe, s/step, images/s, steps, confident-and-balanced share, FD over the test-vs-test
floor with its spread, wall times) and appends the same figures as JSON to benchmarks/results/ddpm_mnist.jsonl.
`--table` prints the Markdown table of all logged runs for benchmarks/README.md. Scores come from
`course_utils.metrics.score_mnist_samples` (random reference draws); rows logged before it (no "measure" field)
were scored with the earlier, biased first-n measure and the table marks them so.

    COURSE_DATA_DIR=../shared/data python benchmarks/ddpm_mnist.py --name baseline --minutes 10 \\
        --channels 32,32,64 --attention lowest --ema-decay 0 --warmup 0 --lr-schedule constant --grad-clip 0

The learning-rate schedule follows the share of the wall-time budget used, so a run ends at the end of its
schedule whatever the machine's speed. The chapter then fixes the number of steps this machine reaches; `--steps N`
trains exactly N steps with the schedule over steps instead, as the chapter does (the same recipe on any machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.training_utils import EMAModel, compute_snr

from course_utils.metrics import load_mnist_classifier, mnist_tensors, score_mnist_samples

RESULTS = Path(__file__).resolve().parent / "results" / "ddpm_mnist.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The recipe, the budget and what to report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="run", help="a label for this recipe in the table")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall time")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps even inside the budget")
    p.add_argument("--steps", type=int, default=0,
                   help="train exactly this many steps, the LR schedule over steps (--minutes is then ignored)")
    # the network
    p.add_argument("--channels", default="32,64,64", help="block_out_channels, comma-separated")
    p.add_argument("--attention", choices=["none", "lowest"], default="none")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--norm-groups", type=int, default=32)
    # the training signal
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.05, help="share of the budget spent warming up the LR")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    p.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping")
    p.add_argument("--ema-decay", type=float, default=0.999, help="0: no EMA")
    p.add_argument("--beta-schedule", default="squaredcos_cap_v2", choices=["squaredcos_cap_v2", "linear"])
    p.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction"])
    p.add_argument("--min-snr-gamma", type=float, default=0.0, help="min-SNR loss weighting (0: off)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast dtype on the CPU")
    # the sampler
    p.add_argument("--samplers", default="ddim:50",
                   help="comma-separated sampler:steps, each scored on its own (ddpm, ddim or dpm)")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--save-samples", type=Path, help="write the samples, (N, 1, 28, 28) float in [0, 1], here")
    p.add_argument("--save-model", type=Path, help="save the sampled (EMA) model here with save_pretrained")
    p.add_argument("--load-model", type=Path,
                   help="skip training: sample from a model saved by --save-model (the recipe flags must match it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-log", action="store_true", help="do not append this run to the results file")
    p.add_argument("--table", action="store_true", help="print the table of logged runs and exit")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.batch_size < 1 or not 2 <= args.n_samples <= 5000 or args.steps < 0:
        p.error("--minutes and --batch-size must be positive, --steps >= 0 and --n-samples in 2..5000 "
                "(scoring draws two disjoint sets of N from the 10,000 test digits)")
    try:
        args.samplers = [(kind, int(steps)) for kind, steps in (s.split(":") for s in args.samplers.split(","))]
    except ValueError:
        p.error(f"--samplers must look like ddim:50,dpm:20, got {args.samplers!r}")
    if any(kind not in ("ddpm", "ddim", "dpm", "sde") or steps < 1 for kind, steps in args.samplers):
        p.error(f"unknown sampler or bad step count in {args.samplers}")
    return args


def make_unet(args: argparse.Namespace) -> UNet2DModel:
    """The UNet2DModel of the recipe: attention at the lowest resolution or nowhere."""
    channels = tuple(int(c) for c in args.channels.split(","))
    down = ["DownBlock2D"] * len(channels)
    up = ["UpBlock2D"] * len(channels)
    if args.attention == "lowest":
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=args.layers_per_block,
                       block_out_channels=channels, down_block_types=tuple(down), up_block_types=tuple(up),
                       norm_num_groups=args.norm_groups)


def loss_fn(model, scheduler: DDPMScheduler, clean: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """Algorithm 1 of Ho et al. with a timestep per image; v-target and min-SNR weighting as options."""
    noise = torch.randn_like(clean)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = noise if args.prediction_type == "epsilon" else scheduler.get_velocity(clean, noise, timesteps)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        prediction = model(noisy, timesteps).sample
    per_image = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3))
    if args.min_snr_gamma > 0:  # Hang et al. 2023: weight min(SNR, gamma)/SNR for ε, min(SNR, gamma)/(SNR+1) for v
        snr = compute_snr(scheduler, timesteps)
        weight = snr.clamp(max=args.min_snr_gamma)
        weight = weight / snr if args.prediction_type == "epsilon" else weight / (snr + 1)
        per_image = per_image * weight
    return per_image.mean()


def lr_factor(progress: float, args: argparse.Namespace) -> float:
    """Learning-rate multiplier at `progress` (share of the budget used): linear warm-up, then constant or cosine."""
    if progress < args.warmup:
        return max(progress / args.warmup, 1e-3)
    if args.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - args.warmup) / (1 - args.warmup))))


def train(args: argparse.Namespace, images: torch.Tensor):
    """Train for args.minutes of wall time; return the model to sample from, the step count and the speed."""
    torch.manual_seed(args.seed)
    model = make_unet(args)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=args.beta_schedule,
                              prediction_type=args.prediction_type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    ema = EMAModel(model.parameters(), decay=args.ema_decay) if args.ema_decay > 0 else None
    budget_s = args.minutes * 60
    generator = torch.Generator().manual_seed(args.seed)
    order, position, step, losses = torch.randperm(len(images), generator=generator), 0, 0, []
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if args.steps:
            if step >= args.steps:
                break
            progress = step / args.steps
        else:
            if elapsed >= budget_s or (args.max_steps and step >= args.max_steps):
                break
            progress = elapsed / budget_s
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(progress, args)
        if position + args.batch_size > len(images):
            order, position = torch.randperm(len(images), generator=generator), 0
        clean = images[order[position:position + args.batch_size]] * 2 - 1
        position += args.batch_size
        loss = loss_fn(model, scheduler, clean, args)
        optimizer.zero_grad()
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.step(model.parameters())
        losses.append(loss.item())
        step += 1
        if step % 100 == 0:
            print(f"  step {step}, {elapsed / 60:.1f} min, loss {sum(losses[-100:]) / 100:.4f}", flush=True)
    train_s = time.perf_counter() - start
    if ema is not None:
        sampled = copy.deepcopy(model)
        ema.copy_to(sampled.parameters())
    else:
        sampled = model
    return sampled.eval(), scheduler, step, train_s, sum(losses[-100:]) / max(1, len(losses[-100:]))


@torch.no_grad()
def sample(model, train_scheduler: DDPMScheduler, args: argparse.Namespace, kind: str, steps: int,
           batch_size: int = 500) -> torch.Tensor:
    """args.n_samples images in [0, 1] with one sampler (DDIM and DPM-Solver++ use trailing timestep spacing)."""
    config = dict(train_scheduler.config)
    kinds = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
             "sde": DPMSolverMultistepScheduler}
    options = {} if kind == "ddpm" else {"timestep_spacing": "trailing"}
    if kind == "sde":  # the stochastic DPM-Solver++ (SDE variant)
        options["algorithm_type"] = "sde-dpmsolver++"
    scheduler = kinds[kind].from_config(config, **options)
    generator = torch.Generator().manual_seed(args.seed + 1)
    out = []
    for first in range(0, args.n_samples, batch_size):
        n = min(batch_size, args.n_samples - first)
        x = torch.randn(n, 1, 28, 28, generator=generator) * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                prediction = model(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(prediction.float(), t, x, generator=generator).prev_sample
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    return torch.cat(out)


def print_table() -> None:
    """Markdown table of every logged run."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    print("| run | recipe | params | s/step | steps | img/s | sampler | confident % | balanced "
          "| FD / test floor | FD ratio (old measure) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "measure" in r:  # random reference draws: FD over the test-vs-test floor, mean ± sd
            new, old = f"{r['fd_over_floor']:.2f} ± {r['fd_over_floor_sd']:.2f}", "–"
        else:  # logged before: first n test digits as reference, divided by training-vs-test (biased)
            new, old = "–", f"{r['fd_ratio']:.2f}"
        timed = r.get("timed", True)  # a run that shared its CPU logs "timed": false
        speed = f"{r['s_per_step']:.2f} | " if timed else "– | "
        rate = f"{r['images_per_s']:.0f} | " if timed else "– | "
        confident = f"{100 * r['confident']:.1f}" + (f" ± {100 * r['confident_sd']:.1f}" if "confident_sd" in r else "")
        print(f"| {r['name']} | {r['recipe']} | {r['params'] / 1e6:.2f} M | {speed}{r['steps']} | "
              f"{rate}{r['sampler']} | {confident} | "
              f"{'yes' if r['balanced'] else 'no'} | {new} | {old} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print_table()
        return 0
    if not os.environ.get("COURSE_DATA_DIR"):
        print("note: COURSE_DATA_DIR is not set, so MNIST comes from the Hugging Face Hub", file=sys.stderr)
    wall_start = time.perf_counter()
    images = mnist_tensors("train")[0]
    classifier = load_mnist_classifier(progress=False)
    if args.load_model:
        model = UNet2DModel.from_pretrained(args.load_model).eval()
        scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=args.beta_schedule,
                                  prediction_type=args.prediction_type)
        info = json.loads((args.load_model / "run.json").read_text())
        steps, train_s, last_loss = info["steps"], info["train_s"], info["last_loss"]
    else:
        model, scheduler, steps, train_s, last_loss = train(args, images)
    if args.save_model:
        model.save_pretrained(args.save_model)
        (args.save_model / "run.json").write_text(json.dumps(
            {"steps": steps, "train_s": train_s, "last_loss": last_loss}))
    recipe = (f"ch {args.channels}, attn {args.attention}, lpb {args.layers_per_block}, bs {args.batch_size}, "
              f"lr {args.lr:g} {args.lr_schedule}, warmup {args.warmup:g}, clip {args.grad_clip:g}, "
              f"EMA {args.ema_decay:g}, {args.beta_schedule}, {args.prediction_type}"
              f"{f', min-SNR {args.min_snr_gamma:g}' if args.min_snr_gamma else ''}, {args.precision}")
    for kind, n_steps in args.samplers:
        start = time.perf_counter()
        samples = sample(model, scheduler, args, kind, n_steps)
        sample_s = time.perf_counter() - start
        if args.save_samples:
            path = args.save_samples
            if len(args.samplers) > 1:
                path = path.with_name(f"{path.stem}_{kind}{n_steps}{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(samples, path)
        quality = score_mnist_samples(samples, classifier, sample_seed=args.seed + 1)
        record = {
            "name": args.name, "recipe": recipe, "params": sum(p.numel() for p in model.parameters()),
            "minutes": args.minutes, "steps": steps, "s_per_step": train_s / max(1, steps),
            "images_per_s": steps * args.batch_size / train_s, "last_loss": last_loss,
            "sampler": f"{kind} {n_steps}", "sample_s": sample_s,
            "confident": quality.confidence.confident_share, "balanced": quality.confidence.balanced,
            "class_shares": quality.confidence.class_shares, **quality.summary(),
            "measure": "score_mnist_samples: random test draws, FD over the test-vs-test floor",
            "wall_s": time.perf_counter() - wall_start,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"),
        }
        print(f"{args.name}: {record['params'] / 1e6:.2f} M params, {record['s_per_step']:.3f} s/step, "
              f"{record['images_per_s']:.0f} img/s, {steps} steps in {train_s / 60:.1f} min, loss {last_loss:.4f}, "
              f"{record['sampler']} {sample_s:.0f} s, confident {100 * record['confident']:.1f} %, "
              f"balanced {record['balanced']}, FD / test floor {quality.fd_over_floor}, wall {record['wall_s'] / 60:.1f} min",
              flush=True)
        print(quality, flush=True)
        if not args.no_log:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
