"""Numbers the chapters' prose may state without printing them: each with where it comes from.

`test_prose_numbers.py` reads this table. A source "output of NN_chapter.ipynb" is checked against that chapter's
stored outputs; any other source is a citation (a paper's table, a library default, the data's own README).
"""

CONSTANTS: dict[str, dict[str, str]] = {
    "01_noise_and_schedules.ipynb": {
        "17.2": "benchmarks/gpu_smoke/h200_chapters.jsonl: this chapter's quick-mode wall time on the H200 (scripts/gpu_smoke.sh)",
        "0.00085": "Stable Diffusion's beta_start (diffusers 'scaled_linear' config of CompVis/stable-diffusion-v1-4)",
        "0.012": "Stable Diffusion's beta_end (the same config)",
        "0.008": "Nichol & Dhariwal 2021, eq. 17: the cosine schedule's offset s",
        "0.999": "Nichol & Dhariwal 2021, §3.2: each beta clipped at 0.999",
        "0.002": "Karras et al. 2022, Table 1: sigma_min",
        "3.5": "the extremes of 784 standard Gaussian pixels (the expected maximum is about 3.0-3.5)",
        "0.01365": "exercise 1.1's answer for alpha_bar_T = 1e-3 (bisection: 0.013650; check_beta_end's case)",
        "0.1%": "check_beta_end's tolerance: |log alpha_bar_T - log target| < 1e-3, i.e. alpha_bar_T within 0.1 % "
                "(course_utils/checks/ch01_noise.py)",
        "3%": "derived: the −Σβ shortcut's error on ᾱ_T, 3.1 % (linear schedule, target 1e-3: its beta_end "
              "2 * -log(1e-3) / 1000 - 1e-4 = 0.013716 gives alpha_bar_T = 9.69e-4 by the float64 product)",
    },
    "02_basic_unet_mnist.ipynb": {
        "44.2": "benchmarks/gpu_smoke/h200_chapters.jsonl: this chapter's quick-mode wall time on the H200 (scripts/gpu_smoke.sh)",
        "8.0": "course_utils.precision: bf16 autocast only from CUDA compute capability 8.0 (Ampere), NVIDIA's native bf16",
        "2.4": "diffusers DDPMScheduler(beta_schedule='squaredcos_cap_v2').alphas_cumprod[999] = 2.4e-9",
        "98.7%": "benchmarks/README.md: the MNIST classifier's test accuracy",
        "1,062": "benchmarks/README.md: run A's steps in 10 minutes",
        "34%": "benchmarks/README.md: runs A and B, confident share (33.6, 34.0)",
        "1,025": "benchmarks/README.md: run B's steps",
        "29%": "benchmarks/README.md: run C's confident share (28.9)",
        "816": "benchmarks/README.md: run C's steps",
        "1,252": "benchmarks/README.md: run D's steps",
        "35%": "benchmarks/README.md: run D's confident share (34.5)",
        "1,324": "benchmarks/README.md: run E's steps",
        "66%": "benchmarks/README.md: run E's confident share with DDIM 50 (66.2)",
        "68%": "benchmarks/README.md: runs E (DPM-Solver++ 20, 67.5) and F (67.9), confident share",
        "1,349": "benchmarks/README.md: run F's steps",
        "2,486": "benchmarks/README.md: run G's steps",
        "71%": "benchmarks/README.md: run G's confident share (70.5)",
        "2.97": "benchmarks/README.md: recipe G re-scored at 2,400 steps, FD / test-vs-test floor",
        "67.9": "benchmarks/README.md: run F's confident share (batch 128)",
        "70.5": "benchmarks/README.md: run G's confident share (batch 64)",
        "70.5%": "benchmarks/README.md: run G's confident share (batch 64)",
        "28%": "derived: 100 - 71.7 % confident (printed) = 28.3 %",
        "5%": "derived: 100 - 94.7 % of real digits confident (printed) = 5.3 %",
        "1.7": "derived: 0.212 / 0.126 s per step, float32 / bf16 (both printed)",
        "0.59": "benchmarks/README.md: its sd over five reference draws",
        "0.999": "benchmarks/README.md: runs A-E's EMA decay (--ema-decay default)",
        "0.995": "benchmarks/README.md: runs F and G's EMA decay (and this chapter's ema_decay)",
        "0.5": "exercise 2.3's own example power p",
    },
    "03_butterflies_unet2d.ipynb": {
        "31.3": "benchmarks/gpu_smoke/h200_chapters.jsonl: this chapter's quick-mode wall time on the H200 (scripts/gpu_smoke.sh)",
        "8.0": "course_utils.precision: bf16 autocast only from CUDA compute capability 8.0 (Ampere), NVIDIA's native bf16",
        "0.16": "benchmarks/gpu_smoke/: train_unconditional --preset gpu, s/step in fp16 on the H200 (0.158, fastest of three runs)",
        "0.22": "benchmarks/gpu_smoke/: the same, slowest of three runs (0.217)",
        "0.3": "exercise 3.2's SDEdit strengths 0.3, 0.6, 0.9 (the exercise's own values)",
        "0.6": "exercise 3.2's SDEdit strengths 0.3, 0.6, 0.9 (the exercise's own values)",
        "10%": "the chapter's rule for keeping bf16 (its code compares times with a factor 0.9)",
        "0.999": "an example decay d (the chapter's prose)",
        "0.75": "the cpu preset's ema_power (TrainConfig in the chapter's code)",
        "-0.75": "the EMA warm-up's exponent, minus the cpu preset's ema_power (TrainConfig)",
        "0.85": "ema_power of the benchmark's third run (benchmarks/README.md, train_unconditional.py)",
        "0.05": "an example error of an eps-prediction (the chapter's prose)",
        "0.9": "a strength for exercise 3.2's try-it step (the exercise's own choice)",
        "0.9999": "the cpu preset's ema_decay, the cap of its EMA warm-up (TrainConfig "
                  "in the chapter's code; also the benchmark's ema_power 0.85 run)",
        "0.998": "benchmarks/README.md: the EMA cap of the emoji-v-bf16 run (its recipe in "
                 "results/train_unconditional.jsonl: 'EMA 0.998')",
        "0.9967": "derived: 1 - 1/2001**0.75 = 0.99666 (exercise 3.3's answer)",
        "33%": "derived: diffusers DDPMScheduler(beta_schedule='linear').alphas_cumprod: sqrt(alpha_bar_t) < 0.1 "
               "for 327 of the 1000 timesteps (t >= 673; below 0.5 from t = 368)",
        "6.5%": "derived: the same for 'squaredcos_cap_v2': sqrt(alpha_bar_t) < 0.1 for 65 of 1000 timesteps "
                "(t >= 935)",
        "34%": "benchmarks/README.md: runs A and B (without and with EMA), confident share (33.6, 34.0)",
        "2,048": "Inception-v3 pool features (Szegedy et al. 2016; Heusel et al. 2017)",
        "1,000": "benchmarks/README.md: each benchmark FID scores 1000 samples",
        "9.9": "benchmarks/README.md: cifar-old-preset's logged training time, minutes (train_minutes 9.86 in "
               "results/train_unconditional.jsonl)",
        "18.9": "benchmarks/README.md: emoji-v-bf16's logged training time, minutes (train_minutes 18.86)",
        "8.7": "benchmarks/README.md: emoji-v-bf16-ema85's logged training time, minutes (train_minutes 8.66)",
        "0.27": "a strength check_sdedit tries (0.27 x 10 = 2.7: round keeps 3 steps, int 2)",
        "0.90": "derived: DDIMScheduler.from_config(the chapter's cosine config), 50 steps ('leading'): strength 0.3 "
                "starts at t = 280, sqrt(alpha_bar) = 0.9004",
        "0.44": "derived: the same, sqrt(1 - alpha_bar_280) = 0.4351",
        "0.61": "derived: strength 0.6 starts at t = 580, sqrt(alpha_bar) = 0.6076",
        "0.79": "derived: sqrt(1 - alpha_bar_580) = 0.7943",
        "0.18": "derived: strength 0.9 starts at t = 880, sqrt(alpha_bar) = 0.1844",
        "0.98": "derived: sqrt(1 - alpha_bar_880) = 0.9829",
    },
    "04_ddpm_from_scratch.ipynb": {
        "30.2": "benchmarks/gpu_smoke/h200_chapters.jsonl: this chapter's quick-mode wall time on the H200 (scripts/gpu_smoke.sh)",
        "8.0": "course_utils.precision: bf16 autocast only from CUDA compute capability 8.0 (Ampere), NVIDIA's native bf16",
        "1,062,497": "output of 02_basic_unet_mnist.ipynb (its DDPM model's parameter count)",
        "22%": "derived: 1 - 827,233 / 1,062,497 = 0.221 (both printed)",
        "0.008": "Nichol & Dhariwal 2021, eq. 17: the cosine schedule's offset s",
        "0.999": "Nichol & Dhariwal 2021, §3.2: each beta clipped at 0.999",
        "0.001": "a default named by a draft this course grew from (the chapter's prose says so)",
        "0.995": "the chapter's EMA decay (train_ddpm's ema_decay)",
        "0.37": "output of 02_basic_unet_mnist.ipynb (its DDPM training's seconds per step)",
        "1,800": "derived: diffusers EMAModel.get_decay, min((1 + n) / (10 + n), 0.995) reaches 0.995 at n = 1,791",
        "0.0015": "derived: 0.0363 - 0.0348, Huber's held-out MSE over L2's (both printed)",
        "0.0075": "derived: 0.0423 - 0.0348, L1's held-out MSE over L2's (both printed)",
    },
    "05_measuring_and_improving.ipynb": {
        "43.2": "benchmarks/gpu_smoke/h200_chapters.jsonl: this chapter's quick-mode wall time on the H200 (scripts/gpu_smoke.sh)",
        "8.0": "course_utils.precision: bf16 autocast only from CUDA compute capability 8.0 (Ampere), NVIDIA's native bf16",
        "10,000": "MNIST test split size (../shared/data/README.md)",
        "5,000": "MNIST test file halves, SD-3 then SD-1 (LeCun, Cortes & Burges; ../shared/data/README.md)",
        "3.17": "Ho et al. 2020, Table 2 and §4.1: CIFAR-10 FID against the training set",
        "5.24": "Ho et al. 2020, §4.1: CIFAR-10 FID against the test set",
        "2,048": "Inception-v3 pool features (Szegedy et al. 2016; Heusel et al. 2017)",
        "1,232": "Noto emoji stand-in size (../shared/data/README.md)",
        "1%": "the 1st percentile, by construction",
        "8.25": "3,300 / 400 training steps (chapter 4's budget over this chapter's)",
        "50,000": "the published FID protocol (Heusel et al. 2017)",
        "62.7": "derived: 187.64 - 124.95, both printed by the preprocessing cell",
    },
    "06_guidance_and_flow_matching.ipynb": {
        "38.3": "benchmarks/gpu_smoke/h200_chapters.jsonl: this chapter's quick-mode wall time on the H200 (scripts/gpu_smoke.sh)",
        "8.0": "course_utils.precision: bf16 autocast only from CUDA compute capability 8.0 (Ampere), NVIDIA's native bf16",
        "0.1": "the chapter's label-dropout probability p_uncond (Ho & Salimans 2021 use 0.1 and 0.2)",
        "10%": "the same p_uncond = 0.1, as a percentage",
        "7.5": "StableDiffusionPipeline's default guidance_scale (diffusers)",
        "3,300": "output of 04_ddpm_from_scratch.ipynb (its training steps)",
        "1.19": "derived: 2.48 - 1.29, the flow network's FD over the floor at w = 2 and 1 (both printed)",
        "0.65": "derived: sqrt(2 (0.18^2 + 0.42^2)), compare's unpaired spread of that difference "
                "(course_utils.metrics.compare counts each reference-draw variance twice)",
        "4.87": "printed as -4.87 ± 0.11 (grid, flow network, 2 steps), quoted as a gain",
        "13.92": "printed as -13.92 ± 0.78 (training on flow's grid, 2 steps), quoted as a lead",
    },
}

# Chapters whose prose has not yet been re-read against a re-run: the test is expected to fail for them.
PENDING: dict[str, str] = {
}
