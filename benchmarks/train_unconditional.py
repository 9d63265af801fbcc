"""Inception FID per CPU minute for chapter 3's training loop (course_utils.training.train, the chapter's code).

One run: time a few steps of the recipe, set max_steps so that training fills --minutes, train, sample N images
from the EMA weights (and, with --raw, from the raw weights) with SDE DPM-Solver++, and score them by Fréchet
distance in Inception-v3 features against the dataset's real images at the same size. Prints one line and appends
the figures as JSON to benchmarks/results/train_unconditional.jsonl; `--table` prints the Markdown table.

    COURSE_DATA_DIR=../shared/data python benchmarks/train_unconditional.py --name emoji --minutes 9
    COURSE_DATA_DIR=../shared/data python benchmarks/train_unconditional.py --name cifar --minutes 9 \\
        --dataset uoft-cs/cifar10 --old-cpu-preset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from course_utils.data import data_source, load_course_dataset
from course_utils.metrics import frechet_distance, inception_features, real_inception_features
from course_utils.sampling import sample_in_batches
from course_utils.training import PRESETS, make_noise_scheduler, train

RESULTS = Path(__file__).resolve().parent / "results" / "train_unconditional.jsonl"

# The cpu preset chapter 3 had before this benchmark: ε-prediction, attention at 8x8, AdamW 4e-4.
OLD_CPU_PRESET = dict(
    block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), prediction_type="epsilon",
    learning_rate=4e-4, warmup_steps=50, ema_decay=0.999, ema_power=2 / 3,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="run")
    p.add_argument("--dataset", default="huggan/smithsonian_butterflies_subset")
    p.add_argument("--minutes", type=float, default=9.0, help="training wall time")
    p.add_argument("--old-cpu-preset", action="store_true", help="the recipe chapter 3 used before")
    p.add_argument("--channels", help="block_out_channels, comma-separated")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"])
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--ema-power", type=float)
    p.add_argument("--mixed-precision", choices=["no", "bf16"])
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--n-real", type=int, default=1232, help="reference images (the emoji set has 1232)")
    p.add_argument("--sampler-steps", type=int, default=30)
    p.add_argument("--raw", action="store_true", help="also score the raw (non-EMA) weights")
    p.add_argument("--table", action="store_true", help="print the table of logged runs and exit")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace):
    config = PRESETS["cpu"].replace(checkpoint_every=0)
    if args.old_cpu_preset:
        config = config.replace(**OLD_CPU_PRESET)
    changes = {}
    if args.channels:
        changes["block_out_channels"] = tuple(int(c) for c in args.channels.split(","))
    for field, value in [("prediction_type", args.prediction_type), ("learning_rate", args.lr),
                         ("batch_size", args.batch_size), ("ema_decay", args.ema_decay),
                         ("ema_power", args.ema_power),
                         ("mixed_precision", args.mixed_precision)]:
        if value is not None:
            changes[field] = value
    return config.replace(**changes)


def sample(model, config, n: int, steps: int) -> torch.Tensor:
    """n samples in [0, 1] with SDE DPM-Solver++ (trailing timesteps), 250 at a time."""
    scheduler = DPMSolverMultistepScheduler.from_config(
        make_noise_scheduler(config).config, algorithm_type="sde-dpmsolver++", timestep_spacing="trailing")
    return sample_in_batches(model, scheduler, n, steps, seed=1000)


def table() -> str:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    lines = ["| run | data | recipe | params | s/step | img/s | steps | FID EMA | FID raw | train min | total min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        raw = f"{r['fid_raw']:.1f}" if r.get("fid_raw") is not None else "–"
        lines.append(f"| {r['name']} | {r['data']} | {r['recipe']} | {r['params'] / 1e6:.2f} M | "
                     f"{r['seconds_per_step']:.3f} | {r['images_per_second']:.0f} | {r['steps']} | "
                     f"{r['fid_ema']:.1f} | {raw} | {r['train_minutes']:.1f} | {r['total_minutes']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(table())
        return 0
    start = time.perf_counter()
    config = config_from(args)
    dataset = load_course_dataset(args.dataset, split="train")
    timing = train(config.replace(max_steps=12, warmup_steps=2), dataset, progress=False)
    config = config.replace(max_steps=max(20, int(args.minutes * 60 / timing.seconds_per_step)))
    print(f"{args.name}: {timing.seconds_per_step:.3f} s/step measured, training {config.max_steps} steps")
    result = train(config, dataset)
    train_minutes = result.seconds_per_step * config.max_steps / 60
    real = real_inception_features(args.dataset, config.image_size, args.n_real)
    ema_samples = sample(result.ema_model, config, args.n_samples, args.sampler_steps)
    fid_ema = frechet_distance(inception_features(ema_samples), real)
    fid_raw = None
    if args.raw:
        fid_raw = frechet_distance(inception_features(sample(result.model, config, args.n_samples,
                                                             args.sampler_steps)), real)
    recipe = (f"{config.prediction_type}, ch {','.join(map(str, config.block_out_channels))}, "
              f"attn {'yes' if any('Attn' in b for b in config.down_block_types) else 'no'}, "
              f"lr {config.learning_rate:g}, bs {config.batch_size}, "
              f"EMA power {config.ema_power:.2f} cap {config.ema_decay}, "
              f"{config.mixed_precision if config.mixed_precision != 'no' else 'fp32'}")
    row = {
        "name": args.name, "data": data_source(args.dataset), "recipe": recipe,
        "params": sum(p.numel() for p in result.model.parameters()),
        "seconds_per_step": result.seconds_per_step,
        "images_per_second": config.batch_size / result.seconds_per_step, "steps": config.max_steps,
        "final_loss_mean_50": float(np.mean(result.losses[-50:])),
        "fid_ema": fid_ema, "fid_raw": fid_raw, "n_samples": args.n_samples, "n_real": len(real),
        "sampler": f"sde-dpmsolver++ {args.sampler_steps} trailing",
        "train_minutes": train_minutes, "total_minutes": (time.perf_counter() - start) / 60,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    torch.save(ema_samples[:64], Path(os.environ.get("COURSE_CACHE_DIR", ".")) / f"bench_{args.name}_samples.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
