import ast
import inspect
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_utils import noising, sampling
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


def _notebook_definition(notebook: str, name: str) -> str:
    """The source of the top-level function or class `name` as written in a chapter's code cells."""
    nb = json.loads((NOTEBOOKS / notebook).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if f"def {name}(" not in source and f"class {name}(" not in source:
            continue
        # IPython magics are not Python: blank them out, keeping the line numbers
        tree = ast.parse("\n".join("" if line.lstrip().startswith("%") else line for line in source.splitlines()))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])  # decorators included
                return "\n".join(source.splitlines()[first - 1:node.end_lineno])
    raise AssertionError(f"{notebook} defines no {name}")


@pytest.mark.parametrize("notebook, obj", [
    ("01_noise_and_schedules.ipynb", noising.corrupt),
    ("02_basic_unet_mnist.ipynb", BasicUNet),
    ("02_basic_unet_mnist.ipynb", sampling.ddpm_sample),
])
def test_reused_code_is_identical_to_the_chapter_that_teaches_it(notebook, obj):
    # What a later chapter imports from course_utils must be exactly what the learner saw written out.
    assert inspect.getsource(obj).strip() == _notebook_definition(notebook, obj.__name__).strip()
