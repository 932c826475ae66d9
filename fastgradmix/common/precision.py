"""Numeric precision and memory layout: ``--precision {auto,fp32,bf16,fp16}`` in every tool.

- ``fp32``: plain float32, NCHW. The reference path: it gives the same numbers as before the option existed.
- ``bf16``: bf16 autocast (weights, optimizer state, losses and scores stay fp32), channels_last by default.
- ``fp16``: fp16 autocast with a GradScaler, channels_last by default; CUDA only.
- ``auto``: bf16 + channels_last where bf16 is fast (``has_fast_bf16``), fp32 NCHW elsewhere.

Where bf16 is fast: on CUDA, a device with native bf16 (compute capability 8.0, Ampere, or newer; older
ones emulate it); on a CPU, one whose instruction set multiplies bf16 natively (``avx512_bf16``: AMD Zen 4,
Intel Cooper Lake and later; ``amx_bf16``: Intel Sapphire Rapids and later) and a torch built with oneDNN
bf16 support. Other CPUs run bf16 convolutions through conversions, slower than fp32. The environment
variable FASTGRADMIX_FAST_BF16=1 (or 0) overrides the detection, e.g. in a virtual machine that hides the
CPU flags (the test suite sets 0, so that ``auto`` means fp32 in its runs on every machine).

fp32 stays NCHW unless asked: it is the reference path, and channels_last selects other convolution
kernels whose sums differ in the last bits (README "Precision, and speed on a CPU" has the measured gains).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from fastgradmix.common.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FAST_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
OVERRIDE_VARIABLE = "FASTGRADMIX_FAST_BF16"
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def has_fast_bf16(device_type: str, *, cuda_capability: tuple[int, int] | None = None, onednn_bf16: bool = False,
                  cpu_flags: frozenset[str] = frozenset()) -> bool:
    """Whether bf16 autocast is faster than fp32 on this device, from what torch and the CPU report.

    device_type: "cuda" or "cpu"; cuda_capability: the CUDA device's (major, minor); onednn_bf16: torch's
    oneDNN reports bf16 support; cpu_flags: the CPU's feature flags (/proc/cpuinfo's "flags" line).
    """
    if device_type == "cuda":
        return cuda_capability is not None and tuple(cuda_capability) >= (8, 0)
    if device_type == "cpu":
        return onednn_bf16 and bool(FAST_BF16_CPU_FLAGS & cpu_flags)
    return False


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo's text (x86 "flags", ARM "Features"; the first such line)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return parse_cpu_flags(handle.read())
    except OSError:  # not Linux: no flags known, so auto stays fp32
        return frozenset()


def _onednn_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_bf16_here(device: torch.device) -> bool:
    """``has_fast_bf16`` for ``device`` with this machine's facts; FASTGRADMIX_FAST_BF16 (1 or 0) overrides them."""
    override = os.environ.get(OVERRIDE_VARIABLE, "")
    if override:
        if override not in ("0", "1"):
            raise UserError(f"{OVERRIDE_VARIABLE}={override!r}: set it to 1 (bf16 is fast here) or 0 (it is not), "
                            "or unset it to detect")
        return override == "1"
    if device.type == "cuda":
        return has_fast_bf16("cuda", cuda_capability=torch.cuda.get_device_capability(device))
    return has_fast_bf16(device.type, onednn_bf16=_onednn_bf16(), cpu_flags=_cpu_flags())


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` fp32, bf16 or fp16, and the memory layout of model and inputs."""

    name: str
    channels_last: bool

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: fp32, no autocast)."""
        return _DTYPES[self.name]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device_type: str):
        """A context running the model's ops in this precision (nothing in fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.dtype)

    def describe(self) -> str:
        what = "fp32" if self.dtype is None else f"{self.name} autocast"
        return f"{what}, {'channels_last' if self.channels_last else 'NCHW'}"


FP32 = Precision("fp32", channels_last=False)  # the reference path


def resolve_precision(requested: str, device: torch.device, channels_last: bool | None = None,
                      fast_bf16: bool | None = None) -> Precision:
    """``requested`` (one of PRECISIONS) on ``device`` as a Precision; ``channels_last`` None follows the
    precision (on with bf16/fp16); ``fast_bf16`` None asks ``fast_bf16_here``. fp16 off CUDA is a UserError."""
    if requested not in PRECISIONS:
        raise UserError(f"--precision {requested}: choose one of {', '.join(PRECISIONS)}")
    name = requested
    if name == "auto":
        name = "bf16" if (fast_bf16_here(device) if fast_bf16 is None else fast_bf16) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 (or --amp --amp-dtype fp16) needs a CUDA device: fp16 trains with loss "
                        "scaling on GPUs; on a CPU use --precision bf16")
    return Precision(name, name != "fp32" if channels_last is None else bool(channels_last))
