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


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One COURSE_CACHE_DIR for the smoke runs: the real emoji's features once."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("attention", ["coarse", "fine"])
def test_smoke_run_logs_both_sizes_a_psnr_curve_and_unet_fids(
        attention, data_dir, shared_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(shared_cache))
    script = load_script()
    results = tmp_path / "latent_sizes.jsonl"
    assert script.main(["--smoke", "--name", "smoke", "--attention", attention,
                        "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"UNet ({attention} attention, batch 1) step" in out
    assert "smoke: latent UNet (" in out and "FID at N = 4 (w = 4)" in out
    record = json.loads(results.read_text())
    assert record["smoke"] is True and record["name"] == "smoke"
    assert record["attention"] == attention and record["vae_batch_size"] == 1
    assert set(record["unet"]) == {"pixels", "latents"}
    assert all(cost["wall_s"] > 0 and cost["params"] > 0
               for cost in record["unet"].values())
    curve = record["vae"]["curve"]
    # two steps: the first passes the 1/4 and 1/2 checkpoints, the second the rest
    assert [point["share"] for point in curve] == [0.5, 1.0]
    assert [point["steps"] for point in curve] == [1, 2]
    assert all(5 < point["psnr_db"] < 60 and point["latent_std"] > 0 for point in curve)
    fid = record["unet_fid"]
    assert {"params", "steps", "batch_size", "scaling_factor", "fid_n", "real_n",
            "floor", "curve"} <= set(fid)
    assert (fid["steps"], fid["batch_size"], fid["fid_n"]) == (2, 2, 4)
    assert fid["real_n"] == 8
    assert fid["params"] > 0 and fid["scaling_factor"] > 0
    assert fid["train_images"] == 16 - record["vae"]["held_out"]
    assert fid["floor"]["fid"] > 0 and fid["floor"]["fid_sd"] >= 0
    # the same checkpoints as the VAE's: two steps pass 1/2, then 1
    assert [point["share"] for point in fid["curve"]] == [0.5, 1.0]
    assert [point["steps"] for point in fid["curve"]] == [1, 2]
    assert all(set(point) >= {"wall_min", "cpu_min", "fid", "fid_sd"}
               and point["fid"] > 0 and point["fid_sd"] >= 0
               for point in fid["curve"])
    assert script.main(["--table", "--results", str(results)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 7 and table[3] == ""
    assert table[2].startswith(f"| smoke | 8,16,16 | {attention} + pooled | 1 |")
    assert table[4].startswith("| run | UNet ch | attention | UNet batch | steps |")
    assert table[6].startswith(f"| smoke | 8,16,16 | {attention} + pooled | 2 | 2 |")


def test_defaults_build_chapter_7s_unet():
    script = load_script()
    args = script.parse_args([])
    assert (args.unet_channels, args.attention, args.unet_heads) == (
        (32, 64, 128), "coarse", 8)
    assert (args.batch_size, args.vae_batch_size) == (16, 16)
    # no FID stage unless asked for; then chapter 7's UNet recipe
    assert (args.unet_minutes, args.unet_train_steps) == (0, 0)
    assert (args.unet_batch_size, args.unet_lr, args.fid_n, args.guidance) == (
        64, 1e-3, 200, 4.0)
    unet = script.make_unet(4, 16, args.unet_channels, args.unet_heads, args.attention,
                            args.pooled_text)
    # the pooled prompt vector joins the time embedding, as in chapter 7
    assert unet.config.addition_embed_type == "text"
    assert unet.config.addition_embed_type_num_heads == 8
    assert script.parse_args(["--no-pooled-text"]).pooled_text is False
    # coarse: no attention at the full side, attention at half and a quarter of it
    assert unet.config.down_block_types == (
        "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == (
        "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    assert unet.config.norm_num_groups == 32
    assert unet.config.cross_attention_dim == 384
    assert unet.config.attention_head_dim == 8


def test_fine_attention_is_all_but_the_last_down_block():
    unet = load_script().make_unet(3, 64, (8, 16, 16), 1, "fine")
    assert unet.config.down_block_types == (
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == (
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def test_table_reads_records_from_before_the_attention_option(tmp_path, capsys):
    """Without `attention` and `vae_batch_size`: the fine layout, the UNet's batch."""
    script = load_script()
    cost = {"wall_s": 2.0, "cpu_s": 4.0, "params": 10}
    point = {"share": 1.0, "steps": 5, "wall_min": 1.0, "cpu_min": 2.0,
             "psnr_db": 20.0, "psnr_sd_db": 1.0, "latent_std": 0.5}
    old = {"name": "old", "smoke": False, "batch_size": 32,
           "unet_channels": "32,64,64", "unet_heads": 8,
           "unet": {"pixels": cost, "latents": {**cost, "wall_s": 0.5}},
           "vae_channels": "32,64,64", "kl_weight": 1e-6, "vae_lr": 5e-4,
           "vae_minutes": 5.0, "vae_steps": 0,
           "vae": {"params": 10, "steps": 5, "held_out": 2, "curve": [point]}}
    results = tmp_path / "latent_sizes.jsonl"
    results.write_text(json.dumps(old) + "\n")
    assert script.main(["--table", "--results", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # no UNet FID: no second table
    assert lines[2] == ("| old | 32,64,64 | fine | 32 | 2.000 | 0.500 | 4.0 | "
                        "32,64,64, 1e-06 | 32 | 5 | 2.0 | 20.0 (± 1.0) | 0.50 |")
    # a record with a UNet FID after it: its row alone in the second table
    point = {"share": 0.5, "steps": 10, "wall_min": 1.0, "cpu_min": 1.5,
             "fid": 150.26, "fid_sd": 4.0}
    new = {**old, "name": "new", "attention": "coarse", "vae_batch_size": 16,
           "unet_fid": {"params": 10, "steps": 20, "batch_size": 64, "fid_n": 200,
                        "floor": {"fid": 30.0, "fid_sd": 2.0},
                        "curve": [point, {**point, "share": 1.0, "steps": 20,
                                          "cpu_min": 3.0, "fid": 99.5}]}}
    results.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    assert script.main(["--table", "--results", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[4] == ""
    assert lines[7] == ("| new | 32,64,64 | coarse | 64 | 20 | 3.0 | 200 | "
                        "150.3 ± 4.0, 99.5 ± 4.0 | 30.0 ± 2.0 |")


@pytest.mark.parametrize("argv, message", [
    (["--vae-channels", "8,16"], "expected 3 blocks"),
    (["--unet-channels", "8,x"], "comma-separated positive ints"),
    (["--vae-minutes", "0"], "expected > 0"),
    (["--held-out", "1.5"], "share in"),
    (["--vae-batch-size", "0"], "--vae-batch-size"),
    (["--attention", "middle"], "invalid choice"),
    (["--unet-minutes", "-1"], "--unet-minutes"),
    (["--unet-batch-size", "0"], "--unet-batch-size"),
    (["--fid-n", "1"], "--fid-n >= 2"),
    (["--fid-n", "10", "--fid-real", "15"], ">= 2 x --fid-n"),
])
def test_bad_settings_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_script().parse_args(argv)
    assert message in capsys.readouterr().err
