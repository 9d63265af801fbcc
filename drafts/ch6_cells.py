md(r'''
# 6. Steering and straightening: guidance and flow matching

Two ideas that every current image generator uses, each built on what the course has so far:

* **Part A, classifier-free guidance.** Chapter 4's network learns to draw a *requested* digit, and the same
  network, without the request, the unconditional model. Mixing the two predictions with a guidance scale $w$
  steers samples towards the requested class. We measure what $w$ buys (samples of the right digit) and what it
  costs (diversity, and the distance to real digits), and choose $w$ from the measurements.
* **Part B, flow matching.** Back to chapter 1's lerp, `corrupt(x, noise, amount)`: train the same network to
  predict the *velocity* along the straight line from a digit to its noise, and sample by following it with Euler
  steps. We compare it with chapter 4's DDPM at equal training, against the number of sampling steps, and check our
  Euler step against diffusers' `FlowMatchEulerDiscreteScheduler`.

Time on a 2-core CPU at full budget: about 25 minutes (the run note at the end has the measured time). Chapter 4's
model is loaded from the course cache when chapter 4 has run with the same `COURSE_CACHE_DIR`, and trained here
otherwise.
''')

md("## Setup")

code(r'''
# In Colab: install diffusers and the course helpers. Elsewhere this does nothing.
import sys

COURSE_REPO = "https://github.com/diffusion-course/diffusion-models-course"
if "google.colab" in sys.modules:
    %pip install -q "diffusers>=0.30" "datasets>=2.19" transformers
    %pip install -q "course_utils @ git+{COURSE_REPO}"
''')

code(r'''
import copy
import time

import numpy as np
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from course_utils import (ImageTransform, budget, cache_dir, check_flow_euler_step,
                          check_guidance_choice, check_guided_eps, get_device,
                          hub_available, load_course_dataset, plot_losses, set_seed,
                          show_images)
from course_utils.ddpm import (TimeUNet, forever, linear_beta_schedule, q_sample,
                               solver_sample, train_ddpm)
from course_utils.metrics import (classifier_outputs, load_mnist_classifier,
                                  mnist_sample_quality)
from course_utils.noising import corrupt  # chapter 1's lerp
from course_utils.plotting import new_figure

set_seed(0)
device = get_device()
use_bf16 = device.type == "cpu" or (
    device.type == "cuda" and torch.cuda.is_bf16_supported())
print("device:", device, "| bf16 autocast:", use_bf16)
''')

md(r'''
bf16 autocast: chapter 4 timed this network and found bf16 twice as fast on the course's CPU (which has AMX). On
a CPU without fast bf16 set `use_bf16 = False`; chapter 4's timing table tells you which you have.

The data: MNIST in $[-1, 1]$, now **with its labels**. `schedule` holds chapter 4's linear DDPM schedule, for the
parts that use it.
''')

code(r'''
batch_size = budget(full=64, quick=16)
mnist = load_course_dataset("ylecun/mnist", split="train")
mnist.set_transform(ImageTransform(mode="L", value_range=(-1, 1)))
train_dataloader = torch.utils.data.DataLoader(
    mnist, batch_size=batch_size, shuffle=True,
    generator=torch.Generator().manual_seed(0), drop_last=True)

T = 1000
alphas_cumprod = torch.cumprod(1 - linear_beta_schedule(T), dim=0)
schedule = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                beta_end=0.02)
classifier = load_mnist_classifier(device)  # chapter 2's and 5's scorer
batch = next(iter(train_dataloader))
print("images", tuple(batch["images"].shape), "labels", batch["label"][:10].tolist())
''')

md(r'''
## Part A: conditioning and classifier-free guidance

### A network that takes the digit as well

Chapter 4's `TimeUNet` adds the time embedding to every residual block; its `forward` also takes an optional
`condition`, a vector per image added to the time embedding. A **label embedding** (a learned vector per class,
`nn.Embedding`) is such a condition: the network learns what "draw a 3" means in the same place where it learns
"this much noise is left". The embedding has one extra entry, index 10, for **no label**.

**Classifier-free guidance** (Ho & Salimans, 2021) trains one network for two jobs: with probability
$p_\text{uncond} = 0.1$ each training image's label is replaced by "no label", so the network also learns the
unconditional model $\epsilon_\theta(x_t, t, \varnothing)$ beside the conditional $\epsilon_\theta(x_t, t, c)$.
''')

code(r'''
class ClassConditionedUNet(nn.Module):
    """Chapter 4's TimeUNet told which class to draw (index n_classes: no label)."""

    def __init__(self, n_classes: int = 10, **unet_options):
        super().__init__()
        self.unet = TimeUNet(**unet_options)
        self.no_label = n_classes
        self.label_embedding = nn.Embedding(n_classes + 1, self.unet.time_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, condition=self.label_embedding(labels))


torch.manual_seed(0)
conditional_model = ClassConditionedUNet().to(device)
n_params = sum(p.numel() for p in conditional_model.parameters())
print(f"parameters: {n_params:,} (chapter 4's TimeUNet + an 11 x 128 label table)")
''', check=True)

md(r'''
Training is chapter 4's Algorithm 1 (a timestep and Gaussian noise per image, predict the noise) and recipe
(AdamW, warm-up and cosine learning rate, clipping, EMA), with the label as a third input and the label dropout.
''')

code(r'''
def train_conditional(model: ClassConditionedUNet, n_steps: int, p_uncond: float = 0.1,
                      seed: int = 0) -> tuple[list[float], nn.Module]:
    """Algorithm 1 with labels, each dropped with probability p_uncond; losses, EMA."""
    set_seed(seed)
    train_dataloader.generator.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, n_steps // 20, n_steps)
    ema = EMAModel(model.parameters(), decay=0.995)
    losses, batches = [], forever(train_dataloader)
    for _ in tqdm(range(n_steps), desc="training (conditional)"):
        batch = next(batches)
        x0, labels = batch["images"].to(device), batch["label"].to(device)
        drop = torch.rand(len(labels), device=device) < p_uncond
        labels = torch.where(drop, torch.full_like(labels, model.no_label), labels)
        t = torch.randint(0, T, (len(x0),), device=device)
        noise = torch.randn_like(x0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            predicted = model(q_sample(x0, t, noise, alphas_cumprod), t, labels)
        loss = (predicted.float() - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        losses.append(loss.item())
    ema_model = copy.deepcopy(model).eval()
    ema.copy_to(ema_model.parameters())
    return losses, ema_model
''')

md(r'''
The budget: 2,400 steps of batch 64 (about 7 minutes on the course's CPU); 10 in quick mode.
''')

code(r'''
n_conditional_steps = budget(full=2400, quick=10)
start = time.perf_counter()
conditional_losses, conditional_ema = train_conditional(conditional_model,
                                                        n_conditional_steps, seed=1)
conditional_minutes = (time.perf_counter() - start) / 60
print(f"{n_conditional_steps} steps in {conditional_minutes:.1f} min; mean loss over "
      f"the last 100 steps {np.mean(conditional_losses[-100:]):.4f}")
assert np.mean(conditional_losses[-10:]) < np.mean(conditional_losses[:10])
''')

md(r'''
### Guidance

At sampling time each step evaluates the network twice, with the label $c$ and with "no label", and extrapolates
from the unconditional prediction through the conditional one:

$$
\hat\epsilon = \epsilon_\theta(x_t, t, \varnothing) + w\,\big(\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, \varnothing)\big).
$$

$w = 0$ is the unconditional model, $w = 1$ the conditional one, $w > 1$ goes **beyond** it. Geometrically, the
predicted noise is (up to a factor $-\sqrt{1-\bar\alpha_t}$) the score $\nabla_x \log p(x_t)$, the direction towards
more probable images; the difference $\epsilon_\text{cond} - \epsilon_\text{uncond}$ is then (minus) the gradient of
$\log p(c \mid x_t)$, an implicit classifier, and $w$ scales how hard each step pushes towards images that this
classifier calls $c$. The two calls run as one batch of twice the size. The sampler is DDIM ($\eta = 0$, 25 steps),
which chapter 5 found robust at few steps.
''')

code(r'''
@torch.no_grad()
def guided_sample(model: ClassConditionedUNet, labels: torch.Tensor,
                  guidance_scale: float, n_steps: int = 25, seed: int = 0,
                  batch_size: int = 250) -> torch.Tensor:
    """DDIM with classifier-free guidance; images in [0, 1], one per label."""
    scheduler = DDIMScheduler(**schedule, timestep_spacing="trailing")
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    batches = []
    for first in range(0, len(labels), batch_size):
        scheduler.set_timesteps(n_steps)
        c = labels[first:first + batch_size].to(device)
        x = torch.randn(len(c), 1, 28, 28, generator=generator).to(device)
        both_labels = torch.cat([c, torch.full_like(c, model.no_label)])
        for t in scheduler.timesteps:
            t_batch = t.expand(2 * len(c)).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                eps = model(torch.cat([x, x]), t_batch, both_labels).float()
            eps_cond, eps_uncond = eps.chunk(2)
            eps_guided = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            x = scheduler.step(eps_guided, t, x).prev_sample
        batches.append(x.cpu())
    return ((torch.cat(batches) + 1) / 2).clamp(0, 1)
''')

md(r'''
The grid: one row per requested digit, one column per guidance scale, **the same starting noise along each row**.
Look at the first column ($w = 0$, the label is ignored: random digits), then how the requested digit appears at
$w = 1$ and how strokes thicken and simplify as $w$ grows.
''')

code(r'''
guidance_scales = [0, 1, 2, 4, 8]
digits = torch.arange(10)
columns = [guided_sample(conditional_ema, digits, w, seed=3) for w in guidance_scales]
grid = torch.stack(columns, dim=1).flatten(0, 1)  # row = digit, column = w
fig = show_images(grid, nrow=len(guidance_scales), value_range=(0, 1),
                  title="Classifier-free guidance: digit (rows) × w (columns)")
ax = fig.axes[0]
ax.set_xticks([15 + 30 * i for i in range(len(guidance_scales))],
              [f"w = {w}" for w in guidance_scales])
ax.set_yticks([15 + 30 * i for i in range(10)], [str(d) for d in range(10)])
ax.set_xlabel("guidance scale")
ax.set_ylabel("requested digit")
fig
''')

md(r'''
### What guidance buys and what it costs, measured

For each $w$: 500 samples, 50 of each digit. The **intended share** is the share that the MNIST classifier
assigns to the requested digit; the **FD ratio** (chapters 2 and 5) measures how far the whole set of samples is
from real digits, diversity included.
''')

code(r'''
n_guidance_samples = budget(full=500, quick=40)
requested = torch.arange(n_guidance_samples) % 10
guidance_table = {}  # w → (intended share, FD ratio)
for w in guidance_scales:
    samples = guided_sample(conditional_ema, requested, w, seed=4)
    probs = classifier_outputs(samples, classifier)[1]
    intended = (probs.argmax(dim=1) == requested).double().mean().item()
    fd_ratio = mnist_sample_quality(samples, classifier).fd_ratio
    guidance_table[w] = (intended, fd_ratio)
    print(f"w = {w}: intended digit {100 * intended:5.1f} %, FD ratio {fd_ratio:5.2f}")
''')

code(r'''
fig, axes = new_figure(figsize=(6, 3.8))
ax = axes[0, 0]
shares = [100 * guidance_table[w][0] for w in guidance_scales]
ratios = [guidance_table[w][1] for w in guidance_scales]
ax.plot(shares, ratios, marker="o")
for w, share, ratio in zip(guidance_scales, shares, ratios):
    ax.annotate(f"w = {w}", (share, ratio), textcoords="offset points", xytext=(6, 4),
                fontsize=9)
ax.set(xlabel="samples of the requested digit (%)", ylabel="FD ratio (1 = real)",
       title="Guidance: fidelity against distance to real digits")
fig
''')

md(r'''
Read the curve from $w = 0$: the intended share jumps once the label is used at all ($w = 1$) and keeps rising
with $w$, while the FD ratio first falls (conditional samples are cleaner digits) and then rises again: strong
guidance pushes every sample towards the most "typical" version of its digit, so the set loses the variety of real
handwriting. The chapter picks the smallest $w$ whose intended share is close to its maximum and whose FD ratio is
still near its minimum; the summary gives the values from the run stored here. Text-to-image models use the same
trade-off with larger $w$ (often 5–8), because a text prompt is a much weaker condition than a digit label.

### In Colab: the same knob in a text-to-image pipeline

With the Hugging Face Hub and a GPU (Colab: *Runtime → Change runtime type → GPU*), the cell below draws one prompt
with `guidance_scale` 1 and 7.5 from Stable Diffusion. Offline or without a GPU it prints a note and does nothing.
''')

code(r'''
if hub_available() and device.type == "cuda":
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", torch_dtype=torch.float16
    ).to(device)
    prompt = "a watercolour painting of a butterfly on a flower"
    fig, axes = new_figure(1, 2, figsize=(7, 3.8))
    for ax, w in zip(axes[0], [1.0, 7.5]):
        image = pipe(prompt, guidance_scale=w, num_inference_steps=25,
                     generator=torch.Generator(device).manual_seed(0)).images[0]
        ax.imshow(image)
        ax.set(title=f"guidance_scale = {w}", xticks=[], yticks=[])
    display(fig)
else:
    print("Skipped: the Stable Diffusion example needs the Hugging Face Hub and a GPU.")
''')

md(r'''
## Part B: flow matching, back to the lerp

### The straight path

Chapter 1 began with `corrupt(x, noise, amount)` $= (1 - \text{amount})\,x + \text{amount}\cdot\text{noise}$. Flow
matching (Lipman et al., 2023), also called rectified flow (Liu et al., 2023), trains on exactly that path. With
$t \in [0, 1]$ in place of the amount, a clean image $x_0$ and Gaussian noise $\epsilon$:

$$
x_t = (1 - t)\,x_0 + t\,\epsilon, \qquad
v = \frac{\mathrm{d}x_t}{\mathrm{d}t} = \epsilon - x_0 .
$$

The network $v_\theta(x_t, t)$ learns the **velocity** $v$ with the loss
$\mathbb{E}_{t, x_0, \epsilon}\lVert v_\theta(x_t, t) - (\epsilon - x_0)\rVert^2$, $t \sim U(0, 1)$. For one pair
$(x_0, \epsilon)$ the velocity is constant along the line; averaged over all pairs that pass through a point, the
network learns the expected velocity there, and following it from $t = 1$ (pure noise) to $t = 0$ moves noise to
data. Sampling is Euler's method, with $N$ equal steps $\Delta t = 1/N$:

$$
x_{t - \Delta t} = x_t - \Delta t\; v_\theta(x_t, t).
$$

The network is chapter 4's `TimeUNet`, unchanged; it is given $1000\,t$ as its timestep, so its sinusoidal embedding
sees the same range as in chapter 4 (diffusers' flow-matching models do the same).
''')

code(r'''
def train_flow(model: nn.Module, n_steps: int, seed: int = 0):
    """Flow matching on the lerp path with chapter 4's recipe; losses, EMA model."""
    set_seed(seed)
    train_dataloader.generator.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, n_steps // 20, n_steps)
    ema = EMAModel(model.parameters(), decay=0.995)
    losses, batches = [], forever(train_dataloader)
    for _ in tqdm(range(n_steps), desc="training (flow matching)"):
        x0 = next(batches)["images"].to(device)
        noise = torch.randn_like(x0)
        t = torch.rand(len(x0), device=device)  # a time per image, uniform in [0, 1)
        x_t = corrupt(x0, noise, t)  # (1 - t) x0 + t noise: chapter 1's lerp
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            predicted_velocity = model(x_t, 1000 * t)
        loss = (predicted_velocity.float() - (noise - x0)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        losses.append(loss.item())
    ema_model = copy.deepcopy(model).eval()
    ema.copy_to(ema_model.parameters())
    return losses, ema_model
''')

code(r'''
@torch.no_grad()
def flow_sample(model: nn.Module, n_images: int, n_steps: int, seed: int = 0,
                batch_size: int = 500) -> torch.Tensor:
    """Euler steps from t = 1 (noise) to t = 0; images in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    times = torch.linspace(1, 0, n_steps + 1)
    model.eval()
    batches = []
    for first in range(0, n_images, batch_size):
        n = min(batch_size, n_images - first)
        x = torch.randn(n, 1, 28, 28, generator=generator).to(device)
        for t, t_next in zip(times[:-1], times[1:]):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                velocity = model(x, (1000 * t).expand(n).to(device)).float()
            x = x + (t_next - t) * velocity  # t_next < t: a step towards the data
        batches.append(x.cpu())
    return ((torch.cat(batches) + 1) / 2).clamp(0, 1)
''')

md(r'''
**Checked against diffusers.** `FlowMatchEulerDiscreteScheduler` (the scheduler of Stable Diffusion 3 and Flux)
keeps its times as `sigmas` and its `step` moves `sample + (sigma_next - sigma) * model_output`: our update. The
cell takes its times for 4 steps, makes a velocity up, and compares one step of each (with `shift=1`; SD3 uses
`shift=3`, which moves the times towards the noisy end).
''')

code(r'''
flow_scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=1.0)
flow_scheduler.set_timesteps(4)
generator = torch.Generator().manual_seed(5)
x = torch.randn(2, 1, 28, 28, generator=generator)
velocity = torch.randn(2, 1, 28, 28, generator=generator)
for i, timestep in enumerate(flow_scheduler.timesteps):
    t, t_next = flow_scheduler.sigmas[i], flow_scheduler.sigmas[i + 1]
    ours = x + (t_next - t) * velocity
    theirs = flow_scheduler.step(velocity, timestep, x).prev_sample
    print(f"t = {t:.3f} → {t_next:.3f} (timestep {timestep:.0f}): "
          f"same step: {torch.allclose(ours, theirs, atol=1e-6)}")
''', check=True)

md(r'''
### Flow matching against DDPM, same network, same training

The DDPM side is chapter 4's model: the same `TimeUNet`, 3,300 steps of batch 64 with the same recipe (loaded from
the cache, or trained here). The flow-matching model gets the same network, steps and recipe, from the same initial
weights.
''')

code(r'''
n_flow_steps = budget(full=3300, quick=10)

ddpm_model = TimeUNet().to(device)
weights = cache_dir("ch04_time_unet") / "ema_model.pt"
if weights.is_file():
    ddpm_model.load_state_dict(torch.load(weights, map_location=device))
    print("DDPM: chapter 4's EMA model, from the course cache")
else:
    print("DDPM: chapter 4's model is not in the cache; "
          f"training it ({n_flow_steps} steps)")
    torch.manual_seed(0)
    ddpm_model = train_ddpm(ddpm_model, train_dataloader, alphas_cumprod, n_flow_steps,
                            use_bf16=use_bf16, seed=1)[1]

torch.manual_seed(0)  # chapter 4's initial weights
start = time.perf_counter()
flow_losses, flow_model = train_flow(TimeUNet().to(device), n_flow_steps, seed=1)
flow_minutes = (time.perf_counter() - start) / 60
print(f"flow matching: {n_flow_steps} steps in {flow_minutes:.1f} min; mean loss over "
      f"the last 100 steps {np.mean(flow_losses[-100:]):.4f}")
assert np.mean(flow_losses[-10:]) < np.mean(flow_losses[:10])
''')

code(r'''
plot_losses(flow_losses, smooth=100, title="Flow matching: predicting the velocity",
            ylabel="MSE between v and ε − x₀")
''')

md(r'''
Now both models at 1 to 64 sampling steps, 500 samples each: flow matching with Euler steps, the DDPM model with
DDIM ($\eta = 0$), its deterministic sampler. Both samplers follow an ODE: DDIM, in the variables
$y = x_t/\sqrt{\bar\alpha_t}$ and $\sigma = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}$, takes Euler steps of
$\mathrm{d}y/\mathrm{d}\sigma = \hat\epsilon$ (chapter 5); flow matching takes Euler steps of
$\mathrm{d}x_t/\mathrm{d}t = v_\theta$. The paths are related: dividing the lerp by $1 - t$ gives
$x_t/(1-t) = x_0 + \frac{t}{1-t}\,\epsilon$, the same family with $\sigma = t/(1-t)$. What differs is the
parametrisation the Euler steps are taken in and what the network is trained to predict; the straight line is the
one along which a single Euler step is exact for a single pair $(x_0, \epsilon)$.
''')

code(r'''
step_counts = budget(full=[1, 2, 4, 8, 16, 32, 64], quick=[1, 4])
n_compare = budget(full=500, quick=40)
ddim = DDIMScheduler(**schedule, timestep_spacing="trailing")
comparison = {"flow matching (Euler)": [], "DDPM model (DDIM, η = 0)": []}
for n_steps in step_counts:
    for name in comparison:
        start = time.perf_counter()
        if name.startswith("flow"):
            images = flow_sample(flow_model, n_compare, n_steps, seed=6)
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                images = solver_sample(ddpm_model, ddim, n_compare, n_steps, seed=6)
        seconds = (time.perf_counter() - start) / n_compare
        fd_ratio = mnist_sample_quality(images, classifier).fd_ratio
        comparison[name].append((n_steps, fd_ratio, seconds, images[:8]))
    print(f"{n_steps:2d} steps: " + "   ".join(
        f"{name} {rows[-1][1]:6.2f}" for name, rows in comparison.items()))
''')

code(r'''
fig, axes = new_figure(figsize=(6, 3.8))
ax = axes[0, 0]
for name, rows in comparison.items():
    ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=name)
ax.set(xscale="log", yscale="log", xlabel="sampling steps (network evaluations)",
       ylabel="FD ratio (1 = real)", title="Flow matching against DDPM, same network")
ax.set_xticks(step_counts, [str(n) for n in step_counts])
ax.legend()
fig
''')

md(r'''
Samples at 4 and at 64 steps, from the same noise, for both models:
''')

code(r'''
shown_steps = sorted({4, step_counts[-1]} & set(step_counts))
fig, axes = new_figure(len(shown_steps), 2, figsize=(7, 1.3 * len(shown_steps) + 0.4))
for row, n_steps in enumerate(shown_steps):
    for col, (name, rows) in enumerate(comparison.items()):
        images = next(r[3] for r in rows if r[0] == n_steps)
        show_images(images, nrow=4, ax=axes[row, col], value_range=(0, 1),
                    title=f"{name.split(' (')[0]}, {n_steps} steps")
fig
''')

md(r'''
Read the curve at its left end: with one to four steps, the straight-path model is much closer to real digits
than DDIM on the DDPM model, because its trajectories are nearly straight and a few Euler steps follow them well;
by 32–64 steps both have converged and the difference is what training put into each network. The measured values
of the run stored here are in the summary. That few-step advantage, and its simplicity, is why current image and
video models (Stable Diffusion 3, Flux) train with flow matching; distillation methods push it to one step.

## Exercises

````{exercise} Guidance with a scale per image
:label: ex-guided-eps

Write `guided_eps(eps_cond, eps_uncond, w)` returning
$\hat\epsilon = \epsilon_\text{uncond} + w\,(\epsilon_\text{cond} - \epsilon_\text{uncond})$ where `w` is either a
number or a tensor with one scale per image, shape `(B,)`, so that one batch can sample several guidance scales
at once.
````
''')

code(r'''
def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor,
               w: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance; w is a number or one scale per image."""
    raise NotImplementedError  # your code here


check_guided_eps(guided_eps)
''')

md(r'''
````{solution} ex-guided-eps
:class: dropdown

```python
def guided_eps(eps_cond, eps_uncond, w):
    w = torch.as_tensor(w, dtype=eps_cond.dtype)
    if w.ndim == 1:
        w = w.view(-1, 1, 1, 1)  # one scale per image, broadcast over C, H, W
    return eps_uncond + w * (eps_cond - eps_uncond)
```
````

````{exercise} One Euler step of the flow, on any time grid
:label: ex-flow-euler-step

Write `flow_euler_step(x_t, velocity, t, t_next)` that moves `x_t` from time `t` to the earlier time `t_next` along
the predicted velocity (both times are numbers in $[0, 1]$). The check runs it on the time grids of diffusers'
`FlowMatchEulerDiscreteScheduler` with `shift=1` and with Stable Diffusion 3's `shift=3`, and compares with its
`step`.
````
''')

code(r'''
def flow_euler_step(x_t: torch.Tensor, velocity: torch.Tensor, t: float,
                    t_next: float) -> torch.Tensor:
    """One Euler step of dx/dt = velocity, from t to t_next < t."""
    raise NotImplementedError  # your code here


check_flow_euler_step(flow_euler_step)
''')

md(r'''
````{solution} ex-flow-euler-step
:class: dropdown

The step is $x_{t'} = x_t + (t' - t)\,v$; since $t' < t$ it moves against the velocity $\epsilon - x_0$, that is,
towards the data:

```python
def flow_euler_step(x_t, velocity, t, t_next):
    return x_t + (t_next - t) * velocity
```
````

````{exercise} Choose the guidance scale
:label: ex-guidance-choice

`guidance_table` maps each measured $w$ to `(intended share, FD ratio)`. Write
`choose_guidance(table, min_share)` that returns the $w$ with the lowest FD ratio among those whose intended share
is at least `min_share`, or `None` if none is. The check runs it on this chapter's measured table and on made-up
ones.
````
''')

code(r'''
def choose_guidance(table: dict, min_share: float) -> float | None:
    """The w with the best FD ratio among those meeting min_share, or None."""
    raise NotImplementedError  # your code here


check_guidance_choice(choose_guidance, guidance_table)
''')

md(r'''
````{solution} ex-guidance-choice
:class: dropdown

```python
def choose_guidance(table, min_share):
    meeting = {w: ratio for w, (share, ratio) in table.items() if share >= min_share}
    return min(meeting, key=meeting.get) if meeting else None
```
````

## Summary

* One network learns both the conditional and the unconditional model when labels are dropped 10 % of the time;
  classifier-free guidance extrapolates between them, trading the variety of the samples for the share of the
  requested class.
* Flow matching trains on chapter 1's lerp with the velocity $\epsilon - x_0$ as the target and samples with Euler
  steps; diffusers' `FlowMatchEulerDiscreteScheduler` takes the same step.
* At equal network and training, flow matching needs far fewer sampling steps than DDIM on a DDPM model for the same
  quality.

**Further reading.** Ho & Salimans (2021), *Classifier-Free Diffusion Guidance*; Dhariwal & Nichol (2021) for
classifier guidance; Lipman et al. (2023), *Flow Matching for Generative Modeling*; Liu, Gong & Liu (2023),
*Flow Straight and Fast* (rectified flow); Esser et al. (2024), *Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis* (Stable Diffusion 3).
''')
