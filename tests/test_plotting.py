import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from matplotlib.figure import Figure
from PIL import Image

from course_utils import image_grid, plot_losses, plot_noising, plot_scheduler, show_images
from course_utils.plotting import MAX_FIGURE_WIDTH, _coefficients, fit_to_page, new_figure, to_unit_range


def test_image_grid_tiles_and_maps_range():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = image_grid(images, nrow=3, padding=1)
    assert grid.shape == (1 + 4 + 1, 1 + 3 * 5, 3)
    assert np.isclose(grid[1, 1, 0], 0.0) and np.isclose(grid[1, 6, 0], 0.5) and np.isclose(grid[1, 11, 0], 1.0)
    assert image_grid(images, nrow=2).shape[0] > image_grid(images, nrow=3).shape[0]  # two rows


def test_show_images_accepts_every_documented_input():
    for images in (torch.rand(4, 3, 8, 8), torch.rand(1, 8, 8) * 2 - 1, [Image.new("L", (8, 8))] * 3):
        fig = show_images(images, title="t")
        assert isinstance(fig, Figure) and fig.axes[0].get_title() == "t"


@pytest.mark.parametrize("bad, error, words", [
    (torch.rand(2, 2, 8, 8), ValueError, "channels"),
    (torch.rand(8, 8), ValueError, "shape"),
    (torch.randint(0, 255, (1, 1, 4, 4)), TypeError, "float"),
    (torch.rand(1, 1, 4, 4) * 255, ValueError, "255"),
    (torch.full((1, 1, 2, 2), float("nan")), ValueError, "NaN"),
    ([], ValueError, "empty"),
    ("image.png", TypeError, "expected"),
])
def test_show_images_rejects_bad_input(bad, error, words):
    with pytest.raises(error, match=words):
        show_images(bad)


def test_to_unit_range_clips_overshoot_only():
    x = torch.tensor([-1.2, -1.0, 0.0, 1.0, 1.3]).view(1, 1, 1, 5)
    assert torch.allclose(to_unit_range(x).flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="value_range"):
        to_unit_range(x, value_range=(0, 255))


class LerpSchedule:
    def __init__(self):
        self.signal_coef = torch.linspace(1, 0, 10)
        self.noise_coef = torch.linspace(0, 1, 10)

    def add_noise(self, x, noise, t):
        a = self.noise_coef[t].view(-1, 1, 1, 1)
        return (1 - a) * x + a * noise


def test_coefficients_follow_ddpm_formulas():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    signal, noise = _coefficients(scheduler)
    ab = scheduler.alphas_cumprod.double()
    assert torch.allclose(signal, ab.sqrt()) and torch.allclose(noise, (1 - ab).sqrt())
    signal, noise = _coefficients(LerpSchedule())
    assert signal[0] == 1 and noise[-1] == 1


def test_plot_scheduler_labels_lines_and_log_snr():
    fig = plot_scheduler(DDPMScheduler(), DDPMScheduler(beta_schedule="squaredcos_cap_v2"), LerpSchedule(),
                         labels=["linear", "cosine", "lerp"], log_snr=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    coef_ax, snr_ax = fig.axes
    assert len(coef_ax.lines) == 6 and len(snr_ax.lines) == 3
    assert coef_ax.get_xlabel() and coef_ax.get_ylabel() and snr_ax.get_ylabel() and coef_ax.get_title()
    # log SNR of the linear schedule falls from about +9.2 to about -10.1
    y = snr_ax.lines[0].get_ydata()
    assert 9 < y[0] < 9.5 and -10.5 < y[-1] < -9.8


def test_plot_scheduler_legends_sit_outside_the_data():
    """Issue 26: a legend inside the axes covered the curves; its text is >= 9 pt."""
    cosine = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    fig = plot_scheduler(DDPMScheduler(), cosine, labels=["linear", "cosine"],
                         log_snr=True)
    fig.canvas.draw()
    boxes = [ax.get_window_extent() for ax in fig.axes]
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        box = legend.get_window_extent()
        assert not any(box.overlaps(other) for other in boxes), "a legend covers a plot"
        assert all(t.get_fontsize() >= 9 for t in legend.get_texts())
        assert [t.get_text() for t in legend.get_texts()] == ["linear", "cosine"]

def test_plot_scheduler_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        plot_scheduler()
    with pytest.raises(TypeError, match="alphas_cumprod"):
        plot_scheduler("linear")
    with pytest.raises(ValueError, match="labels"):
        plot_scheduler(DDPMScheduler(), labels=["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_scheduler(torch.linspace(2, 1, 10))


def test_plot_noising_grid_uses_the_scheduler():
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    fig = plot_noising(images, LerpSchedule(), [0, 9])
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (2 + 2 * 10, 2 + 2 * 10, 3)  # 2 images x 2 timesteps, 8 px + padding
    # timestep 0 of the lerp is the clean image
    assert np.allclose(grid[2:10, 2:10, 0], ((images[0, 0] + 1) / 2).numpy(), atol=1e-6)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "9"]
    with pytest.raises(TypeError, match="add_noise"):
        plot_noising(images, object(), [0])
    with pytest.raises(ValueError, match="empty"):
        plot_noising(images, LerpSchedule(), [])


def test_plot_losses_smooths_and_validates():
    fig = plot_losses(np.linspace(1, 0.1, 200), smooth=20)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "training step"
    assert len(ax.lines[1].get_ydata()) == 200 - 20 + 1
    with pytest.raises(ValueError, match="diverged"):
        plot_losses([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        plot_losses([])


def test_figures_fit_the_page():
    # A strip of 16 digits or a wide two-panel figure would be shrunk by the book until its text is unreadable.
    strip = show_images(torch.rand(16, 1, 28, 28), nrow=16, title="strip")
    assert strip.get_size_inches()[0] <= MAX_FIGURE_WIDTH + 1e-9
    ratio = strip.get_size_inches()[0] / strip.get_size_inches()[1]
    assert ratio > 3  # shrunk, not squashed: a one-row strip stays wide
    fig, _ = new_figure(1, 2, figsize=(14, 4))
    assert tuple(fig.get_size_inches()) == pytest.approx((7, 2))
    assert fit_to_page((5, 3)) == (5, 3)
    with pytest.raises(ValueError, match="positive"):
        fit_to_page((0, 3))
