"""benchmarks/latent_sizes.py runs end to end in its smoke mode (its figures unused)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "latent_sizes", ROOT / "benchmarks" / "latent_sizes.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclass looks itself up there
    spec.loader.exec_module(script)
    return script


def test_smoke_run_logs_both_sizes_and_a_psnr_curve(data_dir, tmp_path, capsys):
    script = load_script()
    results = tmp_path / "latent_sizes.jsonl"
    assert script.main(["--smoke", "--name", "smoke", "--results", str(results)]) == 0
    assert "UNet step" in capsys.readouterr().out
    record = json.loads(results.read_text())
    assert record["smoke"] is True and record["name"] == "smoke"
    assert set(record["unet"]) == {"pixels", "latents"}
    assert all(cost["wall_s"] > 0 and cost["params"] > 0
               for cost in record["unet"].values())
    curve = record["vae"]["curve"]
    # two steps: the first passes the 1/4 and 1/2 checkpoints, the second the rest
    assert [point["share"] for point in curve] == [0.5, 1.0]
    assert [point["steps"] for point in curve] == [1, 2]
    assert all(5 < point["psnr_db"] < 60 and point["latent_std"] > 0 for point in curve)
    assert script.main(["--table", "--results", str(results)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and table[2].startswith("| smoke | 8,16,16 |")


@pytest.mark.parametrize("argv, message", [
    (["--vae-channels", "8,16"], "expected 3 blocks"),
    (["--unet-channels", "8,x"], "comma-separated positive ints"),
    (["--vae-minutes", "0"], "expected > 0"),
    (["--held-out", "1.5"], "share in"),
])
def test_bad_settings_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_script().parse_args(argv)
    assert message in capsys.readouterr().err
