"""Exercise 7.1's check, the KL term of the VAE loss: right answers written different
ways pass, the plausible wrong ones fail with a hint that names their mistake, and no
message or line of the check states the answer."""

from __future__ import annotations

import inspect
import re
import time

import pytest
import torch

from course_utils.checks import ch07_latent as ch07_kl
from course_utils.checks import check_kl_divergence
from reference_answers import reference_kl_divergence


def _stub(mean, logvar):
    raise NotImplementedError


def test_a_stub_and_a_non_function_are_reported():
    result = check_kl_divergence(_stub)
    assert not result and "still raises NotImplementedError" in repr(result)
    result = check_kl_divergence(42)
    assert not result and "expected a function, got int" in repr(result)


def test_the_reference_answer_passes_in_well_under_a_second():
    start = time.perf_counter()
    result = check_kl_divergence(reference_kl_divergence)
    assert result, repr(result)
    assert repr(result).startswith("✅ Correct")
    assert time.perf_counter() - start < 1.0


# --- right answers, written differently ----------------------------------------------


def kingma_form(mean, logvar):  # Kingma & Welling (2014), appendix B
    return -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=(1, 2, 3))


def flattened(mean, logvar):
    return 0.5 * (mean.square() + torch.exp(logvar) - 1 - logvar).flatten(1).sum(1)


def by_distributions(mean, logvar):
    from torch.distributions import Normal, kl_divergence

    q = Normal(mean, (0.5 * logvar).exp())
    return kl_divergence(q, Normal(0.0, 1.0)).sum(dim=(1, 2, 3))


def loop_over_images(mean, logvar):
    return torch.stack([0.5 * torch.sum(m * m + v.exp() - 1 - v)
                        for m, v in zip(mean, logvar)])


def from_std(mean, logvar):  # -log σ + (σ² + μ²)/2 - 1/2
    std = torch.exp(0.5 * logvar)
    return (-std.log() + (std**2 + mean**2) / 2 - 0.5).sum(dim=[1, 2, 3])


def from_var_log(mean, logvar):
    var = logvar.exp()
    return 0.5 * torch.sum(mean.pow(2) + var - 1.0 - var.log(), dim=[1, 2, 3])


def by_reshape_and_einsum(mean, logvar):
    terms = mean**2 + logvar.exp() - logvar - 1
    return 0.5 * torch.einsum("bn->b", terms.reshape(len(mean), -1))


def in_float64(mean, logvar):
    m, v = mean.double(), logvar.double()
    return 0.5 * (m**2 + v.exp() - 1 - v).sum(dim=(1, 2, 3))


def in_float64_returned_as_input_dtype(mean, logvar):
    return in_float64(mean, logvar).to(mean.dtype)


def by_diffusers(mean, logvar):
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    return DiagonalGaussianDistribution(torch.cat([mean, logvar], 1)).kl()


RIGHT = (kingma_form, flattened, by_distributions, loop_over_images, from_std,
         from_var_log, by_reshape_and_einsum, in_float64,
         in_float64_returned_as_input_dtype)


@pytest.mark.parametrize("right", RIGHT, ids=lambda fn: fn.__name__)
def test_right_answers_written_differently_pass(right):
    result = check_kl_divergence(right)
    assert result, f"{right.__name__}: {result}"


def test_diffusers_posterior_kl_passes():
    pytest.importorskip("diffusers")
    result = check_kl_divergence(by_diffusers)
    assert result, repr(result)


# --- wrong answers, each named --------------------------------------------------------


def _terms(mean, logvar):
    return mean**2 + logvar.exp() - 1 - logvar


def no_half(mean, logvar):
    return _terms(mean, logvar).sum(dim=(1, 2, 3))


def mean_over_latents(mean, logvar):
    return 0.5 * _terms(mean, logvar).mean(dim=(1, 2, 3))


def kingma_mean_over_latents(mean, logvar):
    return -0.5 * torch.mean(1 + logvar - mean.pow(2) - logvar.exp(), dim=[1, 2, 3])


def summed_over_batch(mean, logvar):
    return 0.5 * _terms(mean, logvar).sum()


def averaged_over_batch(mean, logvar):
    return reference_kl_divergence(mean, logvar).mean()


def mean_over_everything(mean, logvar):
    return 0.5 * _terms(mean, logvar).mean()


def no_minus_one(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - logvar).sum(dim=(1, 2, 3))


def logvar_sign_flipped(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp() - 1 + logvar).sum(dim=(1, 2, 3))


def kingma_logvar_sign_flipped(mean, logvar):
    return -0.5 * (1 - logvar - mean**2 - logvar.exp()).sum(dim=(1, 2, 3))


def std_for_variance(mean, logvar):
    return 0.5 * (mean**2 + (0.5 * logvar).exp() - 1 - logvar).sum(dim=(1, 2, 3))


def std_for_variance_and_its_log(mean, logvar):
    std = (0.5 * logvar).exp()
    return 0.5 * (mean**2 + std - 1 - std.log()).sum(dim=(1, 2, 3))


def logvar_as_log_std(mean, logvar):
    std = logvar.exp()
    return 0.5 * (mean**2 + std**2 - 1 - 2 * logvar).sum(dim=(1, 2, 3))


def logvar_as_log_std_variance_only(mean, logvar):
    return 0.5 * (mean**2 + (2 * logvar).exp() - 1 - logvar).sum(dim=(1, 2, 3))


def negated(mean, logvar):
    return -reference_kl_divergence(mean, logvar)


def kingma_without_the_minus(mean, logvar):
    return 0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(dim=(1, 2, 3))


def no_mean_term(mean, logvar):
    return 0.5 * (logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def per_latent_number(mean, logvar):
    return 0.5 * _terms(mean, logvar)


def kept_dims(mean, logvar):
    return 0.5 * _terms(mean, logvar).sum(dim=(1, 2, 3), keepdim=True)


def over_channels_only(mean, logvar):
    return 0.5 * _terms(mean, logvar).sum(dim=1)


def exp_in_place(mean, logvar):
    return 0.5 * (mean**2 + logvar.exp_() - 1 - logvar.log()).sum(dim=(1, 2, 3))


def squared_in_place(mean, logvar):
    return 0.5 * (mean.pow_(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def as_numbers(mean, logvar):
    kl = reference_kl_divergence(mean, logvar).detach()
    return torch.tensor([value.item() for value in kl], dtype=mean.dtype)


def detached(mean, logvar):
    return reference_kl_divergence(mean.detach(), logvar.detach())


def returns_numpy(mean, logvar):
    return reference_kl_divergence(mean, logvar).numpy()


WRONG = {
    no_half: "twice",
    mean_over_latents: "you average over the latent numbers",
    kingma_mean_over_latents: "sums the KL over each image's C·h·w latent numbers",
    summed_over_batch: "you also sum over the batch",
    averaged_over_batch: "you also average over the batch",
    mean_over_everything: "one KL per image, shape (B,)",
    no_minus_one: "constant −1",
    logvar_sign_flipped: "log-variance term has the wrong sign",
    kingma_logvar_sign_flipped: "log-variance term has the wrong sign",
    std_for_variance: "standard deviation, exp(0.5·logvar), where the variance belongs",
    std_for_variance_and_its_log: "standard deviation, exp(0.5·logvar), where the"
                                  " variance belongs",
    logvar_as_log_std: "log of the standard deviation",
    logvar_as_log_std_variance_only: "log of the standard deviation",
    negated: "sign flipped",
    kingma_without_the_minus: "never below 0",
    no_mean_term: "ignores the mean",
    per_latent_number: "one value per latent number",
    kept_dims: "keepdim",
    over_channels_only: "all three latent dimensions",
    exp_in_place: "changed logvar in place",
    squared_in_place: "changed mean in place",
    as_numbers: "gradients must flow",
    detached: "gradients must flow",
    returns_numpy: "should return a torch.Tensor, it returned ndarray",
}


@pytest.mark.parametrize("wrong, words", WRONG.items(), ids=lambda x: getattr(x, "__name__", "words"))
def test_wrong_answers_fail_with_a_hint_that_names_the_mistake(wrong, words):
    result = check_kl_divergence(wrong)
    assert not result, wrong.__name__
    assert words in repr(result), repr(result)


def test_each_named_mistake_gets_its_own_hint():
    """No two named mistakes share a message: the candidates are told apart."""
    named = [no_half, mean_over_latents, no_minus_one, logvar_sign_flipped,
             std_for_variance, logvar_as_log_std, negated, no_mean_term,
             summed_over_batch]
    messages = [repr(check_kl_divergence(wrong)) for wrong in named]
    assert len(set(messages)) == len(named), messages


# --- other mistakes: narrowed to the part that is wrong -------------------------------


def wrong_variance_part(mean, logvar):  # right at logvar = 0, wrong elsewhere
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar + logvar**2).sum(dim=(1, 2, 3))


def wrong_mean_part(mean, logvar):  # right at mean = 0, wrong elsewhere
    return 0.5 * (mean.abs() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def multiplied_parts(mean, logvar):  # right when either part is 0, not both
    var_part = logvar.exp() - 1 - logvar
    return 0.5 * (mean**2 + var_part + mean**2 * var_part).sum(dim=(1, 2, 3))


def unrelated(mean, logvar):  # wrong in both parts, never negative
    return (mean**2 + logvar**2).sum(dim=(1, 2, 3))


def negative_somewhere(mean, logvar):
    return (mean + logvar).sum(dim=(1, 2, 3))


def nan_for_large_logvar(mean, logvar):
    kl = reference_kl_divergence(mean, logvar)
    return torch.where(logvar.flatten(1).abs().amax(1) > 10, torch.nan, kl)


def float32_in_float64(mean, logvar):
    m, v = mean.float(), logvar.float()
    return 0.5 * (m**2 + v.exp() - 1 - v).sum(dim=(1, 2, 3))


def in_half_precision(mean, logvar):
    return reference_kl_divergence(mean, logvar).half()


OTHER = {
    in_half_precision: "the lower precision loses it",
    wrong_variance_part: "right when logvar = 0",
    wrong_mean_part: "right when mean = 0",
    multiplied_parts: "not for both at once",
    unrelated: "differs from KL(q(z|x) ‖ N(0, I))",
    negative_somewhere: "never below 0",
    nan_for_large_logvar: "NaN or inf",
    float32_in_float64: "the lower precision loses it",
}


@pytest.mark.parametrize("wrong, words", OTHER.items(), ids=lambda x: getattr(x, "__name__", "words"))
def test_other_mistakes_get_a_useful_generic_hint(wrong, words):
    result = check_kl_divergence(wrong)
    assert not result, wrong.__name__
    assert words in repr(result), repr(result)


def test_the_learners_global_rng_is_left_alone():
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    check_kl_divergence(reference_kl_divergence)
    assert torch.equal(torch.rand(3), before)


# --- no answer in the check -----------------------------------------------------------

# The closed form as code, however it is spelled: the variance term next to the −1 and
# the log-variance (any order of the three), or Kingma's 1 + logvar − mean² − exp(logvar)
CLOSED_FORM = [
    r"\.exp\(\)\s*-\s*1(\.0)?\s*-\s*\w+",
    r"-\s*1(\.0)?\s*-\s*\w*(logvar|log_var|\bv\b)",
    r"1\s*\+\s*\w*logvar\w*\s*-",
    r"-\s*\w*logvar\w*\s*-\s*1\b",
    r"kl_divergence\(\s*\w+\s*,\s*(torch\.distributions\.)?Normal\(0",
]


def test_the_check_holds_no_closed_form():
    source = inspect.getsource(ch07_kl)
    for pattern in CLOSED_FORM:
        assert not re.search(pattern, source), pattern
    # and the patterns do find the reference answer and its usual spellings
    for answer in (reference_kl_divergence, kingma_form, flattened, loop_over_images):
        assert any(re.search(p, inspect.getsource(answer)) for p in CLOSED_FORM), answer


def test_no_message_states_the_formula():
    answers = [*WRONG, *OTHER, _stub, 42, reference_kl_divergence]
    for answer in answers:
        message = repr(check_kl_divergence(answer))
        assert not any(re.search(p, message) for p in CLOSED_FORM), message
        # nor the formula in words: mean², the variance, −1 and −logvar all together
        assert not ("mean²" in message and "− 1 − logvar" in message), message
        assert "sum(dim" not in message and "(1, 2, 3)" not in message, message


def test_a_result_slightly_off_fails():
    """The tolerance is tight: the right KL made 1e-4 larger in relative terms fails."""
    def slightly_off(mean, logvar):
        return reference_kl_divergence(mean, logvar) * (1 + 1e-4)

    assert not check_kl_divergence(slightly_off)
