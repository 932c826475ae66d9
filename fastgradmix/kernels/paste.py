"""``paste_resized``: each image with its partner, resized bilinearly into a per-sample box, in one kernel.

Twin of ``fastgradmix.gradmix.reference.paste_resized`` (same name, signature and semantics). One launch writes
every output element exactly once: pixels inside box i are interpolated from ``partner[i]`` (all
channels), the others are copied from ``images[i]``; the output is never copied first and overwritten.
Inside-box image pixels are not read, nor are partner pixels that no tap touches.

Each program handles a tile of rows of one sample; along a row it walks the C * W elements in the
output's memory order (x-major for NCHW, channel-major for channels_last), so loads and stores are
contiguous for both layouts. Strides are passed, so any layout (and any partner layout) works without
a copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastgradmix.gradmix.checks import check_per_sample
from fastgradmix.kernels import _common
from fastgradmix.kernels._common import float32_to_bfloat16_rne, source_taps


@triton.jit
def _paste_kernel(
    images_ptr, partner_ptr, out_ptr, top_ptr, left_ptr, box_h_ptr, box_w_ptr,
    channels, height, width, src_h, src_w,
    img_sn, img_sc, img_sh, img_sw,
    par_sn, par_sc, par_sh, par_sw,
    out_sn, out_sc, out_sh, out_sw,
    CHANNELS_INNER: tl.constexpr, OUT_BF16: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    sample = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # (R,) output rows y
    slab = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K)  # (K,) position among a row's C * W values
    if CHANNELS_INNER:  # channels_last: memory order along a row is (x, c)
        chan = slab % channels
        cols = slab // channels
    else:  # NCHW: (c, x)
        chan = slab // width
        cols = slab % width
    in_range = (rows < height)[:, None] & (slab < channels * width)[None, :]  # (R, K)

    top = tl.load(top_ptr + sample).to(tl.int32)
    left = tl.load(left_ptr + sample).to(tl.int32)
    box_h = tl.load(box_h_ptr + sample).to(tl.int32)
    box_w = tl.load(box_w_ptr + sample).to(tl.int32)
    local_r = rows - top  # (R,) row inside the box
    local_c = cols - left  # (K,)
    inside = ((local_r >= 0) & (local_r < box_h))[:, None] & ((local_c >= 0) & (local_c < box_w))[None, :]

    # fp32 scale = src / box as one correctly rounded division (see _common.float32_ratio). Outside the box
    # the taps are unused; clamping the position keeps their addresses valid all the same.
    scale_h = (tl.cast(src_h, tl.float64) / box_h.to(tl.float64)).to(tl.float32)
    scale_w = (tl.cast(src_w, tl.float64) / box_w.to(tl.float64)).to(tl.float32)
    r0, r1, lam_h = source_taps(tl.minimum(tl.maximum(local_r, 0), box_h - 1), scale_h, src_h)  # (R,)
    c0, c1, lam_w = source_taps(tl.minimum(tl.maximum(local_c, 0), box_w - 1), scale_w, src_w)  # (K,)

    sample64 = sample.to(tl.int64)  # the batch offset may pass 2^31 elements
    partner = partner_ptr + sample64 * par_sn + (chan * par_sc)[None, :]  # (1, K)
    take = in_range & inside
    p00 = tl.load(partner + (r0 * par_sh)[:, None] + (c0 * par_sw)[None, :], mask=take, other=0.0).to(tl.float32)
    p01 = tl.load(partner + (r0 * par_sh)[:, None] + (c1 * par_sw)[None, :], mask=take, other=0.0).to(tl.float32)
    p10 = tl.load(partner + (r1 * par_sh)[:, None] + (c0 * par_sw)[None, :], mask=take, other=0.0).to(tl.float32)
    p11 = tl.load(partner + (r1 * par_sh)[:, None] + (c1 * par_sw)[None, :], mask=take, other=0.0).to(tl.float32)
    w1 = lam_w[None, :]
    w0 = 1.0 - w1
    h1 = lam_h[:, None]
    h0 = 1.0 - h1
    # PyTorch's blend order: h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11), in fp32
    pasted = h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11)  # (R, K)

    image_offsets = sample64 * img_sn + (rows * img_sh)[:, None] + (chan * img_sc + cols * img_sw)[None, :]
    kept = tl.load(images_ptr + image_offsets, mask=in_range & ~inside)  # (R, K), images' dtype
    if OUT_BF16:
        pasted = float32_to_bfloat16_rne(pasted)
    else:
        pasted = pasted.to(kept.dtype)
    out_offsets = sample64 * out_sn + (rows * out_sh)[:, None] + (chan * out_sc + cols * out_sw)[None, :]
    tl.store(out_ptr + out_offsets, tl.where(inside, pasted, kept), mask=in_range)


@torch.no_grad()
def paste_resized(
    images: torch.Tensor,
    partner: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    box_h: torch.Tensor,
    box_w: torch.Tensor,
) -> torch.Tensor:
    """``images`` with ``partner[i]``, resized bilinearly to box i, pasted into box i; a new tensor.

    ``images`` (N, C, H, W) and ``partner`` (N, C, Hp, Wp) float (fp32/fp16/bf16, any strides);
    ``y``, ``x``, ``box_h``, ``box_w`` (N,) integer tensors with box i inside the image (not checked).
    Inside box i: ``F.interpolate(partner[i], (box_h[i], box_w[i]), mode="bilinear",
    align_corners=False, antialias=False)`` cast to ``images.dtype``; outside: ``images`` bit for bit.
    The output keeps the dtype and memory format of ``images``. One kernel launch, no host read.
    """
    if images.dim() != 4 or partner.dim() != 4 or images.shape[:2] != partner.shape[:2]:
        raise ValueError(
            f"paste_resized: images {tuple(images.shape)} and partner {tuple(partner.shape)} must be "
            "(N, C, H, W) and (N, C, Hp, Wp) with the same N and C"
        )
    n, channels, height, width = images.shape
    check_per_sample("paste_resized", n, y=y, x=x, box_h=box_h, box_w=box_w)
    src_h, src_w = partner.shape[-2:]
    device = images.device
    y, x, box_h, box_w = (t.to(device=device) for t in (y, x, box_h, box_w))  # no-ops when already there

    mixed = _common.empty_like(images)  # (N, C, H, W), images' strides when they are dense
    if mixed.numel() == 0:
        return mixed
    # Walk each row in the output's memory order: channel-major when channels are the fastest dimension.
    channels_inner = channels > 1 and mixed.stride(1) < mixed.stride(3)
    block_k = min(triton.next_power_of_2(channels * width), 512)
    block_r = max(1, min(triton.next_power_of_2(height), 2048 // block_k))
    grid = (n, triton.cdiv(height, block_r), triton.cdiv(channels * width, block_k))
    _paste_kernel[grid](
        images, partner, mixed, y, x, box_h, box_w,
        channels, height, width, src_h, src_w,
        *images.stride(), *partner.stride(), *mixed.stride(),
        CHANNELS_INNER=channels_inner, OUT_BF16=images.dtype == torch.bfloat16,
        BLOCK_R=block_r, BLOCK_K=block_k,
    )
    return mixed
