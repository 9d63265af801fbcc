md(r'''
# 5. Measuring and improving samples

Chapters 2–4 trained diffusion models and looked at their samples. Looking is not enough to tell whether one
recipe is better than another: sixteen samples are an impression, and the training loss plateaus while samples
still improve. This chapter builds the measurements and then uses them:

1. **Fréchet distance, from scratch**, in the features of a small MNIST classifier; checked against
   `course_utils.metrics` and against the closed form for Gaussians.
2. **What else to measure**: KID (unbiased at small $N$), precision and recall, and a memorisation check.
3. **The caveats, shown**: FD grows as $N$ shrinks; it moves with JPEG and resizing; it sees only what its feature
   network sees.
4. **Samplers**: DDPM, DDIM, Euler, Heun and DPM-Solver++ on chapter 4's model, FD against model evaluations and
   against seconds.
5. **Objectives and the DDPM paper's ablations**, at small scale: $\epsilon$, $x_0$ or $v$ prediction;
   $L_\text{simple}$ against the true bound's weights; $\sigma_t^2 = \beta_t$ against $\tilde\beta_t$; and FD along
   one training run beside its loss.

Chapter 4's model is loaded from the course cache if chapter 4 has run on this machine; otherwise this chapter
trains it with the same recipe (`course_utils.ddpm`, the chapter-4 code). Time on a 2-core CPU at full budget:
about 20 minutes (the run note at the end has the measured time).
''')

md("## Setup")

code(r'''
# In Colab: install diffusers and the course helpers. Elsewhere this does nothing.
import sys

COURSE_REPO = "https://github.com/diffusion-course/diffusion-models-course"
if "google.colab" in sys.modules:
    %pip install -q "diffusers>=0.30" "datasets>=2.19" scipy
    %pip install -q "course_utils @ git+{COURSE_REPO}"
''')

code(r'''
import copy
import io
import time
import warnings

import numpy as np
import scipy.linalg
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm

from course_utils import (ImageTransform, budget, cache_dir, check_eps_from_v,
                          check_fewest_nfe, check_frechet_diagonal, get_device,
                          load_course_dataset, plot_losses, set_seed, show_images)
from course_utils.ddpm import (TimeUNet, forever, linear_beta_schedule, q_sample,
                               solver_sample, train_ddpm)
from course_utils.metrics import (MnistClassifier, classifier_outputs,
                                  frechet_distance, load_mnist_classifier,
                                  mnist_sample_quality, mnist_tensors)
from course_utils.plotting import new_figure

set_seed(0)
device = get_device()
T = 1000
alphas_cumprod = torch.cumprod(1 - linear_beta_schedule(T), dim=0)  # chapter 4's
print("device:", device)
''')

md(r'''
## The model to measure

Chapter 4's `TimeUNet` ($\epsilon$-prediction, linear schedule, EMA weights). If chapter 4 ran with the same
`COURSE_CACHE_DIR`, its saved weights are loaded; otherwise the model is trained here with chapter 4's code and
budget (about ten minutes on the course's CPU). bf16 autocast is used for the network where it is faster: the cell
times one batch of 250 images both ways (chapter 2 explains why we measure).
''')

code(r'''
mnist = load_course_dataset("ylecun/mnist", split="train")
mnist.set_transform(ImageTransform(mode="L", value_range=(-1, 1)))
train_dataloader = torch.utils.data.DataLoader(
    mnist, batch_size=budget(full=64, quick=16), shuffle=True,
    generator=torch.Generator().manual_seed(0), drop_last=True)


@torch.no_grad()
def seconds_per_batch(model, use_bf16: bool, n_images: int = 250) -> float:
    """Seconds of one forward pass over n_images, after a warm-up pass."""
    x = torch.randn(n_images, 1, 28, 28, device=device)
    t = torch.full((n_images,), 500, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        model(x, t)
        start = time.perf_counter()
        model(x, t)
    return time.perf_counter() - start


model = TimeUNet().to(device).eval()
fp32, bf16 = seconds_per_batch(model, False), seconds_per_batch(model, True)
use_bf16 = bf16 < 0.9 * fp32
print(f"250 images: {fp32:.2f} s in float32, {bf16:.2f} s in bf16 → "
      f"{'bf16' if use_bf16 else 'float32'}")

weights = cache_dir("ch04_time_unet") / "ema_model.pt"
if weights.is_file():
    model.load_state_dict(torch.load(weights, map_location=device))
    print("loaded chapter 4's EMA model from the course cache")
else:
    n_steps = budget(full=3300, quick=20)
    print(f"chapter 4's model is not in the cache: training it ({n_steps} steps)")
    torch.manual_seed(0)
    _, model = train_ddpm(TimeUNet().to(device), train_dataloader, alphas_cumprod,
                          n_steps, use_bf16=use_bf16, seed=1)
model.eval();
''')

md(r'''
## 1. Fréchet distance, from scratch

Compare two sets of images by comparing two sets of **features**, vectors that a network computes from each image
and that capture what the images show. FID (Heusel et al., 2017) fits a Gaussian to each set of features, mean
$\mu$ and covariance $\Sigma$, and reports the **Fréchet distance** (the squared 2-Wasserstein distance) between the
two Gaussians:

$$
\mathrm{FD} = \lVert \mu_a - \mu_b \rVert^2 + \mathrm{tr}\!\left(\Sigma_a + \Sigma_b - 2\,(\Sigma_a \Sigma_b)^{1/2}\right).
$$

The first term compares where the two sets are, the second how they spread; $(\Sigma_a\Sigma_b)^{1/2}$ is the matrix
square root (a matrix whose square is $\Sigma_a\Sigma_b$), computed with `scipy.linalg.sqrtm`. 0 means the two
Gaussians are identical. The "I" of FID is Inception-v3, the ImageNet classifier whose features it uses for
photographs (chapter 3); for digits we use the 128 features of the last hidden layer of a small MNIST classifier,
as fastai's course does for Fashion-MNIST.
''')

code(r'''
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_from_statistics(mu_a, cov_a, mu_b, cov_b) -> float:
    """|mu_a - mu_b|^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2))."""
    with warnings.catch_warnings():
        # ReLU units that never fire make the covariances singular: sqrtm warns,
        # but the square root exists (the check below compares another method)
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covariance_mean = scipy.linalg.sqrtm(cov_a @ cov_b)
    # rounding can leave tiny imaginary parts in the square root: drop them
    covariance_mean = covariance_mean.real
    mean_term = np.sum((mu_a - mu_b) ** 2)
    return float(mean_term + np.trace(cov_a + cov_b - 2 * covariance_mean))


def frechet(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    return frechet_from_statistics(*feature_statistics(features_a),
                                   *feature_statistics(features_b))
''')

md(r'''
The classifier: two convolution blocks and a 128-unit hidden layer (`course_utils.metrics.MnistClassifier`),
trained once for two epochs on the training digits (about half a minute on a CPU) and cached. Its features for the
real digits, and for 2,000 samples of chapter 4's model drawn with 30 DPM-Solver++ steps as in chapter 4:
''')

code(r'''
classifier = load_mnist_classifier(device)
print(classifier)
print(f"test accuracy {classifier.test_accuracy:.2%}")

n_real = budget(full=10_000, quick=1_000)
train_digits = mnist_tensors("train", n_real)[0]
test_digits = mnist_tensors("test", n_real)[0]
train_features = classifier_outputs(train_digits, classifier)[0].numpy()
test_features = classifier_outputs(test_digits, classifier)[0].numpy()

n_samples = budget(full=2000, quick=200)
dpm_scheduler = DPMSolverMultistepScheduler(
    num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
    algorithm_type="sde-dpmsolver++", timestep_spacing="trailing")
with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
    samples = solver_sample(model, dpm_scheduler, n_samples, 30, seed=0)
sample_features, sample_probs = classifier_outputs(samples, classifier)
sample_features = sample_features.numpy()
print(f"features: real {train_features.shape}, samples {sample_features.shape}")
never_fire = (train_features.std(axis=0) == 0).sum()
print(f"hidden units that never fire on the real digits: {never_fire} of 128")
''')

md(r'''
**Checked.** Our `frechet` against `course_utils.metrics.frechet_distance` (which computes the square root through
eigenvalues instead of `sqrtm`), on two sets of real digits; and against the closed form for two Gaussians with
diagonal covariances, where $\Sigma_a\Sigma_b$ is diagonal and its square root is taken entry by entry:
$\mathrm{FD} = \lVert\mu_a-\mu_b\rVert^2 + \sum_i (\sigma_{a,i} - \sigma_{b,i})^2$ (the first exercise asks you to
derive it). The cell prints whether the two implementations agree to a relative $10^{-6}$ (they differ by about
$10^{-8}$: the features were computed in float32).
''')

code(r'''
for name, features in [("first 500 training digits", train_features[:500]),
                       ("next 500 training digits", train_features[500:1000])]:
    ours = frechet(features, test_features[:500])
    theirs = frechet_distance(torch.from_numpy(features),
                              torch.from_numpy(test_features[:500]))
    print(f"{name} vs 500 test digits: ours and course_utils agree to 1e-6: "
          f"{abs(ours - theirs) < 1e-6 * theirs}")

mu_a, var_a = np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0])
mu_b, var_b = np.ones(4), np.array([4.0, 3.0, 2.0, 1.0])
closed_form = (np.sum((mu_a - mu_b) ** 2)
               + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))
ours = frechet_from_statistics(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
print(f"diagonal Gaussians: closed form {closed_form:.6f}, ours {ours:.6f}")
''', check=True)

md(r'''
## 2. Beyond FID: KID, precision and recall, memorisation

**KID** (Bińkowski et al., 2018) compares the two feature sets with a kernel instead of fitted Gaussians: the
squared maximum mean discrepancy with the polynomial kernel $k(x, y) = (x^\top y / D + 1)^3$,

$$
\mathrm{KID} = \frac{1}{m(m-1)}\sum_{i \ne j} k(a_i, a_j) + \frac{1}{n(n-1)}\sum_{i \ne j} k(b_i, b_j)
             - \frac{2}{mn}\sum_{i, j} k(a_i, b_j).
$$

(Our features are first divided by the real set's root-mean-square value, so that the kernel sees numbers of order
1, as with Inception's features.) Leaving out the $i = j$ terms makes it **unbiased**: its expected value is the same at every $N$, and 0 for two
sets from the same distribution. FD has no such estimator: it is biased upwards, more so the smaller $N$ (§3).

**Precision and recall** (Kynkäänniemi et al., 2019) separate the two ways samples can fail. Around each real
feature vector draw a ball reaching its 3rd-nearest real neighbour; the union of the balls estimates the "real
manifold". **Precision** is the share of samples inside it (are samples realistic?); **recall** swaps the roles:
the share of real digits inside the samples' manifold (do samples cover all the kinds of real digit?).
''')

code(r'''
def kid(features_a, features_b) -> float:
    """Unbiased squared MMD with the kernel (x.y / D + 1)^3; b is the reference set."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    # the cubic kernel assumes features of order 1: divide by the reference's RMS
    scale = np.sqrt(np.mean(b**2))
    a, b = a / scale, b / scale
    dim, m, n = a.shape[1], len(a), len(b)
    k_aa, k_bb = (a @ a.T / dim + 1) ** 3, (b @ b.T / dim + 1) ** 3
    k_ab = (a @ b.T / dim + 1) ** 3
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Share of fake inside the real k-NN manifold, and of real inside the fake one."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    # k-th nearest neighbour within each set (k + 1: the nearest is the point itself)
    real_radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    fake_radii = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    precision = (torch.cdist(fake, real) <= real_radii[None, :]).any(dim=1)
    recall = (torch.cdist(real, fake) <= fake_radii[None, :]).any(dim=1)
    return precision.double().mean().item(), recall.double().mean().item()
''')

md(r'''
The four measures for the samples, and for real training digits as the reference, at the same $N$ against the
same real test digits:
''')

code(r'''
n = len(sample_features)
rows = {"real train digits": train_features[:n], "chapter 4 samples": sample_features}
print(f"N = {n}   {'FD':>7} {'KID':>8} {'precision':>10} {'recall':>7}")
for name, features in rows.items():
    precision, recall = precision_recall(test_features[:n], features)
    print(f"{name:<17} {frechet(features, test_features[:n]):>7.2f} "
          f"{kid(features, test_features[:n]):>8.4f} {precision:>10.2f} {recall:>7.2f}")
''')

md(r'''
**Memorisation.** A model that copied its training digits would score perfectly on all of the above. The check:
for some samples, find the nearest training image in pixel space (Euclidean distance over the 784 pixels) and look.
As a reference, the same search for real *test* digits, which the model never saw, says how close an unseen
digit's nearest training neighbour usually is.
''')

code(r'''
all_train = mnist_tensors("train")[0].flatten(1)


def nearest_training_images(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image in [0, 1], its nearest MNIST training image and the distance."""
    distances = torch.cdist(images.flatten(1), all_train)
    nearest = distances.min(dim=1)
    return all_train[nearest.indices].view(-1, 1, 28, 28), nearest.values


shown = samples[:8]
neighbours, sample_distances = nearest_training_images(shown)
test_distances = nearest_training_images(test_digits[:200])[1]
sample_distances_all = nearest_training_images(samples[:200])[1]
print(f"median distance to the nearest training image: samples "
      f"{sample_distances_all.median():.2f}, "
      f"unseen test digits {test_distances.median():.2f}")

fig, axes = new_figure(2, 1, figsize=(7, 2.6))
show_images(shown, nrow=8, ax=axes[0, 0], value_range=(0, 1), title="Samples")
show_images(neighbours, nrow=8, ax=axes[1, 0], value_range=(0, 1),
            title="Their nearest training images (pixel distance)")
fig
''')

md(r'''
The samples' nearest training images are similar digits, not copies: a sample is about as far from its nearest
training image as an unseen test digit is from its own. A model that memorised would show near-zero distances.

## 3. The caveats, measured

### FD depends on $N$

Two sets of real digits from the same distribution should be at distance 0. The figure computes FD and KID
between real training and real test digits, and between samples and real test digits, for growing $N$. FD between
real sets falls steadily with $N$: it is a biased estimator, so **FDs are only comparable at the same $N$**, and
this course always reports FD as a ratio to the real-vs-real distance at the same $N$. KID between real sets stays
near 0 at every $N$.
''')

code(r'''
# from 200 up: below the 128 feature dimensions the covariance is singular
sizes = [n for n in [200, 500, 1000, 2000] if n <= len(sample_features)]
curves = {"FD": {"real vs real": [], "samples vs real": []},
          "KID": {"real vs real": [], "samples vs real": []}}
for n in sizes:
    for measure, function in [("FD", frechet), ("KID", kid)]:
        curves[measure]["real vs real"].append(function(train_features[:n],
                                                        test_features[:n]))
        curves[measure]["samples vs real"].append(function(sample_features[:n],
                                                           test_features[:n]))

fig, axes = new_figure(1, 2, figsize=(7, 3.2))
for ax, (measure, lines) in zip(axes[0], curves.items()):
    for label, values in lines.items():
        ax.plot(sizes, values, marker="o", label=label)
    ax.set(xscale="log", xlabel="N (images per set)", ylabel=measure,
           title=f"{measure} against N")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=9)
fig.tight_layout()
fig
''')

md(r'''
### FD moves with preprocessing

Clean-FID (Parmar et al., 2022) showed that how images are resized and compressed before the feature network
changes FID by as much as the differences papers report between models. The same in our features: real test digits
saved as JPEG at quality 50, and downsized to 14×14 and back (bilinear), against the unmodified test digits. The
eye barely tells them apart; FD does.
''')

code(r'''
def jpeg(images: torch.Tensor, quality: int = 50) -> torch.Tensor:
    """Images in [0, 1] after a JPEG round trip at the given quality."""
    result = []
    for image in images:
        buffer = io.BytesIO()
        pixels = (image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        result.append(np.asarray(Image.open(buffer), dtype=np.float32) / 255)
    return torch.from_numpy(np.stack(result))[:, None]


def resize_round_trip(images: torch.Tensor, size: int = 14) -> torch.Tensor:
    """Images downsized to size x size and back to 28 x 28, bilinear."""
    small = torch.nn.functional.interpolate(images, size=size, mode="bilinear",
                                            antialias=True)
    return torch.nn.functional.interpolate(small, size=28, mode="bilinear").clamp(0, 1)


n = min(2000, len(test_digits) // 2)
reference_features = test_features[n:2 * n]  # other real test digits
versions = {"unchanged": test_digits[:n], "JPEG, quality 50": jpeg(test_digits[:n]),
            "resized 28 → 14 → 28": resize_round_trip(test_digits[:n])}
distances = {name: frechet(classifier_outputs(images, classifier)[0].numpy(),
                           reference_features)
             for name, images in versions.items()}
print(f"FD of {n} test digits to {n} other test digits")
for name, distance in distances.items():
    ratio = distance / distances["unchanged"]
    print(f"  {name:<22} {distance:6.2f}  ({ratio:.2f}× unchanged)")
show_images(torch.cat([v[:8] for v in versions.values()]), nrow=8, value_range=(0, 1),
            title="Unchanged (top), JPEG q50 (middle), resized (bottom)")
''')

md(r'''
### FD sees only what its features see

The same samples, scored in the features of the trained classifier and of the same network with **random**
weights. Random features still respond to strokes and blobs, but not to which digit they form. Read the ratios:
the trained features tell real digits from samples; the random ones can rank sets in another order. This is
why FID on Inception features, trained on photographs, is a poor judge of digits, sketches or medical images.
''')

code(r'''
torch.manual_seed(0)
random_network = MnistClassifier().to(device).eval()
n = len(sample_features)
sets = {"real train digits": train_digits[:n], "chapter 4 samples": samples,
        "resized 28 → 14 → 28": resize_round_trip(test_digits[:n])}
print(f"{'FD ratio to real vs real, N = ' + str(n):<38} {'trained':>8} {'random':>8}")
features_by_network = {}
for network_name, network in [("trained", classifier), ("random", random_network)]:
    test_f = classifier_outputs(test_digits[:n], network)[0].numpy()
    real_f = classifier_outputs(train_digits[:n], network)[0].numpy()
    baseline = frechet(real_f, test_f)
    features_by_network[network_name] = {
        name: frechet(classifier_outputs(images, network)[0].numpy(), test_f) / baseline
        for name, images in sets.items()}
for name in sets:
    print(f"{name:<38} {features_by_network['trained'][name]:>8.2f} "
          f"{features_by_network['random'][name]:>8.2f}")
''')

md(r'''
## 4. Samplers: quality against model evaluations and seconds

A sampler turns the trained network into images; the cost is the number of **network function evaluations**
(NFE). The same $\epsilon$-model, five diffusers schedulers:

* **DDIM** (`DDIMScheduler`, Song et al., 2021) with $\eta = 1$: fresh noise at every step with the posterior
  variance $\tilde\beta$ of the respaced schedule, which is DDPM's ancestral sampler (chapter 4's Algorithm 2) on
  fewer steps.
* **DDIM** with $\eta = 0$: deterministic; from the same estimate $\hat x_0$ it steps to
  $x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{t'}}\,\hat\epsilon$, with no fresh noise.
* **Euler** and **Heun** on Karras et al.'s (2022) $\sigma$ steps (`EulerDiscreteScheduler`,
  `HeunDiscreteScheduler`, `use_karras_sigmas=True`): first- and second-order solvers of the ODE below; Heun
  spends two evaluations per step (NFE $= 2 \times$ steps $- 1$).
* **DPM-Solver++** (2M, `DPMSolverMultistepScheduler`, Lu et al., 2022): a second-order multistep solver that
  reuses the previous step's evaluation.

**The probability-flow ODE.** Song et al. (2021, score SDEs) showed that the stochastic process has a
deterministic twin with the same marginals. In the variables $y = x_t / \sqrt{\bar\alpha_t} = x_0 + \sigma\,\epsilon$,
with the noise level $\sigma = \sqrt{(1 - \bar\alpha_t)/\bar\alpha_t}$, this ODE is simply

$$
\frac{\mathrm{d}y}{\mathrm{d}\sigma} = \hat\epsilon(x_t, t),
$$

and DDIM's step is exactly Euler's method for it, in $\sigma$ (Karras et al., 2022, §3). Higher-order solvers
(Heun, DPM-Solver++) follow the same curve with fewer steps. All samplers below start from the same noise; $N$
images each; the FD ratio is against real-vs-real at the same $N$.
''')

code(r'''
n_sweep = budget(full=200, quick=16)
nfe_targets = budget(full=[5, 10, 20, 50, 100], quick=[5, 10])
schedule = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                beta_end=0.02)
ddim = DDIMScheduler(**schedule, timestep_spacing="trailing")
samplers = {  # name: (scheduler, options for its step)
    "DDIM, η = 1": (ddim, {"eta": 1.0}),
    "DDIM, η = 0": (ddim, {"eta": 0.0}),
    "Euler (Karras σ)": (EulerDiscreteScheduler(**schedule, use_karras_sigmas=True),
                         {}),
    "Heun (Karras σ)": (HeunDiscreteScheduler(**schedule, use_karras_sigmas=True), {}),
    "DPM-Solver++ 2M": (DPMSolverMultistepScheduler(**schedule,
                                                    timestep_spacing="trailing"), {}),
}
sweep = {}  # sampler name → list of (NFE, FD ratio, seconds per sample)
for name, (scheduler, options) in samplers.items():
    sweep[name] = []
    for nfe in nfe_targets:
        steps = (nfe + 1) // 2 if name.startswith("Heun") else nfe
        scheduler.set_timesteps(steps)
        actual_nfe = len(scheduler.timesteps)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            images = solver_sample(model, scheduler, n_sweep, steps, seed=1,
                                   **options)
        seconds = (time.perf_counter() - start) / n_sweep
        ratio = mnist_sample_quality(images, classifier).fd_ratio
        sweep[name].append((actual_nfe, ratio, seconds))
    print(f"{name:<18}", "  ".join(f"{nfe:>3} NFE: {ratio:5.2f}" for nfe, ratio, _ in
                                   sweep[name]))
''')

md(r'''
The two views of the same table. Left: quality against network evaluations (the cost that does not depend on the
machine). Right: against seconds per sample on this machine, which also counts the solvers' own arithmetic.
''')

code(r'''
fig, axes = new_figure(1, 2, figsize=(7, 3.4))
for name, results in sweep.items():
    nfes, ratios, seconds = zip(*results)
    axes[0, 0].plot(nfes, ratios, marker="o", label=name)
    axes[0, 1].plot([1000 * s for s in seconds], ratios, marker="o", label=name)
axes[0, 0].set(xscale="log", yscale="log", xlabel="network evaluations (NFE)",
               ylabel="FD ratio (1 = real)", title="Quality against NFE")
axes[0, 1].set(xscale="log", yscale="log", xlabel="milliseconds per sample",
               ylabel="FD ratio (1 = real)", title="Quality against time")
axes[0, 0].legend(fontsize=9)
fig.tight_layout()
fig
''')

md(r'''
What to look for: at 5–10 evaluations the higher-order solvers (DPM-Solver++, Heun) are far ahead of the
ancestral sampler (η = 1), whose fresh noise at every step needs many small steps to average out; deterministic
DDIM sits between. By 50–100 evaluations the deterministic samplers have converged to the same curve and the
ancestral one catches up. The run stored
here is described in the summary.

## 5. Objectives and the DDPM paper's ablations

### What the network predicts

With $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$, any of three targets determines the other
two given $x_t$:

* $\epsilon$, the noise (DDPM);
* $x_0$, the clean image;
* $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0$ (Salimans & Ho, 2022), with
  $\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,\hat v$.

They differ in how the MSE weighs the timesteps. Measured as an error on $x_0$, with the signal-to-noise ratio
$\mathrm{SNR}_t = \bar\alpha_t / (1-\bar\alpha_t)$: the $\epsilon$-loss is $\mathrm{SNR}_t\,\lVert x_0 - \hat x_0\rVert^2$,
the $v$-loss $(1 + \mathrm{SNR}_t)\,\lVert x_0 - \hat x_0\rVert^2$, the $x_0$-loss weight 1. So $\epsilon$ puts almost no
weight on the noisiest steps (SNR near 0), where the image's layout is decided; $v$ keeps at least weight 1 there.
Karras et al. (2022) unify all three: the denoiser is
$D(x; \sigma) = c_\text{skip}(\sigma)\,x + c_\text{out}(\sigma)\,F_\theta(c_\text{in}(\sigma)\,x;\ \sigma)$ with
$c_\text{skip} = \sigma_\text{d}^2/(\sigma^2 + \sigma_\text{d}^2)$,
$c_\text{out} = \sigma\sigma_\text{d}/\sqrt{\sigma^2 + \sigma_\text{d}^2}$ and
$c_\text{in} = 1/\sqrt{\sigma^2 + \sigma_\text{d}^2}$ ($\sigma_\text{d}$ the data's standard deviation): the network
$F_\theta$ predicts a mix of noise and image whose weights change with $\sigma$; with $\sigma_\text{d} = 1$ this is
$v$-prediction.

### The runs

Four fresh `TimeUNet`s, the same initial weights, batches, timesteps and noise, chapter 4's recipe, an equal
budget of steps each:

| run | target | loss weight per timestep |
|---|---|---|
| $\epsilon$, $L_\text{simple}$ | $\epsilon$ | 1 (DDPM) |
| $\epsilon$, bound | $\epsilon$ | the true bound's $\lambda_t$ (chapter 4, §2), scaled to mean 1 |
| $x_0$ | $x_0$ | 1 |
| $v$ | $v$ | 1 |

The training loop is chapter 4's with the target and the weight as arguments; during the $\epsilon$ run it also
measures the FD ratio of the EMA weights every few hundred steps (200 samples, 20 DPM-Solver++ steps), for the
loss-versus-quality figure after.
''')

code(r'''
betas = linear_beta_schedule(T)
alphas_cumprod_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
beta_tilde = (1 - alphas_cumprod_prev) / (1 - alphas_cumprod) * betas
bound_weight = torch.ones(T)
bound_weight[1:] = betas[1:] ** 2 / (
    2 * beta_tilde[1:] * (1 - betas[1:]) * (1 - alphas_cumprod[1:]))
# the paper's L_0 is a decoder term, not a KL: weigh t = 0 like t = 1
bound_weight[0] = bound_weight[1]
bound_weight = bound_weight / bound_weight.mean()
print(f"bound weights (mean 1): {bound_weight[0]:.0f} at t = 0, "
      f"{bound_weight[500]:.3f} at t = 500, {bound_weight[-1]:.4f} at t = 999")


def target_for(objective: str, x0, noise, alpha_bar):
    """The training target for a prediction type, as diffusers names them."""
    if objective == "epsilon":
        return noise
    if objective == "sample":
        return x0
    if objective == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    raise ValueError(f"unknown objective {objective!r}")
''')

code(r'''
def quality_of(model, objective: str, n_images: int, n_steps: int = 20, seed: int = 2):
    """FD ratio and confident share of n_images from DPM-Solver++ (SDE form)."""
    scheduler = DPMSolverMultistepScheduler(
        **schedule, prediction_type=objective, algorithm_type="sde-dpmsolver++",
        timestep_spacing="trailing")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        images = solver_sample(model, scheduler, n_images, n_steps, seed=seed)
    return mnist_sample_quality(images, classifier), images


def train_objective(objective: str, weights: torch.Tensor, n_steps: int,
                    measure_at: tuple[int, ...] = (), seed: int = 3):
    """Chapter 4's loop for any target and per-timestep weight; FD along the way."""
    torch.manual_seed(0)  # the same initial weights for every run
    model = TimeUNet().to(device).train()
    set_seed(seed)  # the same timesteps and noise
    train_dataloader.generator.manual_seed(seed)  # the same batches
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, n_steps // 20, n_steps)
    ema = EMAModel(model.parameters(), decay=0.995)
    weights = weights.to(device)
    losses, measured = [], []
    batches = forever(train_dataloader)
    for step in tqdm(range(1, n_steps + 1), desc=objective):
        x0 = next(batches)["images"].to(device)
        t = torch.randint(0, T, (len(x0),), device=device)
        noise = torch.randn_like(x0)
        alpha_bar = alphas_cumprod.to(device)[t].view(-1, 1, 1, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            prediction = model(q_sample(x0, t, noise, alphas_cumprod), t).float()
        target = target_for(objective, x0, noise, alpha_bar)
        per_image = (prediction - target).pow(2).mean(dim=(1, 2, 3))
        loss = (weights[t] * per_image).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        ema.step(model.parameters())
        losses.append(loss.item())
        if step in measure_at:
            ema_model = copy.deepcopy(model).eval()
            ema.copy_to(ema_model.parameters())
            quality = quality_of(ema_model, objective, n_measure)[0]
            measured.append((step, quality.fd_ratio))
            model.train()
    ema_model = copy.deepcopy(model).eval()
    ema.copy_to(ema_model.parameters())
    return losses, ema_model, measured
''')

md(r'''
The budget: 600 steps per run at full budget (about 2 minutes each on the course's CPU), 5 in quick mode. The
runs are short, so what matters is how they compare with each other, not their absolute scores (chapter 4's model
trained 5.5 times longer).
''')

code(r'''
n_objective_steps = budget(full=600, quick=5)
n_measure = budget(full=200, quick=16)
n_compare = budget(full=500, quick=32)
measure_at = tuple(sorted({max(1, round(n_objective_steps * f))
                           for f in (0.1, 0.25, 0.5, 0.75, 1.0)}))
runs = {"ε, L_simple": ("epsilon", torch.ones(T)),
        "ε, bound weights": ("epsilon", bound_weight),
        "x0": ("sample", torch.ones(T)),
        "v": ("v_prediction", torch.ones(T))}
results = {}
for name, (objective, weights) in runs.items():
    start = time.perf_counter()
    losses, ema_model, measured = train_objective(
        objective, weights, n_objective_steps,
        measure_at=measure_at if name == "ε, L_simple" else ())
    minutes = (time.perf_counter() - start) / 60
    quality, images = quality_of(ema_model, objective, n_compare)
    results[name] = {"losses": losses, "measured": measured, "quality": quality,
                     "images": images, "minutes": minutes, "model": ema_model}
    print(f"{name:<17} {minutes:4.1f} min: FD ratio {quality.fd_ratio:5.2f}, "
          f"{100 * quality.confidence.confident_share:4.1f} % confident")
''')

md(r'''
Samples from each run, the same starting noise for all four:
''')

code(r'''
fig, axes = new_figure(1, 4, figsize=(7, 2.4))
for ax, (name, result) in zip(axes[0], results.items()):
    show_images(result["images"][:16], nrow=4, ax=ax, value_range=(0, 1),
                title=f"{name}\nFD {result['quality'].fd_ratio:.1f}×")
fig.suptitle(f"{n_objective_steps} training steps each")
fig
''')

md(r'''
### The variance at sampling time

The paper's other ablation, which needs no training: sample the $\epsilon$, $L_\text{simple}$ run with
$\sigma_t^2 = \tilde\beta_t$ (`fixed_small`) and with $\sigma_t^2 = \beta_t$ (`fixed_large`), DDPM's ancestral
sampler with 100 respaced steps, the same noise.
''')

code(r'''
variance_quality = {}
for variance_type in ["fixed_small", "fixed_large"]:
    scheduler = DDPMScheduler(**schedule, variance_type=variance_type,
                              timestep_spacing="trailing")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        images = solver_sample(results["ε, L_simple"]["model"], scheduler, n_measure,
                               budget(full=100, quick=10), seed=4)
    variance_quality[variance_type] = mnist_sample_quality(images, classifier).fd_ratio
    print(f"{variance_type}: FD ratio {variance_quality[variance_type]:.2f}")
''')

md(r'''
### Beside the paper

Ho et al.'s Table 2 ablates the same choices on CIFAR-10 (FID, lower is better; "unstable" where training
diverged). Our numbers are FD ratios on MNIST after short runs: compare the **direction** of each result, not the
size. The paper has no $x_0$ row; its nearest is predicting the posterior mean $\tilde\mu$ directly.
''')

code(r'''
paper = {"ε, L_simple": "3.17", "ε, bound weights": "13.51 (ε, true bound L)",
         "x0": "13.22 (μ̃ prediction, true bound L)", "v": "– (v came in 2022)"}
print(f"{'run':<18} {'ours: FD ratio':>14}   Ho et al. 2020, CIFAR-10 FID")
for name, result in results.items():
    print(f"{name:<18} {result['quality'].fd_ratio:>14.2f}   {paper[name]}")
print(f"{'σ² = β̃ (small)':<18} {variance_quality['fixed_small']:>14.2f}   "
      "similar (§4.2: both fine with 1,000 steps)")
print(f"{'σ² = β (large)':<18} {variance_quality['fixed_large']:>14.2f}   ")
''')

md(r'''
### The loss does not tell you when to stop

The loss of the $\epsilon$, $L_\text{simple}$ run beside the FD ratio of its EMA weights measured along the way.
Look at the right end: the loss has flattened while the FD ratio is still falling. A diffusion loss mixes all
noise levels, most of which are easy, so it is a poor progress bar; measure samples.
''')

code(r'''
fig, axes = new_figure(1, 2, figsize=(7, 3.2))
plot_losses(results["ε, L_simple"]["losses"], smooth=50, ax=axes[0, 0],
            title="Training loss (ε, L_simple)", ylabel="MSE on ε")
steps, ratios = zip(*results["ε, L_simple"]["measured"])
axes[0, 1].plot(steps, ratios, marker="o")
axes[0, 1].set(yscale="log", xlabel="training step",
               ylabel="FD ratio (EMA, 200 samples)",
               title="Sample quality along the run")
fig.tight_layout()
fig
''')

md(r'''
## Further reading: architectures

This course's networks are small UNets. What larger models use, with pointers:

* **UNet improvements** (Dhariwal & Nichol, 2021, "Diffusion Models Beat GANs"): more attention resolutions,
  BigGAN-style up/down-sampling residual blocks, adaptive group normalisation that scales *and* shifts with the
  timestep.
* **DiT** (Peebles & Xie, 2023): a plain Vision Transformer on patches of a latent image, conditioned by adaptive
  layer norm; quality scales with compute.
* **U-ViT** (Bao et al., 2023): a Transformer with UNet-style long skip connections between shallow and deep
  blocks.
* **RIN** (Jabri et al., 2023): a small set of latent tokens reads from and writes to the image tokens, so most
  computation is independent of resolution.

## Exercises

````{exercise} FD between two diagonal Gaussians
:label: ex-frechet-diagonal

For Gaussians with diagonal covariances, $\Sigma_a\Sigma_b$ is diagonal and its square root is taken entry by entry.
Show that $\mathrm{FD} = \lVert\mu_a - \mu_b\rVert^2 + \sum_i(\sigma_{a,i} - \sigma_{b,i})^2$, then write
`frechet_diagonal(mu_a, var_a, mu_b, var_b)` for 1-D numpy arrays of means and **variances**.
````
''')

code(r'''
def frechet_diagonal(mu_a: np.ndarray, var_a: np.ndarray, mu_b: np.ndarray,
                     var_b: np.ndarray) -> float:
    """Fréchet distance between N(mu_a, diag(var_a)) and N(mu_b, diag(var_b))."""
    raise NotImplementedError  # your code here


check_frechet_diagonal(frechet_diagonal)
''')

md(r'''
````{solution} ex-frechet-diagonal
:class: dropdown

The trace term is $\sum_i (\sigma_{a,i}^2 + \sigma_{b,i}^2 - 2\sigma_{a,i}\sigma_{b,i}) = \sum_i(\sigma_{a,i} -
\sigma_{b,i})^2$:

```python
def frechet_diagonal(mu_a, var_a, mu_b, var_b):
    return float(np.sum((mu_a - mu_b) ** 2)
                 + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2))
```
````

````{exercise} From v back to ε
:label: ex-eps-from-v

A $v$-model predicts $v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0$. Write
`eps_from_v(x_t, v, alpha_bar)` returning the $\epsilon$ it implies (`alpha_bar` has the images' shape or
broadcasts to it). Hint: substitute $x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,v$ into
$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$.
````
''')

code(r'''
def eps_from_v(x_t: torch.Tensor, v: torch.Tensor,
               alpha_bar: torch.Tensor) -> torch.Tensor:
    """The noise a v-prediction implies."""
    raise NotImplementedError  # your code here


check_eps_from_v(eps_from_v)
''')

md(r'''
````{solution} ex-eps-from-v
:class: dropdown

$\epsilon = \sqrt{\bar\alpha_t}\,v + \sqrt{1-\bar\alpha_t}\,x_t$ (the same rotation as $x_0$, by the other angle):

```python
def eps_from_v(x_t, v, alpha_bar):
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * x_t
```
````

````{exercise} The fewest evaluations that meet a target
:label: ex-fewest-nfe

`sweep` holds this chapter's measurements: for each sampler, a list of `(NFE, FD ratio, seconds per sample)`.
Write `fewest_nfe(sweep, sampler, target)` returning the smallest NFE at which that sampler's FD ratio is at most
`target`, or `None` if it never is. The check runs it on the table measured above and on made-up ones.
````
''')

code(r'''
def fewest_nfe(sweep: dict, sampler: str, target: float) -> int | None:
    """Smallest NFE whose FD ratio is <= target, or None."""
    raise NotImplementedError  # your code here


check_fewest_nfe(fewest_nfe, sweep)
''')

md(r'''
````{solution} ex-fewest-nfe
:class: dropdown

```python
def fewest_nfe(sweep, sampler, target):
    meeting = [nfe for nfe, ratio, _ in sweep[sampler] if ratio <= target]
    return min(meeting) if meeting else None
```

Measured FD is noisy: a sampler may meet the target at 20 NFE and miss it at 50. `min` over all that meet it
answers the question as asked; for a decision, re-measure near the answer with more samples.
````

## Summary

* FD compares Gaussians fitted to features; ours equals `course_utils.metrics` and the closed form. It is biased
  at small $N$ (compare at equal $N$, or as a ratio to real-vs-real), sensitive to preprocessing, and only as good
  as its feature network. KID is unbiased; precision and recall separate realism from coverage; a
  nearest-neighbour check rules out copying.
* For an $\epsilon$-model, higher-order ODE solvers reach a given quality in far fewer evaluations than ancestral
  DDPM sampling.
* The objective is a choice of weighting over noise levels; the DDPM paper's choices are measured here at small
  scale beside its table.
''')
