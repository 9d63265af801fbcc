import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from course_utils import (CourseDataError, ImageTransform, data_source,
                          load_course_dataset, model_source, pil_to_tensor)


def test_mnist_mirror_loads_with_hub_columns(data_dir):
    mnist = load_course_dataset("ylecun/mnist", split="train")
    assert len(mnist) == 60_000
    first = mnist[0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (28, 28)
    assert first["label"] == 5  # the README's first training label
    assert mnist.features["label"].names == [str(i) for i in range(10)]
    assert len(load_course_dataset("ylecun/mnist", split="test")) == 10_000
    assert "offline mirror" in data_source("ylecun/mnist")


def test_butterfly_stand_in_uses_the_image_column(data_dir):
    ds = load_course_dataset("huggan/smithsonian_butterflies_subset", split="train")
    # offline, the butterflies' stand-in is the emoji set: one object on a light ground
    assert len(ds) == 1232 and "image" in ds.column_names
    first = ds[0]["image"]
    assert first.size == (64, 64) and first.mode == "RGB"
    assert first.getpixel((0, 0)) == (255, 255, 255)  # the white ground
    assert "Noto emoji" in data_source("huggan/smithsonian_butterflies_subset")
    assert "not butterflies" in data_source("huggan/smithsonian_butterflies_subset")
    # the earlier stand-in stays loadable (the benchmark compares the two), under the same column name
    cifar = load_course_dataset("uoft-cs/cifar10", split="train")
    assert len(cifar) == 5000 and cifar[0]["image"].size == (32, 32) and "img" not in cifar.column_names


def test_mirror_errors_name_what_to_fix(data_dir, tmp_path, monkeypatch):
    with pytest.raises(CourseDataError, match="no offline copy"):
        load_course_dataset("someone/unknown")
    with pytest.raises(ValueError, match="split"):
        load_course_dataset("huggan/smithsonian_butterflies_subset", split="test")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(CourseDataError, match="COURSE_DATA_DIR"):
        load_course_dataset("ylecun/mnist")


def test_offline_without_mirror_fails_fast_and_clearly(monkeypatch):
    # The test machines reach no hub: the loader must say what to set within seconds, not retry for 20 s.
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    import course_utils.data as data

    if data._hub_reachable(timeout=2):
        pytest.skip("this machine can reach the Hugging Face Hub")
    start = time.perf_counter()
    with pytest.raises(CourseDataError, match="COURSE_DATA_DIR"):
        load_course_dataset("ylecun/mnist")
    assert time.perf_counter() - start < 5
    start = time.perf_counter()
    assert data.hub_available(timeout=2) is False  # what chapter 3 asks before from_pretrained
    assert time.perf_counter() - start < 5


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _no_hub_settings(monkeypatch: pytest.MonkeyPatch, offline_flag: bool) -> None:
    """Neither a mirror nor an offline flag, or the flag alone."""
    for name in ("COURSE_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    if offline_flag:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_model_mirror_maps_the_hub_id_to_its_local_folder(data_dir):
    path = model_source(MINILM)
    assert path == str((data_dir / "models" / "all-MiniLM-L6-v2").resolve())
    assert (Path(path) / "config.json").is_file()


def test_model_mirror_missing_the_model_names_the_folder_expected(
        tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    expected = tmp_path.resolve() / "models" / "all-MiniLM-L6-v2"
    with pytest.raises(FileNotFoundError, match="models does not exist") as error:
        model_source(MINILM)
    assert str(expected) in str(error.value)
    (tmp_path / "models" / "some-other-model").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds some-other-model") as error:
        model_source(MINILM)
    assert str(expected) in str(error.value) and MINILM in str(error.value)


@pytest.mark.parametrize("bad, error", [
    (3, TypeError), (None, TypeError), ("", ValueError), ("a/b/c", ValueError),
    ("../models", ValueError), ("name with spaces", ValueError),
])
def test_model_source_rejects_what_is_not_a_hub_id(bad, error, data_dir):
    with pytest.raises(error, match="hub_id must be a Hub model id"):
        model_source(bad)


@pytest.mark.parametrize("offline_flag", [False, True], ids=["unreachable", "flag"])
def test_model_source_offline_without_mirror_fails_fast_and_clearly(
        offline_flag, tmp_path, monkeypatch):
    import huggingface_hub.constants

    import course_utils.data as data

    _no_hub_settings(monkeypatch, offline_flag)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    if not offline_flag and data._hub_reachable(timeout=2):
        pytest.skip("this machine can reach the Hugging Face Hub")
    start = time.perf_counter()
    with pytest.raises(CourseDataError, match="COURSE_DATA_DIR"):
        model_source(MINILM)
    assert time.perf_counter() - start < 5


def test_model_source_gives_the_hub_id_when_the_hub_or_the_cache_has_it(
        tmp_path, monkeypatch):
    import huggingface_hub.constants

    import course_utils.data as data

    _no_hub_settings(monkeypatch, offline_flag=False)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=3.0: True)
    assert model_source(MINILM) == MINILM  # Colab: from_pretrained downloads it
    # Offline flag set, model in the Hugging Face cache (its layout, made by hand):
    _no_hub_settings(monkeypatch, offline_flag=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    assert model_source(MINILM) == MINILM
    # A diffusers pipeline has model_index.json at the top instead.
    pipeline = tmp_path / "models--someone--tiny-pipeline" / "snapshots" / ("0" * 40)
    pipeline.mkdir(parents=True)
    (pipeline.parents[1] / "refs").mkdir()
    (pipeline.parents[1] / "refs" / "main").write_text("0" * 40)
    (pipeline / "model_index.json").write_text("{}")
    assert model_source("someone/tiny-pipeline") == "someone/tiny-pipeline"


def test_mirrored_text_encoder_gives_one_384_vector_per_token(data_dir):
    # One short batch: the shorter caption is padded, the mask marks its padding.
    from transformers import AutoModel, AutoTokenizer

    path = model_source(MINILM)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(["grinning face", "smiling cat face with heart-shaped eyes"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = encoder(**batch).last_hidden_state
    n_tokens = batch["input_ids"].shape[1]
    assert tokens.shape == (2, n_tokens, 384) and torch.isfinite(tokens).all()
    mask = batch["attention_mask"]
    assert mask[0].sum() < mask[1].sum() == n_tokens  # the first caption is padded


def test_pil_to_tensor_shapes_and_range():
    grey = Image.new("L", (5, 4), color=255)
    rgb = Image.new("RGB", (5, 4), color=(0, 128, 255))
    assert pil_to_tensor(grey).shape == (1, 4, 5) and pil_to_tensor(grey).max() == 1.0
    t = pil_to_tensor(rgb)
    assert t.shape == (3, 4, 5) and t.dtype == torch.float32
    assert t[0].max() == 0 and t[2].min() == 1
    with pytest.raises(TypeError, match="PIL"):
        pil_to_tensor(torch.zeros(3, 4, 5))


def _half_black_image() -> Image.Image:
    image = Image.new("RGB", (8, 8), color=(0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 8))  # left half white
    return image


def test_image_transform_resizes_scales_and_flips():
    batch = {"image": [_half_black_image(), _half_black_image()], "label": [1, 2]}
    out = ImageTransform(size=16, mode="RGB", flip_prob=0.0)(batch)
    images = out["images"]
    assert out["label"] == [1, 2] and "image" not in out
    assert all(im.shape == (3, 16, 16) for im in images)
    assert images[0].min() >= -1 and images[0].max() <= 1
    assert images[0][:, :, 0].mean() > 0.9 and images[0][:, :, -1].mean() < -0.9  # white on the left
    flipped = ImageTransform(size=16, mode="RGB", flip_prob=1.0)(batch)["images"][0]
    assert torch.equal(flipped, images[0].flip(-1))
    unit = ImageTransform(size=None, mode="L", value_range=(0, 1))(batch)["images"][0]
    assert unit.shape == (1, 8, 8) and unit.min() == 0 and unit.max() == 1


def test_image_transform_random_flip_is_seeded():
    batch = {"image": [_half_black_image()] * 40}
    a = ImageTransform(flip_prob=0.5, seed=1)(batch)["images"]
    b = ImageTransform(flip_prob=0.5, seed=1)(batch)["images"]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    n_flipped = sum(bool(x[:, :, 0].mean() < 0) for x in a)
    assert 5 < n_flipped < 35


@pytest.mark.parametrize("kwargs, error", [
    ({"size": 0}, ValueError), ({"size": 3.5}, ValueError), ({"mode": "CMYK"}, ValueError),
    ({"flip_prob": 2.0}, ValueError), ({"value_range": (0, 255)}, ValueError),
])
def test_image_transform_rejects_bad_settings(kwargs, error):
    with pytest.raises(error):
        ImageTransform(**kwargs)


def test_image_transform_rejects_bad_batches():
    with pytest.raises(KeyError, match="image"):
        ImageTransform()({"img": [_half_black_image()]})
    with pytest.raises(TypeError, match="PIL"):
        ImageTransform()({"image": [torch.zeros(3, 8, 8)]})


def test_cache_dir_is_configurable_and_validated(tmp_path, monkeypatch):
    from course_utils import cache_dir

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    path = cache_dir("ch02_unet")
    assert path == tmp_path / "ch02_unet" and path.is_dir()
    monkeypatch.delenv("COURSE_CACHE_DIR")
    monkeypatch.chdir(tmp_path)
    assert cache_dir("x") == tmp_path / ".course_cache" / "x"
    for bad in ("", "../up", ".hidden", 3):
        with pytest.raises(ValueError):
            cache_dir(bad)
