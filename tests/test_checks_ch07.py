"""Chapter 7's exercise checks accept right answers written different ways and reject
the plausible wrong ones, each with a hint that names its mistake and never the answer.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import (check_inpaint_step, check_kl_divergence,
                                 check_masked_cross_attention)
from course_utils.checks import ch07_latent
from reference_answers import (reference_inpaint_step, reference_kl_divergence,
                               reference_masked_cross_attention)

CHECKS = (check_kl_divergence, check_masked_cross_attention, check_inpaint_step)


def _stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("check", CHECKS)
def test_a_stub_and_a_non_function_are_reported(check):
    result = check(_stub)
    assert not result and "still raises NotImplementedError" in repr(result)
    result = check(42)
    assert not result and "expected a function, got int" in repr(result)


REFERENCES = (reference_kl_divergence, reference_masked_cross_attention,
              reference_inpaint_step)


@pytest.mark.parametrize("check, answer", zip(CHECKS, REFERENCES))
def test_the_reference_answer_passes(check, answer):
    result = check(answer)
    assert result, repr(result)
    assert repr(result).startswith("✅ Correct")


def _missed(check, wrong_answers: dict) -> list:
    """The wrong answers a check passes, or whose message lacks the hint's words."""
    return [(wrong.__name__, words, repr(result))
            for wrong, words in wrong_answers.items()
            if (result := check(wrong)) or words not in repr(result)]


# --- 7.2 -----------------------------------------------------------------------------


def _scores(q, k):
    return q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5


def test_check_masked_cross_attention_accepts_right_answers_written_differently():
    def with_sdpa(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v,
                                              attn_mask=mask[:, None, :].bool())

    def finfo_min(q, k, v, mask):
        scores = _scores(q, k)
        scores = scores.masked_fill(~mask.bool()[:, None, :], torch.finfo(q.dtype).min)
        return torch.softmax(scores, dim=-1) @ v

    def bias_1e4(q, k, v, mask):  # diffusers' encoder_attention_mask becomes this bias
        bias = (1 - mask.to(q.dtype))[:, None, :] * -10000.0
        return torch.softmax(_scores(q, k) + bias, dim=2) @ v

    def bias_1e9(q, k, v, mask):
        scores = torch.einsum("bnd,btd->bnt", q, k) / np.sqrt(q.shape[-1])
        scores = scores - 1e9 * (mask[:, None, :] == 0).float()
        return torch.einsum("bnt,btd->bnd", scores.softmax(-1), v)

    def renormalised(q, k, v, mask):  # zeroed after the softmax, then renormalised
        weights = _scores(q, k).softmax(-1) * mask[:, None, :].to(q.dtype)
        return weights / weights.sum(-1, keepdim=True) @ v

    def with_where(q, k, v, mask):
        keep = mask.unsqueeze(1) != 0
        scores = torch.where(keep, _scores(q, k), torch.tensor(float("-inf")))
        return torch.bmm(F.softmax(scores, dim=-1), v)

    for right in (reference_masked_cross_attention, with_sdpa, finfo_min, bias_1e4,
                  bias_1e9, renormalised, with_where):
        result = check_masked_cross_attention(right)
        assert result, (right.__name__, repr(result))


def _masked(q, k, mask, fill=float("-inf")):
    return _scores(q, k).masked_fill(mask[:, None, :] == 0, fill)


def test_check_masked_cross_attention_names_each_wrong_answer():
    def no_mask(q, k, v, mask):
        return _scores(q, k).softmax(-1) @ v

    def inverted(q, k, v, mask):
        return _masked(q, k, mask == 0).softmax(-1) @ v  # masks the real tokens

    def inverted_large_bias(q, k, v, mask):
        return (_scores(q, k) - 1e9 * mask[:, None, :].float()).softmax(-1) @ v

    def multiplied(q, k, v, mask):
        return (_scores(q, k) * mask[:, None, :].float()).softmax(-1) @ v

    def after_softmax(q, k, v, mask):
        return (_scores(q, k).softmax(-1) * mask[:, None, :].float()) @ v

    def unscaled(q, k, v, mask):
        scores = (q @ k.transpose(1, 2)).masked_fill(mask[:, None, :] == 0, -1e9)
        return scores.softmax(-1) @ v

    def over_d(q, k, v, mask):
        scores = (q @ k.transpose(1, 2) / q.shape[-1]).masked_fill(
            mask[:, None, :] == 0, -1e9)
        return scores.softmax(-1) @ v

    def by_tokens(q, k, v, mask):
        scores = (q @ k.transpose(1, 2) / k.shape[1] ** 0.5).masked_fill(
            mask[:, None, :] == 0, -1e9)
        return scores.softmax(-1) @ v

    def over_queries(q, k, v, mask):
        return _masked(q, k, mask, -1e9).softmax(dim=1) @ v

    def over_queries_inf(q, k, v, mask):  # a column of -inf: NaN
        return _masked(q, k, mask).softmax(dim=1) @ v

    def swapped(q, k, v, mask):
        return _masked(q, v, mask).softmax(-1) @ k

    def weights_only(q, k, v, mask):
        return _masked(q, k, mask).softmax(-1)

    def transposed(q, k, v, mask):
        return (_masked(q, k, mask).softmax(-1) @ v).transpose(1, 2)

    def mask_not_broadcast(q, k, v, mask):  # (B, T) against (B, N, T)
        return _scores(q, k).masked_fill(mask == 0, float("-inf")).softmax(-1) @ v

    def bool_only(q, k, v, mask):  # ~ on a float mask: a TypeError
        scores = _scores(q, k).masked_fill(~mask[:, None, :], float("-inf"))
        return scores.softmax(-1) @ v

    def float_added(q, k, v, mask):  # sdpa with a float 0/1 mask: a bias, not a mask
        return F.scaled_dot_product_attention(q, k, v,
                                              attn_mask=mask[:, None, :].float())

    def in_place(q, k, v, mask):
        scores = _scores(q, k)
        v[~mask.bool()] = 0
        return scores.masked_fill(mask[:, None, :] == 0, -1e9).softmax(-1) @ v

    def real_tokens_sliced(q, k, v, mask):  # assumes every row is padded
        n = int(mask[0].sum())
        return _scores(q, k[:, :n]).softmax(-1) @ v[:, :n]

    missed = _missed(check_masked_cross_attention, {
        no_mask: "padding tokens still receive weight",
        inverted: "inverted",
        inverted_large_bias: "inverted",
        multiplied: "score of 0 is not a weight of 0",
        after_softmax: "do not sum to 1",
        unscaled: "not scaled",
        over_d: "divide the scores by d",
        by_tokens: "number of tokens",
        over_queries: "not over the queries",
        over_queries_inf: "axis of your softmax",
        swapped: "keys and values are swapped",
        weights_only: "attention weights' shape",
        transposed: "one output vector of size d per query",
        mask_not_broadcast: "(B, 1, T)",
        bool_only: "with the mask as float 0/1",
        float_added: "padding tokens still receive weight",
        in_place: "changed values in place",
        real_tokens_sliced: "its own number of real tokens",
    })
    assert not missed, missed


def test_check_masked_cross_attention_catches_padding_weight_only_the_padding_shows():
    def ignores_the_last_token_only(q, k, v, mask):  # weight on all but the last slot
        scores = _scores(q, k)
        scores[:, :, -1] = float("-inf")
        return scores.softmax(-1) @ v

    result = check_masked_cross_attention(ignores_the_last_token_only)
    assert not result


def test_check_masked_cross_attention_needs_every_mask_dtype():
    def float_as_bias(q, k, v, mask):  # right for bool, wrong for 0/1 numbers
        if mask.dtype == torch.bool:
            return reference_masked_cross_attention(q, k, v, mask)
        return (_scores(q, k) + mask[:, None, :]).softmax(-1) @ v

    result = check_masked_cross_attention(float_as_bias)
    assert not result and "with the mask as float 0/1" in repr(result)
    assert "differs from the one with a bool mask" in repr(result)


# --- 7.3 -----------------------------------------------------------------------------


def _noised(known, noise, ab):
    ab = torch.as_tensor(ab, dtype=known.dtype)
    return ab.sqrt() * known + (1 - ab).sqrt() * noise


def test_check_inpaint_step_accepts_right_answers_written_differently():
    def with_lerp(latents, known, mask, noise, ab):
        return torch.lerp(_noised(known, noise, ab), latents, mask)

    def with_math(latents, known, mask, noise, ab):
        import math

        ab = float(ab)
        noised = math.sqrt(ab) * known + math.sqrt(1 - ab) * noise
        return noised + mask * (latents - noised)

    def in_float64(latents, known, mask, noise, ab):
        ab = torch.as_tensor(ab, dtype=torch.float64)
        noised = ab.sqrt() * known.double() + (1 - ab).sqrt() * noise.double()
        return mask.double() * latents.double() + (1 - mask.double()) * noised

    def keep_mask_first(latents, known, mask, noise, ab):
        keep = 1 - mask
        return keep * _noised(known, noise, ab) + (1 - keep) * latents

    def diffusers_style(latents, known, mask, noise, ab):  # the pipeline's own line
        init_latents_proper = _noised(known, noise, ab)
        return (1 - mask) * init_latents_proper + mask * latents

    for right in (reference_inpaint_step, with_lerp, with_math, in_float64,
                  keep_mask_first, diffusers_style):
        result = check_inpaint_step(right)
        assert result, (right.__name__, repr(result))


def test_check_inpaint_step_names_each_wrong_answer():
    def with_where(latents, known, mask, noise, ab):  # right for hard masks only
        return torch.where(mask.bool(), latents, _noised(known, noise, ab))

    def thresholded(latents, known, mask, noise, ab):
        return torch.where(mask > 0.5, latents, _noised(known, noise, ab))

    def inverted(latents, known, mask, noise, ab):
        return (1 - mask) * latents + mask * _noised(known, noise, ab)

    def pasted_clean(latents, known, mask, noise, ab):
        return mask * latents + (1 - mask) * known

    def signal_not_shrunk(latents, known, mask, noise, ab):
        ab = torch.as_tensor(ab)
        return mask * latents + (1 - mask) * (known + (1 - ab).sqrt() * noise)

    def no_square_roots(latents, known, mask, noise, ab):
        return mask * latents + (1 - mask) * (ab * known + (1 - ab) * noise)

    def lerp_style(latents, known, mask, noise, ab):
        return mask * latents + (1 - mask) * torch.lerp(known, noise, float(ab))

    def swapped_roots(latents, known, mask, noise, ab):
        return mask * latents + (1 - mask) * _noised(noise, known, ab)

    def noise_everywhere(latents, known, mask, noise, ab):
        ab = torch.as_tensor(ab)
        return (mask * (latents + (1 - ab).sqrt() * noise)
                + (1 - mask) * _noised(known, noise, ab))

    def renoised_everywhere(latents, known, mask, noise, ab):
        return (mask * _noised(latents, noise, ab)
                + (1 - mask) * _noised(known, noise, ab))

    def channel_zero_only(latents, known, mask, noise, ab):
        out = latents.clone()
        noised = _noised(known, noise, ab)
        out[:, :1] = mask * latents[:, :1] + (1 - mask) * noised[:, :1]
        return out

    def added(latents, known, mask, noise, ab):
        return latents + (1 - mask) * _noised(known, noise, ab)

    def own_noise(latents, known, mask, noise, ab):
        return reference_inpaint_step(latents, known, mask, torch.randn_like(noise), ab)

    def in_place(latents, known, mask, noise, ab):
        latents.mul_(mask).add_((1 - mask) * _noised(known, noise, ab))
        return latents

    def known_in_place(latents, known, mask, noise, ab):
        known.mul_(torch.as_tensor(ab).sqrt()).add_((1 - torch.as_tensor(ab)).sqrt()
                                                    * noise)
        return mask * latents + (1 - mask) * known

    def tensor_only(latents, known, mask, noise, ab):
        return reference_inpaint_step(latents, known, mask, noise,
                                      torch.tensor(1.0) * ab.sqrt() ** 2)

    def a_mask_of_four_channels(latents, known, mask, noise, ab):
        return reference_inpaint_step(latents, known, mask, noise, ab)[:, :1]

    missed = _missed(check_inpaint_step, {
        with_where: "the mask may be soft",
        thresholded: "the mask may be soft",
        inverted: "inverted",
        pasted_clean: "clean",
        signal_not_shrunk: "without shrinking the signal",
        no_square_roots: "square roots",
        lerp_style: "signal's share",
        swapped_roots: "swapped",
        noise_everywhere: "add noise to the repainted region",
        renoised_everywhere: "add noise to the repainted region",
        channel_zero_only: "four latent channels differently",
        added: "do not add to them",
        own_noise: "use the noise you were given",
        in_place: "changed latents in place",
        known_in_place: "changed known_latents in place",
        tensor_only: "float or as a 0-d tensor",
        a_mask_of_four_channels: "(B, 4, h, w)",
    })
    assert not missed, missed


def test_check_inpaint_step_lets_where_pass_the_hard_masks():
    """A torch.where answer fails only on the soft mask, the last case."""
    def with_where(latents, known, mask, noise, ab):
        return torch.where(mask == 1, latents, _noised(known, noise, ab))

    result = check_inpaint_step(with_where)
    assert not result and "with a soft mask" in repr(result)


def test_reference_inpaint_step_is_diffusers_blend_with_add_noise():
    """The 4-channel branch of StableDiffusionInpaintPipeline: the known latents noised
    by the scheduler's add_noise to the next timestep, blended with the mask."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    latents, known, noise = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    for t in (900, 250, 0):
        proper = scheduler.add_noise(known, noise, torch.tensor([t]))
        theirs = (1 - mask) * proper + mask * latents
        ours = reference_inpaint_step(latents, known, mask, noise,
                                      scheduler.alphas_cumprod[t])
        assert torch.allclose(ours, theirs, atol=1e-6), t


def test_reference_masked_cross_attention_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 8, generator=g), torch.randn(2, 7, 8, generator=g),
               torch.randn(2, 7, 8, generator=g))
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :].bool())
    assert torch.allclose(reference_masked_cross_attention(q, k, v, mask), theirs,
                          atol=1e-6)


# --- no answer in a message or in the checks' code -----------------------------------

# Each matches a way to write an answer (or its core) and nothing a check needs.
TELLTALES = {
    "7.1": [r"1\s*/\s*[\w.()]*\.std\(", r"\.std\([^)]*\)\s*\.\s*reciprocal",
            r"np\.std\("],
    "7.2": [r"masked_fill\(", r"\.softmax\(", r"softmax\(\s*\w+\s*,\s*dim",
            r"scaled_dot_product_attention\(", r"\*\s*-\s*1e[49]|-\s*1e[49]\s*\*",
            r"float\(\s*[\"']-inf"],
    "7.3": [r"repaint_mask\s*\*\s*latents", r"\(1 - repaint_mask\)",
            r"torch\.where\(\s*repaint_mask", r"lerp\("],
}


def _telltales(text: str) -> list[str]:
    return [pattern for patterns in TELLTALES.values() for pattern in patterns
            if re.search(pattern, text)]


def test_the_checks_code_holds_no_answer():
    source = inspect.getsource(ch07_latent)
    code = "\n".join(line for line in source.splitlines()
                     if not line.lstrip().startswith("#"))
    assert _telltales(code) == []


def test_no_message_shows_the_answers_code():
    answers = {
        check_kl_divergence: [lambda m, lv: m.sum((1, 2, 3)),
                              lambda m, lv: (m ** 2 + lv.exp()).sum((1, 2, 3)),
                              reference_kl_divergence],
        check_masked_cross_attention: [
            lambda q, k, v, m: _scores(q, k).softmax(-1) @ v,
            lambda q, k, v, m: (_scores(q, k) * m[:, None, :]).softmax(-1) @ v,
            lambda q, k, v, m: q, reference_masked_cross_attention],
        check_inpaint_step: [lambda x, k, m, n, ab: x,
                             lambda x, k, m, n, ab: m * x + (1 - m) * k,
                             reference_inpaint_step],
    }
    for check, tries in answers.items():
        for answer in tries:
            message = repr(check(answer))
            assert _telltales(message) == [], message
            assert "sqrt()" not in message and ".std()" not in message, message
