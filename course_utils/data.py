"""Course datasets and models (Hub in Colab, a mirror offline) and image transforms."""

from __future__ import annotations

import os
import random
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

DATA_DIR_ENV = "COURSE_DATA_DIR"
CACHE_DIR_ENV = "COURSE_CACHE_DIR"
HUB_HOST = "huggingface.co"
MODELS_DIR = "models"  # model copies: COURSE_DATA_DIR/models/<name>
# A model is in the Hugging Face cache when one of these files is.
CACHED_MODEL_FILES = ("config.json", "model_index.json")


class CourseDataError(RuntimeError):
    """A course dataset could not be loaded; the message says what to set."""


@dataclass(frozen=True)
class Mirror:
    """Where the offline copy of one Hub dataset lives under `COURSE_DATA_DIR`."""

    files: dict[str, str]
    rename: dict[str, str]
    note: str


MIRRORS: dict[str, Mirror] = {
    "ylecun/mnist": Mirror(
        files={"train": "mnist/train.parquet", "test": "mnist/test.parquet"},
        rename={},
        note="MNIST (the full 60 000 / 10 000 images)",
    ),
    "huggan/smithsonian_butterflies_subset": Mirror(
        files={"train": "emoji/train.parquet"},
        rename={},
        note="Noto emoji, a stand-in (not butterflies)",
    ),
    # The earlier stand-in, kept for the benchmark that compares the two.
    "uoft-cs/cifar10": Mirror(
        files={"train": "cifar10_subset/train.parquet"},
        rename={"img": "image"},
        note="5000 of the CIFAR-10 training photos (500 per class), 32x32",
    ),
}
MIRRORS["mnist"] = MIRRORS["ylecun/mnist"]


def data_source(name: str) -> str:
    """Say in words where `load_course_dataset(name)` reads from right now."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir and name in MIRRORS:
        return f"offline mirror in {DATA_DIR_ENV}: {MIRRORS[name].note}"
    return f"Hugging Face Hub: {name}"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Try one TCP connection to the Hub, giving up after `timeout` seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _offline_flags_set() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_available(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub can be reached now and no offline flag is set."""
    return not _offline_flags_set() and _hub_reachable(timeout)


def _no_hub_error(name: str) -> CourseDataError:
    """The error for a download of `name` when the Hub cannot be reached."""
    return CourseDataError(
        f"Cannot reach the Hugging Face Hub ({HUB_HOST}) to download {name!r}. "
        f"Connect to the internet, or set {DATA_DIR_ENV} to a folder with the course's "
        f"offline copies (in this repository: export {DATA_DIR_ENV}=../shared/data)."
    )


def _load_mirror(name: str, split: str, data_dir: str):
    from datasets import load_dataset

    if name not in MIRRORS:
        known = sorted(k for k in MIRRORS if "/" in k)
        raise CourseDataError(
            f"{DATA_DIR_ENV} is set, but the course has no offline copy of {name!r}. "
            f"Offline copies exist for: {', '.join(known)}. Unset {DATA_DIR_ENV} to use the Hub."
        )
    mirror = MIRRORS[name]
    if split not in mirror.files:
        raise ValueError(f"split must be one of {sorted(mirror.files)} for {name!r}, got {split!r}")
    path = Path(data_dir).expanduser() / mirror.files[split]
    if not path.is_file():
        raise CourseDataError(
            f"{DATA_DIR_ENV}={data_dir!r} has no file {mirror.files[split]!r}. "
            f"Point {DATA_DIR_ENV} at the folder that holds mnist/, emoji/ and cifar10_subset/ "
            f"(in this repository's tests: ../shared/data)."
        )
    dataset = load_dataset("parquet", data_files={split: str(path)}, split=split)
    for old, new in mirror.rename.items():
        dataset = dataset.rename_column(old, new)
    return dataset


def load_course_dataset(name: str = "ylecun/mnist", split: str = "train"):
    """Load a course dataset: the local mirror if `COURSE_DATA_DIR` is set, else the Hugging Face Hub."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a dataset id such as 'ylecun/mnist', got {name!r}")
    if not isinstance(split, str) or not split:
        raise TypeError(f"split must be a string such as 'train', got {split!r}")
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        return _load_mirror(name, split, data_dir)

    from datasets import load_dataset

    # Without this check, datasets retries for ~20 s and then fails deep inside its own code.
    if not _offline_flags_set() and not _hub_reachable():
        raise _no_hub_error(name)
    try:
        return load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many kinds; say what to do instead
        raise CourseDataError(
            f"Loading {name!r} (split {split!r}) from the Hugging Face Hub failed: "
            f"{type(exc).__name__}: {exc}. Offline, set {DATA_DIR_ENV} to the folder with the "
            f"course's offline copies (in this repository: ../shared/data)."
        ) from exc


def model_source(hub_id: str, timeout: float = 3.0) -> str:
    """Where `from_pretrained` should load the Hub model `hub_id` from right now.

    The model counterpart of `load_course_dataset`'s switch, for lines such as
    `AutoModel.from_pretrained(model_source("sentence-transformers/all-MiniLM-L6-v2"))`:

    * `COURSE_DATA_DIR` set: the offline copy, the folder
      `COURSE_DATA_DIR/models/<name>` where `<name>` is the part of `hub_id` after
      its slash (`sentence-transformers/all-MiniLM-L6-v2` ->
      `.../models/all-MiniLM-L6-v2`), as an absolute path.
    * otherwise `hub_id` itself: `from_pretrained` downloads it from the Hugging Face
      Hub, or, with an offline flag (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`) set,
      takes it from the Hugging Face cache (found there by its `config.json`, or a
      diffusers pipeline's `model_index.json`).

    Args:
        hub_id: a Hub model id, `"namespace/name"` or `"name"`.
        timeout: seconds to wait for the Hub to answer (DNS included) before saying
            it cannot be reached; used only without `COURSE_DATA_DIR`.

    Returns:
        The local folder (str) or `hub_id`.

    Raises:
        TypeError: `hub_id` is not a string.
        ValueError: `hub_id` is not a valid Hub model id
            (`huggingface_hub.utils.validate_repo_id`).
        FileNotFoundError: `COURSE_DATA_DIR` is set but has no folder for the model;
            the message names the folder expected and the models that are there.
        CourseDataError: no `COURSE_DATA_DIR`, and the Hub cannot be reached within
            `timeout` seconds, or an offline flag is set and the model is not in
            the Hugging Face cache; the message says to set `COURSE_DATA_DIR`.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(hub_id, str):
        raise TypeError(f"hub_id must be a Hub model id such as "
                        f"'sentence-transformers/all-MiniLM-L6-v2', got {hub_id!r}")
    try:
        validate_repo_id(hub_id)
    except ValueError as error:
        raise ValueError(f"hub_id must be a Hub model id such as "
                         f"'sentence-transformers/all-MiniLM-L6-v2', got {hub_id!r} "
                         f"({error})") from None
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        models = Path(data_dir).expanduser().resolve() / MODELS_DIR
        folder = models / hub_id.rsplit("/", 1)[-1]
        if not folder.is_dir():
            if models.is_dir():
                names = sorted(p.name for p in models.iterdir() if p.is_dir())
                there = f"{models} holds {', '.join(names) or 'no model folders'}"
            else:
                there = f"{models} does not exist"
            raise FileNotFoundError(
                f"{DATA_DIR_ENV}={data_dir!r} has no offline copy of {hub_id!r}: "
                f"expected the folder {folder}; {there}. Unset {DATA_DIR_ENV} to "
                f"download it from the Hub.")
        return str(folder)
    if not _offline_flags_set():
        if not _hub_reachable(timeout):
            raise _no_hub_error(hub_id)
    elif not any(isinstance(try_to_load_from_cache(hub_id, name), str)
                 for name in CACHED_MODEL_FILES):
        raise CourseDataError(
            f"An offline flag (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE) is set and "
            f"{hub_id!r} is not in the Hugging Face cache. Set {DATA_DIR_ENV} to a "
            f"folder with the course's offline copies (in this repository: export "
            f"{DATA_DIR_ENV}=../shared/data), or unset the flag to download it.")
    return hub_id


def cache_dir(name: str) -> Path:
    """A folder for saved models and checkpoints: `COURSE_CACHE_DIR/name`, by default `.course_cache/name`."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain folder name such as 'ch02_unet', got {name!r}")
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        root = Path(configured).expanduser()
    else:  # the repository's git-ignored .course_cache, also when a chapter runs from notebooks/
        here = Path.cwd()
        root = (here.parent if here.name == "notebooks" else here) / ".course_cache"
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float (C, H, W) tensor in [0, 1]."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class ImageTransform:
    """A `dataset.set_transform` function: resize, optional random flip, tensor in [-1, 1] or [0, 1]."""

    MODES = ("L", "RGB")
    RANGES = ((-1.0, 1.0), (0.0, 1.0))

    def __init__(
        self,
        size: int | None = None,
        mode: str = "RGB",
        flip_prob: float = 0.0,
        value_range: tuple[float, float] = (-1.0, 1.0),
        image_column: str = "image",
        output_column: str = "images",
        seed: int | None = None,
    ) -> None:
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob!r}")
        value_range = tuple(float(v) for v in value_range)  # type: ignore[assignment]
        if value_range not in self.RANGES:
            raise ValueError(f"value_range must be (-1, 1) or (0, 1), got {value_range!r}")
        self.size, self.mode, self.flip_prob = size, mode, flip_prob
        self.value_range = value_range
        self.image_column, self.output_column = image_column, output_column
        self.rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random flips from `seed` (training reseeds each epoch, so a resumed run flips alike)."""
        self.rng.seed(seed)

    def one(self, image: Image.Image) -> torch.Tensor:
        """Transform a single PIL image into a (C, H, W) tensor."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image in column {self.image_column!r}, got {type(image).__name__}")
        image = image.convert(self.mode)
        if self.size is not None and image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        tensor = pil_to_tensor(image)
        if self.flip_prob > 0 and self.rng.random() < self.flip_prob:
            tensor = tensor.flip(-1)  # mirror left-right
        if self.value_range == (-1.0, 1.0):
            tensor = tensor * 2 - 1
        return tensor

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Map a batch dict from `datasets` to {output_column: tensors, other columns unchanged}."""
        if self.image_column not in batch:
            raise KeyError(f"the batch has no column {self.image_column!r}; it has {sorted(batch)}")
        out = {k: v for k, v in batch.items() if k != self.image_column}
        out[self.output_column] = [self.one(image) for image in batch[self.image_column]]
        return out
