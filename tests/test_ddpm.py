"""Chapter 4's DDPM from scratch (course_utils.ddpm, copied from the chapter's cells) equals diffusers where it should."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.models.embeddings import get_timestep_embedding

from course_utils import ddpm

T = 1000
ALPHAS_CUMPROD = torch.cumprod(1 - ddpm.linear_beta_schedule(T), dim=0)


@pytest.mark.parametrize("name, schedule", [
    ("linear", ddpm.linear_beta_schedule), ("scaled_linear", ddpm.quadratic_beta_schedule),
    ("squaredcos_cap_v2", ddpm.cosine_beta_schedule), ("sigmoid", ddpm.sigmoid_beta_schedule)])
def test_hand_written_schedules_equal_diffusers(name, schedule):
    reference = DDPMScheduler(num_train_timesteps=T, beta_schedule=name).betas
    assert torch.allclose(schedule(T), reference, atol=1e-7)


def test_cosine_schedule_is_clipped_and_ends_near_pure_noise():
    betas = ddpm.cosine_beta_schedule(T)
    assert betas.max() <= 0.999 + 1e-7 and betas[-1] == pytest.approx(0.999)
    assert torch.cumprod(1 - betas, 0)[-1] < 1e-6


def test_q_sample_equals_add_noise_with_a_timestep_per_image():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(6, 1, 8, 8, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
    assert torch.allclose(ddpm.q_sample(x0, t, noise, ALPHAS_CUMPROD), scheduler.add_noise(x0, noise, t), atol=1e-6)
    # each image really gets its own t: the noisiest image is almost pure noise, the first almost clean
    noisy = ddpm.q_sample(x0, t, noise, ALPHAS_CUMPROD)
    assert (noisy[0] - x0[0]).abs().max() < 0.05 and (noisy[-1] - noise[-1]).abs().max() < 0.05


def test_timestep_embedding_equals_diffusers_and_separates_timesteps():
    t = torch.tensor([0, 1, 7, 500, 999])
    ours = ddpm.timestep_embedding(t, 32)
    assert ours.shape == (5, 32)
    assert torch.allclose(ours, get_timestep_embedding(t, 32, downscale_freq_shift=0), atol=1e-6)
    assert torch.cdist(ours, ours)[~torch.eye(5, dtype=bool)].min() > 0.5


@pytest.mark.parametrize("variance, variance_type", [("small", "fixed_small"), ("large", "fixed_large")])
@pytest.mark.parametrize("t, t_prev, n_steps", [(999, 998, None), (1, 0, None), (0, -1, None), (500, 480, 50),
                                                (20, 0, 50)])
def test_reverse_step_is_diffusers_ddpm_step(variance, variance_type, t, t_prev, n_steps):
    g = torch.Generator().manual_seed(t)
    x_t, eps = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", variance_type=variance_type,
                              clip_sample=False)
    if n_steps:
        scheduler.set_timesteps(n_steps)
    theirs = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    ours = ddpm.reverse_step(x_t, eps, t, t_prev, ALPHAS_CUMPROD, z, variance)
    # near t = 0, 1 − ᾱ_t is ~1e-4 and float32 cancellation (in either formula) reaches ~1e-4
    assert torch.allclose(ours, theirs, atol=1e-3 if t < 5 else 1e-5)


def test_reverse_step_rejects_an_unknown_variance():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="'small' or 'large'"):
        ddpm.reverse_step(x, x, 5, 4, ALPHAS_CUMPROD, x, variance="learned")


def test_time_unet_keeps_the_shape_uses_the_timestep_and_rejects_odd_sizes():
    torch.manual_seed(0)
    model = ddpm.TimeUNet().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        early, late = model(x, torch.tensor([0, 0])), model(x, torch.tensor([900, 900]))
    assert early.shape == x.shape
    assert (early - late).abs().max() > 1e-4  # the output depends on t
    assert ddpm.TimeUNet(in_channels=3, block=ddpm.ConvNeXtBlock)(torch.randn(1, 3, 32, 32),
                                                                   torch.tensor([3])).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 30, 30), torch.tensor([1]))


def test_ddpm_loss_types_and_bad_input():
    torch.manual_seed(0)
    model = ddpm.TimeUNet(channels=(8, 16, 16), attention_levels=())
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    for loss_type in ("l2", "l1", "huber"):
        loss = ddpm.ddpm_loss(model, x0, ALPHAS_CUMPROD, loss_type)
        assert loss.ndim == 0 and loss.item() > 0
    with pytest.raises(ValueError, match="loss_type"):
        ddpm.ddpm_loss(model, x0, ALPHAS_CUMPROD, "l3")


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(0)
        # two kinds of image: a bright square on a dark ground, or the reverse
        self.images = -torch.ones(n, 1, 8, 8)
        self.images[::2, :, 2:6, 2:6] = 1
        self.images[1::2] = -self.images[1::2]
        self.images += 0.05 * torch.randn(self.images.shape, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"images": self.images[i]}


def test_training_lowers_the_loss_and_sampling_gives_images_in_range():
    dataloader = torch.utils.data.DataLoader(_Images(), batch_size=16, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = ddpm.TimeUNet(channels=(16, 32, 32), attention_levels=(2,))
    losses, ema_model = ddpm.train_ddpm(model, dataloader, ALPHAS_CUMPROD, n_steps=120, lr=2e-3, seed=0)
    assert len(losses) == 120
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    assert any((a - b).abs().max() > 0 for a, b in zip(model.parameters(), ema_model.parameters()))
    images, snapshots, labels = ddpm.p_sample_loop(ema_model, 4, ALPHAS_CUMPROD, image_shape=(1, 8, 8), n_steps=20,
                                                   seed=1, n_snapshots=3)
    assert images.shape == (4, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    assert len(snapshots) == 3 and labels == ["t = 950", "t = 450", "t = 0"]
    again = ddpm.p_sample_loop(ema_model, 4, ALPHAS_CUMPROD, image_shape=(1, 8, 8), n_steps=20, seed=1)[0]
    assert torch.equal(images, again)  # seeded
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule="linear")
    fast = ddpm.solver_sample(ema_model, scheduler, 5, 10, image_shape=(1, 8, 8), batch_size=2)
    assert fast.shape == (5, 1, 8, 8) and fast.min() >= 0 and fast.max() <= 1


def _small_run(n_steps: int = 6, **options) -> tuple[list[float], torch.nn.Module]:
    dataloader = torch.utils.data.DataLoader(_Images(32), batch_size=8, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = ddpm.TimeUNet(channels=(8, 16, 16), attention_levels=())
    return ddpm.train_ddpm(model, dataloader, ALPHAS_CUMPROD, n_steps=n_steps, seed=0, **options)


def test_train_ddpm_default_loss_is_ddpm_loss_and_a_loss_fn_replaces_it():
    # chapters 5 and 6 pass their own loss: the default must be exactly chapter 4's, drawn in the same order
    default_losses, default_ema = _small_run()
    explicit_losses, explicit_ema = _small_run(
        loss_fn=lambda model, batch: ddpm.ddpm_loss(model, batch["images"], ALPHAS_CUMPROD))
    assert default_losses == explicit_losses
    assert all(torch.equal(a, b) for a, b in zip(default_ema.parameters(), explicit_ema.parameters()))
    seen = []

    def zero_target(model, batch):
        seen.append(batch["images"].shape)
        t = torch.zeros(len(batch["images"]), dtype=torch.long)
        return model(batch["images"], t).pow(2).mean()

    other_losses, _ = _small_run(loss_fn=zero_target)
    assert seen == [(8, 1, 8, 8)] * 6 and other_losses != default_losses


def test_train_ddpm_calls_on_step_after_every_step_with_the_ema():
    calls = []

    def on_step(step, model, ema):
        assert model.training  # from step 2 on: train_ddpm undid the eval() below
        ema_model = ddpm.ema_copy(model, ema)
        assert not ema_model.training and ema_model is not model
        calls.append(step)
        model.eval()  # as a hook that samples would

    losses, ema_model = _small_run(on_step=on_step)
    assert calls == [1, 2, 3, 4, 5, 6] and len(losses) == 6
    assert losses == _small_run()[0]  # a hook that draws no random numbers changes nothing


def test_load_or_train_time_unet_loads_the_saved_model_else_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    dataloader = torch.utils.data.DataLoader(_Images(32), batch_size=8, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
    trained = ddpm.load_or_train_time_unet(dataloader, ALPHAS_CUMPROD, n_steps=2)
    assert isinstance(trained, ddpm.TimeUNet) and not trained.training
    assert not (tmp_path / "ch04_time_unet" / "ema_model.pt").exists()  # training does not save
    saved = tmp_path / "ch04_time_unet" / "ema_model.pt"
    torch.save({"state_dict": trained.state_dict(), "n_steps": 2}, saved)
    loaded = ddpm.load_or_train_time_unet(dataloader, ALPHAS_CUMPROD, n_steps=2)
    assert not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("checkpoint", ["shorter", "no length"])
def test_load_or_train_time_unet_refuses_a_model_trained_for_fewer_steps(tmp_path, monkeypatch, checkpoint):
    # a quick-mode model of a few steps must not stand in for the full one a later chapter asks for
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    dataloader = torch.utils.data.DataLoader(_Images(32), batch_size=8, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
    short = ddpm.TimeUNet()
    with torch.no_grad():
        for parameter in short.parameters():
            parameter.fill_(0.5)  # unmistakably not a trained model
    saved = tmp_path / "ch04_time_unet" / "ema_model.pt"
    saved.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": short.state_dict(), "n_steps": 1} if checkpoint == "shorter" else short.state_dict(),
               saved)
    model = ddpm.load_or_train_time_unet(dataloader, ALPHAS_CUMPROD, n_steps=2)
    assert not all(torch.equal(a, b) for a, b in zip(short.state_dict().values(), model.state_dict().values()))


def test_solver_sample_drives_deterministic_and_option_taking_schedulers():
    from diffusers import DDIMScheduler, HeunDiscreteScheduler

    torch.manual_seed(0)
    model = ddpm.TimeUNet(channels=(8, 16, 16), attention_levels=()).eval()
    kw = dict(num_train_timesteps=T, beta_schedule="linear")
    heun = ddpm.solver_sample(model, HeunDiscreteScheduler(**kw), 2, 3, image_shape=(1, 8, 8))  # step takes no generator
    assert heun.shape == (2, 1, 8, 8)
    ddim = DDIMScheduler(**kw)
    deterministic = [ddpm.solver_sample(model, ddim, 2, 4, image_shape=(1, 8, 8), seed=s, eta=0.0) for s in (0, 0)]
    noisy = ddpm.solver_sample(model, ddim, 2, 4, image_shape=(1, 8, 8), seed=0, eta=1.0)
    assert torch.equal(*deterministic)
    assert (noisy - deterministic[0]).abs().max() > 1e-3  # eta reached the scheduler's step


# --- Sampling loops against diffusers, with an exact model (issue 24) -----------------

class _ExactModel(torch.nn.Module):
    """The network a perfect training on one image x* would give: the true ε (or v).

    For x_t = √ᾱ_t x* + √(1−ᾱ_t) ε it returns ε = (x_t − √ᾱ_t x*) / √(1−ᾱ_t) at every
    t, so every sampler's estimate of x0 is x* at every step. ᾱ is the scheduler's own.
    At a fractional t (Euler, Heun) σ = √((1−ᾱ)/ᾱ) is interpolated as the scheduler
    does: linearly in t, or linearly in log σ where it places Karras σ steps. `bias`
    adds a constant error to ε, for loops compared step by step; `calls` records the
    timesteps the model was asked at.
    """

    def __init__(self, x_star, alphas_cumprod, target="epsilon", log_sigma=False,
                 bias=0.0):
        super().__init__()
        self.x_star = x_star.double()
        self.sigmas = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).sqrt()
        self.target, self.log_sigma, self.bias = target, log_sigma, bias
        self.calls = []
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # samplers ask for a device

    def forward(self, x, t):
        self.calls.append(float(t.flatten()[0]))
        grid = np.arange(len(self.sigmas))
        sigmas = self.sigmas.numpy()
        if self.log_sigma:
            sigma = np.exp(np.interp(t.double().numpy(), grid, np.log(sigmas)))
        else:
            sigma = np.interp(t.double().numpy(), grid, sigmas)
        alpha_bar = 1 / (1 + torch.from_numpy(sigma).view(-1, 1, 1, 1) ** 2)
        eps = (x.double() - alpha_bar.sqrt() * self.x_star) / (1 - alpha_bar).sqrt()
        if self.target == "v_prediction":
            v = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * self.x_star
            return v.float()
        return (eps + self.bias).float()


def _x_star():
    """One asymmetric training image in [-1, 1]."""
    return torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(11)) * 2 - 1


@pytest.mark.parametrize("n_steps", [1000, 600, 300, 50, 30, 7, 1])
def test_p_sample_loop_runs_n_steps_on_diffusers_timesteps_and_lands_on_x_star(n_steps):
    # diffusers' default ("leading") spacing: 30 steps are 957, 924, ..., 0;
    # 600 steps are 599, 598, ..., 0
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
    scheduler.set_timesteps(n_steps)
    x_star = _x_star()
    model = _ExactModel(x_star, ALPHAS_CUMPROD)
    images = ddpm.p_sample_loop(model, 3, ALPHAS_CUMPROD, image_shape=(1, 8, 8),
                                n_steps=n_steps, seed=2)[0]
    assert model.calls == scheduler.timesteps.float().tolist()  # n_steps calls, same t
    # the last step returns the mean, x̂0 = x*: float32 rounding only (about 1e-7)
    assert (images - x_star).abs().max() < 1e-5


@pytest.mark.parametrize("variance, variance_type", [("small", "fixed_small"),
                                                     ("large", "fixed_large")])
@pytest.mark.parametrize("n_steps", [50, 30, 7])
def test_p_sample_loop_is_diffusers_ddpm_loop_step_by_step(n_steps, variance,
                                                            variance_type):
    # an ε with an error, so that x̂0 is not x* and every step's noise and mean matter
    model = _ExactModel(_x_star(), ALPHAS_CUMPROD, bias=0.1)
    images, snapshots, labels = ddpm.p_sample_loop(
        model, 2, ALPHAS_CUMPROD, image_shape=(1, 8, 8), n_steps=n_steps,
        variance=variance, seed=3, n_snapshots=n_steps)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear",
                              variance_type=variance_type, clip_sample=False)
    scheduler.set_timesteps(n_steps)
    generator = torch.Generator().manual_seed(3)  # the same draws as p_sample_loop's
    x = torch.randn(2, 1, 8, 8, generator=generator)
    theirs = []
    for t in scheduler.timesteps:
        theirs.append(x)
        eps = model(x, t.expand(2))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    assert labels == [f"t = {t}" for t in scheduler.timesteps.tolist()]
    assert len(snapshots) == n_steps
    for ours, reference in zip(snapshots, theirs):
        assert torch.allclose(ours, reference, atol=1e-4)
    assert torch.allclose(images, x.clamp(-1, 1), atol=1e-4)


@pytest.mark.parametrize("n_steps", [0, -5, 1001, 2000])
def test_p_sample_loop_rejects_step_counts_outside_1_to_T(n_steps):
    model = _ExactModel(_x_star(), ALPHAS_CUMPROD)
    with pytest.raises(ValueError, match=f"between 1 and T = 1000, got {n_steps}"):
        ddpm.p_sample_loop(model, 1, ALPHAS_CUMPROD, image_shape=(1, 8, 8),
                           n_steps=n_steps)


def _schedulers():
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

    # Euler and Heun default to other beta end points: give every scheduler these
    kw = {"num_train_timesteps": T, "beta_schedule": "linear", "beta_start": 1e-4,
          "beta_end": 0.02}
    sde = {"algorithm_type": "sde-dpmsolver++", "timestep_spacing": "trailing"}
    karras = {"use_karras_sigmas": True}
    return {  # name: (scheduler, log_sigma)
        "DDPM": (DDPMScheduler(**kw), False),
        "DDPM, trailing": (DDPMScheduler(**kw, timestep_spacing="trailing"), False),
        "DDIM": (DDIMScheduler(**kw), False),
        "DDIM, eta 1": (DDIMScheduler(**kw), False),
        "Euler": (EulerDiscreteScheduler(**kw), False),
        "Euler, Karras": (EulerDiscreteScheduler(**kw, **karras), True),
        "Heun": (HeunDiscreteScheduler(**kw), False),
        "Heun, Karras": (HeunDiscreteScheduler(**kw, **karras), True),
        "DPM-Solver++ 2M": (DPMSolverMultistepScheduler(**kw), False),
        "DPM-Solver++ SDE, trailing (chapter 4)": (
            DPMSolverMultistepScheduler(**kw, **sde), False),
    }


@pytest.mark.parametrize("name", list(_schedulers()))
@pytest.mark.parametrize("n_steps", [50, 30, 7])
def test_solver_sample_lands_on_x_star_with_an_exact_model(name, n_steps):
    # Every scheduler's last step returns its x0 estimate (σ → 0, or ᾱ_prev = 1),
    # which the exact model makes x* at every step, stochastic or not: the sample is
    # x* up to float32 rounding (about 1e-7 here; Euler's start at σ ≈ 157 costs at
    # most ~1e-5). A loop that skips scale_model_input ends 0.1 to 2 away.
    scheduler, log_sigma = _schedulers()[name]
    x_star = _x_star()
    model = _ExactModel(x_star, scheduler.alphas_cumprod, log_sigma=log_sigma)
    options = {"eta": 1.0} if name == "DDIM, eta 1" else {}
    images = ddpm.solver_sample(model, scheduler, 3, n_steps, image_shape=(1, 8, 8),
                                batch_size=2, **options)
    assert (images * 2 - 1 - x_star).abs().max() < 1e-4
    calls_per_batch = len(scheduler.timesteps)  # Heun: 2 n − 1
    assert len(model.calls) == 2 * calls_per_batch  # two batches, each reset


@pytest.mark.parametrize("scheduler_class", ["DDPMScheduler", "DDIMScheduler"])
def test_solver_sample_raises_on_inf_or_nan_and_names_zero_terminal_snr(
        scheduler_class):
    import diffusers

    kw = {"num_train_timesteps": T, "beta_schedule": "linear",
          "rescale_betas_zero_snr": True,
          "timestep_spacing": "trailing"}  # the first step is t = 999, where ᾱ = 0
    x_star = _x_star()
    make = getattr(diffusers, scheduler_class)
    scheduler = make(**kw)  # epsilon, the default
    model = _ExactModel(x_star, scheduler.alphas_cumprod)
    with pytest.raises(FloatingPointError,
                       match=r"timestep 999 \(the model's output was finite\); likely "
                             r"cause: zero terminal SNR"):
        ddpm.solver_sample(model, scheduler, 2, 10, image_shape=(1, 8, 8))
    # the same schedule with v-prediction, as zero terminal SNR requires, lands on x*
    scheduler = make(**kw, prediction_type="v_prediction")
    model = _ExactModel(x_star, scheduler.alphas_cumprod, target="v_prediction")
    images = ddpm.solver_sample(model, scheduler, 2, 10, image_shape=(1, 8, 8))
    assert (images * 2 - 1 - x_star).abs().max() < 1e-4


def test_solver_sample_says_when_the_model_output_is_not_finite():
    class Broken(_ExactModel):
        def forward(self, x, t):
            return torch.full_like(x, float("nan"))

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=T,
                                            beta_schedule="linear")
    with pytest.raises(FloatingPointError, match="model's output was not finite"):
        ddpm.solver_sample(Broken(_x_star(), ALPHAS_CUMPROD), scheduler, 2, 5,
                           image_shape=(1, 8, 8))


def test_train_ddpm_asks_for_a_dataloader_with_a_generator():
    dataloader = torch.utils.data.DataLoader(_Images(16), batch_size=8, shuffle=True)
    model = ddpm.TimeUNet(channels=(8, 16, 16), attention_levels=())
    with pytest.raises(ValueError, match="generator=torch.Generator()"):
        ddpm.train_ddpm(model, dataloader, ALPHAS_CUMPROD, n_steps=2)
