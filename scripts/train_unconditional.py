"""Train an unconditional DDPM on a course dataset with chapter 3's code (course_utils.training).

On a CPU:             python scripts/train_unconditional.py --preset cpu --max-steps 500
On one or many GPUs:  accelerate launch scripts/train_unconditional.py --preset gpu
On two CPU processes: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 scripts/train_unconditional.py --preset tiny
The trained pipeline (EMA weights) is saved with save_pretrained and reloads with DDPMPipeline.from_pretrained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accelerate import Accelerator
from diffusers import DDPMPipeline

from course_utils.data import load_course_dataset
from course_utils.training import PRESETS, make_noise_scheduler, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--dataset", default="huggan/smithsonian_butterflies_subset")
    parser.add_argument("--max-images", type=int, help="train on the first N images only")
    parser.add_argument("--output-dir", type=Path, default=Path(".course_cache/train_unconditional"))
    parser.add_argument("--max-steps", type=int, help="override the preset's number of optimizer steps")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size (per process)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="override the preset's precision")
    parser.add_argument("--gradient-accumulation-steps", type=int, help="override the preset's accumulation")
    parser.add_argument("--checkpoint-every", type=int, help="override the preset's checkpoint interval")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --output-dir")
    parser.add_argument("--stop-at-step", type=int, help="stop early (as a disconnect would), schedule unchanged")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {name: value for name, value in [
        ("max_steps", args.max_steps), ("batch_size", args.batch_size), ("mixed_precision", args.mixed_precision),
        ("gradient_accumulation_steps", args.gradient_accumulation_steps),
        ("checkpoint_every", args.checkpoint_every)] if value is not None}
    config = PRESETS[args.preset].replace(**overrides)
    accelerator = Accelerator(mixed_precision=config.mixed_precision,
                              gradient_accumulation_steps=config.gradient_accumulation_steps)
    if accelerator.device.type == "cpu" and config.mixed_precision == "fp16":
        accelerator.print("fp16 needs a GPU; use --mixed-precision no (or bf16) on a CPU")
        return 2
    dataset = load_course_dataset(args.dataset, split="train")
    if args.max_images:
        dataset = dataset.select(range(min(args.max_images, len(dataset))))
    result = train(config, dataset, checkpoint_dir=args.output_dir / "checkpoint", resume=args.resume,
                   stop_at_step=args.stop_at_step, accelerator=accelerator)
    if accelerator.is_main_process:
        pipeline = DDPMPipeline(unet=result.ema_model, scheduler=make_noise_scheduler(config))
        pipeline.save_pretrained(args.output_dir / "pipeline")
        (args.output_dir / "losses.json").write_text(json.dumps(result.losses))
        accelerator.print(f"{len(result.losses)} steps on {accelerator.num_processes} process(es), final loss "
                          f"{result.losses[-1]:.4f}, {result.seconds_per_step:.2f} s/step; "
                          f"pipeline saved to {args.output_dir / 'pipeline'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
