"""Exercise auto-checks, one module per chapter on a shared harness (`_harness`).

Each check takes the learner's function (and, for some, the chapter's own measurements) and returns a
`CheckResult`: true when passed, shown in a notebook as "✅ Correct: ..." or "❌ Not yet: ..." with a hint. A check
never raises on a learner's bug; it reports it. Import them from here, as the chapters do:
``from course_utils.checks import check_corrupt`` (or from `course_utils` itself).
"""

from ._harness import FAIL, PASS, CheckResult, _linear_betas  # noqa: F401 (_linear_betas: for the tests)
from .ch01_noise import check_beta_end, check_corrupt, check_noise_to_snr, check_snr_crossing
from .ch02_mnist import check_ddpm_step, check_mix_factors, check_x0_from_eps
from .ch03_butterflies import check_ema_update, check_sdedit, check_transform
from .ch04_ddpm import _cumprod_prev  # noqa: F401 (for the tests)
from .ch04_ddpm import check_posterior_mean, check_posterior_variance, check_q_sample_from
from .ch05_measuring import check_eps_from_v, check_fewest_nfe, check_frechet_diagonal
from .ch06_guidance import check_heun_step, check_guidance_choice, check_guided_eps
from .ch07_latent import (check_inpaint_step, check_masked_cross_attention,
                          check_kl_divergence)

__all__ = [
    "CheckResult", "PASS", "FAIL",
    "check_corrupt", "check_beta_end", "check_noise_to_snr", "check_snr_crossing",
    "check_x0_from_eps", "check_ddpm_step", "check_mix_factors",
    "check_transform", "check_sdedit", "check_ema_update",
    "check_posterior_variance", "check_posterior_mean", "check_q_sample_from",
    "check_frechet_diagonal", "check_eps_from_v", "check_fewest_nfe",
    "check_guided_eps", "check_heun_step", "check_guidance_choice",
    "check_kl_divergence", "check_masked_cross_attention", "check_inpaint_step",
]
