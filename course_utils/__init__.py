"""Helpers for the diffusion models course. Chapters write the teaching code first; what later chapters reuse lives here."""

from .budget import budget, get_device, is_quick, set_seed
from .checks import (check_beta_end, check_corrupt, check_ddpm_step, check_ema_update,
                     check_eps_from_v, check_fewest_nfe, check_heun_step, check_frechet_diagonal,
                     check_guidance_choice, check_guided_eps, check_inpaint_step,
                     check_masked_cross_attention, check_mix_factors,
                     check_noise_to_snr, check_posterior_mean, check_posterior_variance,
                     check_q_sample_from, check_kl_divergence, check_sdedit, check_snr_crossing,
                     check_transform, check_x0_from_eps)
from .data import (CourseDataError, ImageTransform, cache_dir, data_source, hub_available, load_course_dataset,
                   model_source, pil_to_tensor)
from .plotting import image_grid, plot_losses, plot_noising, plot_scheduler, show_images
from .precision import Precision, autocast_dtype, choose_precision

__all__ = [
    "budget", "get_device", "is_quick", "set_seed",
    "check_beta_end", "check_corrupt", "check_ddpm_step", "check_ema_update", "check_mix_factors", "check_noise_to_snr",
    "check_eps_from_v", "check_fewest_nfe", "check_heun_step", "check_frechet_diagonal",
    "check_guidance_choice", "check_guided_eps", "check_posterior_mean", "check_posterior_variance", "check_q_sample_from",
    "check_sdedit", "check_snr_crossing", "check_transform", "check_x0_from_eps",
    "check_kl_divergence", "check_masked_cross_attention", "check_inpaint_step",
    "CourseDataError", "ImageTransform", "cache_dir", "data_source", "hub_available",
    "load_course_dataset", "model_source", "pil_to_tensor",
    "image_grid", "plot_losses", "plot_noising", "plot_scheduler", "show_images",
    "Precision", "autocast_dtype", "choose_precision",
]
