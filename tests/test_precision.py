"""The precision rule, on GPUs and CPUs this machine does not have (mocked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from course_utils import precision
from course_utils.precision import (Precision, autocast_dtype, choose_precision,
                                    cpu_flags, cpu_has_native_bf16)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """Make torch see one NVIDIA GPU of a chosen compute capability."""

    def install(major: int, minor: int, bf16_supported: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "get_device_capability",
                            lambda device=None: (major, minor))
        # what a T4 answers through emulation: the helper must not listen to it
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: bf16_supported)

    return install


def test_a100_like_gpu_gets_bf16_without_a_scaler(fake_gpu):
    fake_gpu(8, 0)
    chosen = choose_precision("cuda")
    assert chosen.dtype is torch.bfloat16 and not chosen.grad_scaler
    assert chosen.mixed_precision == "bf16" and "8.0" in chosen.reason
    assert autocast_dtype(torch.device("cuda", 0)) is torch.bfloat16


@pytest.mark.parametrize("capability", [(8, 6), (8, 9), (9, 0), (10, 0)])
def test_every_gpu_from_ampere_on_gets_bf16(fake_gpu, capability):
    fake_gpu(*capability)
    assert autocast_dtype("cuda:0") is torch.bfloat16


def test_t4_like_gpu_gets_fp16_and_a_scaler_although_bf16_is_emulated(fake_gpu):
    fake_gpu(7, 5, bf16_supported=True)
    assert torch.cuda.is_bf16_supported()  # the trap: emulated bf16 says True
    training = choose_precision("cuda")
    assert training.dtype is torch.float16 and training.grad_scaler
    assert training.mixed_precision == "fp16" and "7.5" in training.reason
    sampling = choose_precision("cuda", training=False)
    assert sampling.dtype is torch.float16 and not sampling.grad_scaler
    assert str(training).startswith("float16 with a GradScaler on cuda")


def test_t4_like_gpu_falls_back_to_fp32_when_fp16_is_not_allowed(fake_gpu):
    fake_gpu(7, 5)
    chosen = choose_precision("cuda", allow_fp16=False)
    assert chosen.dtype is None and not chosen.grad_scaler
    assert chosen.mixed_precision == "no"


def test_gpu_without_tensor_cores_stays_in_fp32(fake_gpu):
    fake_gpu(6, 0)
    assert autocast_dtype("cuda") is None


def test_rocm_is_left_in_fp32(fake_gpu, monkeypatch):
    fake_gpu(9, 0)
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert autocast_dtype("cuda") is None


def test_cuda_requested_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="expected a CUDA GPU.*is_available"):
        choose_precision("cuda")


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16", "AMX_BF16"])
def test_cpu_with_native_bf16_gets_bf16(flag):
    chosen = choose_precision("cpu", flags={"avx2", "avx512f", flag})
    assert chosen.dtype is torch.bfloat16 and not chosen.grad_scaler
    assert chosen.mixed_precision == "bf16"


def test_cpu_without_native_bf16_stays_in_fp32():
    # avx512bw is enough for oneDNN to accept bf16, not to compute it natively
    chosen = choose_precision("cpu", flags={"avx2", "avx512f", "avx512bw", "amx_tile"})
    assert chosen.dtype is None and chosen.mixed_precision == "no"
    assert "neither" in chosen.reason


def test_cpu_flags_come_from_torch_when_it_has_the_query(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities",
                        lambda: {"avx512_bf16": True, "amx_bf16": False,
                                 "num_physical_cores": 2, "cpu_name": "x"},
                        raising=False)
    assert cpu_flags() == frozenset({"avx512_bf16"})
    assert autocast_dtype("cpu") is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "get_capabilities",
                        lambda: {"avx512_bf16": False, "amx_bf16": False},
                        raising=False)
    assert autocast_dtype("cpu") is None


def test_cpu_flags_fall_back_to_proc_cpuinfo(monkeypatch, tmp_path: Path):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\n"
                       "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert {"avx512_bf16", "avx2"} <= cpu_flags(cpuinfo)
    assert cpu_has_native_bf16(cpu_flags(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert not cpu_has_native_bf16(cpu_flags(cpuinfo))
    assert cpu_flags(tmp_path / "missing") == frozenset()
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    assert autocast_dtype("cpu") is None


def test_other_devices_stay_in_fp32():
    assert autocast_dtype("mps") is None
    assert autocast_dtype(torch.device("meta")) is None


@pytest.mark.parametrize("bad", ["gpu", "cuda0", "", "cpu:x"])
def test_a_string_that_is_no_device_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"'cuda', 'cuda:0' or 'cpu'; got"):
        choose_precision(bad)


@pytest.mark.parametrize("bad", [0, None, 1.5, ["cpu"]])
def test_something_that_is_no_device_is_a_type_error(bad):
    with pytest.raises(TypeError, match="torch.device or a string"):
        autocast_dtype(bad)


def test_autocast_and_scaler_follow_the_choice():
    bf16 = Precision(torch.device("cpu"), torch.bfloat16, False, "test")
    with bf16.autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype is torch.bfloat16
    assert bf16.make_grad_scaler() is None
    fp32 = Precision(torch.device("cpu"), None, False, "test")
    with fp32.autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype is torch.float32 and not fp32.enabled
    scaled = Precision(torch.device("cpu"), torch.float16, True, "test")
    assert isinstance(scaled.make_grad_scaler(), torch.amp.GradScaler)


def test_this_machine_gets_an_answer():
    chosen = choose_precision("cpu")
    assert chosen.dtype in (None, torch.bfloat16) and chosen.reason


def test_chapters_choose_bf16_with_the_precision_rule_never_alone():
    """Every chapter that can autocast to bf16 decides with choose_precision (issue 27):
    is_bf16_supported() says True for emulated bf16 (a T4), and 'any CPU' is wrong for
    CPUs without AVX-512 BF16 or AMX."""
    import nbformat

    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                         if c.cell_type == "code")
        assert "is_bf16_supported" not in code, f"{path.name} asks is_bf16_supported()"
        assert 'device.type == "cpu" or' not in code, f"{path.name}: bf16 on any CPU"
        if "bfloat16" in code or "bf16" in code:
            assert "choose_precision(" in code, f"{path.name} uses bf16 without the rule"
