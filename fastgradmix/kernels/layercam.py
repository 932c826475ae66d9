"""``layercam``: LayerCAM (or GradCAM) maps from CAM-layer activations and gradients, summed over layers.

Twin of ``fastgradmix.gradmix.reference.layercam`` (same name, signature and semantics). Launches, for L layers:

- per layer, ``_layer_cam``: ``ReLU(sum_c w_c * A_c)`` for a block of positions of one sample, reading A
  and G once (``w = ReLU(G)``); it writes the raw map to a scratch buffer and the block's maximum, so no
  second pass over the map is needed for the per-sample normalisation;
- GradCAM only, per layer, ``_channel_mean`` first: ``w_c = mean_hw(G_c)`` (then ``_layer_cam`` reads A
  alone, so G is still read once);
- ``_aggregate``, once per group of up to four layers: per output pixel, each layer's peak from its block
  maxima, the bilinear resize (align_corners=False) of the normalised map to ``out_size``, and the sum.

Inputs may be NCHW, channels_last or any strided view (strides go to the kernels; nothing is copied),
fp32/fp16/bf16 (read as such, accumulated in fp32). No host read, so the launches can be graph-captured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from fastgradmix.gradmix.checks import cam_layer_inputs
from fastgradmix.kernels import _common
from fastgradmix.kernels._common import source_taps

_LAYERS_PER_AGGREGATE = 4  # layers folded into one _aggregate launch (the kernel has four argument groups)


@triton.jit
def _channel_mean(
    grads_ptr, weights_ptr, channels, positions, width, g_sn, g_sc, g_sh, g_sw,
    FLAT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """GradCAM weights: weights[n, c] = mean over positions of G[n, c] (fp32)."""
    sample = tl.program_id(0)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (C,)
    grads = grads_ptr + sample.to(tl.int64) * g_sn + (chans * g_sc)[:, None]  # (C, 1)
    total = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(0, positions, BLOCK_P):
        pos = p0 + tl.arange(0, BLOCK_P)  # (P,) flat h * w + x index
        if FLAT:  # the spatial dims are one run of stride g_sw (NCHW and channels_last)
            offsets = pos * g_sw
        else:
            offsets = (pos // width) * g_sh + (pos % width) * g_sw
        keep = (chans < channels)[:, None] & (pos < positions)[None, :]
        total += tl.sum(tl.load(grads + offsets[None, :], mask=keep, other=0.0).to(tl.float32), axis=1)
    tl.store(weights_ptr + sample * channels + chans, total / positions, mask=chans < channels)


@triton.jit
def _layer_cam(
    acts_ptr, grads_ptr, weights_ptr, raw_ptr, block_max_ptr,
    channels, positions, width,
    a_sn, a_sc, a_sh, a_sw, g_sn, g_sc, g_sh, g_sw, raw_sn, block_max_sn,
    GRADCAM: tl.constexpr, FLAT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """raw[n, p] = ReLU(sum_c w[n, c, p] * A[n, c, p]) for a block of positions p; block_max[n, block]."""
    sample = tl.program_id(0)
    block = tl.program_id(1)
    pos = block * BLOCK_P + tl.arange(0, BLOCK_P)  # (P,)
    pos_ok = pos < positions
    if FLAT:
        a_pos = pos * a_sw
        g_pos = pos * g_sw
    else:
        a_pos = (pos // width) * a_sh + (pos % width) * a_sw
        g_pos = (pos // width) * g_sh + (pos % width) * g_sw
    sample64 = sample.to(tl.int64)
    acts = acts_ptr + sample64 * a_sn + a_pos[None, :]  # (1, P)
    grads = grads_ptr + sample64 * g_sn + g_pos[None, :]
    total = tl.zeros([BLOCK_P], tl.float32)
    for c0 in range(0, channels, BLOCK_C):
        chans = c0 + tl.arange(0, BLOCK_C)  # (C,)
        keep = (chans < channels)[:, None] & pos_ok[None, :]  # (C, P)
        a = tl.load(acts + (chans * a_sc)[:, None], mask=keep, other=0.0).to(tl.float32)
        if GRADCAM:
            w = tl.load(weights_ptr + sample * channels + chans, mask=chans < channels, other=0.0)[:, None]
        else:
            w = tl.maximum(tl.load(grads + (chans * g_sc)[:, None], mask=keep, other=0.0).to(tl.float32), 0.0)
        total += tl.sum(w * a, axis=0)
    cam = tl.maximum(total, 0.0)  # (P,)
    tl.store(raw_ptr + sample64 * raw_sn + pos, cam, mask=pos_ok)
    # cam >= 0, so 0 is neutral for the max and padding positions cannot raise it
    tl.store(block_max_ptr + sample * block_max_sn + block, tl.max(tl.where(pos_ok, cam, 0.0), axis=0))


@triton.jit
def _normalised_layer_at(
    raw_ptr, block_max_ptr, raw_sn, block_max_sn, sample, out_y, out_x, keep,
    height, width, scale_h, scale_w, blocks, eps, BLOCK_B: tl.constexpr,
):
    """One layer's map divided by its per-sample peak + eps, resized bilinearly, at output pixels."""
    block_ids = tl.arange(0, BLOCK_B)
    block_max = tl.load(block_max_ptr + sample * block_max_sn + block_ids, mask=block_ids < blocks, other=0.0)
    denominator = tl.max(block_max, axis=0) + eps
    r0, r1, lam_h = source_taps(out_y, scale_h, height)
    c0, c1, lam_w = source_taps(out_x, scale_w, width)
    raw = raw_ptr + sample.to(tl.int64) * raw_sn
    v00 = tl.load(raw + r0 * width + c0, mask=keep, other=0.0) / denominator
    v01 = tl.load(raw + r0 * width + c1, mask=keep, other=0.0) / denominator
    v10 = tl.load(raw + r1 * width + c0, mask=keep, other=0.0) / denominator
    v11 = tl.load(raw + r1 * width + c1, mask=keep, other=0.0) / denominator
    return (1.0 - lam_h) * ((1.0 - lam_w) * v00 + lam_w * v01) + lam_h * ((1.0 - lam_w) * v10 + lam_w * v11)


@triton.jit
def _aggregate(
    out_ptr, out_h, out_w, eps, raw_sn, block_max_sn,
    raw0, max0, h0, w0, sh0, sw0, nb0,
    raw1, max1, h1, w1, sh1, sw1, nb1,
    raw2, max2, h2, w2, sh2, sw2, nb2,
    raw3, max3, h3, w3, sh3, sw3, nb3,
    LAYERS: tl.constexpr, ACCUMULATE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """out[n, y, x] (+)= sum over up to four layers of their normalised, resized maps."""
    sample = tl.program_id(0)
    pixel = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    keep = pixel < out_h * out_w
    out_y = pixel // out_w
    out_x = pixel % out_w
    total = _normalised_layer_at(raw0, max0, raw_sn, block_max_sn, sample, out_y, out_x, keep,
                                 h0, w0, sh0, sw0, nb0, eps, BLOCK_B)
    if LAYERS > 1:
        total += _normalised_layer_at(raw1, max1, raw_sn, block_max_sn, sample, out_y, out_x, keep,
                                      h1, w1, sh1, sw1, nb1, eps, BLOCK_B)
    if LAYERS > 2:
        total += _normalised_layer_at(raw2, max2, raw_sn, block_max_sn, sample, out_y, out_x, keep,
                                      h2, w2, sh2, sw2, nb2, eps, BLOCK_B)
    if LAYERS > 3:
        total += _normalised_layer_at(raw3, max3, raw_sn, block_max_sn, sample, out_y, out_x, keep,
                                      h3, w3, sh3, sw3, nb3, eps, BLOCK_B)
    out = out_ptr + sample.to(tl.int64) * out_h * out_w + pixel
    if ACCUMULATE:
        total += tl.load(out, mask=keep, other=0.0)
    tl.store(out, total, mask=keep)


def _cam_blocks(channels: int, positions: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): up to 128 positions per program, about 4096 values of A per loop step."""
    block_p = min(triton.next_power_of_2(positions), 128)
    block_c = min(triton.next_power_of_2(channels), max(1, 4096 // block_p))
    return block_c, block_p


def _spatially_flat(tensor: torch.Tensor) -> bool:
    """Whether (h, w) is one run of stride w_stride, so position p sits at p * w_stride."""
    return tensor.shape[2] == 1 or tensor.stride(2) == tensor.shape[3] * tensor.stride(3)


@torch.no_grad()
def layercam(
    acts: torch.Tensor | Sequence[torch.Tensor],
    grads: torch.Tensor | Sequence[torch.Tensor],
    out_size: tuple[int, int] | None = None,
    variant: str = "layercam",
    eps: float = 1e-7,
) -> torch.Tensor:
    """LayerCAM (or GradCAM) maps from activations and their gradients, summed over CAM layers.

    ``acts``/``grads``: one tensor (N, C, h, w) or a sequence of them, one per CAM layer (each grad has
    its activation's shape); any strides; fp32/fp16/bf16. Per layer: ``ReLU(sum_c w_c * A_c)`` with
    ``w = ReLU(G)`` per position (``"layercam"``) or ``w_c = mean_hw(G_c)`` (``"gradcam"``), divided by
    its per-sample max + ``eps``, resized bilinearly (align_corners=False) to ``out_size`` (H, W), summed
    over layers. ``out_size=None``: the largest layer's (h, w) (by h*w, the first on ties).

    Returns a contiguous fp32 tensor (N, H, W).
    """
    # the same checks, messages and default size as the reference (fastgradmix/gradmix/checks.py)
    act_layers, grad_layers, (out_h, out_w) = cam_layer_inputs(acts, grads, variant, out_size)
    batch = act_layers[0].shape[0]
    device = act_layers[0].device
    gradcam = variant == "gradcam"

    out = _common.empty((batch, out_h, out_w), torch.float32, device)
    if out.numel() == 0:
        return out
    # One scratch row per sample holding every layer's raw map, one for every layer's block maxima.
    blocks = [_cam_blocks(a.shape[1], a.shape[2] * a.shape[3]) for a in act_layers]
    raw_offsets, max_offsets, raw_total, max_total = [], [], 0, 0
    for a, (_, block_p) in zip(act_layers, blocks, strict=True):
        raw_offsets.append(raw_total)
        max_offsets.append(max_total)
        raw_total += a.shape[2] * a.shape[3]
        max_total += triton.cdiv(a.shape[2] * a.shape[3], block_p)
    raw = _common.empty((batch, raw_total), torch.float32, device)  # (N, sum_l h_l * w_l)
    block_max = _common.empty((batch, max_total), torch.float32, device)  # (N, sum_l blocks_l)

    layer_args = []
    for a, g, (block_c, block_p), raw_at, max_at in zip(
        act_layers, grad_layers, blocks, raw_offsets, max_offsets, strict=True
    ):
        _, channels, height, width = a.shape
        positions = height * width
        g = g.to(device=device)  # a no-op for the usual same-device gradients
        flat = _spatially_flat(a) and _spatially_flat(g)
        weights = raw  # any tensor: ignored unless GRADCAM
        if gradcam:
            weights = _common.empty((batch, channels), torch.float32, device)  # (N, C) mean gradients
            mean_c = min(triton.next_power_of_2(channels), 64)
            mean_p = min(triton.next_power_of_2(positions), max(1, 4096 // mean_c))
            _channel_mean[(batch, triton.cdiv(channels, mean_c))](
                g, weights, channels, positions, width, *g.stride(), FLAT=flat, BLOCK_C=mean_c, BLOCK_P=mean_p,
            )
        n_blocks = triton.cdiv(positions, block_p)
        layer_raw, layer_max = raw[:, raw_at:], block_max[:, max_at:]  # views: the kernels write their slice
        _layer_cam[(batch, n_blocks)](
            a, g, weights, layer_raw, layer_max, channels, positions, width,
            *a.stride(), *g.stride(), raw.stride(0), block_max.stride(0),
            GRADCAM=gradcam, FLAT=flat, BLOCK_C=block_c, BLOCK_P=block_p,
        )
        scale_h = _common.float32_ratio(height, out_h)
        scale_w = _common.float32_ratio(width, out_w)
        layer_args.append((layer_raw, layer_max, height, width, scale_h, scale_w, n_blocks))

    block_b = triton.next_power_of_2(max(args[-1] for args in layer_args))
    block = min(triton.next_power_of_2(out_h * out_w), 1024)
    for first in range(0, len(layer_args), _LAYERS_PER_AGGREGATE):
        group = layer_args[first:first + _LAYERS_PER_AGGREGATE]
        padded = group + [group[0]] * (_LAYERS_PER_AGGREGATE - len(group))  # unused argument groups
        _aggregate[(batch, triton.cdiv(out_h * out_w, block))](
            out, out_h, out_w, eps, raw.stride(0), block_max.stride(0),
            *[value for args in padded for value in args],
            LAYERS=len(group), ACCUMULATE=first > 0, BLOCK=block, BLOCK_B=block_b,
        )
    return out
