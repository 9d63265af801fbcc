"""Every exercise check accepts the right answer and rejects typical wrong ones with a hint."""

import warnings

import numpy as np
import torch

from course_utils.checks import (check_beta_end, check_corrupt, check_noise_to_snr, check_ddpm_step, check_mix_factors,
                                  check_ema_update, check_sdedit, check_snr_crossing, check_transform,
                                  check_x0_from_eps)


def test_check_corrupt():
    def right(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return x * (1 - amount) + noise * amount

    def swapped(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return noise * (1 - amount) + x * amount

    def not_broadcast(x, noise, amount):
        return x * (1 - amount) + noise * amount

    def unfinished(x, noise, amount):
        raise NotImplementedError

    assert check_corrupt(right)
    assert not check_corrupt(swapped)
    result = check_corrupt(not_broadcast)
    assert not result and "raised" in repr(result)
    assert "NotImplementedError" in repr(check_corrupt(unfinished))
    assert "function" in repr(check_corrupt(42))



def test_check_corrupt_accepts_right_answers_written_differently():
    def by_lerp(x, noise, amount):
        return torch.lerp(x, noise, amount.view(-1, 1, 1, 1))

    def by_difference(x, noise, amount):  # x + a (ε − x)
        return x + amount[:, None, None, None] * (noise - x)

    def in_float64(x, noise, amount):
        a = amount.double().reshape(len(amount), 1, 1, 1)
        return x.double() * (1 - a) + noise.double() * a

    for answer in (by_lerp, by_difference, in_float64):
        result = check_corrupt(answer)
        assert result, f"{answer.__name__}: {result}"


def test_check_corrupt_names_the_usual_slips():
    def not_broadcast(x, noise, amount):  # (B,) against (B, C, H, W): a RuntimeError
        return x * (1 - amount) + noise * amount

    def own_noise(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return x * (1 - amount) + torch.randn_like(x) * amount

    def no_noise(x, noise, amount):
        return x * (1 - amount.view(-1, 1, 1, 1))

    def first_amount(x, noise, amount):
        return x * (1 - amount[0]) + noise * amount[0]

    def swapped(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return noise * (1 - amount) + x * amount

    result = check_corrupt(not_broadcast)
    assert not result and "view(-1, 1, 1, 1)" in repr(result)
    for answer in (own_noise, no_noise):
        result = check_corrupt(answer)
        message = repr(result)
        assert not result and "use the noise you were given" in message, answer.__name__
    result = check_corrupt(first_amount)
    assert not result and "amount[0]" in repr(result)
    result = check_corrupt(swapped)
    assert not result and "swapped" in repr(result)
    # the reshape hint only when the shape is wrong, not for a result of another type
    assert "reshape" in repr(check_corrupt(lambda x, noise, amount: x[0]))
    result = check_corrupt(lambda x, noise, amount: x.tolist())
    assert not result and "reshape" not in repr(result)

def _beta_end_by_bisection(target, beta_start, n_steps):
    low, high = beta_start, 0.999
    for _ in range(60):
        middle = (low + high) / 2
        betas = torch.linspace(beta_start, middle, n_steps, dtype=torch.float64)
        low, high = (middle, high) if torch.prod(1 - betas) > target else (low, middle)
    return (low + high) / 2


def test_check_beta_end():
    result = check_beta_end(_beta_end_by_bisection)
    assert result and "0.02" in repr(result)
    first_order = check_beta_end(lambda target, b0, n: 2 * (1 - target) / n - b0)
    assert not first_order and "1 − Σβ" in repr(first_order)
    log_sum = check_beta_end(lambda target, b0, n: 2 * -np.log(target) / n - b0)
    assert not log_sum and "β² terms" in repr(log_sum)
    assert "one number" in repr(check_beta_end(lambda target, b0, n: "0.02"))
    assert "[β_start, 1)" in repr(check_beta_end(lambda target, b0, n: -1.0))
    # a one-element tensor is a number too
    assert check_beta_end(lambda target, b0, n: torch.tensor(_beta_end_by_bisection(target, b0, n)))


def test_check_beta_end_is_quiet_about_a_bisection_the_wrong_way():
    def wrong_way(target, beta_start, n_steps):  # ends at β_end ≈ 0.999, where ᾱ_T = 0
        low, high = beta_start, 0.999
        for _ in range(60):
            middle = (low + high) / 2
            betas = torch.linspace(beta_start, middle, n_steps, dtype=torch.float64)
            too_much_signal = torch.prod(1 - betas) > target
            low, high = (low, middle) if too_much_signal else (middle, high)
        return (low + high) / 2

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero warning would raise
        result = check_beta_end(wrong_way)
    assert not result and "your β_end" in repr(result)


def test_check_noise_to_snr():
    def right(x0, noise, snr):
        alpha_bar = (snr / (1 + snr)).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def variance_exploding(x0, noise, snr):
        return x0 + noise / snr.sqrt().view(-1, 1, 1, 1)

    def snr_as_alpha_bar(x0, noise, snr):
        alpha_bar = snr.clamp(max=1).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def no_sqrt(x0, noise, snr):
        alpha_bar = (snr / (1 + snr)).view(-1, 1, 1, 1)
        return alpha_bar * x0 + (1 - alpha_bar) * noise

    def first_snr_only(x0, noise, snr):
        alpha_bar = snr[0] / (1 + snr[0])
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    assert check_noise_to_snr(right)
    assert "VE form" in repr(check_noise_to_snr(variance_exploding))
    assert "solve it for ᾱ" in repr(check_noise_to_snr(snr_as_alpha_bar))
    assert "square roots" in repr(check_noise_to_snr(no_sqrt))
    assert "first image's SNR" in repr(check_noise_to_snr(first_snr_only))
    assert "reshape" in repr(check_noise_to_snr(lambda x0, noise, snr: x0[0]))
    assert "sqrt()" not in repr(check_noise_to_snr(right))  # the pass message never shows code


def test_check_noise_to_snr_accepts_right_answers_written_differently():
    """ᾱ from the SNR three ways: the check compares values, not code."""
    def by_sigmoid(x0, noise, snr):  # ᾱ is the logistic sigmoid of log SNR
        alpha_bar = torch.sigmoid(snr.log()).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def by_rescaling(x0, noise, snr):  # VE x_0 + ε/√SNR, shrunk back to unit variance
        snr = snr.view(-1, 1, 1, 1)
        return (snr.sqrt() * x0 + noise) / (1 + snr).sqrt()

    def by_noise_share(x0, noise, snr):  # 1 − ᾱ = 1 / (1 + SNR)
        noise_share = (1 / (1 + snr))[:, None, None, None]
        return (1 - noise_share).sqrt() * x0 + noise_share.sqrt() * noise

    for answer in (by_sigmoid, by_rescaling, by_noise_share):
        result = check_noise_to_snr(answer)
        assert result, f"{answer.__name__}: {result}"


def test_check_noise_to_snr_rejects_plausible_wrong_answers_with_a_hint():
    def swapped(x0, noise, snr):  # ᾱ = 1 / (1 + SNR): the noise's share
        alpha_bar = (1 / (1 + snr)).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def amplitude_ratio(x0, noise, snr):  # SNR read as √ᾱ / √(1 − ᾱ)
        alpha_bar = (snr**2 / (1 + snr**2)).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def fixed_batch(x0, noise, snr):  # right for the notebook's batch of 3 only
        alpha_bar = (snr / (1 + snr)).view(3, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def in_place(x0, noise, snr):
        alpha_bar = (snr / (1 + snr)).view(-1, 1, 1, 1)
        return x0.mul_(alpha_bar.sqrt()).add_((1 - alpha_bar).sqrt() * noise)

    result = check_noise_to_snr(swapped)
    assert not result and "noise's share" in repr(result)
    result = check_noise_to_snr(amplitude_ratio)
    assert not result and "ratio of powers" in repr(result)
    result = check_noise_to_snr(fixed_batch)
    assert not result and "batch of 4" in repr(result)
    result = check_noise_to_snr(in_place)
    assert not result and "do not modify x0" in repr(result)


def test_check_noise_to_snr_names_broadcasting_and_ignored_noise():
    def not_broadcast(x0, noise, snr):  # (B,) against (B, C, H, W): a RuntimeError
        alpha_bar = snr / (1 + snr)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def own_noise(x0, noise, snr):
        alpha_bar = (snr / (1 + snr)).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * torch.randn_like(x0)

    result = check_noise_to_snr(not_broadcast)
    assert not result and "raised RuntimeError" in repr(result)
    assert "(B, 1, 1, 1)" in repr(result)
    result = check_noise_to_snr(own_noise)
    assert not result and "use the noise you were given" in repr(result)


def test_check_snr_crossing():
    assert check_snr_crossing(259)
    assert check_snr_crossing(torch.tensor(259))
    assert check_snr_crossing(np.int64(259))  # what np.argmax returns
    assert "not where the SNR first drops" in repr(check_snr_crossing(np.int64(600)))
    assert "off by one" in repr(check_snr_crossing(258))
    result = check_snr_crossing(260)  # the paper's 1-based t
    assert not result and "0-based" in repr(result)
    # no direction (it would let a learner search for the answer): the same hint either side
    assert "not where the SNR first drops" in repr(check_snr_crossing(600))
    assert "not where the SNR first drops" in repr(check_snr_crossing(20))
    assert "not a timestep" in repr(check_snr_crossing(1000))
    assert not check_snr_crossing(None)
    assert not check_snr_crossing(259.0)


def test_reference_ddpm_step_equals_diffusers():
    from diffusers import DDPMScheduler

    from reference_answers import reference_ddpm_step

    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    for t in (999, 500, 1, 0):
        noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(t))
        ours = reference_ddpm_step(x_t, eps, t, scheduler, noise)
        theirs = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(ours, theirs, atol=5e-4, rtol=1e-4), t


def test_check_x0_from_eps():
    def right(x_t, eps, t, ab):
        ab = ab[t].view(-1, 1, 1, 1)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def unscaled(x_t, eps, t, ab):
        ab = ab[t].view(-1, 1, 1, 1)
        return x_t - (1 - ab).sqrt() * eps

    assert check_x0_from_eps(right)
    assert "scaling" in repr(check_x0_from_eps(unscaled))
    assert not check_x0_from_eps(lambda x_t, eps, t, ab: x_t)


def test_check_ddpm_step():
    from reference_answers import reference_ddpm_step

    def no_noise(x_t, eps, t, s, noise):
        return reference_ddpm_step(x_t, eps, t, s, torch.zeros_like(noise))

    def beta_variance(x_t, eps, t, s, noise):
        mean = (x_t - s.betas[t] / (1 - s.alphas_cumprod[t]).sqrt() * eps) / s.alphas[t].sqrt()
        return mean + s.betas[t].sqrt() * noise

    assert check_ddpm_step(reference_ddpm_step)

    def via_x0(x_t, eps, t, s, noise):  # Ho et al. eq. 7: x̂0 first, then the posterior mean
        ab, beta, alpha = s.alphas_cumprod[t], s.betas[t], s.alphas[t]
        ab_prev = s.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        mean = (ab_prev.sqrt() * beta / (1 - ab) * x0
                + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t)
        return mean + ((1 - ab_prev) / (1 - ab) * beta).sqrt() * noise

    assert check_ddpm_step(via_x0)
    assert "fresh noise" in repr(check_ddpm_step(no_noise))
    assert "fixed_small" in repr(check_ddpm_step(beta_variance))
    assert not check_ddpm_step(lambda x_t, eps, t, s, noise: x_t)


def _ch02_schedulers():
    """The notebook's global noise_scheduler (cosine, v-prediction) and a linear one a learner might make."""
    from diffusers import DDPMScheduler

    return (DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"),
            DDPMScheduler(num_train_timesteps=1000))


def _x0_from(ab, x_t, eps):
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def test_check_x0_from_eps_accepts_right_answers_written_differently():
    def float64(x_t, eps, t, alphas_cumprod):
        ab = alphas_cumprod.double()[t].view(-1, 1, 1, 1)
        return (x_t.double() - torch.sqrt(1 - ab) * eps.double()) / torch.sqrt(ab)

    def indexed_by_a_tensor(x_t, eps, t, alphas_cumprod):
        ab = torch.gather(alphas_cumprod, 0, torch.as_tensor(t))[:, None, None, None]
        return torch.div(torch.sub(x_t, torch.sqrt(1 - ab) * eps), torch.sqrt(ab))

    def rsqrt(x_t, eps, t, alphas_cumprod):
        ab = alphas_cumprod[t].reshape(-1, 1, 1, 1)
        return x_t * ab.rsqrt() - ((1 - ab) / ab).sqrt() * eps

    for right in (float64, indexed_by_a_tensor, rsqrt):
        result = check_x0_from_eps(right)
        assert result, (right.__name__, result)


def test_check_x0_from_eps_names_each_slip():
    notebook, linear = _ch02_schedulers()

    def per_image(table, t):
        return table[t].view(-1, 1, 1, 1)

    slips = {  # wrong answer: words its hint must hold
        lambda x, e, t, ab: x.sub_((1 - per_image(ab, t)).sqrt() * e).div_(per_image(ab, t).sqrt()):
            ("changed x_t in place", "do not modify x_t in place"),
        lambda x, e, t, ab: (x - (1 - ab[t]).sqrt() * e) / ab[t].sqrt():
            ("must match the size of tensor", ".view(-1, 1, 1, 1)"),
        lambda x, e, t, ab: _x0_from(per_image(ab, t), x, e).numpy():
            ("returned ndarray", "torch operations"),
        lambda x, e, t, ab: _x0_from(per_image(notebook.alphas_cumprod, t), x, e):
            ("use the alphas_cumprod passed in",),
        lambda x, e, t, ab: _x0_from(per_image(linear.alphas_cumprod, t), x, e):
            ("use the alphas_cumprod passed in",),
        lambda x, e, t, ab: _x0_from(per_image(ab, t - 1), x, e): ("off by one", "alphas_cumprod[t − 1]"),
        lambda x, e, t, ab: _x0_from(per_image(ab, t + 1), x, e): ("off by one", "alphas_cumprod[t + 1]"),
        lambda x, e, t, ab: _x0_from(per_image(linear.alphas, t), x, e): ("that is α_t",),
        lambda x, e, t, ab: (x + (1 - per_image(ab, t)).sqrt() * e) / per_image(ab, t).sqrt(): ("sign",),
        lambda x, e, t, ab: (x - per_image(ab, t).sqrt() * e) / (1 - per_image(ab, t)).sqrt(): ("swapped",),
        lambda x, e, t, ab: (x - (1 - per_image(ab, t)).sqrt() * e) * per_image(ab, t).sqrt():
            ("not multiplying",),
    }
    missed = [(number, words, repr(result)) for number, (wrong, words) in enumerate(slips.items())
              if (result := check_x0_from_eps(wrong)) or not all(w in repr(result) for w in words)]
    assert not missed, missed  # every slip listed, not only the first
    numpy_result = repr(check_x0_from_eps(lambda x, e, t, ab: _x0_from(per_image(ab, t), x, e).numpy()))
    assert "reshape" not in numpy_result  # a numpy array is not a shape slip


def _ddpm_parts(x_t, eps, t, s):
    beta, alpha, ab = s.betas[t], s.alphas[t], s.alphas_cumprod[t]
    ab_prev = s.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
    return beta, alpha, ab, ab_prev, (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()


def test_check_ddpm_step_accepts_right_answers_written_differently():
    def via_pred_original_sample(x_t, eps, t, s, noise):  # the posterior mean from x̂0, as diffusers forms it
        t = torch.as_tensor(t)
        ab = s.alphas_cumprod[t]
        ab_prev = s.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
        beta = 1 - ab / ab_prev
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t
        return mean + ((1 - ab_prev) / (1 - ab) * beta).sqrt() * noise

    def float64(x_t, eps, t, s, noise):
        betas, abar = s.betas.double(), s.alphas_cumprod.double()
        ab_prev = abar[t - 1] if t > 0 else 1.0
        mean = (x_t.double() - betas[t] / torch.sqrt(1 - abar[t]) * eps.double()) / torch.sqrt(1 - betas[t])
        return mean + torch.sqrt((1 - ab_prev) / (1 - abar[t]) * betas[t]) * noise.double()

    def tensor_t_and_where(x_t, eps, t, s, noise):
        t = torch.tensor([t])
        ab_prev = torch.where(t > 0, s.alphas_cumprod[(t - 1).clamp(min=0)], torch.ones(1))
        beta, alpha, ab = s.betas[t], s.alphas[t], s.alphas_cumprod[t]
        sigma = torch.sqrt((1 - ab_prev) / (1 - ab) * beta)
        return torch.addcmul(torch.rsqrt(alpha) * (x_t - beta * torch.rsqrt(1 - ab) * eps), sigma, noise)

    for right in (via_pred_original_sample, float64, tensor_t_and_where):
        result = check_ddpm_step(right)
        assert result, (right.__name__, result)


def test_check_ddpm_step_names_each_slip():
    from reference_answers import reference_ddpm_step

    notebook, linear = _ch02_schedulers()

    def step(mean=None, sigma=None, ab_prev=None):
        """A step with the mean, σ or ᾱ_{t−1} replaced by f(β, α, ᾱ_t, x_t, ε) / f(β, variance) / f(s, t)."""
        def answer(x_t, eps, t, s, noise):
            beta, alpha, ab, prev, right_mean = _ddpm_parts(x_t, eps, t, s)
            prev = prev if ab_prev is None else ab_prev(s, t)
            variance = (1 - prev) / (1 - ab) * beta
            return ((right_mean if mean is None else mean(beta, alpha, ab, x_t, eps))
                    + (variance.sqrt() if sigma is None else sigma(beta, variance)) * noise)
        return answer

    def in_place(x_t, eps, t, s, noise):
        beta, alpha, ab, ab_prev, _ = _ddpm_parts(x_t, eps, t, s)
        x_t -= beta / (1 - ab).sqrt() * eps
        x_t /= alpha.sqrt()
        return x_t.add_(((1 - ab_prev) / (1 - ab) * beta).sqrt() * noise)

    slips = [  # (wrong answer, words its hint must hold)
        (in_place, ("changed x_t in place", "do not modify x_t in place")),
        (lambda x, e, t, s, z: reference_ddpm_step(x, e, t, s, z).numpy(), ("returned ndarray", "torch operations")),
        (lambda x, e, t, s, z: reference_ddpm_step(x, e, t, notebook, z), ("use the scheduler passed in",)),
        (lambda x, e, t, s, z: reference_ddpm_step(x, e, t, linear, z), ("use the scheduler passed in",)),
        (lambda x, e, t, s, z: reference_ddpm_step(x, e, t, s, torch.randn_like(z)), ("use the given z",)),
        (lambda x, e, t, s, z: reference_ddpm_step(1.01 * x, e, t, s, torch.zeros_like(z)),
         ("use the given z", "did not change")),
        (step(sigma=lambda beta, variance: variance), ("standard deviation", "not by β̃_t itself")),
        (step(ab_prev=lambda s, t: s.alphas_cumprod[t]), ("fixed_small", "index ᾱ_t where ᾱ_{t−1} belongs")),
        (step(ab_prev=lambda s, t: s.alphas_cumprod[t + 1]), ("not alphas_cumprod[t + 1]",)),
        (step(ab_prev=lambda s, t: s.alphas_cumprod[t - 1]), ("alphas_cumprod[−1]",)),  # wraps round at t = 0
        (step(mean=lambda b, a, ab, x, e: (x - b / (1 - ab).sqrt() * e) / ab.sqrt()), ("not by √ᾱ_t",)),
        (step(mean=lambda b, a, ab, x, e: (x - b / (1 - a).sqrt() * e) / a.sqrt()), ("with α_t in its place",)),
        (step(mean=lambda b, a, ab, x, e: (x + b / (1 - ab).sqrt() * e) / a.sqrt()), ("sign",)),
        (lambda x, e, t, s, z: reference_ddpm_step(x, e, t, s, -z), ("enters with a plus",)),
        (step(mean=lambda b, a, ab, x, e: x / a.sqrt() - b / (1 - ab).sqrt() * e), ("the ε term included",)),
        (step(mean=lambda b, a, ab, x, e: x - b / (1 - ab).sqrt() * e / a.sqrt()), ("x_t included",)),
        (step(mean=lambda b, a, ab, x, e: (x - b / (1 - ab).sqrt() * e) * a.sqrt()), ("do not multiply",)),
        (step(mean=lambda b, a, ab, x, e: (x - b / (1 - ab) * e) / a.sqrt()), ("square root of 1 − ᾱ_t",)),
        (step(sigma=lambda beta, variance: variance.sqrt() / 2), ("the mean is right but σ_t is not",)),
    ]
    missed = [(number, words, repr(result)) for number, (wrong, words) in enumerate(slips)
              if (result := check_ddpm_step(wrong)) or not all(w in repr(result) for w in words)]
    assert not missed, missed  # every slip listed, not only the first


def test_check_mix_factors():
    assert check_mix_factors(lambda n, p: [1 - ((n - i - 1) / (n - i)) ** p for i in range(n)])
    # the page's rule is only the power-1 case
    assert "right for power 1" in repr(check_mix_factors(lambda n, p: [1 / (n - i) for i in range(n)]))
    assert "shares of the distance left" in repr(
        check_mix_factors(lambda n, p: [(1 - (i + 1) / n) ** p for i in range(n)]))
    assert "divide by that share" in repr(
        check_mix_factors(lambda n, p: [(1 - i / n) ** p - (1 - (i + 1) / n) ** p for i in range(n)]))
    assert "last step" in repr(check_mix_factors(lambda n, p: [0.5] * n))
    # the step that goes wrong and what it leaves, never the right factors (issue 28)
    message = repr(check_mix_factors(lambda n, p: [0.5] * (n - 1) + [1.0]))
    assert "after step 0" in message and "leave 0.5" in message
    assert "0.2" not in message and "0.25" not in message
    assert "one factor per step" in repr(check_mix_factors(lambda n, p: [1.0]))
    assert "TypeError" in repr(check_mix_factors(lambda n: [1.0] * n))  # the old one-argument form


def test_check_transform():
    from reference_answers import ReferenceTransform as ImageTransform

    good = ImageTransform(size=32, mode="RGB", flip_prob=0.5, seed=0)
    assert check_transform(good)
    zero_one = ImageTransform(size=32, mode="RGB", value_range=(0, 1))
    assert "[-1, 1]" in repr(check_transform(zero_one))

    def no_convert(batch):
        return {"images": [ImageTransform(size=32, mode="RGB").one(im) if im.mode == "RGB" else torch.zeros(1, 32, 32)
                           for im in batch["image"]]}

    assert "shape" in repr(check_transform(no_convert))

    def flips_up_down(batch):
        return {"images": [t.flip(-2) for t in good(batch)["images"]]}

    assert "up-down" in repr(check_transform(flips_up_down))
    for seed in range(6):  # a random up-down flip: one image may come out unflipped
        generator = torch.Generator().manual_seed(seed)

        def random_up_down(batch):
            images = ImageTransform(size=32, mode="RGB")(batch)["images"]
            return {"images": [t.flip(-2) if torch.rand(1, generator=generator) < 0.5
                               else t for t in images]}

        assert "up-down" in repr(check_transform(random_up_down)), seed
    never_flips = ImageTransform(size=32, mode="RGB", flip_prob=0.0)
    assert "flipped" in repr(check_transform(never_flips))
    always_flips = ImageTransform(size=32, mode="RGB", flip_prob=1.0)
    assert "flipped" in repr(check_transform(always_flips))
    assert not check_transform(lambda batch: {"img": []})


def test_check_sdedit():
    right = _sdedit()

    def wrong(start="images", first_kept=True, scale_input=True):
        """An answer with one of the usual mistakes."""
        def sdedit(model, scheduler, images, noise, strength):
            n_kept = round(strength * len(scheduler.timesteps))
            if n_kept == 0:
                return images
            timesteps = scheduler.timesteps[len(scheduler.timesteps) - n_kept:]
            if start == "noise":
                x = noise * scheduler.init_noise_sigma
            else:
                x = scheduler.add_noise(images, noise, timesteps[:1] if first_kept else scheduler.timesteps[:1])
            for t in timesteps:
                model_input = scheduler.scale_model_input(x, t) if scale_input else x
                x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
            return x
        return sdedit

    def all_steps(model, scheduler, images, noise, strength):
        x = scheduler.add_noise(images, noise, scheduler.timesteps[:1])
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
        return x

    def stub(model, scheduler, images, noise, strength):
        raise NotImplementedError

    assert check_sdedit(right)
    assert "not from pure noise" in repr(check_sdedit(wrong(start="noise")))
    assert "not to the schedule's first" in repr(check_sdedit(wrong(first_kept=False)))
    assert "EulerDiscreteScheduler needs it" in repr(check_sdedit(wrong(scale_input=False)))
    assert "strength 0" in repr(check_sdedit(all_steps))
    assert "NotImplementedError" in repr(check_sdedit(stub))
    assert "should be called at" in repr(check_sdedit(lambda m, s, images, noise, strength: images))


def test_check_ema_update():
    def right(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            e.mul_(decay).add_(p, alpha=1 - decay)

    def not_in_place(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            e = decay * e + (1 - decay) * p  # noqa: F841

    def swapped(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            e.copy_((1 - decay) * e + decay * p)

    def rebinds_list_items(ema_params, params, decay):  # leaves a real model's EMA unchanged
        for i, (e, p) in enumerate(zip(ema_params, params)):
            ema_params[i] = decay * e + (1 - decay) * p

    assert check_ema_update(right)
    assert "in place" in repr(check_ema_update(rebinds_list_items))
    assert "in place" in repr(check_ema_update(not_in_place))
    assert "old average" in repr(check_ema_update(swapped))


def test_check_sdedit_explains_a_0d_timestep():
    """timesteps[0] is 0-d: DDIM's add_noise takes it, Euler's raises a TypeError."""
    first_timestep = _sdedit(start_timestep=lambda timesteps, images: timesteps[0])
    # right, too: one timestep per image
    one_per_image = _sdedit(start_timestep=lambda timesteps, images: timesteps[0].repeat(len(images)))

    result = check_sdedit(first_timestep)
    assert not result and "timesteps[:1]" in repr(result) and "0-d" in repr(result)
    assert check_sdedit(one_per_image)


def test_check_ema_update_tries_more_than_one_decay():
    def fixed_decay(ema_params, params, decay):  # ignores decay: right at 0.9 only
        for e, p in zip(ema_params, params):
            e.mul_(0.9).add_(p, alpha=0.1)

    result = check_ema_update(fixed_decay)
    assert not result and "decay" in repr(result)


# --- chapter 3 review: what the checks let through or misnamed ----------------------------------------------------

def _sdedit(n_kept_of=round, model_t=lambda t, x: t, noise_for=lambda images, noise: noise, add_noise_with=None,
            write_back=False, start_timestep=lambda timesteps, images: timesteps[:1]):
    """A right SDEdit answer, with one part swapped out to make the usual variants."""
    def sdedit(model, scheduler, images, noise, strength):
        n_steps = len(scheduler.timesteps)
        n_kept = n_kept_of(strength * n_steps)
        if n_kept == 0:
            return images
        timesteps = scheduler.timesteps[n_steps - n_kept:]
        x = (add_noise_with or scheduler).add_noise(images, noise_for(images, noise),
                                                   start_timestep(timesteps, images))
        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            x = scheduler.step(model(model_input, model_t(t, x)).sample, t, x).prev_sample
        if write_back:  # "edits the picture": the caller's images are overwritten
            images.copy_(x)
            return images
        return x
    return sdedit


def test_check_sdedit_accepts_right_answers_written_differently():
    assert check_sdedit(_sdedit(model_t=lambda t, x: t.expand(len(x))))  # one timestep per image
    assert check_sdedit(_sdedit(model_t=lambda t, x: t.repeat(len(x)).float()))
    assert check_sdedit(_sdedit(model_t=lambda t, x: int(t)))
    assert check_sdedit(_sdedit(n_kept_of=lambda k: int(k + 0.5)))  # round half up: the same away from .5

    def by_keyword(model, scheduler, images, noise, strength):
        n_kept = round(strength * len(scheduler.timesteps))
        if not n_kept:
            return images.clone()
        timesteps = scheduler.timesteps[-n_kept:]
        x = scheduler.add_noise(original_samples=images, noise=noise, timesteps=timesteps[0:1])
        for t in timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t.expand(len(x))).sample, t, x).prev_sample
        return x

    assert check_sdedit(by_keyword)


def test_check_sdedit_tells_round_from_int_and_ceil():
    import math

    for rounding in (int, math.ceil):
        result = check_sdedit(_sdedit(n_kept_of=rounding))
        assert not result and "round(" in repr(result) and "this answer kept" in repr(result), (rounding, result)


def test_check_sdedit_points_at_the_slice_and_at_add_noise():
    def one_too_many(model, scheduler, images, noise, strength):
        n = len(scheduler.timesteps)
        k = round(strength * n)
        if k == 0:
            return images.clone()
        timesteps = scheduler.timesteps[n - k - 1:]  # off by one
        x = scheduler.add_noise(images, noise, timesteps[:1])
        for t in timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t).sample, t,
                               x).prev_sample
        return x

    assert "slice" in repr(check_sdedit(one_too_many))

    def noised_by_hand(model, scheduler, images, noise, strength):
        n = len(scheduler.timesteps)
        k = round(strength * n)
        if k == 0:
            return images.clone()
        timesteps = scheduler.timesteps[n - k:]
        alpha_bar = scheduler.alphas_cumprod[timesteps[0]]  # Euler's timesteps are floats
        x = alpha_bar.sqrt() * images + (1 - alpha_bar).sqrt() * noise
        for t in timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t).sample, t,
                               x).prev_sample
        return x

    result = check_sdedit(noised_by_hand)
    assert not result and "add_noise" in repr(result), result


def test_check_sdedit_says_use_the_noise_and_scheduler_you_are_given():
    from diffusers import DDPMScheduler

    fresh_noise = check_sdedit(_sdedit(noise_for=lambda images, noise: torch.randn_like(images)))
    assert not fresh_noise and "use the noise you are given" in repr(fresh_noise)
    chapter_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    global_scheduler = check_sdedit(_sdedit(add_noise_with=chapter_scheduler))
    assert not global_scheduler and "the scheduler and the noise you are given" in repr(global_scheduler)


def test_check_sdedit_rejects_an_answer_that_overwrites_its_images():
    result = check_sdedit(_sdedit(write_back=True))
    assert not result and "changed the `images` tensor" in repr(result)


def test_check_ema_update_says_leave_params_alone():
    def updates_params(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            p.mul_(decay).add_(e, alpha=1 - decay)

    def right_then_clobbers_params(ema_params, params, decay):
        for e, p in zip(ema_params, params):
            e.mul_(decay).add_(p, alpha=1 - decay)
            p.zero_()

    for answer in (updates_params, right_then_clobbers_params):
        result = check_ema_update(answer)
        assert not result and "`params` changed" in repr(result), answer.__name__

    def with_lerp(ema_params, params, decay):  # right, written differently
        for e, p in zip(ema_params, params):
            e.lerp_(p, 1 - decay)

    def with_foreach(ema_params, params, decay):
        torch._foreach_mul_(ema_params, decay)
        torch._foreach_add_(ema_params, params, alpha=1 - decay)

    assert check_ema_update(with_lerp) and check_ema_update(with_foreach)


def test_check_transform_gives_the_resize_hint_only_for_a_wrong_shape():
    from reference_answers import ReferenceTransform as ImageTransform

    good = ImageTransform(size=32, mode="RGB", flip_prob=0.5, seed=0)

    def uint8(batch):
        return {"images": [((t + 1) * 127.5).round().to(torch.uint8) for t in good(batch)["images"]]}

    def numpy_arrays(batch):
        return {"images": [t.numpy() for t in good(batch)["images"]]}

    for answer, says in ((uint8, "float"), (numpy_arrays, "ndarray")):
        result = check_transform(answer)
        assert not result and says in repr(result) and "resize" not in repr(result), result

    def wrong_size(batch):
        return {"images": [torch.nn.functional.interpolate(t[None], size=16)[0] for t in good(batch)["images"]]}

    result = check_transform(wrong_size)
    assert not result and "resize" in repr(result)


def _cumprod_prev(ab):
    return torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])


def test_check_posterior_variance():
    from course_utils.checks import check_posterior_variance

    def right(betas):
        ab = torch.cumprod(1 - betas, dim=0)
        return (1 - _cumprod_prev(ab)) / (1 - ab) * betas

    assert "standard deviation" in repr(check_posterior_variance(lambda b: right(b).sqrt()))

    def first_step_not_zero(betas):
        result = right(betas)
        result[0] = betas[0]
        return result

    def rooted(betas):
        ab = torch.cumprod(1 - betas, dim=0)
        return ((1 - _cumprod_prev(ab)) / (1 - ab)).sqrt() * betas

    def unfinished(betas):
        raise NotImplementedError

    assert check_posterior_variance(right)
    assert "other choice" in repr(check_posterior_variance(lambda betas: betas.clone()))
    assert "first step" in repr(check_posterior_variance(first_step_not_zero))
    assert "square root" in repr(check_posterior_variance(rooted))
    assert "one variance per timestep" in repr(check_posterior_variance(lambda betas: betas[1:]))
    assert "NotImplementedError" in repr(check_posterior_variance(unfinished))


def test_check_posterior_mean():
    from course_utils.checks import check_posterior_mean

    def right(x_t, x0, t, alphas_cumprod):
        ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
        beta = 1 - ab / ab_prev
        return ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t

    def no_roots(x_t, x0, t, alphas_cumprod):
        ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
        beta = 1 - ab / ab_prev
        return ab_prev * beta / (1 - ab) * x0 + (1 - beta) * (1 - ab_prev) / (1 - ab) * x_t

    assert check_posterior_mean(right)
    assert "square roots" in repr(check_posterior_mean(no_roots))
    assert not check_posterior_mean(lambda x_t, x0, t, ab: x0)
    assert "torch.Tensor" in repr(check_posterior_mean(lambda x_t, x0, t, ab: 1.0))


def test_check_q_sample_from():
    from course_utils.checks import check_q_sample_from

    def right(x_s, s, t, noise, alphas_cumprod):
        ratio = alphas_cumprod[t] / alphas_cumprod[s]
        return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise

    def from_x0(x_s, s, t, noise, alphas_cumprod):
        return alphas_cumprod[t].sqrt() * x_s + (1 - alphas_cumprod[t]).sqrt() * noise

    def no_roots(x_s, s, t, noise, alphas_cumprod):
        ratio = alphas_cumprod[t] / alphas_cumprod[s]
        return ratio * x_s + (1 - ratio) * noise

    assert check_q_sample_from(right)
    assert "clean x_0" in repr(check_q_sample_from(from_x0))
    assert "square roots" in repr(check_q_sample_from(no_roots))
    assert not check_q_sample_from(lambda x_s, s, t, noise, ab: x_s)


def test_check_frechet_diagonal():
    from course_utils.checks import check_frechet_diagonal

    def right(mu_a, var_a, mu_b, var_b):
        return float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))

    assert check_frechet_diagonal(right)
    assert "standard deviations" in repr(check_frechet_diagonal(
        lambda mu_a, var_a, mu_b, var_b: float(np.sum((mu_a - mu_b) ** 2) + np.sum((var_a - var_b) ** 2))))
    assert "mean term" in repr(check_frechet_diagonal(
        lambda mu_a, var_a, mu_b, var_b: float(np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))))
    assert "no square root" in repr(check_frechet_diagonal(lambda *args: np.sqrt(right(*args))))
    assert "number" in repr(check_frechet_diagonal(lambda *args: "far"))

    def unsquared_means(mu_a, var_a, mu_b, var_b):
        return float(np.linalg.norm(mu_a - mu_b)
                     + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))

    assert "square the distance between the means" in repr(
        check_frechet_diagonal(unsquared_means))

    def mean_over_dimensions(mu_a, var_a, mu_b, var_b):
        return float(np.mean((mu_a - mu_b) ** 2
                             + (np.sqrt(var_a) - np.sqrt(var_b)) ** 2))

    assert "sum over the dimensions" in repr(
        check_frechet_diagonal(mean_over_dimensions))


def test_check_eps_from_v():
    from course_utils.checks import check_eps_from_v

    assert check_eps_from_v(lambda x_t, v, ab: ab.sqrt() * v + (1 - ab).sqrt() * x_t)
    assert "sign" in repr(check_eps_from_v(lambda x_t, v, ab: ab.sqrt() * v - (1 - ab).sqrt() * x_t))
    assert "x̂0" in repr(check_eps_from_v(lambda x_t, v, ab: ab.sqrt() * x_t - (1 - ab).sqrt() * v))
    assert not check_eps_from_v(lambda x_t, v, ab: v)

    def in_place(x_t, v, ab):  # right value, but v is overwritten
        return v.mul_(ab.sqrt()).add_((1 - ab).sqrt() * x_t)

    assert "in place" in repr(check_eps_from_v(in_place))
    assert "float32" in repr(check_eps_from_v(
        lambda x_t, v, ab: (ab.sqrt() * v + (1 - ab).sqrt() * x_t).half()))


def test_check_fewest_nfe():
    from course_utils.checks import check_fewest_nfe

    sweep = {"DDIM": [(5, 8.0, 0.1), (10, 4.0, 0.2), (20, 2.0, 0.3)], "Heun": [(5, 3.0, 0.1), (9, 1.2, 0.2)]}

    def right(sweep, sampler, target):
        meeting = [nfe for nfe, ratio, _ in sweep[sampler] if ratio <= target]
        return min(meeting) if meeting else None

    def first_after_which_it_stays(sweep, sampler, target):
        rows = sweep[sampler]
        for i, (nfe, _, _) in enumerate(rows):
            if all(ratio <= target for _, ratio, _ in rows[i:]):
                return nfe
        return None

    def never_none(sweep, sampler, target):
        return right(sweep, sampler, target) or sweep[sampler][-1][0]

    assert check_fewest_nfe(right, sweep)

    def first_in_list_order(sweep, sampler, target):
        return next((nfe for nfe, ratio, _ in sweep[sampler] if ratio <= target), None)

    assert "smallest" in repr(check_fewest_nfe(first_in_list_order, sweep))
    assert "not monotonic" in repr(check_fewest_nfe(first_after_which_it_stays, sweep))
    assert "return None" in repr(check_fewest_nfe(never_none, sweep))
    assert "sweep" in repr(check_fewest_nfe(right, {}))


def test_check_guided_eps():
    from course_utils.checks import check_guided_eps

    def right(eps_cond, eps_uncond, w):
        w = torch.as_tensor(w, dtype=eps_cond.dtype)
        if w.ndim == 1:
            w = w.view(-1, 1, 1, 1)
        return eps_uncond + w * (eps_cond - eps_uncond)

    assert check_guided_eps(right)
    assert "Ho & Salimans" in repr(check_guided_eps(lambda c, u, w: c + w * (c - u)))  # the paper's convention
    assert "view(-1, 1, 1, 1)" in repr(check_guided_eps(lambda c, u, w: u + w * (c - u)))  # (B,) will not broadcast
    assert not check_guided_eps(lambda c, u, w: c)
    # w ignored: named as such, not as Ho & Salimans' convention (their form is ε_cond at w = 0)
    ignored = repr(check_guided_eps(lambda c, u, w: c.clone()))
    assert "unchanged" in ignored and "Ho & Salimans" not in ignored


def _heun(f, x, t, t_next):  # the published solution, as tests/reference_answers has it
    from reference_answers import reference_heun_step

    return reference_heun_step(f, x, t, t_next)


def _euler_to_zero(two_velocities):
    """A Heun step written with two velocities, made to take Euler's step (one call) to
    t_next = 0, as the exercise asks."""
    def step(f, x, t, t_next):
        if t_next == 0:
            return x + (t_next - t) * f(x, t)
        return two_velocities(f, x, t, t_next)
    return step


def _always_corrected(f, x, t, t_next):  # Heun with its correction at t_next = 0 too
    d = f(x, t)
    return x + (t_next - t) * (d + f(x + (t_next - t) * d, t_next)) / 2


def test_check_heun_step_accepts_heun_written_differently():
    from course_utils.checks import check_heun_step

    def as_two_euler_guesses(f, x, t, t_next):  # the mean of two Euler predictions
        h = t_next - t
        guess = x + h * f(x, t)
        return (guess + x + h * f(guess, t_next)) / 2

    def with_torch_add(f, x, t, t_next):
        d = f(x, t)
        d_next = f(torch.add(x, d, alpha=t_next - t), t_next)
        return torch.add(x, d + d_next, alpha=(t_next - t) / 2)

    def through_x0_and_noise(f, x, t, t_next):  # on the lerp: x̂0 and ε̂ of the mean v
        v = (f(x, t) + f(x + (t_next - t) * f(x, t), t_next)) / 2
        x0, eps = x - t * v, x + (1 - t) * v
        return (1 - t_next) * x0 + t_next * eps

    def euler_by_comparison(f, x, t, t_next):  # the last step spotted with <, not ==
        d = f(x, t)
        guess = x + (t_next - t) * d
        return guess if t_next < 1e-12 else x + (t_next - t) * (d + f(guess, t_next)) / 2

    assert check_heun_step(_heun, device="cpu")
    assert check_heun_step(euler_by_comparison, device="cpu")
    assert check_heun_step(_euler_to_zero(as_two_euler_guesses), device="cpu")
    assert check_heun_step(_euler_to_zero(with_torch_add), device="cpu")
    # three velocity calls but one thrown away: right values, the wrong cost
    three = check_heun_step(_euler_to_zero(through_x0_and_noise), device="cpu")
    assert not three and "3 times" in repr(three)


def test_check_heun_step_names_the_plausible_wrong_steps():
    from course_utils.checks import check_heun_step

    def euler(f, x, t, t_next):
        return x + (t_next - t) * f(x, t)

    def wrong_way(f, x, t, t_next):
        d = f(x, t)
        return x - (t_next - t) * (d + f(x + (t_next - t) * d, t_next)) / 2

    def midpoint(f, x, t, t_next):
        h, mid = t_next - t, (t + t_next) / 2
        return x + h * f(x + h / 2 * f(x, t), mid)

    def second_slope_at_x(f, x, t, t_next):  # forgets the guess
        return x + (t_next - t) * (f(x, t) + f(x, t_next)) / 2

    def from_the_guess(f, x, t, t_next):  # steps from Euler's guess, not from x_t
        guess = x + (t_next - t) * f(x, t)
        return guess + (t_next - t) * (f(x, t) + f(guess, t_next)) / 2

    def in_place(f, x, t, t_next):
        d = f(x, t)
        d_next = f(x + (t_next - t) * d, t_next)
        return x.add_((t_next - t) * (d + d_next) / 2)

    def second_at_time_t(f, x, t, t_next):  # copy-paste slip: both velocities at t
        guess = x + (t_next - t) * f(x, t)
        return x + (t_next - t) * (f(x, t) + f(guess, t)) / 2

    def network_time(f, x, t, t_next):  # the 1000 of flow_ema in the step
        d = f(x, 1000 * t)
        return x + (t_next - t) * (d + f(x + (t_next - t) * d, 1000 * t_next)) / 2

    def evaluates_then_drops(f, x, t, t_next):  # a second call on the last step, unused
        d = f(x, t)
        guess = x + (t_next - t) * d
        d_next = f(guess, t_next)
        return guess if t_next == 0 else x + (t_next - t) * (d + d_next) / 2

    hints = {euler: "Euler's step", wrong_way: "wrong direction", midpoint: "midpoint",
             second_at_time_t: "evaluated at time t", network_time: "1000 · t",
             second_slope_at_x: "at Euler's guess", from_the_guess: "differs",
             _always_corrected: "the last step, to t_next = 0, is Euler's",
             evaluates_then_drops: "for nothing", in_place: "in place"}
    for wrong, hint in hints.items():
        result = check_heun_step(wrong, device="cpu")
        assert not result and hint in repr(result), (wrong.__name__, repr(result))
    two_calls = check_heun_step(second_at_time_t, device="cpu")
    assert "at x_t" not in repr(two_calls)  # the hint for the other slip


def test_check_heun_step_says_what_velocity_fn_takes():
    from course_utils.checks import check_heun_step

    def per_image_times(f, x, t, t_next):  # a habit from calling the network
        times = torch.full((len(x),), t)
        d = f(x, times)
        d_next = f(x + (t_next - t) * d, torch.full((len(x),), t_next))
        return x + (t_next - t) * (d + d_next) / 2

    # equal times: accepted
    assert check_heun_step(_euler_to_zero(per_image_times), device="cpu")
    swapped = check_heun_step(lambda f, x, t, t_next: x + (t_next - t) * f(t, x),
                              device="cpu")
    assert not swapped and "takes one time t, a number" in repr(swapped)
    assert "swapped" in repr(swapped)


def test_check_heun_step_states_no_heun_step():
    from course_utils.checks import check_heun_step

    message = repr(check_heun_step(lambda f, x, t, t_next: x, device="cpu"))
    assert "(d + d′)/2" not in message and "/ 2" not in message


def test_check_heun_step_runs_on_the_learners_device():
    from course_utils.checks import check_heun_step

    def step_as_a_cpu_tensor(f, x, t, t_next):  # torch.tensor(...) without device=
        h = torch.tensor([t_next - t]).view(1, 1, 1, 1)
        d = f(x, t)
        return x + h * (d + f(x + h * d, t_next)) / 2

    right_on_cpu = _euler_to_zero(step_as_a_cpu_tensor)
    assert check_heun_step(right_on_cpu, device="cpu")
    result = check_heun_step(right_on_cpu, device="meta")
    assert not result and "on meta" in repr(result)
    assert check_heun_step(_heun, device="meta")


def test_a_stub_is_told_apart_from_torch_s_own_not_implemented_error():
    from course_utils.checks import check_heun_step

    def heun_step(velocity_fn, x_t, t, t_next):
        raise NotImplementedError  # your code here

    def on_a_device_without_the_operation(velocity_fn, x_t, t, t_next):
        raise NotImplementedError("Cannot copy out of meta tensor; no data!")

    assert "still raises" in repr(check_heun_step(heun_step, device="cpu"))
    other = repr(check_heun_step(on_a_device_without_the_operation, device="cpu"))
    assert "still raises" not in other and "Cannot copy out of meta tensor" in other


def test_checks_reject_an_answer_that_calls_the_course_s_own_code():
    """2.2 and 3.1 are answered by code later chapters export (issue 28): the checks
    name the delegation, however the answer reaches it."""
    import course_utils.ddpm as ddpm
    from course_utils import ImageTransform
    from course_utils.checks import check_ddpm_step, check_transform

    def via_reverse_step(x_t, eps, t, scheduler, noise):
        step = getattr(ddpm, "reverse_step")
        return step(x_t, eps, t, t - 1, scheduler.alphas_cumprod, noise, "small")

    result = check_ddpm_step(via_reverse_step)
    assert not result and "reverse_step" in repr(result)
    loader = ImageTransform(size=32, mode="RGB", flip_prob=0.5, seed=0)
    for transform in (loader, lambda batch: loader(batch)):
        result = check_transform(transform)
        assert not result and "ImageTransform" in repr(result)



def test_check_guidance_choice():
    from course_utils.checks import check_guidance_choice

    table = {0: (0.1, 1.5), 1: (0.85, 1.0), 2: (0.95, 1.2), 4: (0.98, 2.0)}

    def right(table, min_share):
        meeting = {w: ratio for w, (share, ratio) in table.items() if share >= min_share}
        return min(meeting, key=meeting.get) if meeting else None

    def highest_share(table, min_share):
        meeting = [w for w, (share, _) in table.items() if share >= min_share]
        return max(meeting, key=lambda w: table[w][0]) if meeting else None

    assert check_guidance_choice(right, table)
    assert "lowest FD" in repr(check_guidance_choice(highest_share, table))
    assert "return None" in repr(check_guidance_choice(lambda t, m: right(t, m) if right(t, m) is not None else 0,
                                                       table))
    assert "guidance_table" in repr(check_guidance_choice(right, {}))


# --- issue 25: chapter 6's checks -----------------------------------------------------------------------------

def _per_image(w, like):
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    return w.view(-1, 1, 1, 1) if w.ndim == 1 else w


def test_check_guided_eps_names_the_papers_convention():
    from course_utils.checks import check_guided_eps

    result = check_guided_eps(lambda c, u, w: (1 + _per_image(w, c)) * c - _per_image(w, c) * u)
    assert not result and "Ho & Salimans" in repr(result) and "guidance_scale" in repr(result)
    assert "w = 1 the conditional model" in repr(result) and "w − 1" in repr(result)
    swapped = check_guided_eps(lambda c, u, w: u + _per_image(w, c) * (u - c))
    assert not swapped and "wrong way" in repr(swapped)


def test_check_guided_eps_catches_an_answer_that_overwrites_its_input():
    from course_utils.checks import check_guided_eps

    result = check_guided_eps(lambda c, u, w: u.add_(_per_image(w, c) * (c - u)))
    assert not result and "in place" in repr(result) and "eps_uncond" in repr(result)
    in_place_cond = check_guided_eps(lambda c, u, w: c.sub_(u).mul_(_per_image(w, c)).add_(u))
    assert not in_place_cond and "eps_cond" in repr(in_place_cond)


def test_check_guided_eps_accepts_right_answers_written_differently():
    from course_utils.checks import check_guided_eps

    for right in (lambda c, u, w: c + (_per_image(w, c) - 1) * (c - u),  # the paper's form with w - 1
                  lambda c, u, w: (1 - _per_image(w, c)) * u + _per_image(w, c) * c,
                  lambda c, u, w: torch.lerp(u, c, _per_image(w, c)),
                  lambda c, u, w: (u.double() + _per_image(w, c).double() * (c - u).double())):
        assert check_guided_eps(right, device="cpu")


def test_check_guided_eps_runs_on_the_learners_device():
    # "meta" stands in for CUDA here: a CPU tensor of scales against predictions elsewhere fails the same way
    from course_utils.checks import check_guided_eps

    def without_device(eps_cond, eps_uncond, w):  # the old solution
        w = torch.as_tensor(w, dtype=eps_cond.dtype)
        return eps_uncond + (w.view(-1, 1, 1, 1) if w.ndim == 1 else w) * (eps_cond - eps_uncond)

    assert check_guided_eps(without_device, device="cpu")
    result = check_guided_eps(without_device, device="meta")
    assert not result and "device=eps_cond.device" in repr(result)
    assert check_guided_eps(lambda c, u, w: u + _per_image(w, c) * (c - u), device="meta")
    assert not check_guided_eps(lambda c, u, w: (u + _per_image(w, c) * (c - u)).to("cpu"), device="meta")


def test_check_guided_eps_defaults_to_the_learners_device(monkeypatch):
    import course_utils.checks.ch06_guidance as ch06

    seen = []
    monkeypatch.setattr(ch06, "get_device", lambda: seen.append(True) or torch.device("meta"))
    assert not ch06.check_guided_eps(lambda c, u, w: u + torch.as_tensor(w, dtype=c.dtype).view(-1, 1, 1, 1)
                                     * (c - u) if torch.as_tensor(w).ndim else u + w * (c - u))
    assert seen


def test_check_guidance_choice_diagnoses_each_mistake():
    from course_utils.checks import check_guidance_choice

    table = {0: (0.1, 2.1), 1: (0.94, 1.0), 2: (1.0, 1.3), 4: (1.0, 2.7), 8: (1.0, 4.0)}

    def meeting(table, min_share, strict=False):
        return {w: fd for w, (share, fd) in table.items() if (share > min_share if strict else share >= min_share)}

    def largest_fd(table, min_share):
        m = meeting(table, min_share)
        return max(m, key=m.get) if m else None

    def strictly_above(table, min_share):
        m = meeting(table, min_share, strict=True)
        return min(m, key=m.get) if m else None

    def highest_share(table, min_share):
        m = meeting(table, min_share)
        return max(m, key=lambda w: table[w][0]) if m else None

    def ignores_min_share(table, min_share):
        return min(table, key=lambda w: table[w][1]) if meeting(table, min_share) else None

    for answer, hint in [(largest_fd, "min, not max"), (strictly_above, ">= min_share"),
                         (highest_share, "highest share"), (ignores_min_share, "below min_share")]:
        result = check_guidance_choice(answer, table)
        assert not result and hint in repr(result), (answer.__name__, repr(result))
    # the largest FD is not called "the highest share" (the old check's diagnosis), and a threshold of 0.999
    # is printed as 0.999, not as 1.00 beside shares of exactly 1.00
    assert "highest share" not in repr(check_guidance_choice(largest_fd, table))
    def right(table, min_share):
        m = meeting(table, min_share)
        return min(m, key=m.get) if m else None

    assert check_guidance_choice(right, table)
    wrong_at_0999 = check_guidance_choice(lambda t, m: 8 if m == 0.999 else right(t, m), table)
    assert not wrong_at_0999 and "0.999" in repr(wrong_at_0999) and "1.00" not in repr(wrong_at_0999)


# --- issue 24: checks that a plausible wrong answer (or a right one written differently) fooled ----------------

def test_check_mix_factors_accepts_a_right_float32_answer():
    def float32_answer(n, power):
        left = (1 - torch.arange(n + 1) / n) ** power  # float32, as torch gives by default
        return (1 - left[1:] / left[:-1]).tolist()

    assert check_mix_factors(float32_answer)


def test_check_transform_rejects_images_transposed_to_c_w_h():
    from reference_answers import ReferenceTransform as ImageTransform

    good = ImageTransform(size=32, mode="RGB", flip_prob=0.5, seed=0)

    def transposed(batch):
        return {"images": [t.transpose(-1, -2) for t in good(batch)["images"]]}

    result = check_transform(transposed)
    assert not result and "transposed" in repr(result)


def test_check_corrupt_says_do_not_modify_x_for_an_in_place_answer():
    def in_place(x, noise, amount):
        amount = amount.view(-1, 1, 1, 1)
        return x.mul_(1 - amount).add_(noise * amount)

    result = check_corrupt(in_place)
    assert not result and "do not modify x" in repr(result)


def _linear_alphas_cumprod():
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)


def test_posterior_mean_and_q_sample_from_checks_use_the_schedule_they_pass():
    from course_utils.checks import check_posterior_mean, check_q_sample_from

    notebook_schedule = _linear_alphas_cumprod()  # what a notebook's global would hold

    def mean_from_global(x_t, x0, t, alphas_cumprod):
        ab, ab_prev = notebook_schedule[t], notebook_schedule[t - 1]
        beta = 1 - ab / ab_prev
        return ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t

    def jump_from_global(x_s, s, t, noise, alphas_cumprod):
        ratio = notebook_schedule[t] / notebook_schedule[s]
        return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise

    assert not check_posterior_mean(mean_from_global)
    assert not check_q_sample_from(jump_from_global)


def test_check_posterior_mean_rejects_a_mean_one_step_early():
    from course_utils.checks import check_posterior_mean

    def one_step_early(x_t, x0, t, alphas_cumprod):
        t = max(t - 1, 1)
        ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
        beta = 1 - ab / ab_prev
        return ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x_t

    assert not check_posterior_mean(one_step_early)


def test_the_posterior_variance_check_expects_what_diffusers_uses():
    """check_posterior_variance says it matches diffusers' DDPMScheduler ('fixed_small'): make that true."""
    from diffusers import DDPMScheduler

    from course_utils.checks import _cumprod_prev, _linear_betas
    from course_utils.ddpm import cosine_beta_schedule

    for betas in (_linear_betas().float(), cosine_beta_schedule(200)):
        b = betas.double()
        alphas_cumprod = torch.cumprod(1 - b, dim=0)
        expected = (1 - _cumprod_prev(alphas_cumprod)) / (1 - alphas_cumprod) * b  # the check's formula
        scheduler = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=b.numpy(),
                                  variance_type="fixed_small")
        theirs = torch.stack([scheduler._get_variance(t) for t in range(1, len(betas))]).double()
        assert torch.allclose(theirs, expected[1:], rtol=1e-3)  # diffusers keeps its betas in float32


def test_check_posterior_variance_compares_with_diffusers_own_variance(monkeypatch):
    """Its message says it matches diffusers' DDPMScheduler: with diffusers' variance
    made 1 % larger, the formula's right answer must fail (a check that compared with
    its own formula would pass it)."""
    from diffusers import DDPMScheduler

    from course_utils.checks import ch04_ddpm, check_posterior_variance

    def right(betas):
        ab = torch.cumprod(1 - betas, dim=0)
        return (1 - _cumprod_prev(ab)) / (1 - ab) * betas

    cached = getattr(ch04_ddpm, "_diffusers_posterior_variance", None)
    original = DDPMScheduler._get_variance

    def one_percent_more(self, t, *args, **kw):
        return 1.01 * original(self, t, *args, **kw)

    monkeypatch.setattr(DDPMScheduler, "_get_variance", one_percent_more)
    if cached is not None:
        cached.cache_clear()
    try:
        assert not check_posterior_variance(right)
    finally:
        if cached is not None:
            cached.cache_clear()
    monkeypatch.undo()
    assert check_posterior_variance(right)


def test_a_result_shown_in_a_notebook_fits_the_code_width():
    # the book's column holds 88 characters of monospace: a check's message must not run past it
    from IPython.lib.pretty import pretty

    from course_utils.checks._harness import CheckResult

    long = CheckResult(False, "corrupt still raises NotImplementedError: replace the `raise` with your code " * 3)
    shown = pretty(long)
    assert max(len(line) for line in shown.splitlines()) <= 88 and shown.startswith("❌ Not yet")
    assert " ".join(shown.split()) == " ".join(long.message.split())  # the same words, only wrapped


# --- chapter 2 review: three more x̂0 slips, a clipped step, a result not floats ---


def test_check_x0_from_eps_names_the_v_formula_missing_brackets_and_no_root():
    def per_image(table, t):
        return table[t].view(-1, 1, 1, 1)

    def v_formula(x, e, t, ab):  # x̂0 from a v-prediction, fed ε
        ab = per_image(ab, t)
        return ab.sqrt() * x - (1 - ab).sqrt() * e

    def no_brackets(x, e, t, ab):  # only the noise term divided
        ab = per_image(ab, t)
        return x - (1 - ab).sqrt() * e / ab.sqrt()

    def over_alpha_bar(x, e, t, ab):  # ᾱ_t for √ᾱ_t
        ab = per_image(ab, t)
        return (x - (1 - ab).sqrt() * e) / ab

    slips = [  # (wrong answer, words its hint must hold)
        (v_formula, ("multiplied x_t", "v-prediction", "dividing by √ᾱ_t")),
        (no_brackets, ("only the noise term", "x_t included", "brackets")),
        (over_alpha_bar, ("by ᾱ_t", "square root")),
    ]
    missed = [(wrong.__name__, words, repr(result)) for wrong, words in slips
              if (result := check_x0_from_eps(wrong))
              or not all(w in repr(result) for w in words)]
    assert not missed, missed

    def each_term_divided(x, e, t, ab):  # right: both terms over √ᾱ_t, no brackets
        ab = per_image(ab, t)
        return x / ab.sqrt() - (1 - ab).sqrt() / ab.sqrt() * e

    assert check_x0_from_eps(each_term_divided)


def test_check_ddpm_step_names_a_clipped_x0():
    def via_x0(clip):
        def answer(x_t, eps, t, s, noise):  # the posterior mean from x̂0, as diffusers
            ab = s.alphas_cumprod[t]
            ab_prev = s.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
            beta = 1 - ab / ab_prev
            x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-clip, clip)
            mean = (ab_prev.sqrt() * beta * x0
                    + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)
            return mean + ((1 - ab_prev) / (1 - ab) * beta).sqrt() * noise
        return answer

    result = check_ddpm_step(via_x0(1.0))  # diffusers' default clip_sample=True
    assert not result
    assert all(w in repr(result) for w in ("clipped x̂0", "clip_sample=False")), result
    assert check_ddpm_step(via_x0(1e6))  # a clamp that never bites is still right


def test_check_mix_factors_reports_a_result_that_is_not_floats():
    def right(n, p):
        return [1 - ((n - i - 1) / (n - i)) ** p for i in range(n)]

    expected_5, expected_1 = "list of n_steps floats (here 5)", "(here 1)"
    wrong = {  # a result the check once raised on (or let through): words it must say
        "2-D tensor": (lambda n, p: torch.tensor([right(n, p)]),
                       (expected_5, "a 2-D Tensor of shape (1, 5)")),
        "strings": (lambda n, p: [f"1/{n - i}" for i in range(n)],
                    (expected_1, "returned a list of str")),
        "numeric strings": (lambda n, p: [str(f) for f in right(n, p)],
                            (expected_1, "returned a list of str")),
        "2-D array": (lambda n, p: np.array([right(n, p)]),  # numpy 2 fails at n = 1
                      ("list of n_steps floats", "a 2-D ndarray of shape (1, ")),
        "a number": (lambda n, p: 1.0, (expected_1, "returned float")),
    }
    missed = []
    for name, (answer, words) in wrong.items():
        try:
            result = check_mix_factors(answer)
        except Exception as exc:  # the check itself must never raise
            missed.append((name, f"raised {type(exc).__name__}: {exc}"))
            continue
        if result or not all(w in repr(result) for w in words):
            missed.append((name, repr(result)))
    assert not missed, missed
    assert check_mix_factors(lambda n, p: torch.tensor(right(n, p)))  # 1-D: fine
    assert check_mix_factors(lambda n, p: np.array(right(n, p)))


# --- chapter 6 review: swapped predictions, a 3-axis view, an unguarded min() ---


def test_check_guided_eps_names_swapped_predictions():
    from course_utils.checks import check_guided_eps

    def swap(c, u, w):  # ε_cond at w = 0, as Ho & Salimans' form: asked again at w = 2
        return c + _per_image(w, c) * (u - c)

    swapped = check_guided_eps(swap, device="cpu")
    assert not swapped and "you swapped the two predictions" in repr(swapped)
    assert "w = 0 must give ε_uncond and w = 1 ε_cond" in repr(swapped)
    assert "Ho & Salimans" not in repr(swapped)

    def swap_after_0(c, u, w):  # caught at w = 1, where the swap returns ε_uncond
        if not torch.is_tensor(w) and w == 0:
            return u.clone()
        return torch.lerp(c, u, _per_image(w, c))

    later = check_guided_eps(swap_after_0, device="cpu")
    assert not later and "swapped the two predictions" in repr(later)
    paper = check_guided_eps(lambda c, u, w: c + _per_image(w, c) * (c - u),
                             device="cpu")
    assert "Ho & Salimans" in repr(paper) and "swapped" not in repr(paper)
    for right in (lambda c, u, w: c + (1 - _per_image(w, c)) * (u - c),  # from ε_cond
                  lambda c, u, w: u - _per_image(w, c) * (u - c)):
        assert check_guided_eps(right, device="cpu")


def test_check_guided_eps_hints_one_scale_per_image_for_a_wrong_shape():
    from course_utils.checks import check_guided_eps

    def three_axes(c, u, w):  # (3,) viewed as (3, 1, 1) broadcasts to (3, 3, 4, 4)
        w = torch.as_tensor(w, dtype=c.dtype)
        return u + (w.view(-1, 1, 1) if w.ndim == 1 else w) * (c - u)

    result = check_guided_eps(three_axes, device="cpu")
    assert not result and "(3, 1, 4, 4)" in repr(result)
    assert "(3, 3, 4, 4)" in repr(result)
    assert "broadcast over C, H and W: one scale per image" in repr(result)
    # a wrong shape with a single scale is not about per-image scales
    single = check_guided_eps(lambda c, u, w: (u + w * (c - u))[None], device="cpu")
    assert not single and "should return shape" in repr(single)
    assert "C, H and W" not in repr(single)

    def by_indexing(c, u, w):
        w = torch.as_tensor(w, dtype=c.dtype)
        return u + (w[:, None, None, None] if w.ndim else w) * (c - u)

    def by_reshape(c, u, w):
        w = torch.as_tensor(w, dtype=c.dtype)
        return u + w.reshape(-1, *[1] * (c.ndim - 1)) * (c - u)

    assert check_guided_eps(by_indexing, device="cpu")
    assert check_guided_eps(by_reshape, device="cpu")


def test_check_guidance_choice_says_return_none_when_min_raises():
    from course_utils.checks import check_guidance_choice

    table = {0: (0.1, 1.5), 1: (0.85, 1.0), 2: (0.95, 1.2), 4: (0.98, 2.0)}

    def unguarded(table, min_share):
        meeting = {w: fd for w, (share, fd) in table.items() if share >= min_share}
        return min(meeting, key=meeting.get)  # ValueError when nothing meets it

    result = check_guidance_choice(unguarded, table)
    assert not result and "ValueError" in repr(result)
    assert "(no w reaches min_share 1.01: return None in that case)" in repr(result)
    # an error where some w meets min_share gets no such hint
    other = check_guidance_choice(lambda t, m: t["w"], table)
    assert not other and "KeyError" in repr(other)
    assert "return None" not in repr(other)

    def by_loop(table, min_share):
        best = None
        for w, (share, fd) in table.items():
            if share >= min_share and (best is None or fd < table[best][1]):
                best = w
        return best

    def by_sorting(table, min_share):
        ranked = sorted((fd, w) for w, (share, fd) in table.items()
                        if share >= min_share)
        return ranked[0][1] if ranked else None

    assert check_guidance_choice(by_loop, table)
    assert check_guidance_choice(by_sorting, table)



# --- chapter 4 review: float32 headroom of μ̃_t, hints of β̃_t and q(x_t | x_s) ---


def test_check_posterior_mean_passes_float32_rounding_and_fails_the_slips():
    from course_utils.checks import check_posterior_mean

    def sqrt_alpha_first(x_t, x0, t, alphas_cumprod):  # right: √α_t, then β_t = 1 − α_t
        ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
        sqrt_alpha = ab.sqrt() / ab_prev.sqrt()
        beta = 1 - sqrt_alpha**2  # misses the float64 mean by 1.6e-4 (cosine, t = 10)
        return (ab_prev.sqrt() * beta / (1 - ab) * x0
                + sqrt_alpha * (1 - ab_prev) / (1 - ab) * x_t)

    def mean(x_t, x0, ab, ab_prev, sqrt_alpha):
        beta = 1 - ab / ab_prev
        return (ab_prev.sqrt() * beta / (1 - ab) * x0
                + sqrt_alpha * (1 - ab_prev) / (1 - ab) * x_t)

    def one_step_late(x_t, x0, t, alphas_cumprod):  # t + 1 for t
        ab, ab_prev = alphas_cumprod[t + 1], alphas_cumprod[t]
        return mean(x_t, x0, ab, ab_prev, (ab / ab_prev).sqrt())

    def sqrt_alpha_bar(x_t, x0, t, alphas_cumprod):  # √ᾱ_t for √α_t
        ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
        return mean(x_t, x0, ab, ab_prev, ab.sqrt())

    assert check_posterior_mean(sqrt_alpha_first)
    for wrong, where in ((one_step_late, "linear schedule at t = 1 "),
                         (sqrt_alpha_bar, "linear schedule at t = 10 ")):
        result = check_posterior_mean(wrong)
        assert not result and where in repr(result), result
        assert "differs from μ̃_t" in repr(result)


def test_check_posterior_variance_names_alpha_for_alpha_bar_and_a_division_by_zero():
    from course_utils.checks import check_posterior_variance

    def alpha_for_alpha_bar(betas):  # the one-step α in place of ᾱ: β_{t−1}
        alphas = 1 - betas
        return (1 - _cumprod_prev(alphas)) / (1 - alphas) * betas

    def alpha_rolled(betas):  # the same, ᾱ_{t−1} by torch.roll
        alphas = 1 - betas
        return (1 - alphas.roll(1)) / (1 - alphas) * betas

    def inverted(betas):  # (1 − ᾱ_t) / (1 − ᾱ_{t−1}): 1/0 at the first step
        ab = torch.cumprod(1 - betas, dim=0)
        return (1 - ab) / (1 - _cumprod_prev(ab)) * betas

    def nan_later(betas):
        result = torch.zeros_like(betas)
        result[500] = float("nan")
        return result

    slips = [  # (wrong answer, words its hint must hold)
        (alpha_for_alpha_bar, ("β_{t−1}", "use ᾱ, the cumulative product")),
        (alpha_rolled, ("β_{t−1}", "use ᾱ, the cumulative product")),
        (inverted, ("inf or NaN at the first step", "1 − ᾱ_{t−1} = 0",
                    "(1 − ᾱ_{t−1}) over (1 − ᾱ_t)")),
        (nan_later, ("inf or NaN at t = 500 (the first", "division by zero")),
    ]
    missed = [(wrong.__name__, words, repr(result)) for wrong, words in slips
              if (result := check_posterior_variance(wrong))
              or not all(w in repr(result) for w in words)
              or "cumprod" in repr(result)]
    assert not missed, missed

    def padded_in_log_space(betas):  # right: ᾱ from a cumulative sum of logs
        ab = torch.log1p(-betas.double()).cumsum(0).exp()
        ab_prev = torch.nn.functional.pad(ab[:-1], (1, 0), value=1.0)
        return (betas * (1 - ab_prev) / (1 - ab)).float()

    def rolled_then_zeroed(betas):  # right: torch.roll, the first step set to 0
        ab = torch.cumprod(1 - betas, dim=0)
        result = betas * (1 - ab.roll(1)) / (1 - ab)
        result[0] = 0
        return result

    assert check_posterior_variance(padded_in_log_space)
    assert check_posterior_variance(rolled_then_zeroed)


def test_check_q_sample_from_names_a_ratio_above_one():
    from course_utils.checks import check_q_sample_from

    def jump(x_s, noise, keep):
        return keep.sqrt() * x_s + (1 - keep).sqrt() * noise

    def inverted(x_s, s, t, noise, alphas_cumprod):  # ᾱ_s / ᾱ_t
        return jump(x_s, noise, alphas_cumprod[s] / alphas_cumprod[t])

    def paper_indices(x_s, s, t, noise, alphas_cumprod):  # wraps to ᾱ_{T−1} at s = 0
        return jump(x_s, noise, alphas_cumprod[t - 1] / alphas_cumprod[s - 1])

    for wrong in (inverted, paper_indices):
        result = repr(check_q_sample_from(wrong))
        assert result.startswith("❌") and "s = 0, t = 10" in result, result
        for words in ("has NaN", "(0, 1]", "ᾱ_t over ᾱ_s", "code's indices t and s"):
            assert words in result, (wrong.__name__, words, result)
        assert "alphas_cumprod" not in result  # says which goes over which, no code

    def step_by_step(x_s, s, t, noise, alphas_cumprod):  # right: α_{s+1} ⋯ α_t
        keep = (alphas_cumprod[s + 1 : t + 1] / alphas_cumprod[s:t]).prod()
        return jump(x_s, noise, keep)

    def in_log_space(x_s, s, t, noise, alphas_cumprod):  # right
        log_ab = alphas_cumprod.double().log()
        log_keep = log_ab[t] - log_ab[s]
        lost = -torch.expm1(log_keep)  # 1 − ᾱ_t/ᾱ_s
        return (log_keep.exp().sqrt() * x_s + lost.sqrt() * noise).float()

    assert check_q_sample_from(step_by_step)
    assert check_q_sample_from(in_log_space)
