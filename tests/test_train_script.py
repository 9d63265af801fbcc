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
    assert "3 steps, final loss" in done.stdout
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipeline.unet.config.sample_size == 16
    assert (tmp_path / "checkpoint" / "checkpoint.pt").is_file()
    # resuming a finished run trains nothing more and still saves
    again = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "3 steps" in again.stdout
