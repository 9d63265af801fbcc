import ast
import inspect
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_utils import ddpm, losses, models, noising, sampling, training
from course_utils.models import BasicUNet

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("size", [28, 32])
def test_basic_unet_keeps_the_input_shape(size):
    torch.manual_seed(0)
    x = torch.randn(3, 1, size, size)
    assert BasicUNet()(x).shape == x.shape
    assert BasicUNet(in_channels=3, out_channels=3)(torch.randn(2, 3, size, size)).shape == (2, 3, size, size)


def test_basic_unet_rejects_sizes_it_cannot_round_trip():
    with pytest.raises(ValueError, match="divisible by 4"):
        BasicUNet()(torch.randn(1, 1, 30, 30))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        BasicUNet()(torch.randn(1, 28, 28))


def test_parameter_count_matches_the_chapter():
    nb = json.loads((NOTEBOOKS / "02_basic_unet_mnist.ipynb").read_text())
    texts = [o.get("text", "") for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    printed = "".join("".join(t) if isinstance(t, list) else t for t in texts)
    stated = int(re.search(r"BasicUNet parameters: ([\d,]+)", printed).group(1).replace(",", ""))
    assert sum(p.numel() for p in BasicUNet().parameters()) == stated == 309_057


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    noise = torch.randn(16, 1, 28, 28)
    amount = torch.rand(16)
    noisy_x = noising.corrupt(x, noise, amount)
    model = BasicUNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss = F.mse_loss(model(noisy_x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def _definition(source: str, name: str) -> str | None:
    """The source of the top-level function, class or assignment `name` in Python source, or None."""
    # IPython magics are not Python: blank them out, keeping the line numbers
    tree = ast.parse("\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith("%")
                                else line for line in source.splitlines()))
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])  # decorators included
            return "\n".join(lines[first - 1:node.end_lineno])
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return "\n".join(lines[node.lineno - 1:node.end_lineno])
    return None


def _notebook_definition(notebook: str, name: str) -> str:
    """The source of `name` as written in a chapter's code cells."""
    nb = json.loads((NOTEBOOKS / notebook).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            found = _definition("".join(cell["source"]), name)
            if found is not None:
                return found
    raise AssertionError(f"{notebook} defines no {name}")


REUSED = [
    ("01_noise_and_schedules.ipynb", noising, "corrupt"),
    ("02_basic_unet_mnist.ipynb", models, "BasicUNet"),
    ("02_basic_unet_mnist.ipynb", sampling, "ddpm_sample"),
    ("02_basic_unet_mnist.ipynb", losses, "diffusion_loss"),
] + [("03_butterflies_unet2d.ipynb", training, name) for name in (
    "TrainConfig", "PRESETS", "make_model", "make_noise_scheduler", "TrainResult", "save_checkpoint",
    "load_checkpoint", "train")] + [("04_ddpm_from_scratch.ipynb", ddpm, name) for name in ddpm.__all__]


@pytest.mark.parametrize("notebook, module, name", REUSED, ids=[f"{m.__name__}.{n}" for _, m, n in REUSED])
def test_reused_code_is_identical_to_the_chapter_that_teaches_it(notebook, module, name):
    # What a later chapter or a script imports from course_utils must be exactly what the learner saw written out.
    in_module = _definition(Path(module.__file__).read_text(), name)
    assert in_module is not None, f"{module.__name__} defines no {name}"
    assert in_module.strip() == _notebook_definition(notebook, name).strip(), (
        f"{module.__name__}.{name} differs from its cell in {notebook}: copy the cell into the module")


def test_the_chapter_3_loop_shows_the_library_calls_it_teaches():
    nb = json.loads((NOTEBOOKS / "03_butterflies_unet2d.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for call in ("UNet2DModel(", "EMAModel(", "get_cosine_schedule_with_warmup(", "AdamW(",
                 "accelerator.backward", "accelerator.accumulate", "accelerator.sync_gradients",
                 "skip_first_batches", "clip_grad_norm_"):
        assert call in code, f"chapter 3's code does not show {call}"
    assert "inspect.getsource" not in code
