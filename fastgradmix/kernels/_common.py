"""Helpers shared by the GradMix kernels: output allocation, bilinear taps, bf16 rounding.

Every tensor a wrapper creates goes through ``empty``/``empty_like`` here, so a test can swap them for
versions that pre-fill with NaN and prove that the kernels write every element they return.
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor (outputs and scratch buffers of the kernels)."""
    return torch.empty(shape, dtype=dtype, device=device)


def empty_like(tensor: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor with ``tensor``'s shape, dtype and strides (dense tensors keep their layout)."""
    return torch.empty_like(tensor)


def float32_ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator`` rounded once to fp32, as PyTorch's area_pixel_compute_scale<float>.

    Both sizes are exact in float64 and float64 has more than 2 * 24 + 2 bits, so rounding the float64
    quotient to fp32 gives the correctly rounded fp32 quotient (double rounding is innocuous here).
    """
    return struct.unpack("<f", struct.pack("<f", numerator / denominator))[0]  # C double -> float: nearest-even


@triton.jit
def source_taps(dst, scale, src_len):
    """Bilinear taps (align_corners=False, no antialias) for output positions ``dst`` (int32 tensor).

    ``scale`` is the fp32 ratio src_len / dst_len. Returns the two source indices and the weight of the
    second, as PyTorch computes them: the source coordinate ``scale * (dst + 0.5) - 0.5`` is rounded to
    fp32 once (PyTorch's compiled kernels fuse it into one multiply-add). Computing it in float64 is exact
    (a 24-bit scale times a half-integer below 2^14) and so rounds once too, also in the interpreter,
    whose fma rounds twice.
    """
    source = ((dst.to(tl.float64) + 0.5) * tl.cast(scale, tl.float64) - 0.5).to(tl.float32)
    source = tl.maximum(source, 0.0)
    first = tl.minimum(source.to(tl.int32), src_len - 1)  # truncation is floor: source >= 0
    second = tl.minimum(first + 1, src_len - 1)  # the last row/column reads itself twice
    weight = tl.minimum(tl.maximum(source - first.to(tl.float32), 0.0), 1.0)
    return first, second, weight


@triton.jit
def float32_to_bfloat16_rne(value):
    """fp32 -> bf16 rounding to nearest even, written with integer ops (finite inputs).

    ``.to(tl.bfloat16)`` rounds to nearest even on the GPU but truncates in the interpreter; this gives the
    same bits on both.
    """
    bits = value.to(tl.uint32, bitcast=True)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
