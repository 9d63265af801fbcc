"""The precision a device should train and sample in: bf16, fp16 and a scaler, or fp32.

Mixed precision (``torch.autocast``) runs convolutions and matrix products in a 16-bit
type and keeps the rest in float32. It pays only where the hardware computes that type
natively; where it is emulated, it is slower than float32. The rule here:

device                                   autocast       GradScaler      accelerate
CUDA, compute capability >= 8.0          bfloat16       no              "bf16"
  (A100, L4, H100, RTX 30xx and later)
CUDA 7.x (V100 7.0; T4 7.5, Colab's      float16        when training   "fp16"
  free GPU)
CUDA < 7.0 (P100, K80: no tensor cores)  none: float32  no              "no"
CPU with AVX-512 BF16 or AMX-BF16        bfloat16       no              "bf16"
any other CPU, MPS, ROCm                 none: float32  no              "no"

* bfloat16 keeps float32's 8-bit exponent (range to about 3e38), so gradients need no
  scaling. float16 has a 5-bit exponent (largest 65504, smallest normal about 6e-5):
  small gradients underflow to 0 unless the loss is scaled up first and the gradients
  down again, which is what ``torch.amp.GradScaler`` does (accelerate makes one itself
  for ``mixed_precision="fp16"``). Sampling needs no scaler.
* ``torch.cuda.is_bf16_supported()`` is never the test: by default it also answers True
  where a bf16 tensor can merely be *made* (emulation), e.g. on a T4. Likewise on a CPU,
  oneDNN accepts bf16 on any AVX-512 core but computes it natively only with the
  AVX-512 BF16 or AMX-BF16 instructions. So the rule reads the compute capability and
  the CPU's flags.
* ``allow_fp16=False`` gives float32 instead of float16 on CUDA 7.x, for a model that
  overflows in float16 (NaN losses that the scaler keeps skipping).

Sources: NVIDIA's table of compute capabilities (https://developer.nvidia.com/cuda-gpus)
and the CUDA C++ Programming Guide (tensor cores: float16 from 7.0, bfloat16 from 8.0);
PyTorch's automatic mixed precision docs (https://pytorch.org/docs/stable/amp.html:
CUDA float16 autocast with a GradScaler, CPU autocast in bfloat16); Intel's and AMD's
instruction-set references for AVX-512 BF16 (Cooper Lake, Zen 4) and AMX (Sapphire
Rapids), reported as the ``avx512_bf16`` and ``amx_bf16`` flags of /proc/cpuinfo and by
``torch.cpu.get_capabilities()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Precision", "choose_precision", "autocast_dtype", "cpu_flags",
           "cpu_has_native_bf16", "NATIVE_BF16_CPU_FLAGS"]

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """The precision one device gets, and why.

    ``dtype`` is the autocast dtype (``torch.bfloat16`` or ``torch.float16``), or None
    for plain float32 with autocast off. ``grad_scaler`` is True when training in this
    precision needs loss scaling (float16).
    """

    device: torch.device
    dtype: torch.dtype | None
    grad_scaler: bool
    reason: str

    @property
    def enabled(self) -> bool:
        """True when autocast is on (a 16-bit dtype)."""
        return self.dtype is not None

    @property
    def mixed_precision(self) -> str:
        """The same choice in accelerate's words: "no", "fp16" or "bf16"."""
        return {None: "no", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A context that runs the enclosed forward pass in this precision."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for a hand-written training loop; None when none is needed."""
        return torch.amp.GradScaler(self.device.type) if self.grad_scaler else None

    def __str__(self) -> str:
        name = "float32" if self.dtype is None else str(self.dtype).split(".")[-1]
        scaler = " with a GradScaler" if self.grad_scaler else ""
        return f"{name}{scaler} on {self.device} ({self.reason})"


def _as_device(device: torch.device | str) -> torch.device:
    """A torch.device from a device or a device string, or a clear error."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a torch.device or a string such as 'cuda', "
                        f"'cuda:0' or 'cpu'; got {type(device).__name__} {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device must name a device such as 'cuda', 'cuda:0' or "
                         f"'cpu'; got {device!r} ({error})") from None


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU's instruction-set flags that matter here, lower case.

    From ``torch.cpu.get_capabilities()`` where torch has it (any OS); otherwise from
    the ``flags`` line of /proc/cpuinfo (Linux); otherwise none.
    """
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        try:
            capabilities = get_capabilities()
        except Exception:  # an old or odd build: fall back to /proc/cpuinfo
            capabilities = None
        if isinstance(capabilities, dict):
            return frozenset(name.lower() for name, value in capabilities.items()
                             if value is True)
    try:
        text = Path(CPUINFO if cpuinfo is None else cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.lower().split())
    return frozenset()


def cpu_has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16)."""
    found = cpu_flags() if flags is None else frozenset(f.lower() for f in flags)
    return bool(found & NATIVE_BF16_CPU_FLAGS)


def choose_precision(device: torch.device | str, training: bool = True, *,
                     allow_fp16: bool = True,
                     flags: Iterable[str] | None = None) -> Precision:
    """The precision to train (``training=True``) or sample in on ``device``.

    ``device``: a torch.device or a string such as "cuda", "cuda:1" or "cpu".
    ``flags``: the CPU's flags, for tests; read from the machine when None.
    The rule and its sources are in this module's docstring. Raises ValueError for a
    string that names no device, TypeError for anything else that is not a device, and
    RuntimeError for a CUDA device when torch sees no GPU.
    """
    device = _as_device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"expected a CUDA GPU for device {str(device)!r}, got "
                               f"torch.cuda.is_available() == False")
        if torch.version.hip:
            return Precision(device, None, False, "ROCm GPU: not measured by the "
                             "course, float32")
        major, minor = torch.cuda.get_device_capability(device)
        where = f"compute capability {major}.{minor}"
        if major >= 8:
            return Precision(device, torch.bfloat16, False, f"{where}: native bf16")
        if major == 7 and allow_fp16:
            return Precision(device, torch.float16, training,
                             f"{where}: fp16 tensor cores, bf16 only emulated")
        if major == 7:
            return Precision(device, None, False, f"{where}: fp16 not allowed, bf16 "
                             "only emulated")
        return Precision(device, None, False, f"{where}: no tensor cores")
    if device.type == "cpu":
        if cpu_has_native_bf16(flags):
            return Precision(device, torch.bfloat16, False,
                             "the CPU has AVX-512 BF16 or AMX-BF16")
        return Precision(device, None, False,
                         "the CPU has neither AVX-512 BF16 nor AMX-BF16: bf16 emulated")
    return Precision(device, None, False, f"{device.type}: float32")


def autocast_dtype(device: torch.device | str, training: bool = True, *,
                   allow_fp16: bool = True,
                   flags: Iterable[str] | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device`` (bfloat16, float16) or None for float32.

    Shorthand for ``choose_precision(...).dtype``; when it is float16 and you train,
    use ``choose_precision(...).make_grad_scaler()`` (or accelerate's "fp16").
    """
    return choose_precision(device, training, allow_fp16=allow_fp16, flags=flags).dtype
