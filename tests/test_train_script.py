import subprocess
import sys
from pathlib import Path

from diffusers import DDPMPipeline

ROOT = Path(__file__).resolve().parents[1]


def test_script_trains_on_the_stand_in_data_and_saves_a_pipeline(data_dir, tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "train_unconditional.py"), "--preset", "tiny",
               "--max-steps", "3", "--output-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 steps on 1 process(es), final loss" in done.stdout
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipeline.unet.config.sample_size == 16
    assert (tmp_path / "checkpoint" / "checkpoint.pt").is_file()
    # resuming a finished run trains nothing more and still saves
    again = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "3 steps" in again.stdout


def _two_processes(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Run the script on two CPU processes (gloo), as `accelerate launch` runs it on two GPUs."""
    import os

    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "scripts" / "train_unconditional.py"), "--preset", "tiny", "--max-images", "32",
               "--max-steps", "5", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_two_processes_finish_with_the_right_step_count_and_resume_exactly(data_dir, tmp_path):
    import json

    import torch

    # 32 images, batch 8 per process, 2 processes: 2 steps per epoch, so 5 steps cross two epochs
    whole = _two_processes(tmp_path, "--output-dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "5 steps on 2 process(es)" in whole.stdout
    state = torch.load(tmp_path / "whole" / "checkpoint" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 5 and state["num_processes"] == 2
    assert state["lr_scheduler"]["last_epoch"] == 5 and state["ema"]["optimization_step"] == 5
    assert all(int(s["step"]) == 5 for s in state["optimizer"]["state"].values())
    assert {p.name for p in (tmp_path / "whole" / "checkpoint").iterdir()} >= {"generator_0.pt", "generator_1.pt"}

    # stopped mid-epoch at step 3, then resumed: the same losses as the uninterrupted run
    split = tmp_path / "split"
    first = _two_processes(tmp_path, "--output-dir", str(split), "--stop-at-step", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _two_processes(tmp_path, "--output-dir", str(split), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = json.loads((split / "losses.json").read_text())
    uninterrupted = json.loads((tmp_path / "whole" / "losses.json").read_text())
    assert len(resumed) == 5
    assert resumed == __import__("pytest").approx(uninterrupted, rel=1e-5)
