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
    assert "too late" in repr(check_snr_crossing(np.int64(600)))
    assert "off by one" in repr(check_snr_crossing(258))
    result = check_snr_crossing(260)  # the paper's 1-based t
    assert not result and "0-based" in repr(result)
    assert "too late" in repr(check_snr_crossing(600))
    assert not check_snr_crossing(None)
    assert not check_snr_crossing(259.0)


def test_reference_ddpm_step_equals_diffusers():
    from diffusers import DDPMScheduler

    from course_utils.checks import reference_ddpm_step

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
    from course_utils.checks import reference_ddpm_step

    def no_noise(x_t, eps, t, s, noise):
        return reference_ddpm_step(x_t, eps, t, s, torch.zeros_like(noise))

    def beta_variance(x_t, eps, t, s, noise):
        mean = (x_t - s.betas[t] / (1 - s.alphas_cumprod[t]).sqrt() * eps) / s.alphas[t].sqrt()
        return mean + s.betas[t].sqrt() * noise

    assert check_ddpm_step(reference_ddpm_step)
    assert "fresh noise" in repr(check_ddpm_step(no_noise))
    assert "fixed_small" in repr(check_ddpm_step(beta_variance))
    assert not check_ddpm_step(lambda x_t, eps, t, s, noise: x_t)


def test_check_mix_factors():
    assert check_mix_factors(lambda n, p: [1 - ((n - i - 1) / (n - i)) ** p for i in range(n)])
    # the page's rule is only the power-1 case
    assert "right for power 1" in repr(check_mix_factors(lambda n, p: [1 / (n - i) for i in range(n)]))
    assert "shares of the distance left" in repr(
        check_mix_factors(lambda n, p: [(1 - (i + 1) / n) ** p for i in range(n)]))
    assert "divide by that share" in repr(
        check_mix_factors(lambda n, p: [(1 - i / n) ** p - (1 - (i + 1) / n) ** p for i in range(n)]))
    assert "last step" in repr(check_mix_factors(lambda n, p: [0.5] * n))
    assert "expected [0.2, 0.25" in repr(check_mix_factors(lambda n, p: [0.5] * (n - 1) + [1.0]))
    assert "one factor per step" in repr(check_mix_factors(lambda n, p: [1.0]))
    assert "TypeError" in repr(check_mix_factors(lambda n: [1.0] * n))  # the old one-argument form


def test_check_transform():
    from course_utils import ImageTransform

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
    never_flips = ImageTransform(size=32, mode="RGB", flip_prob=0.0)
    assert "flipped" in repr(check_transform(never_flips))
    always_flips = ImageTransform(size=32, mode="RGB", flip_prob=1.0)
    assert "flipped" in repr(check_transform(always_flips))
    assert not check_transform(lambda batch: {"img": []})


def test_check_sdedit():
    def right(model, scheduler, images, noise, strength):
        n_kept = round(strength * len(scheduler.timesteps))
        if n_kept == 0:
            return images
        timesteps = scheduler.timesteps[len(scheduler.timesteps) - n_kept:]
        x = scheduler.add_noise(images, noise, timesteps[:1])
        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
        return x

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
    def first_timestep(model, scheduler, images, noise, strength):
        n_kept = round(strength * len(scheduler.timesteps))
        if n_kept == 0:
            return images
        timesteps = scheduler.timesteps[len(scheduler.timesteps) - n_kept:]
        x = scheduler.add_noise(images, noise, timesteps[0])
        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
        return x

    def one_per_image(model, scheduler, images, noise, strength):  # right, too
        n_kept = round(strength * len(scheduler.timesteps))
        if n_kept == 0:
            return images
        timesteps = scheduler.timesteps[-n_kept:]
        start = timesteps[0].repeat(len(images))  # one timestep per image
        x = scheduler.add_noise(images, noise, timesteps=start)
        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            x = scheduler.step(model(model_input, t).sample, t, x).prev_sample
        return x

    result = check_sdedit(first_timestep)
    assert not result and "timesteps[:1]" in repr(result) and "0-d" in repr(result)
    assert check_sdedit(one_per_image)


def test_check_ema_update_tries_more_than_one_decay():
    def fixed_decay(ema_params, params, decay):  # ignores decay: right at 0.9 only
        for e, p in zip(ema_params, params):
            e.mul_(0.9).add_(p, alpha=0.1)

    result = check_ema_update(fixed_decay)
    assert not result and "decay" in repr(result)


def _cumprod_prev(ab):
    return torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])


def test_check_posterior_variance():
    from course_utils.checks import check_posterior_variance

    def right(betas):
        ab = torch.cumprod(1 - betas, dim=0)
        return (1 - _cumprod_prev(ab)) / (1 - ab) * betas

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


def test_check_eps_from_v():
    from course_utils.checks import check_eps_from_v

    assert check_eps_from_v(lambda x_t, v, ab: ab.sqrt() * v + (1 - ab).sqrt() * x_t)
    assert "sign" in repr(check_eps_from_v(lambda x_t, v, ab: ab.sqrt() * v - (1 - ab).sqrt() * x_t))
    assert "x̂0" in repr(check_eps_from_v(lambda x_t, v, ab: ab.sqrt() * x_t - (1 - ab).sqrt() * v))
    assert not check_eps_from_v(lambda x_t, v, ab: v)


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


def test_check_flow_euler_step():
    from course_utils.checks import check_flow_euler_step

    assert check_flow_euler_step(lambda x, v, t, t_next: x + (t_next - t) * v)
    assert "wrong direction" in repr(check_flow_euler_step(lambda x, v, t, t_next: x - (t_next - t) * v))
    assert not check_flow_euler_step(lambda x, v, t, t_next: x - v / 5)


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
    from course_utils import ImageTransform

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
