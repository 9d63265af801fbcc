"""Exercise checks of Chapter 7: latent diffusion with a text encoder.

Like the other chapters' checks these hold no answer of their own: the KL term is
checked against its definition (the expectation under q of log q(z) − log p(z), exact
for Gaussians by a two-point rule), the
attention by inputs whose attention weights were chosen first (the queries are solved
for), and the inpainting step by the coefficient of each input that probes of the
learner's own function read off."""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch

from ._harness import CheckResult, _as_tensor, _call, _changed, _report, _tensor_result

_KL_RTOL = 1e-5
# Rounding allowed per latent number, on top of _KL_RTOL: a float32 sum of terms near 1
# (a few ulps each) and a float64 one
_KL_ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}

# --- Exercise 7.1: the KL term of the VAE loss ---------------------------------------


def _kl_by_definition(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) per image, (B,) float64, as E_q[log q(z) − log p(z)].

    Per latent number, log q(z) − log p(z) is a polynomial of degree 2 in z, and the
    two-point Gauss–Hermite rule (z = mean ± std, weight ½ each) integrates such a
    polynomial against N(mean, std²) exactly: the value needs no closed form."""
    mean, logvar = mean.double(), logvar.double()
    std = (0.5 * logvar).exp()
    q, p = torch.distributions.Normal(mean, std), torch.distributions.Normal(0.0, 1.0)
    points = (mean - std, mean + std)
    integrand = sum(q.log_prob(z) - p.log_prob(z) for z in points) / len(points)
    return integrand.flatten(1).sum(dim=1)


def _kl_cases() -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """(mean, logvar, what the case is) of shape (B, C, h, w), the most telling first:
    moderate posteriors (where every mistake shows and no two look alike), then small
    and large log-variances, a posterior equal to the prior, float32 and float64.
    logvar stays within diffusers' clamp, [-30, 20]."""
    g = torch.Generator().manual_seed(75)

    def normal(shape, scale):
        return scale * torch.randn(shape, generator=g, dtype=torch.float64)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)

    cases = []
    shape = (3, 4, 4, 4)
    cases.append((normal(shape, 1.0), uniform(shape, -3, 2), torch.float32,
                  "moderate posteriors"))
    shape = (2, 3, 5, 6)
    cases.append((normal(shape, 2.0), uniform(shape, -6, 4), torch.float64,
                  "moderate posteriors"))
    shape = (4, 8, 2, 2)
    mean, logvar = normal(shape, 0.5), uniform(shape, -0.05, 0.05)
    mean[0], logvar[0] = 0, 0  # the first image's posterior is the prior: KL 0
    cases.append((mean, logvar, torch.float32,
                  "log-variances near 0, the first image's posterior equal to N(0, I)"))
    shape = (2, 4, 3, 3)
    cases.append((normal(shape, 1e-3), normal(shape, 1e-3), torch.float64,
                  "posteriors very close to N(0, I)"))
    shape = (3, 4, 4, 4)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
    large = torch.where(sign < 0, uniform(shape, -25, -8), uniform(shape, 8, 18))
    cases.append((normal(shape, 3.0), large, torch.float32,
                  "log-variances from -25 to 18"))
    shape = (2, 16, 4, 4)
    cases.append((normal(shape, 1.0), uniform(shape, -29, 19), torch.float64,
                  "log-variances from -29 to 19"))
    for shape, dtype in (((2, 4, 4, 4), torch.float32), ((3, 4, 8, 8), torch.float64)):
        cases.append((torch.zeros(shape, dtype=torch.float64),
                      torch.zeros(shape, dtype=torch.float64), dtype,
                      "every posterior equal to N(0, I), where the KL is 0"))
    return [(mean.to(dtype), logvar.to(dtype), label) for mean, logvar, dtype, label in cases]


def _kl_close(result: torch.Tensor, target: torch.Tensor, dtype: torch.dtype, n: int) -> bool:
    """Image by image |result − target| ≤ _KL_RTOL |target| + n · _KL_ATOL[dtype]."""
    tol = _KL_RTOL * target.abs() + n * _KL_ATOL.get(dtype, 1e-6)
    return bool(torch.isfinite(result).all() and ((result - target).abs() <= tol).all())


PER_IMAGE = "one KL per image, shape (B,), summed over that image's latent numbers"
STD_HINT = ("you use the standard deviation, exp(0.5·logvar), where the variance"
            " belongs: logvar is the log of the variance, so the variance is"
            " exp(logvar)")
LOG_STD_HINT = ("you read logvar as the log of the standard deviation (so the variance"
                " would be exp(2·logvar)): it is the log of the variance, as in"
                " diffusers' DiagonalGaussianDistribution")


def _kl_mistakes(mean: torch.Tensor, logvar: torch.Tensor, kl: torch.Tensor
                 ) -> list[tuple[torch.Tensor, str]]:
    """(what a plausible wrong answer returns per image, its hint), as the amount by
    which each mistake moves the right value `kl` (B,), float64."""
    m, v = mean.double().flatten(1), logvar.double().flatten(1)
    n = m.shape[1]
    std = (0.5 * v).exp()
    var = std * std
    return [
        (-kl, "your KL is negative: it is the right one with the sign flipped. A KL"
              " divergence is never below 0, and 0 only when q(z|x) is N(0, I)"),
        (2 * kl, "your KL is twice the right one: the factor ½ in front of the sum is"
                 " missing"),
        (kl / n, f"you average over the latent numbers: the VAE loss sums the KL over"
                 f" each image's C·h·w latent numbers (a mean divides it by {n} here),"
                 " one value per image"),
        (kl + n / 2, "the constant −1 of each latent number's term is missing: without"
                     " it the KL of N(0, I) to itself is not 0"),
        (kl + v.sum(1), "the log-variance term has the wrong sign: as you wrote it a"
                        " smaller variance lowers the KL (below 0, even), while the KL"
                        " must grow as the variance moves away from 1 either way"),
        (kl + 0.5 * (std - var).sum(1), STD_HINT),
        (kl + 0.5 * (std - var + 0.5 * v).sum(1), STD_HINT),
        (kl + 0.5 * (var * var - var - v).sum(1), LOG_STD_HINT),
        (kl + 0.5 * (var * var - var).sum(1), LOG_STD_HINT),
        (kl - 0.5 * (m * m).sum(1), "your KL ignores the mean: the squared mean is"
                                    " missing, and moving q's mean away from 0 must"
                                    " raise the KL"),
        (2 * kl / n, "you average over the latent numbers and the factor ½ is missing:"
                     " the VAE loss sums the KL over each image's C·h·w latent numbers,"
                     " with ½ in front"),
    ]


def _shape_mistake(result: torch.Tensor, mean: torch.Tensor, kl: torch.Tensor) -> str:
    """What a result of the wrong shape did, in words (`kl` the right (B,) values)."""
    batch, shape = len(mean), tuple(result.shape)
    got = f"kl_divergence should return shape ({batch},), it returned {shape}"
    if result.numel() == 1:
        value = float(result.detach().double().reshape(-1)[0])
        n = mean[0].numel()
        for total, what in ((kl.sum(), "you also sum over the batch"),
                            (kl.mean(), "you also average over the batch"),
                            (kl.sum() / n / batch, "you average over everything")):
            if math.isclose(value, float(total), rel_tol=_KL_RTOL, abs_tol=1e-9):
                return f"{got}: {what}; {PER_IMAGE}"
        return f"{got}: {PER_IMAGE}"
    if shape == tuple(mean.shape):
        return (f"{got}, one value per latent number: sum each image's terms over its"
                f" C, h and w dimensions ({PER_IMAGE})")
    if result.numel() == batch and shape[:1] == (batch,):
        return f"{got}: drop the kept dimensions (keepdim), {PER_IMAGE}"
    if len(shape) > 1 and shape[0] == batch:
        return (f"{got}: sum over all three latent dimensions, C, h and w, not some of"
                f" them ({PER_IMAGE})")
    return f"{got}: {PER_IMAGE}"


def _kl_of(fn: Callable, mean: torch.Tensor, logvar: torch.Tensor
           ) -> torch.Tensor | None:
    """The learner's KL for these inputs (float64), or None when it fails."""
    result, err = _call(fn, mean.clone(), logvar.clone(), name="kl_divergence")
    if err or not isinstance(result, torch.Tensor) or tuple(result.shape) != (len(mean),):
        return None
    return result.detach().double()


def _kl_mistake(fn: Callable, mean: torch.Tensor, logvar: torch.Tensor,
                result: torch.Tensor, kl: torch.Tensor, raw_dtype: torch.dtype,
                label: str) -> str:
    """What a wrong KL did: a named mistake, else the part of the posterior (mean or
    variance) that probes of the learner's own function show to be wrong."""
    n, dtype = mean[0].numel(), mean.dtype
    if not bool(torch.isfinite(result).all()):
        return (f"with {label} your KL holds NaN or inf: every term is finite for"
                " logvar in [-30, 20] (no log of a negative number, no division by"
                " the variance needed)")
    for wrong, hint in _kl_mistakes(mean, logvar, kl):
        if _kl_close(result, wrong, dtype, n):
            return hint
    lower = (raw_dtype.is_floating_point and not raw_dtype.is_complex
             and torch.finfo(raw_dtype).bits < torch.finfo(dtype).bits)
    if lower and bool(((result - kl).abs() <= 1e-2 * kl.abs() + n * _KL_ATOL[torch.float32]).all()):
        return (f"with {label} your KL is close but not exact: you return {raw_dtype}"
                f" for {dtype} inputs, and the lower precision loses it. Compute in the"
                " inputs' dtype")
    precision = (f" (you return {raw_dtype} for {dtype} inputs: compute in the inputs'"
                 " dtype)" if raw_dtype != dtype else "")
    zeros = torch.zeros_like(mean)
    only_mean = _kl_of(fn, mean, zeros)
    only_variance = _kl_of(fn, zeros, logvar)
    mean_right = only_mean is not None and _kl_close(
        only_mean, _kl_by_definition(mean, zeros), dtype, n)
    variance_right = only_variance is not None and _kl_close(
        only_variance, _kl_by_definition(zeros, logvar), dtype, n)
    if mean_right and variance_right:
        return (f"with {label}: your KL is right when logvar = 0 and when mean = 0, but"
                " not for both at once. Each latent number's term adds a part of the"
                " mean and a part of the variance" + precision)
    if mean_right:
        return (f"with {label}: your KL is right when logvar = 0 (unit variances), so"
                " its mean part is right: check the terms in logvar, the variance"
                " exp(logvar) and the log-variance" + precision)
    if variance_right:
        return (f"with {label}: your KL is right when mean = 0, so its variance part"
                " is right: check the term in the mean" + precision)
    negative = result < -n * _KL_ATOL[dtype]
    if bool(negative.any()):
        return (f"with {label} your KL is negative for image"
                f" {int(negative.nonzero()[0])}: a KL divergence is never below 0."
                " Check the sign of each term" + precision)
    return (f"with {label}, shape {tuple(mean.shape)}: your KL differs from KL(q(z|x) ‖"
            " N(0, I)) summed over each image's latent numbers, and is wrong even with"
            " logvar = 0 or mean = 0 alone: check the factor, the sign and each term"
            " against Kingma & Welling (2014), appendix B" + precision)


def check_kl_divergence(kl_divergence: Callable) -> CheckResult:
    """Check `kl_divergence(mean, logvar)`: KL(q(z|x) ‖ N(0, I)) per image, where
    q(z|x) = N(mean, diag(exp(logvar))) is the encoder's posterior.

    mean and logvar (B, C, h, w); returns (B,), the KL summed over each image's C·h·w
    latent numbers (Kingma & Welling 2014, appendix B; diffusers'
    `DiagonalGaussianDistribution.kl()`). Compared with the KL from its definition
    (relative tolerance 1e-5) on eight cases: B, C, h and w differ, float32 and float64
    (a float64 result is fine), log-variances near 0 and from -29 to 19 (within
    diffusers' clamp), posteriors equal to N(0, I), where the KL is 0; each call gets
    copies that must come back unchanged, and gradients must reach mean and logvar (it
    is a loss). Names a missing ½, a mean over the latent numbers, a sum over the batch,
    a missing −1, the log-variance's sign, the standard deviation for the variance,
    logvar read as a log standard deviation, a negated KL and a missing mean term; other
    mistakes are narrowed to the mean's or the variance's part."""
    cases = _kl_cases()
    for mean, logvar, label in cases:
        given = (mean.clone(), logvar.clone())
        raw, err = _call(kl_divergence, *given, name="kl_divergence")
        if err:
            return _report(False, err)
        changed = _changed(("mean", "logvar"), given, (mean, logvar))
        if changed:
            return _report(False, f"kl_divergence changed {', '.join(changed)} in place"
                                  " (exp_, pow_, += or the like): the VAE still needs"
                                  " the posterior to sample z for the decoder, so"
                                  " compute with new tensors")
        if not isinstance(raw, torch.Tensor):
            return _report(False, "kl_divergence should return a torch.Tensor, it"
                                  f" returned {type(raw).__name__}")
        kl = _kl_by_definition(mean, logvar)
        if tuple(raw.shape) != (len(mean),):
            return _report(False, _shape_mistake(raw, mean, kl))
        result = raw.detach().double()
        if _kl_close(result, kl, mean.dtype, mean[0].numel()):
            continue
        return _report(False, _kl_mistake(kl_divergence, mean, logvar, result, kl,
                                          raw.dtype, label))
    mean, logvar, _ = cases[0]
    mean, logvar = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    raw, err = _call(kl_divergence, mean, logvar, name="kl_divergence")
    if err:
        return _report(False, f"with inputs that require gradients: {err}")
    grads = None
    if isinstance(raw, torch.Tensor) and raw.requires_grad:
        grads = torch.autograd.grad(raw.sum(), (mean, logvar), allow_unused=True)
    if grads is None or any(grad is None for grad in grads):
        return _report(False, "the KL is a term of the loss, so gradients must flow"
                              " back through it to mean and logvar (the encoder): build"
                              " it with torch operations on them, without .item(),"
                              " numpy, torch.tensor(...) of numbers or .detach()")
    return _report(True, "KL(q(z|x) ‖ N(0, I)) per image on eight cases (float32 and"
                         " float64, log-variances near 0 and from -29 to 19, posteriors"
                         " equal to the prior, where it is 0), and gradients reach"
                         " mean and logvar")


# --- Exercise 7.2: masked cross-attention --------------------------------------------


class _AttentionCase:
    """Inputs of `masked_cross_attention` whose attention weights are chosen first.

    The weights W (B, N, T) are random, zero on padding and summing to 1 over each
    query's real tokens; the scores S are log W on real tokens and higher than any of
    them on padding (so that weight on padding shows). Keys with orthogonal rows let the
    queries be solved for: Q Kᵀ / √d = S. The expected output is W V, so the check holds
    no attention of its own."""

    def __init__(self, seed: int, real: list[int], queries: int, tokens: int,
                 dim: int) -> None:
        g = torch.Generator().manual_seed(seed)
        batch = len(real)
        # (B, T): the real tokens first, as a tokenizer pads
        self.mask = torch.arange(tokens)[None, :] < torch.tensor(real)[:, None]
        rows = self.mask[:, None, :].expand(batch, queries, tokens)
        share = torch.rand(batch, queries, tokens, generator=g, dtype=torch.float64)
        share = torch.where(rows, share + 0.1, torch.zeros(()))
        self.weights = share / share.sum(-1, keepdim=True)
        high = 0.5 + torch.rand(batch, queries, tokens, generator=g,
                                dtype=torch.float64)
        scores = torch.where(rows, self.weights.log(), high)  # log W ≤ 0 < padding's
        basis, _ = torch.linalg.qr(
            torch.randn(batch, dim, tokens, generator=g, dtype=torch.float64))
        keys = 1.5 * basis.transpose(1, 2)  # (B, T, d), K Kᵀ = 2.25 I
        self.keys = keys.float()
        self.queries = (math.sqrt(dim) * scores @ keys / 2.25).float()
        self.values = torch.randn(batch, tokens, dim, generator=g).float()
        self.expected = self.weights @ self.values.double()
        self.sizes = (batch, queries, tokens, dim)

    def with_padding_changed(self, seed: int) -> "_AttentionCase":
        """The same case with other keys and values at the padding positions: the
        expected output is the same."""
        g = torch.Generator().manual_seed(seed)
        other = object.__new__(_AttentionCase)
        other.__dict__.update(self.__dict__)
        padding = ~self.mask[:, :, None]
        other.keys = torch.where(padding, 3 * torch.randn(self.keys.shape, generator=g),
                                 self.keys)
        other.values = torch.where(padding, 5 + torch.randn(self.values.shape,
                                                            generator=g), self.values)
        return other


_MASK_KINDS = {torch.bool: "bool", torch.float32: "float 0/1",
               torch.int64: "int64 0/1 (a tokenizer's attention_mask)"}
_ATOL = 2e-5  # float32 scores
MASK_SHAPE_HINT = (" (the mask is (B, T) and the scores (B, N, T): give the mask an"
                   " axis for the queries, (B, 1, T), so it broadcasts over them)")
MASK_DTYPE_HINT = (" (the mask may come as bool, as 0/1 floats as diffusers'"
                   " encoder_attention_mask, or as 0/1 integers as a tokenizer's"
                   " attention_mask: 0 or False is padding whatever its dtype)")
PADDING_HINT = ("padding tokens still receive weight: changing the keys and values at"
                " padding positions changes your output. A padding token's weight must"
                " be exactly 0")


def _attend(fn: Callable, queries, keys, values, mask) -> torch.Tensor | None:
    """The learner's output for these inputs (float64), or None when it fails."""
    result, err = _call(fn, queries.clone(), keys.clone(), values.clone(), mask.clone(),
                        name="masked_cross_attention")
    if err or not isinstance(result, torch.Tensor):
        return None
    expected_shape = (len(queries), queries.shape[1], values.shape[2])
    return result.detach().double() if tuple(result.shape) == expected_shape else None


def _same(result: torch.Tensor | None, expected: torch.Tensor, rows=None) -> bool:
    if result is None:
        return False
    if rows is not None:
        result, expected = result[rows], expected[rows]
    return bool(torch.isfinite(result).all()) and torch.allclose(
        result, expected, atol=_ATOL, rtol=1e-5)


def _attention_mistake(fn: Callable, case: _AttentionCase, result: torch.Tensor) -> str:
    """What a wrong attention did, read off probes of the learner's own function."""
    q, k, v, mask = case.queries, case.keys, case.values, case.mask
    batch, n_queries, n_tokens, dim = case.sizes
    if not bool(torch.isfinite(result).all()):
        return ("your output holds NaN (or inf): a softmax over scores that are all"
                " -inf gives 0/0. Every query has at least one real token along the"
                " keys' axis: check the axis of your softmax and which tokens you mask")
    has_padding = ~mask.all(dim=1)
    if has_padding.any() and _same(_attend(fn, q, k, v, ~mask), case.expected,
                                   has_padding):
        return ("your mask is inverted: the weight goes to the padding tokens only. 1"
                " (True) marks a real token and 0 (False) padding, as in a tokenizer's"
                " attention_mask")
    if _same(_attend(fn, q, v, k, mask), case.expected):
        return ("keys and values are swapped: the scores compare the queries with the"
                " keys, and the output is a weighted sum of the values")
    root = math.sqrt(dim)
    scales = [
        (1 / root, "the scores are not scaled: Q Kᵀ is divided by √d, d the size of the"
                   " features (the last axis), which keeps the softmax from saturating"
                   " (Vaswani et al. 2017, eq. 1)"),
        (root, "you divide the scores by d: the scale is 1/√d (Vaswani et al. 2017,"
               " eq. 1)"),
        (1 / dim, "you multiply the scores by √d: they are divided by it"),
        (math.sqrt(n_tokens) / root, "you scale by the square root of the number of"
                                     " tokens: d is the size of the features, the last"
                                     " axis"),
        (math.sqrt(n_queries) / root, "you scale by the square root of the number of"
                                      " queries: d is the size of the features, the"
                                      " last axis"),
    ]
    for scale, hint in scales:
        if _same(_attend(fn, q * scale, k, v, mask), case.expected):
            return hint
    first = _attend(fn, q[:, :1], k, v, mask)
    if first is not None and not torch.allclose(first, result[:, :1], atol=_ATOL):
        return ("each query's output must depend on that query alone: the softmax"
                " normalises over the tokens (the last axis of the (B, N, T) scores),"
                " not over the queries")
    steady = torch.linspace(-1, 1, dim).expand(batch, n_tokens, dim).contiguous()
    constant = _attend(fn, q, k, steady, mask)
    if constant is not None and not torch.allclose(
            constant, steady[:, :1].double().expand(batch, n_queries, dim), atol=_ATOL):
        return ("each query's weights do not sum to 1 (equal values should come out"
                " unchanged): zeroing the padding's weights after the softmax leaves"
                " their share missing. Mask before the softmax, or renormalise")
    other = case.with_padding_changed(seed=11)
    keys_moved = _attend(fn, q, other.keys, v, mask)
    values_moved = _attend(fn, q, k, other.values, mask)
    if (keys_moved is not None and values_moved is not None
            and torch.allclose(keys_moved, result, atol=_ATOL)
            and not torch.allclose(values_moved, result, atol=_ATOL)):
        return ("multiplying the scores by the mask gives padding a score of 0, and a"
                " score of 0 is not a weight of 0: the softmax gives it e⁰ = 1 before"
                " normalising, so padding tokens still receive weight (a padding"
                " token's weight must be exactly 0)")
    if (keys_moved is not None and not torch.allclose(keys_moved, result, atol=_ATOL)
            or values_moved is not None
            and not torch.allclose(values_moved, result, atol=_ATOL)):
        return PADDING_HINT
    return ("the output differs from softmax(Q Kᵀ / √d) V with zero weight on padding"
            f" (B, N, T, d = {batch}, {n_queries}, {n_tokens}, {dim}; each row has its"
            f" own number of real tokens, {mask.sum(1).tolist()}, and every real token"
            " takes part)")


def check_masked_cross_attention(masked_cross_attention: Callable) -> CheckResult:
    """Check `masked_cross_attention(queries, keys, values, mask)`: single-head
    attention softmax(Q Kᵀ / √d) V (Vaswani et al. 2017, eq. 1) in which padding
    tokens get weight exactly 0.

    queries (B, N, d) from image features, keys and values (B, T, d) from text tokens,
    mask (B, T): 1 or True for a real token, 0 or False for padding (as diffusers'
    `encoder_attention_mask`); every row has a real token (the first, CLS). Returns
    (B, N, d). The mask is passed as bool, as float 0/1 and as int64; -inf fill, the
    dtype's most negative number or a large negative bias (-1e4, -1e9) all pass
    (tolerance 2e-5). Checked on inputs whose weights are known (N, T and d differ,
    B ≥ 2 with different numbers of real tokens, a row without padding, a row with only
    CLS), and again with other keys and values at the padding positions, which must not
    change the output; the inputs must come back unchanged. Names a missing, inverted
    or multiplied mask, one applied after the softmax without renormalising, a missing
    or wrong scale, a softmax over the queries, swapped keys and values and a wrong
    shape."""
    first = _AttentionCase(seed=72, real=[2, 5, 3], queries=4, tokens=6, dim=8)
    second = _AttentionCase(seed=73, real=[7, 1], queries=3, tokens=7, dim=10)
    runs = [(first, torch.bool, "first"), (first, torch.float32, "dtype"),
            (first, torch.int64, "dtype"), (first.with_padding_changed(seed=74),
                                           torch.bool, "padding"),
            (second, torch.bool, "second"), (second, torch.float32, "dtype"),
            (second, torch.int64, "dtype")]
    for case, dtype, kind in runs:
        batch, n_queries, n_tokens, dim = case.sizes
        mask = case.mask.to(dtype)
        inputs = (case.queries, case.keys, case.values, mask)
        given = tuple(x.clone() for x in inputs)
        result, err = _call(masked_cross_attention, *given,
                            name="masked_cross_attention")
        where = f"with the mask as {_MASK_KINDS[dtype]}"
        if err:
            if "still raises NotImplementedError" in err:
                return _report(False, err)
            if "must match the size" in err or "broadcast" in err:
                err += MASK_SHAPE_HINT
            if dtype != torch.bool or "bool" in err or "Boolean" in err:
                err = f"{where}: {err}" + MASK_DTYPE_HINT
            return _report(False, err)
        changed = _changed(("queries", "keys", "values", "mask"), given, inputs)
        if changed:
            return _report(False, f"masked_cross_attention changed {', '.join(changed)}"
                                  " in place (masked_fill_, += or the like): the UNet"
                                  " uses the text tokens in every block, so build new"
                                  " tensors")
        shape = (batch, n_queries, dim)
        result, err = _as_tensor(result, shape, "masked_cross_attention")
        if err:
            if "shape" in err and f"({batch}, {n_queries}, {n_tokens})" in err:
                err += (": that is the attention weights' shape (B, N, T); the output"
                        " is their weighted sum of the values, one vector per query")
            elif "shape" in err:
                err += " (B, N, d): one output vector of size d per query"
            return _report(False, err)
        if _same(result, case.expected):
            continue
        if kind == "dtype":
            return _report(False, f"{where} the output differs from the one with a"
                                  " bool mask" + MASK_DTYPE_HINT)
        if kind == "padding":
            return _report(False, PADDING_HINT)
        mistake = _attention_mistake(masked_cross_attention, case, result)
        if kind == "second":
            mistake = ("right on the first inputs but not on a batch with a row"
                       " without padding and a row whose only real token is the"
                       " first: " + mistake)
        return _report(False, mistake)
    return _report(True, "attention with zero weight on padding, for a mask as bool,"
                         " float and int64, rows with and without padding; the"
                         " padding's keys and values do not change the output")


# --- Exercise 7.3: one inpainting step -----------------------------------------------


def _inpaint_inputs(seed: int, soft: bool) -> tuple[torch.Tensor, ...]:
    """latents, known_latents, noise (2, 4, 4, 4) and repaint_mask (2, 1, 4, 4): both
    regions in every image; a soft mask has 0s, 1s and values between."""
    g = torch.Generator().manual_seed(seed)
    latents, known, noise = (torch.randn(2, 4, 4, 4, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 4, 4, generator=g)
    if not soft:
        mask = (mask < 0.5).float()
    mask[:, :, 0, :2] = 1.0
    mask[:, :, 1, :2] = 0.0
    return latents, known, mask, noise


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def _coefficient_maps(fn: Callable, mask: torch.Tensor, alpha_bar, shape: tuple
                      ) -> list[torch.Tensor] | None:
    """The learner's coefficient of latents, of known_latents and of noise at every
    element, read off three calls that set one of them to 1 and the others to 0; None
    when a call fails."""
    maps = []
    for which in range(3):
        parts = [torch.zeros(shape) for _ in range(3)]
        parts[which] = torch.ones(shape)
        result, err = _tensor_result(fn, parts[0], parts[1], mask.clone(), parts[2],
                                     _copy(alpha_bar), shape=shape, name="inpaint_step")
        if err:
            return None
        maps.append(result)
    return maps


def _region(maps: list[torch.Tensor], where: torch.Tensor
            ) -> tuple[float, float, float] | None:
    """The three coefficients in a region where each is one number, else None."""
    values = [m[where] for m in maps]
    if any(float(v.max() - v.min()) > 1e-5 for v in values):
        return None
    return tuple(float(v.mean()) for v in values)


def _close(got: tuple[float, ...] | None, want: tuple[float, ...]) -> bool:
    return got is not None and all(abs(a - b) < 1e-5 for a, b in zip(got, want))


def _inpaint_mistake(maps: list[torch.Tensor], mask: torch.Tensor, alpha_bar: float,
                     soft: bool) -> str:
    """What a wrong inpainting step did, read off its coefficient maps."""
    on_x, on_known, on_noise = maps
    if any(float((m - m[:, :1]).abs().max()) > 1e-5 for m in maps):
        return ("your result treats the four latent channels differently: the mask has"
                " one channel and the latents four, so it applies to every channel at"
                " once (broadcast it over them; only some channels were replaced)")
    fractional = ((mask > 0) & (mask < 1)).expand_as(on_x)
    if soft and bool(((on_x[fractional] - 0).abs() < 1e-5).logical_or(
            (on_x[fractional] - 1).abs() < 1e-5).all()):
        return ("the mask may be soft (values between 0 and 1, as a blurred mask's"
                " edges): blend linearly by its value. torch.where or a threshold keeps"
                " only 0 or 1")
    s, u = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    repaint = _region(maps, (mask == 1).expand_as(on_x))
    kept = _region(maps, (mask == 0).expand_as(on_x))
    if _close(repaint, (0, s, u)) and _close(kept, (1, 0, 0)):
        return ("your mask is inverted: you keep the region the model repaints. The"
                " mask is 1 (white) where the model repaints and 0 where the image is"
                " kept, diffusers' convention")
    if repaint is not None and not _close(repaint, (1, 0, 0)):
        if abs(repaint[2]) > 1e-5:
            return ("you add noise to the repainted region (mask 1): the scheduler's"
                    " step already brought the latents to the next noise level there,"
                    " so leave them unchanged")
        return ("in the repainted region (mask 1) the result must be the latents as the"
                " scheduler's step left them")
    if kept is None:
        return ("in the kept region (mask 0) your coefficients differ from pixel to"
                " pixel: the known latents, noised to ᾱ', replace the latents there")
    x_part, known_part, noise_part = kept
    if abs(x_part) > 1e-5:
        return ("in the kept region (mask 0) the result still depends on the latents:"
                " replace them there by the noised known latents, do not add to them")
    kept_hints = [
        ((1.0, 0.0), "you paste the known latents clean: the latents around them are at"
                     " noise level ᾱ', so noise the known latents to ᾱ' too (clean only"
                     " on the last step, ᾱ' = 1)"),
        ((1.0, u), "the known latents need their factor too: you add noise without"
                   " shrinking the signal by √ᾱ' (the variance-preserving forward"
                   " process scales both)"),
        ((alpha_bar, 1 - alpha_bar), "ᾱ' and 1 − ᾱ' are the shares of the variance: the"
                                     " factors on the known latents and on the noise"
                                     " are their square roots"),
        ((1 - alpha_bar, alpha_bar), "ᾱ' is the signal's share (ᾱ' = 1 is clean), not"
                                     " the noise's, and the factors are square roots: a"
                                     " lerp towards noise is not the forward process"),
        ((u, s), "the two factors are swapped: ᾱ' is the signal's share (ᾱ' = 1 is"
                 " clean), not the noise's"),
    ]
    for want, hint in kept_hints:
        if _close((known_part, noise_part), want):
            return hint
    return ("in the kept region (mask 0) the result is not the known latents noised to"
            f" ᾱ' = {alpha_bar:g} with the noise you were given (your factors:"
            f" {known_part:.4g} on known_latents, {noise_part:.4g} on noise)")


def check_inpaint_step(inpaint_step: Callable) -> CheckResult:
    """Check `inpaint_step(latents, known_latents, repaint_mask, noise,
    alpha_bar_next)`: the latents after a scheduler step, with the kept region replaced
    by the known latents noised to the same level.

    latents, known_latents and noise are (B, 4, h, w); repaint_mask (B, 1, h, w) is 1
    where the model repaints and 0 where the image is kept (diffusers' inpainting
    convention, white = repaint), and may be soft (values in [0, 1], blended
    linearly); alpha_bar_next, ᾱ' in (0, 1], a float or a 0-d tensor. In the repainted
    region the result is the latents; in the kept region √ᾱ' known + √(1 − ᾱ') noise
    (the legacy diffusers inpainting for a 4-channel UNet; the replacement method of
    Song et al. 2021, appendix on imputation; RePaint without resampling, Lugmayr et
    al. 2022); ᾱ' = 1, the last step, gives the clean known latents.

    Checked with hard masks for ᾱ' as a float and as 0-d float32 and float64 tensors,
    for ᾱ' = 1, then with a soft mask (so an answer with torch.where passes the hard
    cases and is told about soft masks); the inputs must come back unchanged. Each
    input's coefficient is read off probes of the learner's function, so the check
    holds no step of its own. Names an inverted mask, known latents pasted clean, noise
    without √ᾱ' on the signal, ᾱ' without square roots or the wrong way round, noise
    in the repainted region, a mask not broadcast over the channels and noise of the
    function's own."""
    cases = [(False, 0.3), (False, torch.tensor(0.7)),
             (False, torch.tensor(0.05, dtype=torch.float64)), (False, 1.0),
             (True, 0.5)]
    names = ("latents", "known_latents", "repaint_mask", "noise")
    for seed, (soft, alpha_bar) in enumerate(cases, start=75):
        inputs = _inpaint_inputs(seed, soft)
        shape = tuple(inputs[0].shape)
        given = tuple(x.clone() for x in inputs)
        result, err = _call(inpaint_step, *given, _copy(alpha_bar), name="inpaint_step")
        if err:
            if isinstance(alpha_bar, float) and "'float'" in err:
                err += (" (alpha_bar_next may come as a float or as a 0-d tensor:"
                        " handle both)")
            return _report(False, err)
        changed = _changed(names, given, inputs)
        if changed:
            return _report(False, f"inpaint_step changed {', '.join(changed)} in place"
                                  " (mul_, +=, slice assignment or the like): the"
                                  " sampler reuses the known latents and the mask at"
                                  " every step, so build a new tensor")
        result, err = _as_tensor(result, shape, "inpaint_step")
        if err:
            return _report(False, err + (" (B, 4, h, w): the latents' shape; the mask's"
                                         " one channel broadcasts over the four"
                                         if "shape" in err else ""))
        ab = float(alpha_bar)
        label = (f"{'soft' if soft else 'hard'} mask, ᾱ' = {ab:g}"
                 + (f" as a {alpha_bar.dtype} tensor"
                    if isinstance(alpha_bar, torch.Tensor) else ""))
        again, _ = _tensor_result(inpaint_step, *(x.clone() for x in inputs),
                                  _copy(alpha_bar), shape=shape, name="inpaint_step")
        if again is None or not torch.allclose(again, result, atol=1e-6):
            return _report(False, "the same inputs give another result: use the noise"
                                  " you were given, not noise of your own")
        latents, known, mask, noise = inputs
        maps = _coefficient_maps(inpaint_step, mask, alpha_bar, shape)
        linear = None if maps is None else sum(
            c * x.double() for c, x in zip(maps, (latents, known, noise)))
        if linear is None or not torch.allclose(result, linear, atol=1e-5):
            return _report(False, f"with a {label}: the result is not the latents in"
                                  " the repainted region and the noised known latents"
                                  " in the kept one")
        m = mask.double().expand(shape)
        want = (m, (1 - m) * math.sqrt(ab), (1 - m) * math.sqrt(1 - ab))
        if all(torch.allclose(got, w, atol=1e-5) for got, w in zip(maps, want)):
            continue
        return _report(False, f"with a {label}: "
                       + _inpaint_mistake(maps, mask, ab, soft))
    return _report(True, "the repainted region keeps the sampler's latents and the kept"
                         " region gets the known latents at the next noise level, for"
                         " hard and soft masks, ᾱ' as a float or a 0-d tensor, clean on"
                         " the last step")
