import json
import re
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from course_utils.trajectories import (TrajectoryAnimation, animate_trajectory, offline_animation_html,
                                       plot_trajectory)


def _steps(n=3, shape=(4, 1, 8, 8)):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def test_plot_trajectory_rows_are_steps_and_columns_x_and_x0():
    fig = plot_trajectory(_steps(), _steps(), step_labels=["t=900", "t=500", "t=0"])
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[0].get_title() == "current sample x" and "x̂0" in fig.axes[1].get_title()
    assert [fig.axes[i].get_ylabel() for i in (0, 2, 4)] == ["t=900", "t=500", "t=0"]
    assert len(plot_trajectory(_steps(2)).axes) == 2  # without predictions: one column


def test_plot_trajectory_accepts_unbatched_steps_and_limits_images():
    fig = plot_trajectory([torch.rand(1, 8, 8)] * 2, value_range=(0, 1))
    assert len(fig.axes) == 2
    wide = plot_trajectory(_steps(shape=(16, 1, 8, 8)), max_images=4)
    assert wide.axes[0].images[0].get_array().shape[1] == 2 + 4 * 10


@pytest.mark.parametrize("xs, x0s, error, words", [
    ([], None, ValueError, "non-empty"),
    (torch.randn(3, 1, 8, 8), None, TypeError, "list of tensors"),
    ([torch.randn(8, 8)], None, ValueError, "shape"),
    ([torch.randn(1, 1, 1, 8, 8)], None, ValueError, "shape"),
    ([torch.randn(2, 1, 8, 8), torch.randn(3, 1, 8, 8)], None, ValueError, "same shape"),
    (_steps(3), _steps(2), ValueError, "steps"),
    (["image"], None, TypeError, "tensor"),
])
def test_plot_trajectory_rejects_malformed_input(xs, x0s, error, words):
    with pytest.raises(error, match=words):
        plot_trajectory(xs, x0s)


def test_plot_trajectory_checks_labels_and_range():
    with pytest.raises(ValueError, match="labels"):
        plot_trajectory(_steps(3), step_labels=["a"])
    with pytest.raises(ValueError, match="value_range"):
        plot_trajectory(_steps(3), value_range=(0, 255))


def test_animate_trajectory_plays_as_html_and_falls_back_to_png():
    animation = animate_trajectory(_steps(4), step_labels=list("abcd"))
    assert isinstance(animation, TrajectoryAnimation)
    bundle = animation._repr_mimebundle_()
    assert "<script" in bundle["text/html"] and bundle["image/png"]
    assert animation.last_frame_png.startswith(b"\x89PNG")


@pytest.mark.parametrize("kwargs, error", [
    ({"xs": []}, ValueError), ({"xs": [torch.randn(8, 8)]}, ValueError),
    ({"xs": _steps(2), "step_labels": ["only one"]}, ValueError), ({"xs": _steps(2), "interval_ms": 0}, ValueError),
])
def test_animate_trajectory_rejects_malformed_input(kwargs, error):
    with pytest.raises(error):
        animate_trajectory(**kwargs)


def test_animation_html_needs_no_other_host_and_opens_on_its_last_frame():
    # matplotlib's player loads Font Awesome from a CDN (fails offline) and opens on frame 0 (pure noise)
    animation = animate_trajectory([torch.rand(4, 1, 8, 8) for _ in range(3)], value_range=(0, 1))
    html = animation.to_html()
    assert "http" not in html and "fa fa-" not in html
    assert re.search(r"(anim\w+) = new Animation\([^;]*\);\s*\1\.last_frame\(\);", html)
    assert offline_animation_html(html) == html  # idempotent


def test_stored_animations_need_no_other_host():
    notebooks = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                html = "".join(output.get("data", {}).get("text/html", ""))
                if "new Animation(" in html:
                    assert offline_animation_html(html) == html, f"{path.name}: an animation from before the fix"
