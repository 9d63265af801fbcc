import os
import time

import pytest
import torch
from PIL import Image

from course_utils import CourseDataError, ImageTransform, data_source, load_course_dataset, pil_to_tensor


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
